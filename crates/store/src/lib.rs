//! The cluster's replicated state: openraft over redb.
//!
//! Owns: the Raft log (`log_store`, its entries in the log file `wal`), the state machine and its snapshots
//! (`state_machine`), the pure transition function (`apply`), the change feed
//! (`watch`) and the node-to-node RPC (`network`).
//!
//! Invariants: this is the only crate that mutates `ClusterState`, and only
//! through `apply` on committed commands. No openraft type leaves this crate:
//! callers see `Store::propose(Command) -> Result<Applied, StoreError>`,
//! `Store::read`, `Store::subscribe` and `Store::leadership`. `propose`
//! returns only after the command is committed (durable on a quorum) and
//! applied locally, so a reader on the same node sees its own write.

// openraft's trait methods must return its `StorageError`, which is large;
// boxing it inside our helpers would only move the cost.
#![allow(clippy::result_large_err)]

pub mod apply;
mod cadence;
pub mod command;
pub mod effect;
pub mod endpoints;
pub mod keyring;
mod log_store;
mod membership;
pub mod metrics;
pub mod network;
mod proposer;
mod raft_types;
mod rpc_stream;
mod snapshot_file;
mod state_machine;
mod wal;
pub mod watch;

pub use command::{AppPut, Applied, Command, DropReason, Dropped, Precondition, Rejection, RunStart};
pub use effect::Effect;
pub use endpoints::{EndpointStream, EndpointUpdate};
pub use keyring::{DataKey, KeyError, Keyring};
pub use membership::Membership;
pub use metrics::{RaftStatus, StoreMetrics};
pub use state_machine::{SnapshotError, SNAPSHOT_FORMAT};
pub use watch::{Change, Subscription, Update};

