//! `wharf install` and `wharf uninstall`: this host as a node that systemd
//! runs. Install writes the agent's flags into `/etc/wharf/wharf.toml` (read
//! back by `wharf agent --config`, see `agent_config`) and a unit
//! `/etc/systemd/system/wharf.service`, then enables and starts it;
//! uninstall stops it, ends its tasks and removes the unit (`--purge`: the
//! config and the data too). `--root DIR` writes and removes the files under
//! DIR and runs nothing, for images and tests.

use crate::agent_config::{self, Given};
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub const CONFIG: &str = "/etc/wharf/wharf.toml";
pub const UNIT: &str = "/etc/systemd/system/wharf.service";
pub const DEFAULT_DATA_DIR: &str = "/var/lib/wharf";
const SERVICE: &str = "wharf.service";
/// A join token's prefix (`wharf token show`).
const JOIN_TOKEN_PREFIX: &str = "WHARF-1-";

pub struct InstallPlan {
    pub root: Option<PathBuf>,
    pub bin: Option<PathBuf>,
    pub flags: Vec<Given>,
    /// The global `--token`, when it is a join token.
    pub token: Option<String>,
    /// Whether this build's agent takes `--join-token`.
    pub agent_has_join_token: bool,
    /// The --http and --advertise given, to say where the node answers.
    pub http: String,
    pub advertise: Option<String>,
}

fn systemd_runs() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

