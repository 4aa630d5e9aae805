//! Raft RPCs between nodes on the cluster RPC port, bounded in size and time:
//! AppendEntries on one upgraded connection per follower (`rpc_stream`),
//! falling back to HTTP/1.1 POSTs with JSON bodies for a peer that does not
//! serve it; votes and snapshots as POSTs. Also carries proposals forwarded
//! from a follower to the leader.

use crate::command::{Applied, Command};
use crate::log_store::Durable;
use crate::proposer::{ProposeError, Proposer};
use crate::raft_types::{Raft, TypeConfig};
use crate::rpc_stream::{self, Opened, StreamConn};
use crate::StoreMetrics;
use axum::extract::{DefaultBodyLimit, State};
use axum::routing::{get, post};
use axum::Extension;
use axum::{Json, Router};
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};
use trust::RpcClient;

/// How long a leader keeps POSTing to a peer that did not serve the stream
/// before it asks again (the peer may have been upgraded meanwhile).
const RETRY_STREAM: Duration = Duration::from_secs(30);

/// Largest RPC body accepted (snapshots travel in chunks below this).
pub const MAX_RPC_BODY: usize = 64 * 1024 * 1024;

#[derive(Clone)]
pub struct Network {
    client: RpcClient,
    metrics: StoreMetrics,
    durable: Durable,
}

impl Network {
    /// Outgoing RPCs go through `client` (mTLS with the node's identity,
    /// see `trust::RpcClient`); `durable` is the local log's progress (a
    /// commit index is sent only once the leader's own entries up to it
    /// are on disk, see `log_store`).
    pub(crate) fn new(client: RpcClient, metrics: StoreMetrics, durable: Durable) -> Network {
        Network { client, metrics, durable }
    }
}

