//! Where `wharf agent` takes its settings from, besides the command line:
//! every agent flag also has an environment variable (`--data-dir` →
//! `WHARF_DATA_DIR`) and a key in a TOML file given with `--config FILE`
//! (`data-dir = "/var/lib/wharf"`). The flags in `cli::AgentArgs` stay the one
//! source of truth: the variables and keys are derived from their long
//! names at start-up, and a file's values become the flags' defaults, so the
//! order is command line, then environment, then file, then built-in default.
//! `render` writes such a file from flags given on a command line (`wharf
//! install`).

use anyhow::{anyhow, bail, Context};
use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches};
use std::path::Path;

/// The subcommand whose flags get variables and file keys.
pub const AGENT: &str = "agent";
/// `--config` itself cannot be set from the file.
const CONFIG_ID: &str = "config";

/// `WHARF_DATA_DIR` for `data-dir`.
pub fn env_name(long: &str) -> String {
    format!("WHARF_{}", long.to_uppercase().replace('-', "_"))
}

/// The agent flags that have a variable and a key: every long flag but help.
fn settable(arg: &Arg) -> bool {
    arg.get_long().is_some()
        && !matches!(arg.get_action(), ArgAction::Help | ArgAction::Version)
        && !arg.is_global_set()
}

/// Gives every agent flag without one its `WHARF_*` variable.
pub fn with_env(cmd: clap::Command) -> clap::Command {
    cmd.mut_subcommand(AGENT, |mut sub| {
        let ids: Vec<(clap::Id, String)> = sub
            .get_arguments()
            .filter(|a| settable(a) && a.get_env().is_none())
            .filter_map(|a| Some((a.get_id().clone(), env_name(a.get_long()?))))
            .collect();
        for (id, var) in ids {
            sub = sub.mut_arg(id, |a| a.env(var));
        }
        sub
    })
}

/// Makes the keys of the TOML file at `path` the defaults of the agent's
/// flags. An unknown key, a table, or a value clap refuses later is an error
/// naming the key.
pub fn with_file(cmd: clap::Command, path: &Path) -> anyhow::Result<clap::Command> {
    let text = std::fs::read_to_string(path).with_context(|| format!("--config: cannot read {}", path.display()))?;
    let doc: toml_edit::DocumentMut =
        text.parse().map_err(|e| anyhow!("--config: {} is not TOML: {e}", path.display()))?;
    let agent = cmd.find_subcommand(AGENT).ok_or_else(|| anyhow!("no agent subcommand"))?;
    let mut defaults = Vec::new();
    for (key, item) in doc.iter() {
        let long = key.replace('_', "-");
        let arg = agent
            .get_arguments()
            .find(|a| settable(a) && a.get_long() == Some(long.as_str()) && a.get_id().as_str() != CONFIG_ID)
            .ok_or_else(|| {
                let keys: Vec<&str> = agent
                    .get_arguments()
                    .filter(|a| settable(a) && a.get_id().as_str() != CONFIG_ID)
                    .filter_map(Arg::get_long)
                    .collect();
                anyhow!(
                    "{}: unknown key '{key}' (the keys are the agent's flag names: {})",
                    path.display(),
                    keys.join(", ")
                )
            })?;
        let values = values_of(item).with_context(|| format!("{}: key '{key}'", path.display()))?;
        defaults.push((arg.get_id().clone(), values));
    }
    Ok(cmd.mut_subcommand(AGENT, |mut sub| {
        for (id, values) in defaults {
            sub = sub.mut_arg(id, |a| a.default_values(values));
        }
        sub
    }))
}

/// A key's value as the strings a command line would hold.
fn values_of(item: &toml_edit::Item) -> anyhow::Result<Vec<String>> {
    let one = |v: &toml_edit::Value| -> anyhow::Result<String> {
        Ok(match v {
            toml_edit::Value::String(s) => s.value().clone(),
            toml_edit::Value::Integer(i) => i.value().to_string(),
            toml_edit::Value::Float(f) => f.value().to_string(),
            toml_edit::Value::Boolean(b) => b.value().to_string(),
            _ => bail!("a string, number or boolean, or an array of them"),
        })
    };
    match item.as_value() {
        Some(toml_edit::Value::Array(items)) => items.iter().map(one).collect(),
        Some(v) => Ok(vec![one(v)?]),
        None => bail!("a string, number or boolean, or an array of them (not a table)"),
    }
}

/// An agent flag given on a command line, with its values as typed.
pub struct Given {
    pub long: String,
    /// `true` for a switch (`--refuse-root-tasks`), which has no value.
    pub switch: bool,
    /// Several values (a repeatable or comma-separated flag).
    pub list: bool,
    /// Its values go in one argument, comma-separated (else the flag repeats).
    pub delimited: bool,
    pub values: Vec<String>,
}

/// The agent flags given on the command line in `matches` (a subcommand that
/// flattens `AgentArgs`, described by `cmd`).
pub fn given(cmd: &clap::Command, matches: &ArgMatches) -> Vec<Given> {
    let mut out = Vec::new();
    for arg in cmd.get_arguments().filter(|a| settable(a) && a.get_id().as_str() != CONFIG_ID) {
        let id = arg.get_id().as_str();
        if !matches!(matches.value_source(id), Some(ValueSource::CommandLine)) {
            continue;
        }
        let Some(long) = arg.get_long() else { continue };
        let values: Vec<String> =
            matches.get_raw(id).map(|vs| vs.map(|v| v.to_string_lossy().into_owned()).collect()).unwrap_or_default();
        let switch = matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse);
        let list =
            matches!(arg.get_action(), ArgAction::Append) || arg.get_value_delimiter().is_some() || values.len() > 1;
        let delimited = arg.get_value_delimiter().is_some();
        out.push(Given { long: long.to_string(), switch, list, delimited, values });
    }
    out
}

