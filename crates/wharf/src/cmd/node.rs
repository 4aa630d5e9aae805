//! `wharf node ls|drain|rm`.

use super::{num, print_json, str_of, table::table};
use crate::client::Client;
use reqwest::Method;
use serde_json::Value;

pub async fn ls(c: &Client, json: bool) -> anyhow::Result<()> {
    let v = c.ok(Method::GET, "/wharf/v1/nodes", None).await?;
    if json {
        return print_json(&v);
    }
    let used = |n: &Value, r: &str| format!("{}/{}", num(&n["used"][r]), num(&n["resources"][r]));
    let header =
        ["ID", "HOSTNAME", "ADDRESS", "ROLE", "STATUS", "CPUS", "MEM MB", "DISK MB", "PORTS", "TASKS", "ATTRIBUTES"];
    let rows: Vec<Vec<String>> = v["nodes"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|n| {
            let attrs: Vec<String> = n["attributes"]
                .as_object()
                .map(|m| m.iter().map(|(k, v)| format!("{k}:{}", v.as_str().unwrap_or(""))).collect())
                .unwrap_or_default();
            let role = n["role"].as_str().unwrap_or("?");
            vec![
                str_of(&n["id"]),
                str_of(&n["hostname"]),
                str_of(&n["http"]),
                if n["leader"].as_bool().unwrap_or(false) { format!("{role} (leader)") } else { role.to_string() },
                str_of(&n["status"]),
                used(n, "cpus"),
                used(n, "mem"),
                used(n, "disk"),
                format!("{}/{}", num(&n["portsUsed"]), num(&n["portsTotal"])),
                num(&n["tasks"]),
                attrs.join(";"),
            ]
        })
        .collect();
    print!("{}", table(&header, &rows, &[5, 6, 7, 8, 9]));
    Ok(())
}

pub async fn drain(c: &Client, id: &str) -> anyhow::Result<()> {
    c.ok(Method::POST, &format!("/wharf/v1/nodes/{id}/drain"), None).await?;
    println!("node {id} draining: its tasks move to other nodes");
    Ok(())
}

pub async fn rm(c: &Client, id: &str) -> anyhow::Result<()> {
    c.ok(Method::DELETE, &format!("/wharf/v1/nodes/{id}"), None).await?;
    println!("node {id} removed");
    Ok(())
}
