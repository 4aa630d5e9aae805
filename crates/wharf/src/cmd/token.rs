//! `wharf token create|ls|rm`: the HTTP API's bearer tokens; `wharf token
//! show|rotate`: the cluster's join token.

use super::table::table;
use crate::client::Client;
use anyhow::Context;
use reqwest::Method;
use serde_json::{json, Value};

/// `wharf token create`: prints the token alone on stdout (so it can be
/// captured) and what it is on stderr.
pub async fn create(c: &Client, role: &str, name: &str) -> anyhow::Result<()> {
    let v = c.ok(Method::POST, "/wharf/v1/tokens", Some(&json!({"role": role, "name": name}))).await?;
    let token = v.get("token").and_then(Value::as_str).context("the node's answer has no token")?;
    eprintln!(
        "Created {} token {} (shown only now; use it as WHARF_TOKEN or --token)",
        v.get("role").and_then(Value::as_str).unwrap_or(role),
        v.get("id").and_then(Value::as_str).unwrap_or("?")
    );
    println!("{token}");
    Ok(())
}

pub async fn ls(c: &Client) -> anyhow::Result<()> {
    let v = c.ok(Method::GET, "/wharf/v1/tokens", None).await?;
    let field = |t: &Value, k: &str| t.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let rows: Vec<Vec<String>> = v
        .get("tokens")
        .and_then(Value::as_array)
        .map(|ts| {
            ts.iter().map(|t| vec![field(t, "id"), field(t, "role"), field(t, "name"), field(t, "createdAt")]).collect()
        })
        .unwrap_or_default();
    print!("{}", table(&["ID", "ROLE", "NAME", "CREATED"], &rows, &[]));
    Ok(())
}

pub async fn rm(c: &Client, id: &str) -> anyhow::Result<()> {
    c.ok(Method::DELETE, &format!("/wharf/v1/tokens/{id}"), None).await?;
    println!("Revoked token {id}");
    Ok(())
}

/// `wharf token show`: the join token alone on stdout.
pub async fn show(c: &Client) -> anyhow::Result<()> {
    let v = c.ok(Method::GET, "/wharf/v1/join-token", None).await?;
    println!("{}", v.get("token").and_then(Value::as_str).context("the node's answer has no token")?);
    Ok(())
}

/// `wharf token rotate`: prints the new join token; the old one is refused.
pub async fn rotate(c: &Client) -> anyhow::Result<()> {
    let v = c.ok(Method::POST, "/wharf/v1/join-token/rotate", None).await?;
    eprintln!("Rotated the join token: the previous one is refused from now on");
    println!("{}", v.get("token").and_then(Value::as_str).context("the node's answer has no token")?);
    Ok(())
}
