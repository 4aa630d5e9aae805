//! The record table: every name this node answers for, built from the
//! endpoint stream (one entry per up task) and from the cluster's nodes and
//! leader. Which records a task or the cluster gets is decided by pure
//! functions (`task_records`, `cluster_records`); the table only adds and
//! removes them, so an update touches only the names of the tasks it names.

use crate::names::{canonical, label, mesos_task_name, LabelSpec};
use hickory_proto::rr::rdata::{A, AAAA, PTR, SRV};
use hickory_proto::rr::{Name, RData, Record};
use model::{Endpoint, NodeId, NodeInfo, TaskId};
use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// `owner`'s record `r` in wire form (`None` if a name does not parse).
pub fn to_record(owner: &str, r: &Rec, ttl: u32) -> Option<Record> {
    let name = |s: &str| Name::from_ascii(s).ok();
    let data = match r {
        Rec::A(ip) => RData::A(A(*ip)),
        Rec::Aaaa(ip) => RData::AAAA(AAAA(*ip)),
        Rec::Srv { port, target } => RData::SRV(SRV::new(0, 1, *port, name(target)?)),
        Rec::Ptr(target) => RData::PTR(PTR(name(target)?)),
    };
    Some(Record::from_rdata(name(owner)?, ttl, data))
}

/// Marathon is the one framework of a Wharf cluster.
pub const FRAMEWORK: &str = "marathon";

/// What the zone is for, from the flags.
#[derive(Debug, Clone)]
pub struct ZoneConfig {
    /// The cluster domain without dots around it (`mesos`).
    pub domain: String,
    pub spec: LabelSpec,
    pub ttl: u32,
}

impl ZoneConfig {
    /// `domain.` as a fully qualified name.
    pub fn apex(&self) -> String {
        format!("{}.", self.domain)
    }

    /// The name server's name, `ns1.<domain>.` (Mesos-DNS's SOA mname).
    pub fn ns_name(&self) -> String {
        format!("ns1.{}.", self.domain)
    }
}

/// One record's data; owners are lowercase fully qualified names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rec {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Srv { port: u16, target: String },
    Ptr(String),
}

impl Rec {
    fn of_ip(ip: IpAddr) -> Rec {
        match ip {
            IpAddr::V4(v4) => Rec::A(v4),
            IpAddr::V6(v6) => Rec::Aaaa(v6),
        }
    }
}

/// The records of one up task, Mesos-DNS's way for a Marathon task:
/// `{task}.marathon.D` and `{canonical}.marathon.D` at the task's address,
/// the same under `.marathon.slave.D` at the node's, SRV per host port under
/// `.slave.`, and when its ports are named (Marathon's DiscoveryInfo) SRV per
/// port and per named port under the framework; otherwise the framework SRV
/// point at the slave name as Mesos-DNS does for tasks without DiscoveryInfo.
pub fn task_records(ep: &Endpoint, cfg: &ZoneConfig) -> Vec<(String, Rec)> {
    let d = &cfg.domain;
    let task = label(&mesos_task_name(&ep.app), cfg.spec);
    if task.is_empty() {
        return Vec::new();
    }
    let canon = canonical(&task, ep.task.as_str(), &ep.node.to_string());
    let fw = FRAMEWORK;
    let mut out = Vec::new();
    if let Some(ip) = ep.ip {
        for owner in [
            format!("{task}.{fw}.{d}."),
            format!("{canon}.{fw}.{d}."),
            format!("{task}.{fw}.slave.{d}."),
            format!("{canon}.{fw}.slave.{d}."),
        ] {
            out.push((owner, Rec::of_ip(ip)));
        }
    }
    let slave_target = format!("{canon}.{fw}.slave.{d}.");
    let discovery = ep.ports.iter().any(|p| p.name.is_some());
    for p in &ep.ports {
        for proto in ["tcp", "udp"] {
            let srv = Rec::Srv { port: p.host_port, target: slave_target.clone() };
            out.push((format!("_{task}._{proto}.{fw}.slave.{d}."), srv.clone()));
            if !discovery {
                out.push((format!("_{task}._{proto}.{fw}.{d}."), srv));
            }
        }
        if discovery {
            let target = format!("{canon}.{fw}.{d}.");
            for t in &p.transports {
                let proto = t.as_str();
                let srv = Rec::Srv { port: p.host_port, target: target.clone() };
                out.push((format!("_{task}._{proto}.{fw}.{d}."), srv.clone()));
                if let Some(name) = p.name.as_deref().map(|n| label(n, cfg.spec)).filter(|n| !n.is_empty()) {
                    out.push((format!("_{name}._{task}._{proto}.{fw}.{d}."), srv));
                }
            }
        }
    }
    out
}

