//! `/wharf/v1`: what Marathon never had — nodes, task files (logs) and why
//! queued work waits.

use crate::context::ApiContext;
use crate::error::{ApiResult, HttpError};
use crate::query::Params;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderValue;
use axum::response::IntoResponse;
use axum::Json;
use marathon::ApiError;
use model::NodeId;
use serde_json::json;
use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;
use store::{Applied, Command};

pub async fn nodes(State(ctx): State<Arc<ApiContext>>) -> ApiResult {
    let leadership = ctx.store.leadership().borrow().clone();
    let membership = ctx.store.membership();
    let nodes = ctx.store.read(|s| {
        s.nodes
            .values()
            .map(|n| {
                let u = s.usage(n.id);
                json!({
                    "id": n.id.0.to_string(),
                    "hostname": n.hostname,
                    "address": n.advertise,
                    "http": n.http_addr,
                    "rpc": n.rpc_addr,
                    "leader": leadership.leader == Some(n.id),
                    "role": if membership.voters.contains(&n.id) { "voter" } else if membership.learners.contains(&n.id) { "learner" } else { "none" },
                    "status": if !n.is_reachable() { "unreachable" } else if n.draining { "draining" } else { "up" },
                    "draining": n.draining,
                    "attributes": n.attributes,
                    "ports": format!("{}-{}", n.port_range.0, n.port_range.1),
                    "drivers": n.drivers.iter().map(|d| d.name()).collect::<Vec<_>>(),
                    "images": n.images.iter().map(|i| json!({
                        "reference": i.reference,
                        "digest": i.digest,
                        "size": i.size,
                        "lastUsed": marathon::format_time(i.last_used),
                    })).collect::<Vec<_>>(),
                    "resources": {"cpus": n.resources.cpus, "mem": n.resources.mem, "disk": n.resources.disk, "gpus": n.resources.gpus},
                    "used": {"cpus": u.used.cpus, "mem": u.used.mem, "disk": u.used.disk, "gpus": u.used.gpus},
                    "portsTotal": u32::from(n.port_range.1.saturating_sub(n.port_range.0)) + 1,
                    "portsUsed": u.ports_used.len(),
                    "tasks": s.tasks_on(n.id).filter(|t| !t.state.is_terminal()).count(),
                })
            })
            .collect::<Vec<_>>()
    });
    let raft = ctx.store.raft_status();
    Ok(Json(json!({
        "nodes": nodes,
        // Raft as the answering node sees it (the UI's cluster header).
        "raft": {
            "term": raft.term,
            "leader": raft.leader.map(|l| l.0.to_string()),
            "node": ctx.node.0.to_string(),
            "role": raft.role,
            "lastLogIndex": raft.last_log_index,
            "lastAppliedIndex": raft.last_applied_index,
        },
    }))
    .into_response())
}

/// `GET /wharf/v1/queue`: every app `/v2/queue` lists, with the scheduler's
/// reason in words and the per-node tally by Marathon's reason names.
pub async fn queue(State(ctx): State<Arc<ApiContext>>) -> ApiResult {
    let now = ctx.now();
    let body = ctx.store.read(|s| {
        let unplaced: std::collections::BTreeMap<model::AppId, scheduler::Unplaced> =
            crate::info::unplaced(s, now).into_iter().map(|u| (u.app.clone(), u)).collect();
        let items: Vec<_> = s
            .apps
            .values()
            .filter(|a| !a.deleting)
            .filter_map(|a| {
                let active = s.tasks_of(&a.spec.id).filter(|t| t.is_active()).count();
                let missing = (a.spec.instances as usize).checked_sub(active).filter(|m| *m > 0)?;
                let item = match unplaced.get(&a.spec.id) {
                    Some(u) => {
                        let o = u.offers();
                        let declined: serde_json::Map<String, serde_json::Value> = model::DeclineReason::FUNNEL
                            .iter()
                            .filter(|r| o.declined(**r) > 0)
                            .map(|r| (r.marathon_name().to_string(), json!(o.declined(*r))))
                            .collect();
                        let (waiting, until) = match &u.why {
                            scheduler::Waiting::Backoff { until } => ("backoff", Some(marathon::format_time(*until))),
                            scheduler::Waiting::Declined { .. } => ("declined", None),
                        };
                        json!({
                            "app": a.spec.id.as_str(),
                            "count": missing,
                            "waiting": waiting,
                            "delayedUntil": until,
                            "reason": u.explain(now),
                            "nodes": o.processed,
                            "declined": declined,
                        })
                    }
                    // Placeable: launching now, or held until an earlier
                    // deployment step (dependencies) is done.
                    None => json!({
                        "app": a.spec.id.as_str(),
                        "count": missing,
                        "waiting": "launching",
                        "delayedUntil": null,
                        "reason": "being launched, or waiting for an earlier deployment step",
                        "nodes": null,
                        "declined": {},
                    }),
                };
                Some(item)
            })
            .collect();
        json!({ "queue": items })
    });
    Ok(Json(body).into_response())
}

