//! Cluster membership: nodes join through any member, the first
//! `max_voters` become Raft voters and later ones learners (full read
//! replicas); the leader can replace a lost voter with a learner; any voter
//! can be asked to campaign (leader hand-over).

use crate::raft_types::Raft;
use crate::{Store, StoreError};
use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use model::NodeId;
use openraft::{BasicNode, ChangeMembers};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use trust::RpcClient;

/// Who votes and who only replicates, as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Membership {
    pub voters: BTreeSet<NodeId>,
    pub learners: BTreeSet<NodeId>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct JoinRequest {
    id: u64,
    addr: String,
}

#[derive(Debug, Serialize, Deserialize)]
enum JoinResult {
    Joined { voter: bool },
    NotLeader { leader: Option<String> },
    Failed(String),
}

#[derive(Clone)]
struct RpcState {
    raft: Raft,
    max_voters: usize,
    /// One join at a time: Raft allows one membership change in flight, and
    /// nodes that start together (a new cluster, `cluster up`) join together.
    joining: Arc<tokio::sync::Mutex<()>>,
    client: RpcClient,
}

pub fn router(raft: Raft, max_voters: usize, client: RpcClient) -> Router {
    Router::new()
        .route("/cluster/join", post(join))
        .route("/cluster/elect", post(elect))
        .route("/cluster/abdicate", post(abdicate_rpc))
        .with_state(RpcState { raft, max_voters, joining: Arc::default(), client })
}

fn membership_of(raft: &Raft) -> Membership {
    let m = raft.metrics().borrow().membership_config.clone();
    let voters: BTreeSet<NodeId> = m.membership().voter_ids().map(NodeId).collect();
    let learners = m.membership().learner_ids().map(NodeId).collect();
    Membership { voters, learners }
}

/// On the leader: adds the node as a learner (waiting until it caught up),
/// then makes it a voter while there are fewer than `max_voters`.
/// Another membership change is still in flight; try again shortly.
struct InProgress;

fn in_progress(e: &openraft::error::RaftError<u64, openraft::error::ClientWriteError<u64, BasicNode>>) -> bool {
    matches!(
        e.api_error(),
        Some(openraft::error::ClientWriteError::ChangeMembershipError(
            openraft::error::ChangeMembershipError::InProgress(_)
        ))
    )
}

async fn add_member(raft: &Raft, max_voters: usize, req: JoinRequest) -> Result<JoinResult, InProgress> {
    let current = membership_of(raft);
    let known = current.voters.contains(&NodeId(req.id)) || current.learners.contains(&NodeId(req.id));
    if !known {
        if let Err(e) = raft.add_learner(req.id, BasicNode { addr: req.addr.clone() }, true).await {
            if in_progress(&e) {
                return Err(InProgress);
            }
            return Ok(match e.forward_to_leader() {
                Some(f) => JoinResult::NotLeader { leader: f.leader_node.as_ref().map(|n| n.addr.clone()) },
                None => JoinResult::Failed(e.to_string()),
            });
        }
    }
    let m = membership_of(raft);
    if m.voters.contains(&NodeId(req.id)) {
        return Ok(JoinResult::Joined { voter: true });
    }
    if m.voters.len() < max_voters {
        let add: BTreeSet<u64> = [req.id].into();
        if let Err(e) = raft.change_membership(ChangeMembers::AddVoterIds(add), true).await {
            if in_progress(&e) {
                return Err(InProgress);
            }
            return Ok(JoinResult::Failed(e.to_string()));
        }
        return Ok(JoinResult::Joined { voter: true });
    }
    Ok(JoinResult::Joined { voter: false })
}

async fn join(State(st): State<RpcState>, Json(req): Json<JoinRequest>) -> Json<JoinResult> {
    let leader = st.raft.current_leader().await;
    let me = st.raft.metrics().borrow().id;
    if leader != Some(me) {
        let addr = leader.and_then(|l| {
            st.raft.metrics().borrow().membership_config.membership().get_node(&l).map(|n| n.addr.clone())
        });
        return Json(JoinResult::NotLeader { leader: addr });
    }
    let _one_at_a_time = st.joining.lock().await;
    // Another change (a voter replaced by the liveness monitor) may still be
    // in flight: wait for it rather than refuse the new node.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match add_member(&st.raft, st.max_voters, req.clone()).await {
            Ok(answer) => return Json(answer),
            Err(InProgress) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(InProgress) => {
                return Json(JoinResult::Failed("another membership change is still in progress; try again".into()))
            }
        }
    }
}

async fn elect(State(st): State<RpcState>) -> Json<bool> {
    Json(st.raft.trigger().elect().await.is_ok())
}

async fn abdicate_rpc(State(st): State<RpcState>) -> Json<bool> {
    Json(step_down(&st.raft, &st.client).await)
}