/// `flags` as a TOML file `wharf agent --config` reads back.
pub fn render(flags: &[Given]) -> String {
    let mut out = String::from(
        "# Written by `wharf install`. Every key is a `wharf agent` flag (see `wharf agent --help`);\n\
         # the flag itself and its WHARF_* environment variable take precedence.\n",
    );
    for f in flags {
        let value = if f.switch {
            f.values.first().cloned().unwrap_or_else(|| "true".into())
        } else if f.list {
            format!("[{}]", f.values.iter().map(|v| toml_string(v)).collect::<Vec<_>>().join(", "))
        } else {
            toml_string(f.values.first().map(String::as_str).unwrap_or(""))
        };
        out.push_str(&format!("{} = {value}\n", f.long));
    }
    out
}

/// `flags` as `wharf agent` arguments.
pub fn to_args(flags: &[Given]) -> Vec<String> {
    let mut out = Vec::new();
    for f in flags {
        if f.switch {
            if f.values.first().is_none_or(|v| v == "true") {
                out.push(format!("--{}", f.long));
            }
        } else if f.delimited {
            out.push(format!("--{}", f.long));
            out.push(f.values.join(","));
        } else if f.list {
            for v in &f.values {
                out.push(format!("--{}", f.long));
                out.push(v.clone());
            }
        } else {
            out.push(format!("--{}", f.long));
            out.push(f.values.first().cloned().unwrap_or_default());
        }
    }
    out
}

/// A TOML basic string. JSON's string escapes (`\"`, `\\`, `\n`, `\uXXXX`,
/// ...) are all valid in one, so serde_json's quoting serves; the toml crates
/// at hand are built without their writer.
pub fn toml_string(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn agent_matches(cmd: clap::Command, args: &[&str]) -> crate::cli::AgentArgs {
        use clap::FromArgMatches;
        let m = cmd.try_get_matches_from(args).expect("parses");
        match crate::cli::Cli::from_arg_matches(&m).expect("args").command {
            crate::cli::Command::Agent(a) => a,
            _ => panic!("not agent"),
        }
    }

    #[test]
    fn file_values_are_defaults_the_command_line_overrides() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("wharf.toml");
        std::fs::write(
            &file,
            "data-dir = \"/var/lib/wharf\"\nhttp = \"10.0.0.6:8080\"\njoin = [\"10.0.0.5:5050\", \"10.0.0.7:5050\"]\nvoters = 5\nrefuse-root-tasks = true\n",
        )
        .expect("write");
        let cmd = with_file(with_env(crate::cli::Cli::command()), &file).expect("loads");
        let a = agent_matches(cmd.clone(), &["wharf", "agent", "--config", "x", "--http", "10.0.0.9:8080"]);
        assert_eq!(a.data_dir, Path::new("/var/lib/wharf"));
        assert_eq!(a.http, "10.0.0.9:8080", "the flag wins over the file");
        assert_eq!(a.join, vec!["10.0.0.5:5050", "10.0.0.7:5050"]);
        assert_eq!(a.voters, 5);
        assert!(a.refuse_root_tasks);
        assert_eq!(a.rpc, "0.0.0.0:5050", "keys not in the file keep their defaults");
    }

    #[test]
    fn unknown_keys_and_tables_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("wharf.toml");
        std::fs::write(&file, "data_dir = \"/x\"\nhtpp = \"1.2.3.4:80\"\n").expect("write");
        let e = with_file(crate::cli::Cli::command(), &file).expect_err("refused").to_string();
        assert!(e.contains("unknown key 'htpp'") && e.contains("data-dir"), "{e}");
        std::fs::write(&file, "[http]\nport = 1\n").expect("write");
        let e = format!("{:#}", with_file(crate::cli::Cli::command(), &file).expect_err("refused"));
        assert!(e.contains("key 'http'") && e.contains("not a table"), "{e}");
    }

    #[test]
    fn rendered_files_read_back_to_the_same_flags() {
        let cmd = crate::cli::Cli::command();
        let args = [
            "wharf",
            "install",
            "--http",
            "10.0.0.6:8080",
            "--join",
            "10.0.0.5:5050,10.0.0.7:5050",
            "--attributes",
            "rack:\"r1\";zone:a",
            "--insecure-registry",
            "reg:5000",
            "--refuse-root-tasks",
        ];
        let m = cmd.clone().try_get_matches_from(args).expect("parses");
        let (_, sub) = m.subcommand().expect("install");
        let install = cmd.find_subcommand("install").expect("install");
        let mut flags = given(install, sub);
        flags.push(Given {
            long: "data-dir".into(),
            switch: false,
            list: false,
            delimited: false,
            values: vec!["/var/lib/wharf".into()],
        });
        let text = render(&flags);
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("wharf.toml");
        std::fs::write(&file, &text).expect("write");
        let a = agent_matches(with_file(cmd, &file).expect("loads"), &["wharf", "agent"]);
        assert_eq!(a.http, "10.0.0.6:8080", "{text}");
        assert_eq!(a.join, vec!["10.0.0.5:5050", "10.0.0.7:5050"], "{text}");
        assert_eq!(a.attributes.as_deref(), Some("rack:\"r1\";zone:a"), "{text}");
        assert_eq!(a.insecure_registries, vec!["reg:5000"], "{text}");
        assert!(a.refuse_root_tasks, "{text}");
        assert_eq!(a.data_dir, Path::new("/var/lib/wharf"), "{text}");
    }
}
