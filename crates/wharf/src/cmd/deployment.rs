//! `wharf deployment ls|rm`.

use super::{print_json, table::table};
use crate::client::Client;
use reqwest::Method;
use serde_json::Value;

pub async fn ls(c: &Client, json: bool) -> anyhow::Result<()> {
    let v = c.ok(Method::GET, "/v2/deployments", None).await?;
    if json {
        return print_json(&v);
    }
    let rows: Vec<Vec<String>> = v
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|d| {
            let apps: Vec<&str> =
                d["affectedApps"].as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
            let actions: Vec<String> = d["currentActions"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|x| format!("{} {}", x["action"].as_str().unwrap_or("?"), x["app"].as_str().unwrap_or("")))
                        .collect()
                })
                .unwrap_or_default();
            vec![
                d["id"].as_str().unwrap_or("?").to_string(),
                apps.join(","),
                format!("{}/{}", d["currentStep"], d["totalSteps"]),
                d["version"].as_str().unwrap_or("-").to_string(),
                actions.join("; "),
            ]
        })
        .collect();
    print!("{}", table(&["ID", "APPS", "STEP", "VERSION", "CURRENT ACTIONS"], &rows, &[2]));
    Ok(())
}

/// Rolls the deployment back (a new deployment restores the versions from
/// before it), or with `force` only forgets it.
pub async fn rm(c: &Client, id: &str, force: bool) -> anyhow::Result<()> {
    let v = c.ok(Method::DELETE, &format!("/v2/deployments/{id}{}", super::force_q(force)), None).await?;
    match v["deploymentId"].as_str() {
        Some(back) if !force => println!("deployment {id} stopped; deployment {back} rolls it back"),
        _ => println!("deployment {id} forgotten; its apps stay as they are now"),
    }
    Ok(())
}