/// On the leader: stop heartbeating and campaigning, so the followers'
/// leader leases lapse and one of them wins an election (asked directly to
/// campaign, and by its own timer otherwise); then resume. openraft 0.9
/// has no leadership transfer, so this is the step-down.
async fn step_down(raft: &Raft, client: &RpcClient) -> bool {
    let me = raft.metrics().borrow().id;
    if raft.current_leader().await != Some(me) {
        return false;
    }
    let others: Vec<String> = {
        let m = raft.metrics().borrow().membership_config.clone();
        m.membership()
            .voter_ids()
            .filter(|id| *id != me)
            .filter_map(|id| m.membership().get_node(&id).map(|n| n.addr.clone()))
            .collect()
    };
    if others.is_empty() {
        return false;
    }
    raft.runtime_config().heartbeat(false);
    raft.runtime_config().elect(false);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut moved = false;
    while tokio::time::Instant::now() < deadline {
        for addr in &others {
            let _ = client.http().post(client.url(addr, "/cluster/elect")).timeout(Duration::from_secs(1)).send().await;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        if raft.current_leader().await.is_some_and(|l| l != me) {
            moved = true;
            break;
        }
    }
    raft.runtime_config().heartbeat(true);
    raft.runtime_config().elect(true);
    moved
}

impl Store {
    /// Joins a running cluster through any member's RPC address (`seeds`),
    /// following redirects to the leader. Returns whether this node votes.
    pub async fn join(&self, seeds: &[String]) -> Result<bool, StoreError> {
        let req = JoinRequest { id: self.node_id.0, addr: self.rpc_advertise.clone() };
        let mut last_err = String::from("no seed given");
        let mut targets: Vec<String> = seeds.to_vec();
        for _ in 0..(seeds.len() * 4).max(4) {
            let Some(addr) = targets.first().cloned() else { break };
            targets.rotate_left(1);
            let resp = self
                .client
                .http()
                .post(self.client.url(&addr, "/cluster/join"))
                .timeout(Duration::from_secs(30))
                .json(&req)
                .send()
                .await;
            match resp {
                Ok(r) => match r.json::<JoinResult>().await {
                    Ok(JoinResult::Joined { voter }) => return Ok(voter),
                    Ok(JoinResult::NotLeader { leader: Some(l) }) => targets.insert(0, l),
                    Ok(JoinResult::NotLeader { leader: None }) => {
                        last_err = format!("{addr} knows no leader yet");
                        tokio::time::sleep(Duration::from_millis(300)).await;
                    }
                    Ok(JoinResult::Failed(e)) => last_err = e,
                    Err(e) => last_err = e.to_string(),
                },
                Err(e) => {
                    last_err = e.to_string();
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            }
        }
        Err(StoreError::Forward { addr: seeds.join(","), reason: last_err })
    }

    pub fn membership(&self) -> Membership {
        membership_of(&self.raft)
    }

    /// Leader only: replaces voter `lost` by learner `with`.
    pub async fn replace_voter(&self, lost: NodeId, with: NodeId) -> Result<(), StoreError> {
        let m = self.membership();
        let mut voters: BTreeSet<u64> = m.voters.iter().map(|n| n.0).collect();
        voters.remove(&lost.0);
        voters.insert(with.0);
        self.raft
            .change_membership(ChangeMembers::ReplaceAllVoters(voters), true)
            .await
            .map(|_| ())
            .map_err(|e| StoreError::Raft(e.to_string()))
    }

    /// Leader only: removes a node from Raft entirely.
    pub async fn remove_member(&self, id: NodeId) -> Result<(), StoreError> {
        let m = self.membership();
        let ids: BTreeSet<u64> = [id.0].into();
        let change = if m.voters.contains(&id) {
            ChangeMembers::RemoveVoters(ids)
        } else if m.learners.contains(&id) {
            ChangeMembers::RemoveNodes(ids)
        } else {
            return Ok(());
        };
        self.raft.change_membership(change, false).await.map(|_| ()).map_err(|e| StoreError::Raft(e.to_string()))
    }

    /// Makes the current leader step down (through it, wherever this runs);
    /// true once another node leads.
    pub async fn abdicate(&self) -> Result<bool, StoreError> {
        if self.is_leader() {
            return Ok(step_down(&self.raft, &self.client).await);
        }
        let addr = self.leadership().borrow().leader_rpc.clone().ok_or(StoreError::NoLeader)?;
        let r = self
            .client
            .http()
            .post(self.client.url(&addr, "/cluster/abdicate"))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| StoreError::Forward { addr: addr.clone(), reason: e.to_string() })?;
        r.json::<bool>().await.map_err(|e| StoreError::Forward { addr, reason: e.to_string() })
    }

    /// Whether this node has ever been part of a cluster (then it must
    /// never bootstrap or join again).
    pub async fn is_initialized(&self) -> Result<bool, StoreError> {
        self.raft.is_initialized().await.map_err(|e| StoreError::Raft(e.to_string()))
    }
}