use crate::log_store::LogStore;
use crate::network::{ForwardResult, Network};
use crate::proposer::{ProposeError, Proposer};
use crate::raft_types::Raft;
use crate::state_machine::{SharedState, StateMachine};
use crate::watch::Feed;
use model::{ClusterState, NodeId};
use openraft::error::RaftError;
use openraft::BasicNode;
use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch as tokio_watch;
use trust::RpcClient;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot use data directory {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error("cannot open the state database: {0}")]
    Database(#[from] redb::Error),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("cannot build the client for node-to-node calls: {0}")]
    RpcClient(#[source] trust::TrustError),
    #[error("raft: {0}")]
    Raft(String),
    #[error("no leader elected yet; try again")]
    NoLeader,
    #[error("forwarding to the leader at {addr} failed: {reason}")]
    Forward { addr: String, reason: String },
    #[error("cluster data key: {0}")]
    Keyring(#[from] KeyError),
    #[error(transparent)]
    RaftLog(#[from] wal::WalError),
}

/// Where this node stands with the cluster's data key after start.
#[derive(Debug)]
pub enum KeyStatus {
    /// Read from this node's data directory.
    Held,
    /// Made now (this node is the cluster's only member); with autolock,
    /// the unlock key to give the operator once.
    Created { unlock_key: Option<zeroize::Zeroizing<String>> },
    /// Autolocked: waits for `wharf unlock`.
    Locked,
    /// Being fetched from the other members in the background.
    Fetching,
}

/// Who leads, as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Leadership {
    pub leader: Option<NodeId>,
    /// The leader's RPC address.
    pub leader_rpc: Option<String>,
    pub is_self: bool,
    pub term: u64,
    /// The Raft voters, in id order (DNS's `masterN` records follow them,
    /// so a promotion shows without waiting for another change).
    pub voters: Vec<NodeId>,
}

pub struct StoreConfig {
    pub data_dir: PathBuf,
    /// RPC address other nodes use to reach this one (`host:port`).
    pub rpc_advertise: String,
    pub heartbeat_ms: u64,
    pub election_timeout_ms: (u64, u64),
    /// Nodes beyond this many join as learners (full read replicas).
    pub max_voters: usize,
    /// Log entries after which a snapshot is built (and the log before it
    /// purged) whatever their size: bounds a restart's replay.
    pub snapshot_every: u64,
    /// A snapshot is also built once the log since the last one holds as
    /// many bytes as that snapshot, and at least this many (`cadence`).
    pub snapshot_min_log_bytes: u64,
    /// The client for calls to other nodes (mTLS with this node's
    /// identity); `None`: plain HTTP from the advertised address (tests).
    pub rpc_client: Option<RpcClient>,
}

impl StoreConfig {
    pub fn new(data_dir: PathBuf, rpc_advertise: String) -> StoreConfig {
        StoreConfig {
            data_dir,
            rpc_advertise,
            heartbeat_ms: 100,
            election_timeout_ms: (400, 800),
            max_voters: 3,
            // etcd's default count: a few seconds of small writes at full
            // speed, so busy clusters snapshot by size instead.
            snapshot_every: 100_000,
            snapshot_min_log_bytes: 64 << 20,
            rpc_client: None,
        }
    }
}

pub struct Store {
    raft: Raft,
    proposer: Proposer,
    state: SharedState,
    feed: Feed,
    node_id: NodeId,
    rpc_advertise: String,
    client: RpcClient,
    leadership: tokio_watch::Receiver<Leadership>,
    max_voters: usize,
    metrics: StoreMetrics,
    committed: Arc<std::sync::Mutex<Option<Option<raft_types::LogId>>>>,
    keyring: Arc<Keyring>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::DataDir { path: path.to_path_buf(), source }
}

/// This node's id, as `Store::open` on `dir` will use it: read from the
/// state directory, or made and stored there (the node needs it before the
/// store opens, to get its certificate).
pub fn node_id_in(dir: &Path) -> Result<NodeId, StoreError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    load_or_create_node_id(dir).map(NodeId)
}

/// The node id lives beside the database so a restarted node keeps it.
fn load_or_create_node_id(dir: &Path) -> Result<u64, StoreError> {
    let path = dir.join("node-id");
    if let Ok(s) = std::fs::read_to_string(&path) {
        if let Ok(id) = s.trim().parse::<u64>() {
            return Ok(id);
        }
    }
    // Random, so nodes that join later never collide; kept below 2^53 so
    // JSON clients read it exactly.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0));
    h.write_u32(std::process::id());
    let id = (h.finish() & ((1 << 53) - 1)).max(1);
    let tmp = dir.join("node-id.tmp");
    std::fs::write(&tmp, id.to_string()).map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
    Ok(id)
}

impl Store {
    pub async fn open(cfg: StoreConfig) -> Result<Store, StoreError> {
        std::fs::create_dir_all(&cfg.data_dir).map_err(io_err(&cfg.data_dir))?;
        let node_id = load_or_create_node_id(&cfg.data_dir)?;
        let keyring = Arc::new(Keyring::open(&cfg.data_dir)?);
        let db = Arc::new(redb::Database::create(cfg.data_dir.join("state.redb")).map_err(redb::Error::from)?);
        let state: SharedState = Arc::new(arc_swap::ArcSwap::from_pointee(ClusterState::default()));
        let feed = Feed::new(state.clone());
        let metrics = StoreMetrics::default();
        let log = LogStore::new(db.clone(), &cfg.data_dir.join("raft-log"), node_id, metrics.clone())?;
        let durable = log.durable();
        let log_size = log.size();
        let durable_gate = durable.clone();
        let committed = log.committed_handle();
        let sm = StateMachine::open(db, cfg.data_dir.join("snapshots"), state.clone(), feed.clone(), metrics.clone())?;
        let config = openraft::Config {
            cluster_name: "wharf".into(),
            heartbeat_interval: cfg.heartbeat_ms,
            election_timeout_min: cfg.election_timeout_ms.0,
            election_timeout_max: cfg.election_timeout_ms.1,
            // openraft 0.9 bounds one AppendEntries by the heartbeat interval:
            // a large batch to a follower that fell behind on a slow disk
            // times out again and again and it never catches up. An entry
            // may be a batch of up to `proposer::MAX_BATCH` writes, so this
            // keeps one AppendEntries to a few hundred commands.
            max_payload_entries: 8,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(cfg.snapshot_every),
            ..Default::default()
        }
        .validate()
        .map_err(|e| StoreError::Raft(e.to_string()))?;
        let client = match cfg.rpc_client {
            Some(c) => c,
            None => {
                let local_ip = cfg.rpc_advertise.rsplit_once(':').and_then(|(h, _)| h.parse::<std::net::IpAddr>().ok());
                RpcClient::plain(local_ip).map_err(StoreError::RpcClient)?
            }
        };
        let raft =
            Raft::new(node_id, Arc::new(config), Network::new(client.clone(), metrics.clone(), durable), log, sm)
                .await
                .map_err(|e| StoreError::Raft(e.to_string()))?;
        cadence::spawn(raft.clone(), log_size, metrics.clone(), cfg.snapshot_min_log_bytes);
        let leadership = spawn_leadership_watch(&raft, node_id, durable_gate);
        let proposer = Proposer::start(raft.clone());
        Ok(Store {
            raft,
            proposer,
            state,
            feed,
            node_id: NodeId(node_id),
            rpc_advertise: cfg.rpc_advertise,
            client,
            leadership,
            max_voters: cfg.max_voters,
            metrics,
            committed,
            keyring,
        })
    }

    /// Makes a brand-new node a one-member cluster. A node that has any Raft
    /// state (vote, log) is never re-initialised.
    pub async fn bootstrap_if_new(&self) -> Result<bool, StoreError> {
        let initialized = self.raft.is_initialized().await.map_err(|e| StoreError::Raft(e.to_string()))?;
        if initialized {
            return Ok(false);
        }
        let mut members = BTreeMap::new();
        members.insert(self.node_id.0, BasicNode { addr: self.rpc_advertise.clone() });
        match self.raft.initialize(members).await {
            Ok(()) => Ok(true),
            Err(RaftError::APIError(openraft::error::InitializeError::NotAllowed(_))) => Ok(false),
            Err(e) => Err(StoreError::Raft(e.to_string())),
        }
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The client for node-to-node calls (mTLS, from this node's address).
    pub fn rpc_client(&self) -> RpcClient {
        self.client.clone()
    }

    /// Routes for the cluster RPC port.
    pub fn rpc_router(&self) -> axum::Router {
        network::router(
            self.raft.clone(),
            self.proposer.clone(),
            self.max_voters,
            self.client.clone(),
            self.metrics.clone(),
        )
        .merge(keyring::router(self.raft.clone(), self.keyring.clone()))
    }

    /// This node's hold on the cluster's data key (seals and opens secrets).
    pub fn keyring(&self) -> &Arc<Keyring> {
        &self.keyring
    }

    /// After bootstrap or join: reads this node's data key, makes it when
    /// this node is the cluster's only member, or fetches it from the other
    /// members in the background (`seeds` first) until one gives it.
    pub fn ensure_data_key(&self, seeds: &[String], autolock: bool) -> Result<KeyStatus, StoreError> {
        match self.keyring.get() {
            Ok(_) => return Ok(KeyStatus::Held),
            Err(KeyError::Locked) => return Ok(KeyStatus::Locked),
            Err(_) => {}
        }
        let members: Vec<(u64, String)> = {
            let m = self.raft.metrics().borrow().membership_config.clone();
            m.membership().nodes().map(|(id, n)| (*id, n.addr.clone())).collect()
        };
        if members.iter().all(|(id, _)| *id == self.node_id.0) && seeds.is_empty() {
            let unlock_key = self.keyring.install(DataKey::generate()?, autolock)?;
            return Ok(KeyStatus::Created { unlock_key });
        }
        let mut addrs: Vec<String> = seeds.to_vec();
        addrs.extend(members.into_iter().filter(|(id, _)| *id != self.node_id.0).map(|(_, a)| a));
        let (client, ring, me) = (self.client.clone(), self.keyring.clone(), self.node_id.0);
        tokio::spawn(async move {
            loop {
                match keyring::fetch(&client, &ring, me, &addrs, Duration::from_secs(60), autolock).await {
                    Ok(unlock_key) => {
                        tracing::info!("received the cluster data key");
                        if let Some(k) = unlock_key {
                            // Shown once, on stdout only (never in the log).
                            println!(
                                "Autolock is on. This node's unlock key (shown only now; `wharf unlock KEY` after every restart):\n{}",
                                k.as_str()
                            );
                        }
                        return;
                    }
                    Err(e) => tracing::warn!(reason = %e, "no member gave this node the cluster data key yet"),
                }
            }
        });
        Ok(KeyStatus::Fetching)
    }

    /// Commits `cmd` (forwarding to the leader if needed) and returns its
    /// result once it is durable and applied on this node.
    pub async fn propose(&self, cmd: Command) -> Result<Applied, StoreError> {
        let started = std::time::Instant::now();
        let result = self.propose_once(cmd).await;
        let outcome = match &result {
            Ok(Applied::Rejected(_)) => "rejected",
            Ok(_) => "applied",
            Err(_) => "error",
        };
        self.metrics.observe(outcome, started.elapsed().as_secs_f64());
        result
    }

    /// Returns once this replica holds every write the cluster committed
    /// before the call: an empty write, committed through the leader and
    /// applied here (a read barrier). For what acts on the replica after a
    /// restart: the state restored from disk may trail what this node had
    /// applied before it stopped, by the commits it had not yet recorded.
    pub async fn barrier(&self) -> Result<(), StoreError> {
        self.propose(Command::Batch(Vec::new())).await.map(|_| ())
    }

    /// The store's series for `/metrics` (proposals and their latency).
    pub fn metrics(&self) -> &StoreMetrics {
        &self.metrics
    }

    /// Raft's term, leader, role and log indexes as this node sees them now.
    pub fn raft_status(&self) -> RaftStatus {
        let m = self.raft.metrics().borrow().clone();
        let role = match m.state {
            openraft::ServerState::Leader => "leader",
            openraft::ServerState::Candidate => "candidate",
            openraft::ServerState::Learner => "learner",
            openraft::ServerState::Follower => "follower",
            openraft::ServerState::Shutdown => "shutdown",
        };
        RaftStatus {
            term: m.current_term,
            leader: m.current_leader.map(NodeId),
            role,
            last_log_index: m.last_log_index,
            committed_index: self.committed.lock().ok().and_then(|c| c.flatten()).map(|l| l.index),
            last_applied_index: m.last_applied.map(|l| l.index),
            snapshot_index: m.snapshot.map(|l| l.index),
            purged_index: m.purged.map(|l| l.index),
        }
    }

    async fn propose_once(&self, cmd: Command) -> Result<Applied, StoreError> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let leader_addr = match self.proposer.write(cmd.clone()).await {
                Ok((applied, _)) => return Ok(applied),
                Err(ProposeError::NotLeader(addr)) => addr,
                Err(ProposeError::Failed(e)) => return Err(StoreError::Raft(e)),
            };
            if let Some(addr) = leader_addr {
                match network::forward(&self.client, &addr, &cmd).await {
                    Ok(ForwardResult::Applied(a, index)) => {
                        self.wait_applied_locally(index).await;
                        return Ok(a);
                    }
                    Ok(ForwardResult::Failed(reason)) => return Err(StoreError::Forward { addr, reason }),
                    Ok(ForwardResult::NotLeader { .. }) => {}
                    Err(reason) if tokio::time::Instant::now() >= deadline => {
                        return Err(StoreError::Forward { addr, reason })
                    }
                    Err(_) => {}
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(StoreError::NoLeader);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// After a forwarded write, waits until this replica has caught up with
    /// the leader's commit, so the writer reads its own write here.
    async fn wait_applied_locally(&self, index: u64) {
        let _ =
            self.raft.wait(Some(Duration::from_secs(2))).applied_index_at_least(Some(index), "read your write").await;
    }

    /// Reads the applied state (an immutable snapshot: never blocks a write).
    pub fn read<R>(&self, f: impl FnOnce(&ClusterState) -> R) -> R {
        f(&self.state.load())
    }

    /// The applied state as an immutable snapshot to keep or move to
    /// another thread (a long computation, a render).
    pub fn snapshot(&self) -> Arc<ClusterState> {
        self.state.load_full()
    }

    /// Subscribe first, then read the state: no change falls in between.
    pub fn subscribe(&self) -> Subscription {
        self.feed.subscribe()
    }

    /// The endpoint stream (see [`endpoints`]), starting with a `Reset`
    /// from the current state.
    pub fn endpoints(&self) -> EndpointStream {
        let feed = self.subscribe();
        EndpointStream::new(feed, self.snapshot())
    }

    pub fn leadership(&self) -> tokio_watch::Receiver<Leadership> {
        self.leadership.clone()
    }

    pub fn is_leader(&self) -> bool {
        self.leadership.borrow().is_self
    }

    pub async fn shutdown(&self) {
        let _ = self.raft.shutdown().await;
    }
}

/// Follows openraft's metrics: who leads, for `Store::leadership`, and the
/// voters, for the commit gates (`log_store::Durable`).
fn spawn_leadership_watch(raft: &Raft, me: u64, durable: log_store::Durable) -> tokio_watch::Receiver<Leadership> {
    let (tx, rx) = tokio_watch::channel(Leadership::default());
    let mut metrics = raft.metrics();
    tokio::spawn(async move {
        loop {
            let l = {
                let m = metrics.borrow_and_update();
                let membership = m.membership_config.membership();
                let single = membership.get_joint_config().len() == 1;
                durable.set_voters(*m.membership_config.log_id(), single.then(|| membership.voter_ids().collect()));
                let leader_rpc = m
                    .current_leader
                    .and_then(|id| m.membership_config.membership().get_node(&id).map(|n| n.addr.clone()));
                Leadership {
                    leader: m.current_leader.map(NodeId),
                    leader_rpc,
                    is_self: m.current_leader == Some(me),
                    term: m.current_term,
                    voters: m.membership_config.membership().voter_ids().map(NodeId).collect(),
                }
            };
            tx.send_if_modified(|cur| {
                if *cur != l {
                    *cur = l;
                    true
                } else {
                    false
                }
            });
            if metrics.changed().await.is_err() {
                return;
            }
        }
    });
    rx
}
