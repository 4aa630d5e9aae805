//! Choosing a node and host ports for one new task, with running accounts
//! of what earlier placements in the same plan took.

use crate::constraints;
use model::{AppId, AppSpec, ClusterState, DeclineReason, DriverKind, NodeId, NodeInfo, NodeUsage, OfferSummary, Task};
use rand::Rng;
use std::collections::BTreeMap;

/// Why one node cannot take a task: Marathon's reason and Wharf's detail.
#[derive(Debug, Clone, PartialEq)]
pub struct Decline {
    pub reason: DeclineReason,
    /// For people, e.g. "constraint hostname:Unique not satisfied".
    pub detail: String,
}

/// Why no node could take a task: the per-node tally in Marathon's terms and
/// how many nodes gave each detail.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Declined {
    pub offers: OfferSummary,
    pub details: BTreeMap<String, u32>,
}

/// Tasks per field value, and all values seen (see `Placer::field_values`).
type FieldValues = (BTreeMap<String, usize>, Vec<String>);

/// Feasible nodes a placement compares before it picks the best of them.
/// Scanning every node for every task is quadratic at cluster scale
/// (100,000 tasks on 10,000 nodes); like Nomad's limit iterator, a placement
/// starts at a random node and stops after this many feasible ones. Clusters
/// this small or smaller are scanned whole, in order, as before.
pub const CANDIDATES: usize = 16;

/// Both accounts are filled lazily, per node and per app on first use: a
/// plan that places a few apps' tasks on a few of 10,000 nodes must not
/// first add up every task of the cluster.
pub struct Placer<'a> {
    state: &'a ClusterState,
    /// Reachable nodes, in id order (unreachable ones make no offers, as a
    /// lost Mesos agent sends none).
    nodes: Vec<&'a NodeInfo>,
    /// What each node looked at so far has left, including this plan's launches.
    usage: BTreeMap<NodeId, NodeUsage>,
    /// Active tasks per app per node, including this plan's launches.
    per_node: BTreeMap<AppId, BTreeMap<NodeId, usize>>,
}

