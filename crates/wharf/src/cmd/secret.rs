//! `wharf secret put|ls|rm`: the cluster's secret store. Values go in from
//! stdin or a file and never come back out (the API shows paths only).

use super::table::table;
use crate::client::Client;
use anyhow::Context;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::io::Read;

/// `wharf secret put PATH [--file F]`: the value is the file's bytes, else
/// stdin's, as given (a trailing newline is kept; use `printf` to omit it).
pub async fn put(c: &Client, path: &str, file: Option<&std::path::Path>) -> anyhow::Result<()> {
    let value = match file {
        Some(f) => std::fs::read(f).with_context(|| format!("--file: cannot read {}", f.display()))?,
        None => {
            let mut buf = Vec::new();
            std::io::stdin().read_to_end(&mut buf).context("reading the secret's value from stdin")?;
            buf
        }
    };
    let (status, _) = c.put_bytes(&secret_path(path), value).await?;
    let verb = if status == StatusCode::CREATED { "Created" } else { "Updated" };
    println!("{verb} secret {}", path.trim_start_matches('/'));
    Ok(())
}

pub async fn ls(c: &Client, json: bool) -> anyhow::Result<()> {
    let v = c.ok(Method::GET, "/wharf/v1/secrets", None).await?;
    if json {
        return super::print_json(&v);
    }
    let field = |t: &Value, k: &str| t.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let rows: Vec<Vec<String>> = v
        .get("secrets")
        .and_then(Value::as_array)
        .map(|ss| ss.iter().map(|s| vec![field(s, "path"), field(s, "createdAt"), field(s, "updatedAt")]).collect())
        .unwrap_or_default();
    print!("{}", table(&["PATH", "CREATED", "UPDATED"], &rows, &[]));
    Ok(())
}

pub async fn rm(c: &Client, path: &str) -> anyhow::Result<()> {
    c.ok(Method::DELETE, &secret_path(path), None).await?;
    println!("Deleted secret {}", path.trim_start_matches('/'));
    Ok(())
}

/// `wharf unlock [KEY]`: the node the CLI talks to opens its data key.
pub async fn unlock(c: &Client, key: Option<&str>) -> anyhow::Result<()> {
    let key = match key {
        Some(k) => k.to_string(),
        None => {
            let mut buf = String::new();
            std::io::stdin().read_to_string(&mut buf).context("reading the unlock key from stdin")?;
            buf
        }
    };
    c.ok(Method::POST, "/wharf/v1/unlock", Some(&serde_json::json!({ "key": key.trim() }))).await?;
    println!("Unlocked: this node can open secrets again");
    Ok(())
}

fn secret_path(path: &str) -> String {
    format!("/wharf/v1/secrets/{}", path.trim_start_matches('/'))
}