/// Who leads and who votes, for the master records.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Masters {
    pub leader: Option<NodeId>,
    /// Raft voters, in id order (`masterN`).
    pub voters: Vec<NodeId>,
}

/// The records that come from the cluster rather than from tasks: the
/// leader, the masters (Raft voters), every node as a slave, the Marathon
/// framework (the leader's API), the name server, and PTR records for node
/// addresses. `ns_ip` is this node's own address.
pub fn cluster_records(
    nodes: &[&NodeInfo],
    masters: &Masters,
    ns_ip: Option<IpAddr>,
    cfg: &ZoneConfig,
) -> Vec<(String, Rec)> {
    let d = &cfg.domain;
    let ip_of = |n: &NodeInfo| n.advertise.parse::<IpAddr>().ok();
    let http_port = |n: &NodeInfo| n.http_addr.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok());
    let by_id: HashMap<NodeId, &NodeInfo> = nodes.iter().map(|n| (n.id, *n)).collect();
    let mut out = Vec::new();
    if let Some(leader) = masters.leader.and_then(|id| by_id.get(&id)) {
        if let Some(ip) = ip_of(leader) {
            out.push((format!("leader.{d}."), Rec::of_ip(ip)));
            out.push((format!("{FRAMEWORK}.{d}."), Rec::of_ip(ip)));
        }
        // Clients of the leader talk to its HTTP API (Marathon's port).
        if let Some(port) = http_port(leader) {
            for proto in ["tcp", "udp"] {
                out.push((format!("_leader._{proto}.{d}."), Rec::Srv { port, target: format!("leader.{d}.") }));
            }
            out.push((
                format!("_framework._tcp.{FRAMEWORK}.{d}."),
                Rec::Srv { port, target: format!("{FRAMEWORK}.{d}.") },
            ));
        }
    }
    let mut masters_ips: Vec<IpAddr> = Vec::new();
    for id in masters.voters.iter().chain(masters.leader.iter()) {
        if let Some(ip) = by_id.get(id).and_then(|n| ip_of(n)) {
            if !masters_ips.contains(&ip) {
                masters_ips.push(ip);
            }
        }
    }
    for (i, ip) in masters_ips.iter().enumerate() {
        out.push((format!("master.{d}."), Rec::of_ip(*ip)));
        out.push((format!("master{i}.{d}."), Rec::of_ip(*ip)));
    }
    let mut slave_ports: Vec<u16> = Vec::new();
    for n in nodes {
        if let Some(ip) = ip_of(n) {
            out.push((format!("slave.{d}."), Rec::of_ip(ip)));
            let name = format!("{}.slave.{d}.", label(&n.hostname, cfg.spec));
            out.push((name.clone(), Rec::of_ip(ip)));
            out.push((reverse_name(ip), Rec::Ptr(name.clone())));
            // Wharf's own: one record per node naming its HTTP API (where
            // /metrics is), which `_slave._tcp` (one record per port, as
            // Mesos-DNS has it) cannot tell apart; Prometheus's SRV
            // discovery finds every node with it.
            if let Some(port) = http_port(n) {
                out.push((format!("_wharf._tcp.{d}."), Rec::Srv { port, target: name }));
            }
        }
        if let Some(p) = http_port(n).filter(|p| !slave_ports.contains(p)) {
            slave_ports.push(p);
        }
    }
    for port in slave_ports {
        out.push((format!("_slave._tcp.{d}."), Rec::Srv { port, target: format!("slave.{d}.") }));
    }
    if let Some(ip) = ns_ip {
        out.push((cfg.ns_name(), Rec::of_ip(ip)));
    }
    out
}

