//! The CLI's commands, one module per command group (`app`, `cluster`,
//! `demo`, `deployment`, `install`, `node`, `logs`, `ps`, `token`, `secret`); `table`
//! and `progress` are what they share.

pub mod app;
pub mod cluster;
pub mod demo;
pub mod deployment;
pub mod install;
pub mod logs;
pub mod node;
pub mod progress;
pub mod secret;
pub mod table;
pub mod tasks;
pub mod token;

use serde_json::Value;

/// `/v2/apps/web` for `web` or `/web`.
pub fn app_path(id: &str) -> String {
    format!("/v2/apps/{}", id.trim_start_matches('/'))
}

/// `/web` for `web`, `/web/` or `/web`.
pub fn normalise(id: &str) -> String {
    format!("/{}", id.trim_matches('/'))
}

pub fn force_q(force: bool) -> &'static str {
    if force {
        "?force=true"
    } else {
        ""
    }
}

/// Prints `v` as indented JSON (the `--json` of every listing).
pub fn print_json(v: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// A number as people write it: `2`, `0.5`, `128`.
pub fn num(v: &Value) -> String {
    match v.as_f64() {
        Some(f) if f.fract() == 0.0 => format!("{f:.0}"),
        Some(f) => format!("{f:.3}").trim_end_matches('0').to_string(),
        None => "-".to_string(),
    }
}

pub fn str_of(v: &Value) -> String {
    v.as_str().unwrap_or("-").to_string()
}
