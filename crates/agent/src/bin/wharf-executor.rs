//! `wharf-executor --sandbox DIR`: the per-task executor as its own binary
//! (the `wharf` binary runs the same code as `wharf executor --sandbox DIR`).

fn main() {
    let Some(sandbox) = agent::executor::parse_args(std::env::args_os().skip(1)) else {
        eprintln!("usage: wharf-executor --sandbox DIR");
        std::process::exit(2);
    };
    std::process::exit(agent::executor_main(&sandbox));
}