/// `path` (absolute) under `root`, or itself without one.
fn under(root: Option<&Path>, path: &str) -> PathBuf {
    match root {
        Some(r) => r.join(path.trim_start_matches('/')),
        None => PathBuf::from(path),
    }
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn unit_text(bin: &Path) -> String {
    format!(
        "# Written by `wharf install`; `wharf uninstall` removes it.\n\
         [Unit]\n\
         Description=Wharf node (wharf agent)\n\
         Wants=network-online.target\n\
         After=network-online.target\n\
         \n\
         [Service]\n\
         ExecStart={} agent --config {CONFIG}\n\
         Restart=on-failure\n\
         RestartSec=2\n\
         # Tasks run under their own executors and keep running while the\n\
         # agent restarts (it finds them again); stop only the agent.\n\
         KillMode=process\n\
         LimitNOFILE=1048576\n\
         TasksMax=infinity\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        shell_quote(&bin.display().to_string())
    )
}

fn set_flag(flags: &mut Vec<Given>, long: &str, value: String) {
    flags.retain(|f| f.long != long);
    flags.push(Given { long: long.to_string(), switch: false, list: false, delimited: false, values: vec![value] });
}

/// The URL the node's API answers on, from its --http and --advertise.
fn reach(http: &str, advertise: Option<&str>) -> String {
    let (host, port) = http.rsplit_once(':').unwrap_or(("0.0.0.0", "8080"));
    let host = match advertise {
        Some(a) => a.to_string(),
        None if host == "0.0.0.0" || host == "[::]" => "127.0.0.1".to_string(),
        None => host.to_string(),
    };
    format!("http://{host}:{port}")
}

pub async fn install(mut plan: InstallPlan) -> anyhow::Result<()> {
    if plan.flags.iter().any(|f| f.long == "config") {
        bail!("--config: `wharf install` writes the config file itself; give the agent's flags instead");
    }
    match plan.flags.iter_mut().find(|f| f.long == "data-dir") {
        Some(f) => {
            let dir = PathBuf::from(f.values.first().cloned().unwrap_or_default());
            f.values = vec![std::path::absolute(&dir).context("--data-dir")?.display().to_string()];
        }
        None => set_flag(&mut plan.flags, "data-dir", DEFAULT_DATA_DIR.to_string()),
    }
    if let Some(token) = plan.token.take().filter(|t| t.starts_with(JOIN_TOKEN_PREFIX)) {
        if !plan.agent_has_join_token {
            bail!("--token: this build of wharf has no join tokens (its agent has no --join-token)");
        }
        set_flag(&mut plan.flags, "join-token", token);
    }
    let bin = match &plan.bin {
        Some(b) => std::path::absolute(b).context("--bin")?,
        None => std::env::current_exe().context("locating the wharf binary")?,
    };
    let root = plan.root.as_deref();
    let url = reach(&plan.http, plan.advertise.as_deref());
    if root.is_none() && !systemd_runs() {
        let mut line = vec![bin.display().to_string(), "agent".to_string()];
        line.extend(agent_config::to_args(&plan.flags));
        let line: Vec<String> = line.iter().map(|a| shell_quote(a)).collect();
        bail!(
            "this host does not run systemd (no /run/systemd/system), so `wharf install` cannot make a service of \
             the node. Nothing was written. Run the node under your own supervisor instead:\n\n  {}\n\n\
             (or write the files for another system with --root DIR)",
            line.join(" ")
        );
    }
    let (config, unit) = (under(root, CONFIG), under(root, UNIT));
    write(&config, agent_config::render(&plan.flags).as_bytes(), 0o600)?;
    write(&unit, unit_text(&bin).as_bytes(), 0o644)?;
    println!("wrote {} and {}", config.display(), unit.display());
    if root.is_some() {
        println!(
            "nothing started (--root); on that system: systemctl daemon-reload && systemctl enable --now {SERVICE}"
        );
        println!("the node will answer on {url} (export WHARF_ADDR={url})");
        return Ok(());
    }
    systemctl(&["daemon-reload"])?;
    systemctl(&["enable", "--now", SERVICE])?;
    println!("{SERVICE} enabled and started; waiting for the node at {url}");
    let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
    let started = Instant::now();
    while client.get(format!("{url}/ping")).send().await.map(|r| r.status().is_success()).ok() != Some(true) {
        if started.elapsed() > Duration::from_secs(60) {
            bail!(
                "the node did not answer on {url} within 60 s; see `journalctl -u wharf` and `systemctl status wharf`"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("the node is up: export WHARF_ADDR={url}; wharf node ls\nits log: journalctl -u wharf -f");
    Ok(())
}

fn write(path: &Path, body: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // Written aside and renamed, so a crash leaves the old file or the new one.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, body).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

fn systemctl(args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new("systemctl").args(args).status().context("running systemctl")?;
    if !status.success() {
        bail!("systemctl {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// The data dir the config file names (or the default).
fn configured_data_dir(config: &Path) -> PathBuf {
    let text = std::fs::read_to_string(config).unwrap_or_default();
    let doc: Option<toml_edit::DocumentMut> = text.parse().ok();
    doc.as_ref()
        .and_then(|d| d.get("data-dir").or_else(|| d.get("data_dir")))
        .and_then(|v| v.as_str())
        .map_or_else(|| PathBuf::from(DEFAULT_DATA_DIR), PathBuf::from)
}

pub async fn uninstall(root: Option<&Path>, purge: bool) -> anyhow::Result<()> {
    if root.is_none() && !systemd_runs() {
        bail!(
            "this host does not run systemd (no /run/systemd/system): there is no wharf service to remove. \
             Stop the `wharf agent` process you started yourself (with --root DIR, files under DIR are removed)"
        );
    }
    let (config, unit) = (under(root, CONFIG), under(root, UNIT));
    if !config.exists() && !unit.exists() {
        bail!("wharf is not installed here ({} and {} do not exist)", config.display(), unit.display());
    }
    let data = configured_data_dir(&config);
    let data = under(root, &data.display().to_string());
    if root.is_none() {
        // Not loaded (a half-done install) is fine: there is nothing to stop.
        let _ = Command::new("systemctl").args(["disable", "--now", SERVICE]).status();
    }
    let tasks = super::cluster::end_tasks_under(&[data.join("sandboxes")]).await?;
    remove(&unit)?;
    if root.is_none() {
        systemctl(&["daemon-reload"])?;
    }
    println!("{SERVICE} stopped and removed, {tasks} tasks ended");
    if purge {
        remove(&config)?;
        if let Some(dir) = config.parent() {
            let _ = std::fs::remove_dir(dir);
        }
        if data.exists() {
            std::fs::remove_dir_all(&data).with_context(|| format!("--purge: removing {}", data.display()))?;
        }
        println!("removed {} and {}", config.display(), data.display());
    } else {
        println!("kept {} and {} (--purge removes them)", config.display(), data.display());
    }
    Ok(())
}

fn remove(path: &Path) -> anyhow::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", path.display()))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_is_reached_on_its_advertised_or_bound_address() {
        assert_eq!(reach("0.0.0.0:8080", None), "http://127.0.0.1:8080");
        assert_eq!(reach("10.0.0.6:9000", None), "http://10.0.0.6:9000");
        assert_eq!(reach("0.0.0.0:8080", Some("node1.example")), "http://node1.example:8080");
    }

    #[test]
    fn command_lines_are_quoted_for_a_shell() {
        assert_eq!(shell_quote("10.0.0.5:5050"), "10.0.0.5:5050");
        assert_eq!(shell_quote("rack:r1;zone:a"), "'rack:r1;zone:a'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