pub struct PeerClient {
    client: RpcClient,
    target: u64,
    addr: String,
    metrics: StoreMetrics,
    durable: Durable,
    /// The AppendEntries stream to the peer, once opened.
    stream: Option<StreamConn>,
    /// When the peer last answered that it serves no stream.
    no_stream_since: Option<Instant>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> PeerClient {
        PeerClient {
            client: self.client.clone(),
            target,
            addr: node.addr.clone(),
            metrics: self.metrics.clone(),
            durable: self.durable.clone(),
            stream: None,
            no_stream_since: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct HttpStatus(String);

type AppendResult = Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>>;

impl PeerClient {
    /// The stream to the peer, opened when there is none (or the last one
    /// broke); `None` when the peer serves none.
    async fn stream(&mut self) -> Result<Option<&mut StreamConn>, rpc_stream::StreamError> {
        if self.stream.as_ref().is_some_and(StreamConn::broken) {
            self.stream = None;
        }
        if self.stream.is_none() {
            if self.no_stream_since.is_some_and(|t| t.elapsed() < RETRY_STREAM) {
                return Ok(None);
            }
            match rpc_stream::open(&self.client, &self.addr).await? {
                Opened::Stream(s) => {
                    self.stream = Some(s);
                    self.no_stream_since = None;
                }
                Opened::Unsupported => {
                    tracing::info!(peer = %self.addr, "the peer serves no Raft stream (an older version?): POSTing AppendEntries");
                    self.no_stream_since = Some(Instant::now());
                }
            }
        }
        Ok(self.stream.as_mut())
    }

    /// AppendEntries on the stream, or as a POST to a peer that serves none.
    /// openraft bounds the call in time (and drops it when it runs out,
    /// which leaves the stream `broken`, so the next call opens another). A
    /// stream that failed after earlier calls went through (the peer closed
    /// it, e.g. it restarted) is replaced and the request sent once more:
    /// AppendEntries may be repeated, and reporting the peer unreachable
    /// would hold replication to it back for openraft's backoff (500 ms).
    async fn send_append(&mut self, rpc: &AppendEntriesRequest<TypeConfig>, timeout: Duration) -> AppendResult {
        let unreachable = |e: rpc_stream::StreamError| RPCError::Unreachable(Unreachable::new(&e));
        let target = self.target;
        let body = serde_json::to_vec(rpc).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut retried = false;
        loop {
            let reused = self.stream.as_ref().is_some_and(|s| !s.broken());
            let Some(stream) = self.stream().await.map_err(unreachable)? else {
                return self.call("append", rpc, timeout).await;
            };
            match stream.call(rpc_stream::APPEND, &body).await {
                Ok(answer) => {
                    let res: Result<AppendEntriesResponse<u64>, RaftError<u64>> =
                        serde_json::from_slice(answer).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
                    return res.map_err(|e| RPCError::RemoteError(RemoteError::new(target, e)));
                }
                // The peer read the frame and could not handle it: the
                // stream is still in step, and sending it again won't help.
                Err(e @ rpc_stream::StreamError::Refused(_)) => return Err(RPCError::Network(NetworkError::new(&e))),
                Err(e) => {
                    self.stream = None;
                    if !reused || retried {
                        return Err(unreachable(e));
                    }
                    tracing::debug!(peer = %self.addr, error = %e, "the Raft stream broke; opening another");
                    retried = true;
                }
            }
        }
    }

    async fn call<Req, Resp, E>(
        &self,
        path: &str,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, RPCError<u64, BasicNode, RaftError<u64, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let url = self.client.url(&self.addr, &format!("/raft/{path}"));
        let resp = self
            .client
            .http()
            .post(url)
            .timeout(timeout)
            .json(req)
            .send()
            .await
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
        if !resp.status().is_success() {
            let e = HttpStatus(format!("peer answered {}", resp.status()));
            return Err(RPCError::Network(NetworkError::new(&e)));
        }
        let res: Result<Resp, RaftError<u64, E>> =
            resp.json().await.map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        res.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        let (started, entries) = (std::time::Instant::now(), rpc.entries.len());
        // A follower applies what the leader calls committed: only once a
        // majority holds it on disk (see `log_store::Durable`).
        if let Some(c) = rpc.leader_commit {
            self.durable.wait(c.index).await.map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
        }
        let last = rpc.entries.last().map(|e| e.log_id).or(rpc.prev_log_id);
        let res = self.send_append(&rpc, option.hard_ttl()).await;
        // The follower answers after its fsync: what it now holds on disk
        // counts towards a majority before the leader's own fsync is done.
        match (&res, last) {
            (Ok(AppendEntriesResponse::Success), Some(last)) => self.durable.acked(self.target, last),
            (Ok(AppendEntriesResponse::PartialSuccess(Some(m))), _) => self.durable.acked(self.target, *m),
            _ => {}
        }
        if entries > 0 && res.is_ok() {
            self.metrics.append_rpc_seconds.observe(started.elapsed().as_secs_f64());
            self.metrics.append_rpc_entries.observe(entries as f64);
        }
        res
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<u64>, RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>> {
        self.call("snapshot", &rpc, option.hard_ttl()).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.call("vote", &rpc, option.hard_ttl()).await
    }
}

/// A proposal forwarded to the leader, and its answer.
#[derive(Debug, Serialize, Deserialize)]
pub enum ForwardResult {
    /// Applied on the leader at this log index.
    Applied(Applied, u64),
    /// The receiver is not the leader (any more); try `leader`.
    NotLeader {
        leader: Option<String>,
    },
    Failed(String),
}

pub async fn forward(client: &RpcClient, addr: &str, cmd: &Command) -> Result<ForwardResult, String> {
    let resp = client
        .http()
        .post(client.url(addr, "/raft/propose"))
        .timeout(Duration::from_secs(10))
        .json(cmd)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    resp.json().await.map_err(|e| e.to_string())
}

/// Routes served on the cluster RPC port.
pub(crate) fn router(
    raft: Raft,
    proposer: Proposer,
    max_voters: usize,
    client: RpcClient,
    metrics: StoreMetrics,
) -> Router {
    Router::new()
        .route("/raft/append", post(append))
        .route(rpc_stream::STREAM_PATH, get(rpc_stream::upgrade))
        .route("/raft/vote", post(vote))
        .route("/raft/snapshot", post(snapshot))
        .route("/raft/propose", post(propose))
        .layer(DefaultBodyLimit::max(MAX_RPC_BODY))
        .layer(Extension(metrics))
        .layer(Extension(proposer))
        .with_state(raft.clone())
        .merge(crate::membership::router(raft, max_voters, client))
}

async fn append(
    State(raft): State<Raft>,
    Extension(metrics): Extension<StoreMetrics>,
    Json(req): Json<AppendEntriesRequest<TypeConfig>>,
) -> Json<Result<AppendEntriesResponse<u64>, RaftError<u64>>> {
    let (started, entries) = (std::time::Instant::now(), req.entries.len());
    let res = raft.append_entries(req).await;
    if entries > 0 {
        metrics.append_served_seconds.observe(started.elapsed().as_secs_f64());
    }
    Json(res)
}

async fn vote(
    State(raft): State<Raft>,
    Json(req): Json<VoteRequest<u64>>,
) -> Json<Result<VoteResponse<u64>, RaftError<u64>>> {
    Json(raft.vote(req).await)
}

async fn snapshot(
    State(raft): State<Raft>,
    Json(req): Json<InstallSnapshotRequest<TypeConfig>>,
) -> Json<Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>>> {
    Json(raft.install_snapshot(req).await)
}

/// A follower's write, grouped with the leader's own (see `proposer`).
async fn propose(Extension(proposer): Extension<Proposer>, Json(cmd): Json<Command>) -> Json<ForwardResult> {
    Json(match proposer.write(cmd).await {
        Ok((applied, index)) => ForwardResult::Applied(applied, index),
        Err(ProposeError::NotLeader(leader)) => ForwardResult::NotLeader { leader },
        Err(ProposeError::Failed(e)) => ForwardResult::Failed(e),
    })
}
