//! Mesos-DNS's HTTP API, in its JSON shapes, on the node's main HTTP port:
//! `/v1/version`, `/v1/config` (no secrets: Wharf has none to show),
//! `/v1/hosts/{host}`, `/v1/services/{service}` and `/v1/enumerate`.

use crate::server::Dns;
use crate::zone::{Rec, FRAMEWORK};
use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::sync::Arc;

pub fn router(dns: Arc<Dns>) -> Router {
    Router::new()
        .route("/v1/version", get(version))
        .route("/v1/config", get(config))
        .route("/v1/hosts/{host}", get(hosts))
        .route("/v1/services/{service}", get(services))
        .route("/v1/enumerate", get(enumerate))
        .with_state(dns)
}

fn fqdn(s: &str) -> String {
    let mut s = s.to_ascii_lowercase();
    if !s.ends_with('.') {
        s.push('.');
    }
    s
}

async fn version() -> Json<Value> {
    Json(json!({
        "Service": "Mesos-DNS",
        "URL": "https://github.com/mesosphere/mesos-dns",
        "Version": format!("wharf-{}", env!("CARGO_PKG_VERSION")),
    }))
}

async fn config(State(dns): State<Arc<Dns>>) -> Json<Value> {
    let c = &dns.cfg;
    let addrs = |v: &[std::net::SocketAddr]| v.iter().map(|a| a.ip().to_string()).collect::<Vec<_>>();
    Json(json!({
        "Domain": c.zone.domain,
        "TTL": c.zone.ttl,
        "EnforceRFC952": c.zone.spec == crate::names::LabelSpec::Rfc952,
        "SOAMname": c.zone.ns_name(),
        "SOARname": format!("root.{}", c.zone.ns_name()),
        "Resolvers": addrs(&c.forwarder.upstreams),
        "ZoneResolvers": c.forwarder.zones.iter().map(|(z, ups)| (z.clone(), addrs(ups))).collect::<std::collections::BTreeMap<_, _>>(),
        "Timeout": c.forwarder.timeout.as_secs_f64(),
        "ExternalOn": !c.forwarder.upstreams.is_empty() || !c.forwarder.zones.is_empty(),
        "RecurseOn": true,
        "IPSources": ["host"],
        "ForwardFrom": c.forward_from.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
    }))
}

/// Mesos-DNS answers an unknown name with one entry of empty strings.
async fn hosts(State(dns): State<Arc<Dns>>, Path(host): Path<String>) -> Json<Value> {
    let name = fqdn(&host);
    let ips: Vec<String> = dns.read(|z| {
        let mut ips: Vec<String> = z
            .lookup(&name)
            .unwrap_or(&[])
            .iter()
            .filter_map(|r| match r {
                Rec::A(ip) => Some(ip.to_string()),
                Rec::Aaaa(ip) => Some(ip.to_string()),
                _ => None,
            })
            .collect();
        ips.sort();
        ips.dedup();
        ips
    });
    if ips.is_empty() {
        return Json(json!([{"host": "", "ip": ""}]));
    }
    Json(Value::Array(ips.into_iter().map(|ip| json!({"host": name, "ip": ip})).collect()))
}

async fn services(State(dns): State<Arc<Dns>>, Path(service): Path<String>) -> Json<Value> {
    let name = fqdn(&service);
    let out: Vec<Value> = dns.read(|z| {
        let mut srvs: Vec<(String, u16)> = z
            .lookup(&name)
            .unwrap_or(&[])
            .iter()
            .filter_map(|r| match r {
                Rec::Srv { port, target } => Some((target.clone(), *port)),
                _ => None,
            })
            .collect();
        srvs.sort();
        srvs.dedup();
        let mut out = Vec::new();
        for (target, port) in srvs {
            for r in z.lookup(&target).unwrap_or(&[]) {
                let ip = match r {
                    Rec::A(ip) => ip.to_string(),
                    Rec::Aaaa(ip) => ip.to_string(),
                    _ => continue,
                };
                let v = json!({"service": name, "host": target, "ip": ip, "port": port.to_string()});
                if !out.contains(&v) {
                    out.push(v);
                }
            }
        }
        out
    });
    if out.is_empty() {
        return Json(json!([{"service": "", "host": "", "ip": "", "port": ""}]));
    }
    Json(Value::Array(out))
}

async fn enumerate(State(dns): State<Arc<Dns>>) -> Json<Value> {
    let tasks: Vec<Value> = dns.read(|z| {
        let mut tasks: Vec<(&model::TaskId, &Vec<(String, Rec)>)> = z.task_records().collect();
        tasks.sort_by(|a, b| a.0.cmp(b.0));
        tasks
            .into_iter()
            .map(|(id, recs)| {
                let name = recs.first().map(|(owner, _)| owner.split('.').next().unwrap_or_default().to_string());
                let records: Vec<Value> = recs
                    .iter()
                    .map(|(owner, r)| {
                        let (host, rtype) = match r {
                            Rec::A(ip) => (ip.to_string(), "A"),
                            Rec::Aaaa(ip) => (ip.to_string(), "AAAA"),
                            Rec::Srv { port, target } => (format!("{target}:{port}"), "SRV"),
                            Rec::Ptr(t) => (t.clone(), "PTR"),
                        };
                        json!({"name": owner, "host": host, "rtype": rtype})
                    })
                    .collect();
                json!({"name": name.unwrap_or_default(), "id": id.as_str(), "records": records})
            })
            .collect()
    });
    Json(json!({"frameworks": [{"name": FRAMEWORK, "tasks": tasks}]}))
}
