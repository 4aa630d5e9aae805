//! `GET /wharf/v1/tasks/{id}/logs?stream=stdout|stderr&follow=true&tail=N`:
//! a task's output as a plain-text stream, read across its rotated files
//! (`logfiles`). Served by the node that runs the task; any other node
//! streams it through from there. With `follow` the answer stays open and
//! carries new output as the task writes it (woken by inotify on the
//! sandbox, not by polling) until the task has ended and its output is read.

use crate::context::ApiContext;
use crate::error::{ApiResult, HttpError};
use crate::query::Params;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use logfiles::{Cursor, DirWatch};
use marathon::ApiError;
use model::TaskId;
use std::sync::Arc;
use std::time::Duration;

/// Set on a request one node passes to another, so it is never passed on again.
const FORWARDED: &str = "x-wharf-forwarded";
/// Bytes read per step.
const CHUNK: usize = 256 * 1024;
/// While following, how often to look again whether the task has ended
/// when its sandbox does not change (the end is in the store, not in the
/// sandbox).
const END_CHECK: Duration = Duration::from_secs(1);

struct LogQuery {
    stream: &'static str,
    follow: bool,
    tail: Option<usize>,
}

fn parse_query(q: Option<&str>) -> Result<LogQuery, HttpError> {
    let p = Params::parse(q);
    let stream = match p.get("stream") {
        None | Some("stdout") => "stdout",
        Some("stderr") => "stderr",
        Some(other) => {
            return Err(HttpError(ApiError::bad_request(format!(
                "Query parameter 'stream' must be stdout or stderr, got '{other}'"
            ))))
        }
    };
    let tail = match p.get("tail") {
        None => None,
        Some(t) => Some(t.parse::<usize>().map_err(|_| {
            HttpError(ApiError::bad_request(format!(
                "Query parameter 'tail' must be a number of lines (0 or more), got '{t}'"
            )))
        })?),
    };
    Ok(LogQuery { stream, follow: p.flag("follow")?, tail })
}

pub async fn task_logs(
    State(ctx): State<Arc<ApiContext>>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> ApiResult {
    let query = parse_query(q.as_deref())?;
    let tid = parse_task(&id)?;
    // A job run's task is expunged once it ended; its run remembers the node.
    let node = ctx.store.read(|s| s.tasks.get(&tid).map(|t| t.node).or_else(|| s.run_task_node(&tid)));
    let dir = ctx.sandbox_root.join(tid.as_str());
    match node {
        Some(n) if n != ctx.node && !headers.contains_key(FORWARDED) => {
            let addr = ctx.store.read(|s| s.nodes.get(&n).map(|n| n.rpc_addr.clone())).unwrap_or_default();
            let url = ctx.client.url(&addr, &format!("/wharf/v1/tasks/{id}/logs?{}", q.unwrap_or_default()));
            forward(&ctx, &url, n).await
        }
        None if !dir.exists() => Err(HttpError(ApiError::not_found(format!(
            "Task '{id}' does not exist (or it ended and its sandbox was removed)"
        )))),
        _ if !dir.exists() => Err(HttpError(ApiError::not_found(format!("Task '{id}' has no sandbox on this node")))),
        _ => local(ctx, tid, dir, query).await,
    }
}

/// A task id that names a sandbox directory: the id's form, and no path
/// separator (an encoded `%2F` would otherwise reach outside the sandboxes).
pub(crate) fn parse_task(id: &str) -> Result<TaskId, HttpError> {
    if id.contains('/') || id.starts_with('.') {
        return Err(HttpError(ApiError::bad_request(format!("'{id}' is not a task id"))));
    }
    TaskId::parse(id).map_err(|e| HttpError(ApiError::bad_request(e.to_string())))
}

/// Streams the owning node's answer through as it comes, from its RPC port
/// (mutual TLS: this node already checked the caller; that node checks that
/// this one is a member).
async fn forward(ctx: &ApiContext, url: &str, node: model::NodeId) -> ApiResult {
    let resp =
        ctx.client.http().get(url).header(FORWARDED, "1").send().await.map_err(|e| {
            HttpError(ApiError::new(502, format!("node {node} (which runs the task) did not answer: {e}")))
        })?;
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let content_type = resp.headers().get(header::CONTENT_TYPE).cloned();
    let mut r = Response::new(Body::from_stream(resp.bytes_stream()));
    *r.status_mut() = status;
    if let Some(ct) = content_type {
        r.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    Ok(r)
}

async fn local(ctx: Arc<ApiContext>, task: TaskId, dir: std::path::PathBuf, q: LogQuery) -> ApiResult {
    let io_error =
        |e: std::io::Error| HttpError(ApiError::new(500, format!("cannot read the task's {}: {e}", q.stream)));
    // Watch first, then read: a change in between still wakes the follower.
    let watch = if q.follow { Some(DirWatch::new(&dir).map_err(io_error)?) } else { None };
    let (stream, tail) = (q.stream, q.tail);
    let cursor = tokio::task::spawn_blocking(move || match tail {
        Some(n) => Cursor::from_tail(&dir, stream, n),
        None => Cursor::from_start(&dir, stream),
    })
    .await
    .map_err(|e| HttpError(ApiError::new(500, e.to_string())))?
    .map_err(io_error)?;
    let state = Follow { ctx, task, cursor: Some(cursor), watch, ending: false };
    let body = Body::from_stream(futures::stream::unfold(state, next_chunk));
    let mut r = body.into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r.headers_mut().insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    Ok(r)
}

struct Follow {
    ctx: Arc<ApiContext>,
    task: TaskId,
    cursor: Option<Cursor>,
    /// Present while following.
    watch: Option<DirWatch>,
    /// The task has ended: what is left is read, then the stream ends.
    ending: bool,
}

async fn next_chunk(mut f: Follow) -> Option<(Result<Bytes, std::io::Error>, Follow)> {
    loop {
        let mut cursor = f.cursor.take()?;
        let (cursor, read) = tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; CHUNK];
            let r = cursor.read(&mut buf).map(|n| {
                buf.truncate(n);
                buf
            });
            (cursor, r)
        })
        .await
        .ok()?;
        match read {
            Err(e) => return Some((Err(e), f)),
            Ok(buf) if !buf.is_empty() => {
                f.cursor = Some(cursor);
                return Some((Ok(Bytes::from(buf)), f));
            }
            Ok(_) => {}
        }
        let watch = f.watch.as_ref()?;
        if f.ending {
            return None;
        }
        f.cursor = Some(cursor);
        let ended = f.ctx.store.read(|s| s.tasks.get(&f.task).is_none_or(|t| t.state.is_terminal()));
        if ended {
            // Its output was complete in the sandbox before the end was
            // reported: one more read gets the rest.
            f.ending = true;
            continue;
        }
        tokio::select! {
            r = watch.changed() => {
                if r.is_err() {
                    tokio::time::sleep(END_CHECK).await;
                }
            }
            _ = tokio::time::sleep(END_CHECK) => {}
        }
    }
}