/// `in-addr.arpa.` / `ip6.arpa.` name of an address.
pub fn reverse_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.in-addr.arpa.", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut s = String::new();
            for b in v6.octets().iter().rev() {
                s.push_str(&format!("{:x}.{:x}.", b & 0xf, b >> 4));
            }
            s.push_str("ip6.arpa.");
            s
        }
    }
}

/// Every record this node answers for, by owner.
#[derive(Debug)]
pub struct Zone {
    pub cfg: ZoneConfig,
    /// Owner → its records; a record two tasks share (two tasks on one
    /// node) is held twice and answered once.
    names: HashMap<String, Vec<Rec>>,
    /// The same, deduplicated and encoded for answers, so a query only
    /// clones records (built when a name changes, not per query).
    built: HashMap<String, Vec<(Rec, Record)>>,
    /// How many owners sit below each name inside the zone: such a name
    /// exists even without records of its own (an empty non-terminal).
    below: HashMap<String, usize>,
    tasks: HashMap<TaskId, Vec<(String, Rec)>>,
    cluster: Vec<(String, Rec)>,
    /// Bumped on every change; the SOA serial.
    pub serial: u32,
    /// `.<domain>.`, to tell names in the zone without allocating per query.
    suffix: String,
    /// Inside `batch`: owners whose encoded records are rebuilt once
    /// at its end, not on every record added or removed (a name with k
    /// records would otherwise be encoded k times as its tasks come).
    deferred: Option<BTreeSet<String>>,
}

impl Zone {
    pub fn new(cfg: ZoneConfig) -> Zone {
        let suffix = format!(".{}", cfg.apex());
        Zone {
            suffix,
            cfg,
            names: HashMap::new(),
            built: HashMap::new(),
            below: HashMap::new(),
            tasks: HashMap::new(),
            cluster: Vec::new(),
            serial: 1,
            deferred: None,
        }
    }