fn parse_node(id: &str) -> Result<NodeId, HttpError> {
    id.parse::<u64>()
        .map(NodeId)
        .map_err(|_| HttpError(ApiError::bad_request(format!("'{id}' is not a node id (see `wharf node ls`)"))))
}

/// `POST /wharf/v1/nodes/{id}/drain`: no new tasks; its tasks move.
pub async fn drain(State(ctx): State<Arc<ApiContext>>, Path(id): Path<String>) -> ApiResult {
    let node = parse_node(&id)?;
    match ctx.store.propose(Command::DrainNode { node, draining: true }).await? {
        Applied::Rejected(r) => Err(r.into()),
        _ => Ok(Json(json!({ "id": id, "draining": true })).into_response()),
    }
}

/// `DELETE /wharf/v1/nodes/{id}`: forget the node; the leader drops it from Raft.
pub async fn remove(State(ctx): State<Arc<ApiContext>>, Path(id): Path<String>) -> ApiResult {
    let node = parse_node(&id)?;
    match ctx.store.propose(Command::RemoveNode { node, at: ctx.now() }).await? {
        Applied::Rejected(r) => Err(r.into()),
        _ => Ok(Json(json!({ "id": id, "removed": true })).into_response()),
    }
}

/// Most bytes returned by one read of a task file.
const MAX_CHUNK: u64 = 1 << 20;

/// `GET /wharf/v1/tasks/{id}/files/{stdout|stderr}?offset=N`: bytes from
/// `offset`; `X-Wharf-Offset` says where the next read starts. Served by the
/// node that runs the task; other nodes proxy to its RPC port (mutual TLS)
/// and pass its answer's status back.
pub async fn task_file(
    State(ctx): State<Arc<ApiContext>>,
    Path((id, name)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    if name != "stdout" && name != "stderr" {
        return Err(HttpError(ApiError::not_found(format!("No file '{name}': use stdout or stderr"))));
    }
    let tid = crate::logs::parse_task(&id)?;
    let offset: u64 = Params::parse(q.as_deref()).get("offset").and_then(|o| o.parse().ok()).unwrap_or(0);
    let node = ctx.store.read(|s| s.tasks.get(&tid).map(|t| t.node).or_else(|| s.run_task_node(&tid)));
    let dir = ctx.sandbox_root.join(tid.as_str());
    match node {
        Some(n) if n != ctx.node => {
            // From the node's RPC port, over mutual TLS: this node checked the
            // caller, that one checks this node.
            let addr = ctx.store.read(|s| s.nodes.get(&n).map(|n| n.rpc_addr.clone())).unwrap_or_default();
            let url = ctx.client.url(&addr, &format!("/wharf/v1/tasks/{id}/files/{name}?offset={offset}"));
            let req = ctx.client.http().get(url);
            let resp =
                req.send().await.map_err(|e| HttpError(ApiError::new(502, format!("node {n} did not answer: {e}"))))?;
            let status = resp.status();
            let next = resp.headers().get("x-wharf-offset").cloned();
            let bytes = resp.bytes().await.map_err(|e| HttpError(ApiError::new(502, e.to_string())))?;
            let mut r = (status, bytes).into_response();
            if let Some(v) = next {
                r.headers_mut().insert("x-wharf-offset", v);
            }
            Ok(r)
        }
        _ if !dir.exists() => Err(HttpError(ApiError::not_found(format!("Task '{id}' has no sandbox on this node")))),
        _ => {
            let path = dir.join(&name);
            let (data, next) = tokio::task::spawn_blocking(move || read_from(&path, offset))
                .await
                .map_err(|e| HttpError(ApiError::new(500, e.to_string())))?
                .map_err(|e| HttpError(ApiError::new(500, format!("cannot read {name}: {e}"))))?;
            let mut r = data.into_response();
            if let Ok(v) = HeaderValue::from_str(&next.to_string()) {
                r.headers_mut().insert("x-wharf-offset", v);
            }
            Ok(r)
        }
    }
}

fn read_from(path: &std::path::Path, offset: u64) -> std::io::Result<(Vec<u8>, u64)> {
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), offset)),
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    let start = offset.min(len);
    f.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::new();
    f.take(MAX_CHUNK).read_to_end(&mut buf)?;
    let next = start + buf.len() as u64;
    Ok((buf, next))
}
