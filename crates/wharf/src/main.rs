//! `wharf`: the one binary. `wharf agent` runs a node (store, scheduler when
//! leader, agent, API); `wharf executor` is the per-task supervisor the agent
//! starts; every other subcommand is a client of the HTTP API.
//!
//! This is the binary's edge: `anyhow` errors, the clock and the OS.

mod admission;
mod agent_config;
mod bench;
mod bench_cluster;
mod bench_containers;
mod bench_dns;
mod bench_etcd;
mod bench_jobs;
mod bench_lb;
mod bench_lb_load;
mod bench_logs;
mod bench_oci;
mod bench_scale;
mod bench_stages;
mod bench_steps;
mod cli;
mod cli_job;
mod client;
mod clock;
mod cluster_settings;
mod cmd;
mod dns_setup;
mod https;
mod image_cmd;
mod job_clock;
mod lb_drain;
mod liveness;
mod node;
mod orchestrator;
mod resources;
mod supervisor;

/// The DNS and LB paths allocate many small buffers per packet and request;
/// glibc's allocator took about an eighth of a loaded node's CPU there.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    // The per-task executor before anything else: building the whole CLI
    // with clap costs milliseconds of every container's start, and the
    // agent always calls it as `executor --sandbox DIR`.
    let mut raw = std::env::args_os().skip(1);
    if raw.next().is_some_and(|a| a == "executor") {
        let rest: Vec<std::ffi::OsString> = raw.collect();
        if rest.iter().any(|a| a == agent::launcher::LAUNCHER_FLAG) {
            std::process::exit(agent::launcher::launcher_main());
        }
        if let Some(sandbox) = agent::executor::parse_args(rest) {
            std::process::exit(agent::executor_main(&sandbox));
        }
    }
    let (args, matches) = cli::parse();
    // The executor is single-threaded by design (it forks); it must not
    // start a multi-threaded runtime first.
    if let cli::Command::Executor { sandbox } = &args.command {
        std::process::exit(agent::executor_main(sandbox));
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let result = runtime.block_on(cli::dispatch(args, matches));
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
