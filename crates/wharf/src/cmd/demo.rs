//! `wharf demo up|down`: runs the logs demo's own `deploy` script
//! (examples/logs-demo), so the command and the script are one thing.

use anyhow::Context;
use std::path::{Path, PathBuf};
use std::process::Command;

const EXAMPLE: &str = "examples/logs-demo";

/// The example's folder: the one given, else `examples/logs-demo` under the
/// current directory, else the source tree's this binary was built from.
fn example_dir(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let candidates = match given {
        Some(d) => vec![d],
        None => vec![PathBuf::from(EXAMPLE), Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(EXAMPLE)],
    };
    candidates.iter().find(|d| d.join("deploy").is_file()).cloned().with_context(|| {
        format!("no demo found (looked for deploy in {candidates:?}); run from the repository or pass --example DIR")
    })
}

fn run(mut cmd: Command) -> anyhow::Result<()> {
    let status = cmd.status().context("starting python3 (the demo's deploy script needs it)")?;
    if !status.success() {
        anyhow::bail!("the demo's deploy script failed ({status})");
    }
    Ok(())
}

fn deploy(addr: &str, example: Option<PathBuf>, verb: &str) -> anyhow::Result<Command> {
    let dir = example_dir(example)?;
    let wharf = std::env::current_exe().context("finding this binary")?;
    let mut cmd = Command::new("python3");
    cmd.arg(dir.join("deploy")).arg(verb).args(["--addr", addr]).arg("--wharf").arg(wharf);
    Ok(cmd)
}

pub fn up(addr: &str, example: Option<PathBuf>, data_dirs: &[PathBuf], front: Option<&str>) -> anyhow::Result<()> {
    let mut cmd = deploy(addr, example, "up")?;
    for d in data_dirs {
        cmd.arg("--data-dir").arg(d);
    }
    if let Some(f) = front {
        cmd.args(["--front", f]);
    }
    run(cmd)
}

pub fn down(addr: &str, example: Option<PathBuf>) -> anyhow::Result<()> {
    run(deploy(addr, example, "down")?)
}
