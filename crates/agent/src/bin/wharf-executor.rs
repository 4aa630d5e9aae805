//! `wharf-executor --sandbox DIR`: the per-task executor as its own binary
//! (the `wharf` binary runs the same code as `wharf executor --sandbox DIR`).

fn main() {
    if std::env::args_os().any(|a| a == agent::launcher::LAUNCHER_FLAG) {
        std::process::exit(agent::launcher::launcher_main());
    }
    let Some(sandbox) = agent::executor::parse_args(std::env::args_os().skip(1)) else {
        eprintln!("usage: wharf-executor --sandbox DIR");
        std::process::exit(2);
    };
    std::process::exit(agent::executor_main(&sandbox));
}