impl<'a> Placer<'a> {
    pub fn new(state: &'a ClusterState) -> Placer<'a> {
        let nodes = state.nodes.values().filter(|n| n.is_reachable()).collect();
        Placer { state, nodes, usage: BTreeMap::new(), per_node: BTreeMap::new() }
    }

    /// The app's account, taken out to be handed back with `give_back`.
    fn take_counts(&mut self, app: &AppId) -> BTreeMap<NodeId, usize> {
        self.per_node.remove(app).unwrap_or_else(|| {
            let mut counts: BTreeMap<NodeId, usize> = BTreeMap::new();
            for t in self.state.tasks_of(app).filter(|t| t.is_active()) {
                *counts.entry(t.node).or_default() += 1;
            }
            counts
        })
    }

    fn give_back(&mut self, app: &AppId, counts: BTreeMap<NodeId, usize>) {
        self.per_node.insert(app.clone(), counts);
    }

    /// Makes sure `usage` holds `node` (the task table's node index adds it
    /// up without looking up each task, so node by node is cheap).
    fn look_at(&mut self, node: NodeId) {
        if !self.usage.contains_key(&node) {
            let u = self.state.usage(node);
            self.usage.insert(node, u);
        }
    }

    /// Picks a node and ports for one task of `app`, or says why none fits.
    pub fn place(&mut self, app: &AppSpec, rng: &mut impl Rng) -> Result<(&'a NodeInfo, Vec<u16>), Declined> {
        let mut counts = self.take_counts(&app.id);
        let result = self.place_with(app, &counts, rng);
        if let Ok((node, _)) = &result {
            *counts.entry(node.id).or_default() += 1;
        }
        self.give_back(&app.id, counts);
        result
    }

    fn place_with(
        &mut self,
        app: &AppSpec,
        counts: &BTreeMap<NodeId, usize>,
        rng: &mut impl Rng,
    ) -> Result<(&'a NodeInfo, Vec<u16>), Declined> {
        let seen: Vec<FieldValues> = app.constraints.iter().map(|c| self.field_values(&c.field, counts)).collect();
        let mut declined = Declined::default();
        let mut best: Option<(&'a NodeInfo, Vec<u16>, (usize, i64))> = None;
        let n = self.nodes.len();
        let start = if n > CANDIDATES { rng.gen_range(0..n) } else { 0 };
        let mut feasible = 0;
        for i in 0..n {
            let node = self.nodes[(start + i) % n];
            if feasible == CANDIDATES {
                break;
            }
            self.look_at(node.id);
            match self.fit(app, node, &seen, rng) {
                Ok(ports) => {
                    feasible += 1;
                    declined.offers.accept();
                    let free_cpu = self.usage.get(&node.id).map(|u| u.free.cpus).unwrap_or(0.0);
                    // Spread an app's tasks first, then prefer the emptiest node.
                    let score = (counts.get(&node.id).copied().unwrap_or(0), -((free_cpu * 1000.0) as i64));
                    if best.as_ref().is_none_or(|(_, _, s)| score < *s) {
                        best = Some((node, ports, score));
                    }
                }
                Err(d) => {
                    declined.offers.decline(d.reason);
                    *declined.details.entry(d.detail).or_default() += 1;
                }
            }
        }
        match best {
            Some((node, ports, _)) => {
                if let Some(u) = self.usage.get_mut(&node.id) {
                    u.free.sub(&app.resources);
                    u.used.add(&app.resources);
                    u.ports_used.extend(ports.iter().copied());
                }
                Ok((node, ports))
            }
            None => Err(declined),
        }
    }

    /// As [`Placer::place`], on one given node only (a resident instance's,
    /// where its persistent volumes are).
    pub fn place_on(
        &mut self,
        app: &AppSpec,
        node: NodeId,
        rng: &mut impl Rng,
    ) -> Result<(&'a NodeInfo, Vec<u16>), Declined> {
        let mut counts = self.take_counts(&app.id);
        let result = self.place_on_with(app, node, &counts, rng);
        if let Ok((n, _)) = &result {
            *counts.entry(n.id).or_default() += 1;
        }
        self.give_back(&app.id, counts);
        result
    }

    fn place_on_with(
        &mut self,
        app: &AppSpec,
        node: NodeId,
        counts: &BTreeMap<NodeId, usize>,
        rng: &mut impl Rng,
    ) -> Result<(&'a NodeInfo, Vec<u16>), Declined> {
        let seen: Vec<FieldValues> = app.constraints.iter().map(|c| self.field_values(&c.field, counts)).collect();
        let mut declined = Declined::default();
        let Some(n) = self.nodes.iter().copied().find(|n| n.id == node) else {
            // Gone or unreachable: no offer at all; the instance waits for it.
            let detail = format!("the node holding its persistent volumes (node {}) is not reachable", node.0);
            *declined.details.entry(detail).or_default() += 1;
            return Err(declined);
        };
        self.look_at(n.id);
        match self.fit(app, n, &seen, rng) {
            Ok(ports) => {
                declined.offers.accept();
                if let Some(u) = self.usage.get_mut(&n.id) {
                    u.free.sub(&app.resources);
                    u.used.add(&app.resources);
                    u.ports_used.extend(ports.iter().copied());
                }
                Ok((n, ports))
            }
            Err(d) => {
                declined.offers.decline(d.reason);
                *declined.details.entry(d.detail).or_default() += 1;
                Err(declined)
            }
        }
    }

    /// For one constraint field: how many of the app's tasks run per value,
    /// and every value any node has (computed once per placement, not per node).
    fn field_values(&self, field: &str, counts: &BTreeMap<NodeId, usize>) -> FieldValues {
        let mut placed: BTreeMap<String, usize> = BTreeMap::new();
        for (nid, n) in counts {
            if let Some(v) = self.state.nodes.get(nid).and_then(|nd| constraints::value_of(nd, field)) {
                *placed.entry(v).or_default() += n;
            }
        }
        let mut all: Vec<String> =
            self.state.nodes.values().filter_map(|nd| constraints::value_of(nd, field)).collect();
        all.sort();
        all.dedup();
        (placed, all)
    }

    /// The node's answer for one more task of `app`. Checks run in the order
    /// of Marathon's funnel, so a node is declined for the earliest reason.
    fn fit(
        &self,
        app: &AppSpec,
        node: &NodeInfo,
        seen: &[FieldValues],
        rng: &mut impl Rng,
    ) -> Result<Vec<u16>, Decline> {
        // A node without the app's driver cannot run it at all; Marathon has
        // no reason of its own for that, and it acts like an unmet constraint.
        let driver = app.container.driver();
        if !node.has_driver(driver) {
            let detail = match driver {
                DriverKind::Docker => "no docker driver (no Docker engine answered when the agent started)".to_string(),
                DriverKind::Oci => "no oci driver (the kernel has no overlayfs or the agent is not root)".to_string(),
                DriverKind::Exec => "no exec driver".to_string(),
            };
            return Err(Decline { reason: DeclineReason::UnfulfilledConstraint, detail });
        }
        for (c, (placed, all)) in app.constraints.iter().zip(seen) {
            constraints::check(c, node, placed, all)
                .map_err(|v| Decline { reason: DeclineReason::UnfulfilledConstraint, detail: v.0 })?;
        }
        if node.draining {
            return Err(Decline { reason: DeclineReason::AgentMaintenance, detail: "node is draining".into() });
        }
        let none = NodeUsage::default();
        let usage = self.usage.get(&node.id).unwrap_or(&none);
        let r = &app.resources;
        let f = &usage.free;
        if !r.fits_in(f) {
            let short = [
                (r.cpus > f.cpus + 1e-9, DeclineReason::InsufficientCpus, "cpus"),
                (r.mem > f.mem + 1e-9, DeclineReason::InsufficientMemory, "mem"),
                (r.disk > f.disk + 1e-9, DeclineReason::InsufficientDisk, "disk"),
                (r.gpus > f.gpus, DeclineReason::InsufficientGpus, "gpus"),
            ];
            let short: Vec<_> = short.iter().filter(|s| s.0).collect();
            let reason = short.first().map_or(DeclineReason::InsufficientCpus, |s| s.1);
            let names: Vec<&str> = short.iter().map(|s| s.2).collect();
            return Err(Decline { reason, detail: format!("insufficient {}", names.join(", ")) });
        }
        self.pick_ports(app, node, usage, rng)
            .map_err(|detail| Decline { reason: DeclineReason::InsufficientPorts, detail })
    }

    fn pick_ports(
        &self,
        app: &AppSpec,
        node: &NodeInfo,
        usage: &NodeUsage,
        rng: &mut impl Rng,
    ) -> Result<Vec<u16>, String> {
        if app.require_ports {
            let wanted: Vec<u16> = app.ports.iter().map(|p| p.port).collect();
            if let Some(p) = wanted.iter().find(|p| usage.ports_used.contains(p)) {
                return Err(format!("required host port {p} in use"));
            }
            return Ok(wanted);
        }
        let (lo, hi) = node.port_range;
        let span = u32::from(hi.saturating_sub(lo)) + 1;
        let n = app.ports.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        // A random starting point spreads reuse of recently freed ports.
        let start = rng.gen_range(0..span);
        let mut out = Vec::with_capacity(n);
        for i in 0..span {
            let p = lo as u32 + (start + i) % span;
            let p = p as u16;
            if !usage.ports_used.contains(&p) {
                out.push(p);
                if out.len() == n {
                    return Ok(out);
                }
            }
        }
        Err("no free host ports".into())
    }
}

/// Active tasks of `app` (not terminal, not being killed).
pub fn active<'s>(state: &'s ClusterState, app: &'s AppId) -> Vec<&'s Task> {
    state.tasks_of(app).filter(|t| t.is_active()).collect()
}