    /// Removes the tasks `removed` and adds (or replaces) `added` as one
    /// change: each name they touch is encoded once, at the end.
    pub fn apply_tasks<'a>(
        &mut self,
        clear: bool,
        removed: impl IntoIterator<Item = &'a TaskId>,
        added: impl IntoIterator<Item = &'a Endpoint>,
    ) {
        self.batch(|z| {
            if clear {
                z.clear_tasks();
            }
            for id in removed {
                z.remove_task(id);
            }
            for e in added {
                z.add_task(e);
            }
        });
    }

    /// Runs `f` as one change: each name its adds and removes touch is
    /// encoded once, at the end (a batch inside a batch joins it).
    pub fn batch(&mut self, f: impl FnOnce(&mut Zone)) {
        let outer = self.deferred.is_some();
        if !outer {
            self.deferred = Some(BTreeSet::new());
        }
        f(self);
        if !outer {
            for owner in self.deferred.take().unwrap_or_default() {
                self.rebuild(&owner);
            }
        }
    }

    pub fn clear_tasks(&mut self) {
        let ids: Vec<TaskId> = self.tasks.keys().cloned().collect();
        for id in ids {
            self.remove_task(&id);
        }
    }

    pub fn add_task(&mut self, ep: &Endpoint) {
        self.remove_task(&ep.task);
        let recs = task_records(ep, &self.cfg);
        for (owner, rec) in &recs {
            self.insert(owner, rec.clone());
        }
        self.tasks.insert(ep.task.clone(), recs);
        self.serial = self.serial.wrapping_add(1);
    }

    pub fn remove_task(&mut self, id: &TaskId) {
        if let Some(recs) = self.tasks.remove(id) {
            for (owner, rec) in recs {
                self.delete(&owner, &rec);
            }
            self.serial = self.serial.wrapping_add(1);
        }
    }

    /// Replaces the cluster records (nodes, leader, masters): only the
    /// records that differ are removed or added, and each name they touch
    /// is encoded once. (Removing and adding all of them, each re-encoding
    /// its name, made a node joining 10,000 others cost 10,000² encodings
    /// of `slave.<domain>.`.)
    pub fn set_cluster(&mut self, recs: Vec<(String, Rec)>) {
        let mut delta: HashMap<&(String, Rec), isize> = HashMap::new();
        for r in &self.cluster {
            *delta.entry(r).or_default() -= 1;
        }
        for r in &recs {
            *delta.entry(r).or_default() += 1;
        }
        let delta: Vec<((String, Rec), isize)> =
            delta.into_iter().filter(|(_, n)| *n != 0).map(|(r, n)| (r.clone(), n)).collect();
        self.deferred = Some(BTreeSet::new());
        for ((owner, rec), n) in &delta {
            for _ in 0..n.unsigned_abs() {
                if *n < 0 {
                    self.delete(owner, rec);
                } else {
                    self.insert(owner, rec.clone());
                }
            }
        }
        for owner in self.deferred.take().unwrap_or_default() {
            self.rebuild(&owner);
        }
        self.cluster = recs;
        self.serial = self.serial.wrapping_add(1);
    }

    /// The cluster records as last set.
    pub fn cluster(&self) -> &[(String, Rec)] {
        &self.cluster
    }

    /// The records of `owner`, or `None` when the name does not exist (no
    /// records and nothing below it).
    pub fn lookup(&self, owner: &str) -> Option<&[Rec]> {
        match self.names.get(owner) {
            Some(recs) => Some(recs),
            None if owner == self.cfg.apex() || self.below.contains_key(owner) => Some(&[]),
            None => None,
        }
    }

    /// Every owner and its records (for `/v1/enumerate`-style listings).
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Vec<Rec>)> {
        self.names.iter()
    }

    /// The names of the zone's tasks (`/v1/enumerate`).
    pub fn task_records(&self) -> impl Iterator<Item = (&TaskId, &Vec<(String, Rec)>)> {
        self.tasks.iter()
    }

    pub fn in_zone(&self, owner: &str) -> bool {
        owner.ends_with(&self.suffix) || owner.strip_suffix('.') == Some(self.cfg.domain.as_str())
    }

    fn insert(&mut self, owner: &str, rec: Rec) {
        if !self.names.contains_key(owner) {
            for p in self.parents(owner) {
                *self.below.entry(p).or_default() += 1;
            }
        }
        self.names.entry(owner.to_string()).or_default().push(rec);
        self.rebuild_soon(owner);
    }

    /// Encodes `owner`'s records now, or at the end of `batch`.
    fn rebuild_soon(&mut self, owner: &str) {
        match &mut self.deferred {
            Some(dirty) => {
                dirty.insert(owner.to_string());
            }
            None => self.rebuild(owner),
        }
    }

    fn delete(&mut self, owner: &str, rec: &Rec) {
        let Some(recs) = self.names.get_mut(owner) else { return };
        if let Some(i) = recs.iter().position(|r| r == rec) {
            recs.swap_remove(i);
        }
        if !recs.is_empty() {
            self.rebuild_soon(owner);
        } else {
            self.names.remove(owner);
            self.built.remove(owner);
            for p in self.parents(owner) {
                if let Some(n) = self.below.get_mut(&p) {
                    *n -= 1;
                    if *n == 0 {
                        self.below.remove(&p);
                    }
                }
            }
        }
    }

    fn rebuild(&mut self, owner: &str) {
        let Some(recs) = self.names.get(owner) else {
            self.built.remove(owner);
            return;
        };
        let mut uniq: Vec<&Rec> = recs.iter().collect();
        uniq.sort();
        uniq.dedup();
        // Records encoded before are reused (`built` is sorted by `Rec`):
        // a name with many records that gains one encodes one.
        let old = self.built.remove(owner).unwrap_or_default();
        let encode = |r: &Rec| match old.binary_search_by(|(o, _)| o.cmp(r)) {
            Ok(i) => Some(old[i].1.clone()),
            Err(_) => to_record(owner, r, self.cfg.ttl),
        };
        let built = uniq.into_iter().filter_map(|r| Some((r.clone(), encode(r)?))).collect();
        self.built.insert(owner.to_string(), built);
    }

    /// The distinct records of `owner`, ready to answer with.
    pub fn records(&self, owner: &str) -> &[(Rec, Record)] {
        self.built.get(owner).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The names strictly between `owner` and the top of its zone (the
    /// cluster domain, or the reverse zones).
    fn parents(&self, owner: &str) -> Vec<String> {
        let apex = self.cfg.apex();
        let mut out = Vec::new();
        let mut rest = owner;
        while let Some((_, parent)) = rest.split_once('.') {
            if parent.is_empty() || parent == apex || parent == "in-addr.arpa." || parent == "ip6.arpa." {
                break;
            }
            out.push(parent.to_string());
            rest = parent;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::{AppId, EndpointPort, Transport};

    fn cfg() -> ZoneConfig {
        ZoneConfig { domain: "mesos".into(), spec: LabelSpec::Rfc1123, ttl: 5 }
    }

    fn ep(app: &str, n: u128, node: u64, ip: &str, ports: &[(u16, Option<&str>)]) -> Endpoint {
        let app = AppId::parse(app).expect("app");
        Endpoint {
            task: TaskId::new(&app, uuid::Uuid::from_u128(n), 1),
            app,
            node: NodeId(node),
            host: ip.into(),
            ip: ip.parse().ok(),
            container_ip: None,
            ports: ports
                .iter()
                .enumerate()
                .map(|(index, (p, name))| EndpointPort {
                    index,
                    host_port: *p,
                    service_port: 0,
                    name: name.map(str::to_string),
                    transports: vec![Transport::Tcp],
                })
                .collect(),
        }
    }

    #[test]
    fn a_task_gets_mesos_dns_names_and_leaves_no_trace() {
        let mut z = Zone::new(cfg());
        let a = ep("/group/web", 1, 2, "10.0.0.2", &[(31000, None)]);
        let b = ep("/group/web", 2, 2, "10.0.0.2", &[(31001, None)]);
        z.add_task(&a);
        z.add_task(&b);
        assert_eq!(
            z.lookup("web-group.marathon.mesos."),
            Some(&[Rec::A([10, 0, 0, 2].into()), Rec::A([10, 0, 0, 2].into())][..])
        );
        let srv = z.lookup("_web-group._tcp.marathon.mesos.").expect("srv");
        assert_eq!(srv.len(), 2);
        assert!(z.lookup("_web-group._udp.marathon.slave.mesos.").is_some());
        // Empty non-terminals exist; unrelated names do not.
        assert_eq!(z.lookup("_tcp.marathon.mesos."), Some(&[][..]));
        assert_eq!(z.lookup("marathon.mesos."), Some(&[][..]));
        assert_eq!(z.lookup("nope.marathon.mesos."), None);
        z.remove_task(&a.task);
        z.remove_task(&b.task);
        assert_eq!(z.lookup("web-group.marathon.mesos."), None);
        assert_eq!(z.lookup("_tcp.marathon.mesos."), None);
        assert!(z.iter().next().is_none());
    }

    #[test]
    fn a_batch_of_tasks_answers_as_the_same_tasks_added_one_by_one() {
        let eps: Vec<Endpoint> =
            (0..20).map(|i| ep("/web", i, (i % 3) as u64, &format!("10.0.0.{}", i % 3), &[(31000, None)])).collect();
        let mut one_by_one = Zone::new(cfg());
        for e in &eps {
            one_by_one.add_task(e);
        }
        one_by_one.remove_task(&eps[4].task);
        let mut batched = Zone::new(cfg());
        batched.apply_tasks(false, [], &eps[..10]);
        batched.apply_tasks(false, [&eps[4].task], &eps[10..]);
        let answers = |z: &Zone| {
            let mut names: Vec<(String, Vec<Rec>)> =
                z.names.keys().map(|n| (n.clone(), z.records(n).iter().map(|(r, _)| r.clone()).collect())).collect();
            names.sort();
            names
        };
        assert_eq!(answers(&batched), answers(&one_by_one));
        assert!(answers(&batched).iter().all(|(_, recs)| !recs.is_empty()), "every name is encoded");
        // Updates folded into one batch, in order: a task added by one and
        // removed by the next is gone, and each name is encoded at the end.
        let mut folded = Zone::new(cfg());
        folded.batch(|z| {
            z.apply_tasks(false, [], &eps[..10]);
            z.apply_tasks(false, [&eps[4].task], &eps[10..]);
        });
        assert_eq!(answers(&folded), answers(&one_by_one));
        assert!(answers(&folded).iter().all(|(_, recs)| !recs.is_empty()), "every name is encoded");
        batched.apply_tasks(true, [], []);
        assert!(batched.iter().next().is_none(), "a reset with nothing clears every task");
    }

    #[test]
    fn named_ports_give_discovery_srv_records() {
        let mut z = Zone::new(cfg());
        z.add_task(&ep("/store/liquor", 1, 0, "1.2.3.11", &[(31354, Some("http")), (31355, Some("https"))]));
        let http = z.lookup("_http._liquor-store._tcp.marathon.mesos.").expect("named port");
        assert!(
            matches!(&http[0], Rec::Srv { port: 31354, target } if target.starts_with("liquor-store-") && target.ends_with("-0.marathon.mesos."))
        );
        assert_eq!(z.lookup("_liquor-store._udp.marathon.mesos."), None, "tcp ports only");
        assert_eq!(z.lookup("_liquor-store._tcp.marathon.mesos.").map(<[Rec]>::len), Some(2));
    }

    #[test]
    fn cluster_records_replaced_answer_as_if_set_from_scratch() {
        let rec = |o: &str, ip: [u8; 4]| (o.to_string(), Rec::A(ip.into()));
        let first = vec![rec("slave.mesos.", [10, 0, 0, 1]), rec("a.slave.mesos.", [10, 0, 0, 1])];
        let second = vec![
            rec("slave.mesos.", [10, 0, 0, 1]),
            rec("slave.mesos.", [10, 0, 0, 2]),
            rec("b.slave.mesos.", [10, 0, 0, 2]),
            rec("leader.mesos.", [10, 0, 0, 2]),
        ];
        let mut z = Zone::new(cfg());
        z.set_cluster(first);
        z.set_cluster(second.clone());
        let mut fresh = Zone::new(cfg());
        fresh.set_cluster(second);
        let answers = |z: &Zone| {
            let mut names: Vec<(String, Vec<Rec>, Vec<String>)> = z
                .names
                .keys()
                .map(|n| {
                    let recs = z.records(n);
                    (
                        n.clone(),
                        recs.iter().map(|(r, _)| r.clone()).collect(),
                        recs.iter().map(|(_, w)| w.to_string()).collect(),
                    )
                })
                .collect();
            names.sort();
            names
        };
        assert_eq!(answers(&z), answers(&fresh));
        assert_eq!(z.lookup("a.slave.mesos."), None, "a node that left has no name");
        assert_eq!(z.records("slave.mesos.").len(), 2);
        z.set_cluster(Vec::new());
        assert!(z.iter().next().is_none(), "no cluster records left");
    }

    #[test]
    fn reverse_names() {
        assert_eq!(reverse_name("1.2.3.4".parse().expect("ip")), "4.3.2.1.in-addr.arpa.");
        assert!(reverse_name("2001:db8::1".parse().expect("ip")).starts_with("1.0.0.0.0.0.0.0"));
    }
}
