//! Choosing a node and host ports for one new task, with running accounts
//! of what earlier placements in the same plan took.

use crate::constraints;
use model::{AppId, AppSpec, ClusterState, NodeId, NodeInfo, NodeUsage, Task};
use rand::Rng;
use std::collections::BTreeMap;

pub struct Placer<'a> {
    state: &'a ClusterState,
    usage: BTreeMap<NodeId, NodeUsage>,
    /// Active tasks per app per node, including this plan's launches.
    per_node: BTreeMap<AppId, BTreeMap<NodeId, usize>>,
}

impl<'a> Placer<'a> {
    pub fn new(state: &'a ClusterState) -> Placer<'a> {
        let usage = state.nodes.keys().map(|id| (*id, state.usage(*id))).collect();
        let mut per_node: BTreeMap<AppId, BTreeMap<NodeId, usize>> = BTreeMap::new();
        for t in state.tasks.values().filter(|t| t.is_active()) {
            *per_node.entry(t.app_id.clone()).or_default().entry(t.node).or_default() += 1;
        }
        Placer { state, usage, per_node }
    }

    /// Picks a node and ports for one task of `app`, or says why none fits.
    pub fn place(&mut self, app: &AppSpec, rng: &mut impl Rng) -> Result<(&'a NodeInfo, Vec<u16>), String> {
        if self.state.nodes.is_empty() {
            return Err("no nodes in the cluster".into());
        }
        let counts = self.per_node.get(&app.id).cloned().unwrap_or_default();
        let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
        let mut best: Option<(&'a NodeInfo, Vec<u16>, (usize, i64))> = None;
        for node in self.state.nodes.values() {
            match self.fit(app, node, &counts, rng) {
                Ok(ports) => {
                    let free_cpu = self.usage.get(&node.id).map(|u| u.free.cpus).unwrap_or(0.0);
                    // Spread an app's tasks first, then prefer the emptiest node.
                    let score = (counts.get(&node.id).copied().unwrap_or(0), -((free_cpu * 1000.0) as i64));
                    if best.as_ref().is_none_or(|(_, _, s)| score < *s) {
                        best = Some((node, ports, score));
                    }
                }
                Err(why) => *reasons.entry(why).or_default() += 1,
            }
        }
        match best {
            Some((node, ports, _)) => {
                if let Some(u) = self.usage.get_mut(&node.id) {
                    u.free.sub(&app.resources);
                    u.used.add(&app.resources);
                    u.ports_used.extend(ports.iter().copied());
                }
                *self.per_node.entry(app.id.clone()).or_default().entry(node.id).or_default() += 1;
                Ok((node, ports))
            }
            None => {
                let summary: Vec<String> = reasons.into_iter().map(|(r, n)| format!("{r} ({n} node(s))")).collect();
                Err(summary.join("; "))
            }
        }
    }

    fn fit(
        &self,
        app: &AppSpec,
        node: &NodeInfo,
        counts: &BTreeMap<NodeId, usize>,
        rng: &mut impl Rng,
    ) -> Result<Vec<u16>, String> {
        if node.draining {
            return Err("node is draining".into());
        }
        if !node.is_reachable() {
            return Err("node is unreachable".into());
        }
        let usage = self.usage.get(&node.id).cloned().unwrap_or_default();
        let r = &app.resources;
        let f = &usage.free;
        if !r.fits_in(f) {
            let mut short = Vec::new();
            if r.cpus > f.cpus + 1e-9 {
                short.push("cpus");
            }
            if r.mem > f.mem + 1e-9 {
                short.push("mem");
            }
            if r.disk > f.disk + 1e-9 {
                short.push("disk");
            }
            if r.gpus > f.gpus {
                short.push("gpus");
            }
            return Err(format!("insufficient {}", short.join(", ")));
        }
        for c in &app.constraints {
            let mut placed: BTreeMap<String, usize> = BTreeMap::new();
            for (nid, n) in counts {
                if let Some(v) = self.state.nodes.get(nid).and_then(|nd| constraints::value_of(nd, &c.field)) {
                    *placed.entry(v).or_default() += n;
                }
            }
            let mut all: Vec<String> =
                self.state.nodes.values().filter_map(|nd| constraints::value_of(nd, &c.field)).collect();
            all.sort();
            all.dedup();
            constraints::check(c, node, &placed, &all).map_err(|v| v.0)?;
        }
        self.pick_ports(app, node, &usage, rng)
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
