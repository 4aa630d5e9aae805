//! The DNS server of a node: the listeners (UDP and TCP on one address,
//! through `hickory-server`), the request handler that answers from the zone
//! or forwards, and the loop that keeps the zone in step with the store.

use crate::answer::{answer, Reply};
use crate::batch::Batch;
use crate::fast::{parse, Cache};
use crate::forward::Forwarder;
use crate::metrics::DnsMetrics;
use crate::zone::{cluster_records, Masters, Zone, ZoneConfig};
use hickory_proto::op::{Edns, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinEncoder};
use hickory_server::net::runtime::{Time, TokioTime};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use store::{EndpointUpdate, Store};
use tokio::net::{TcpListener, UdpSocket};

/// Everything `--dns*` says.
#[derive(Debug, Clone)]
pub struct DnsConfig {
    pub zone: ZoneConfig,
    pub forwarder: Forwarder,
    /// Clients whose other names are forwarded (the rest get REFUSED for
    /// them): never an open resolver unless configured. The cluster's own
    /// nodes are always allowed.
    pub forward_from: Vec<IpNet>,
    /// This node's own address, for `ns1.<domain>`.
    pub ns_ip: Option<IpAddr>,
}

/// The zone and what the handler needs, shared by the listeners, the HTTP
/// API and the loop that follows the store.
pub struct Dns {
    pub cfg: DnsConfig,
    zone: RwLock<Zone>,
    /// Addresses of the cluster's nodes (always allowed to forward).
    nodes: RwLock<Vec<IpAddr>>,
    /// Bumped on every change of the zone or the nodes: the fast path's
    /// caches are only good for one generation.
    generation: AtomicU64,
    /// What the cluster records were last built from (see `set_cluster`).
    cluster_inputs: std::sync::Mutex<ClusterInputs>,
    pub metrics: DnsMetrics,
}

/// The node fields and masters the cluster records are made of, as last
/// seen: a node change that touches none of them (liveness, resources,
/// draining) skips building the records, which at 10,000 nodes formats tens
/// of thousands of names for each of a burst of liveness changes.
#[derive(Default)]
struct ClusterInputs {
    nodes: Vec<(model::NodeId, String, String, String)>,
    masters: Masters,
}

impl ClusterInputs {
    fn same(&self, state: &model::ClusterState, masters: &Masters) -> bool {
        self.masters == *masters
            && self.nodes.len() == state.nodes.len()
            && self.nodes.iter().zip(state.nodes.values()).all(|((id, host, adv, http), n)| {
                *id == n.id && *host == n.hostname && *adv == n.advertise && *http == n.http_addr
            })
    }

    fn of(state: &model::ClusterState, masters: &Masters) -> ClusterInputs {
        let nodes = state
            .nodes
            .values()
            .map(|n| (n.id, n.hostname.clone(), n.advertise.clone(), n.http_addr.clone()))
            .collect();
        ClusterInputs { nodes, masters: masters.clone() }
    }
}

impl Dns {
    pub fn new(cfg: DnsConfig) -> Arc<Dns> {
        let zone = Zone::new(cfg.zone.clone());
        Arc::new(Dns {
            cfg,
            zone: RwLock::new(zone),
            nodes: RwLock::new(Vec::new()),
            generation: AtomicU64::new(0),
            cluster_inputs: std::sync::Mutex::new(ClusterInputs::default()),
            metrics: DnsMetrics::default(),
        })
    }

    /// Which version of the zone the answers come from.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Reads the zone (a short lock; writers hold it only to swap records).
    pub fn read<R>(&self, f: impl FnOnce(&Zone) -> R) -> R {
        match self.zone.read() {
            Ok(z) => f(&z),
            Err(poisoned) => f(&poisoned.into_inner()),
        }
    }

    fn write(&self, f: impl FnOnce(&mut Zone)) {
        match self.zone.write() {
            Ok(mut z) => f(&mut z),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
        // After the change, so a cache filled from the old zone is dropped.
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    pub fn may_forward(&self, ip: IpAddr) -> bool {
        ip.is_loopback()
            || self.cfg.forward_from.iter().any(|n| n.contains(&ip))
            || self.nodes.read().map(|n| n.contains(&ip)).unwrap_or(false)
    }

    /// Applies one endpoint update to the task records; true when the
    /// cluster records need rebuilding too (a reset, or a node changed).
    pub fn apply(&self, update: &EndpointUpdate) -> bool {
        self.apply_all(std::slice::from_ref(update))
    }

    /// Applies endpoint updates in order as one change of the zone: a name
    /// several of them touch (an app's, as its tasks start one batch of
    /// reports after another) is encoded once. True when the cluster
    /// records need rebuilding too.
    pub fn apply_all(&self, updates: &[EndpointUpdate]) -> bool {
        let mut cluster = false;
        let mut tasks = false;
        for u in updates {
            match u {
                EndpointUpdate::Reset { .. } => (cluster, tasks) = (true, true),
                EndpointUpdate::Delta { removed, added, nodes_changed, .. } => {
                    cluster |= *nodes_changed;
                    tasks |= !removed.is_empty() || !added.is_empty();
                }
            }
        }
        // An app or node change that moved no task leaves the task
        // records (and the fast path's caches) alone.
        if tasks {
            self.write(|z| {
                z.batch(|z| {
                    for u in updates {
                        match u {
                            EndpointUpdate::Reset { endpoints, .. } => z.apply_tasks(true, [], endpoints),
                            EndpointUpdate::Delta { removed, added, .. } => {
                                z.apply_tasks(false, removed.iter().map(|e| &e.task), added)
                            }
                        }
                    }
                })
            });
        }
        cluster
    }

    /// Rebuilds the cluster records (nodes, leader, masters).
    pub fn set_cluster(&self, state: &model::ClusterState, masters: &Masters) {
        let Ok(mut inputs) = self.cluster_inputs.lock() else { return self.build_cluster(state, masters) };
        // The first call always builds (the zone starts without them).
        if !inputs.nodes.is_empty() && inputs.same(state, masters) {
            return;
        }
        *inputs = ClusterInputs::of(state, masters);
        drop(inputs);
        self.build_cluster(state, masters);
    }

    fn build_cluster(&self, state: &model::ClusterState, masters: &Masters) {
        let nodes: Vec<&model::NodeInfo> = state.nodes.values().collect();
        let recs = cluster_records(&nodes, masters, self.cfg.ns_ip, &self.cfg.zone);
        let ips: Vec<IpAddr> = nodes.iter().filter_map(|n| n.advertise.parse().ok()).collect();
        let same_nodes = self.nodes.read().map(|n| *n == ips).unwrap_or(false);
        // Most node changes (resources, liveness) change no record: the
        // zone, its serial and the fast path's caches stay as they are.
        if same_nodes && self.read(|z| z.cluster() == recs.as_slice()) {
            return;
        }
        if let Ok(mut n) = self.nodes.write() {
            *n = ips;
        }
        self.write(|z| z.set_cluster(recs));
    }
}

/// Endpoint updates folded in before the cluster records are rebuilt (a
/// bound, so a busy feed cannot hold a node change back for long).
const MAX_COALESCED: usize = 1024;

/// Keeps the zone in step with the store: endpoint updates as they come,
/// and the master records whenever the leader or the Raft voters change. Ends only when the
/// store does.
pub async fn follow(store: Arc<Store>, dns: Arc<Dns>) {
    let mut endpoints = store.endpoints();
    let mut leadership = store.leadership();
    // The leadership watch carries the voters too: a promotion changes it.
    let masters = |l: &store::Leadership| Masters { leader: l.leader, voters: l.voters.clone() };
    loop {
        tokio::select! {
            u = endpoints.next() => match u {
                Some(u) => {
                    // Every update already queued goes in with it, as one
                    // change; the cluster records are then rebuilt once, from
                    // the newest state. A rebuild looks at every node: once
                    // per node change, 10,000 nodes joining cost each replica
                    // 10,000² record comparisons, and its DNS fell so far
                    // behind the feed that it was still catching up while
                    // the deploy that followed placed tasks.
                    let mut batch = vec![u];
                    while batch.len() < MAX_COALESCED {
                        match endpoints.next_ready().await {
                            Some(u) => batch.push(u),
                            None => break,
                        }
                    }
                    if dns.apply_all(&batch) {
                        if let Some(last) = batch.last() {
                            dns.set_cluster(last.state(), &masters(&leadership.borrow()));
                        }
                    }
                }
                None => return,
            },
            changed = leadership.changed() => {
                if changed.is_err() {
                    return;
                }
                let m = masters(&leadership.borrow_and_update());
                dns.set_cluster(&store.snapshot(), &m);
            }
        }
    }
}

/// The bound listeners.
pub struct Listeners {
    pub udp: UdpSocket,
    pub tcp: TcpListener,
    pub addr: SocketAddr,
}

#[derive(Debug, thiserror::Error)]
#[error("--dns: cannot listen on {addr}: {source}")]
pub struct BindError {
    pub addr: SocketAddr,
    #[source]
    pub source: std::io::Error,
}

/// Binds UDP and TCP on `addr`.
pub async fn bind(addr: SocketAddr) -> Result<Listeners, BindError> {
    let err = |source| BindError { addr, source };
    // With port 0 the kernel picks a free UDP port, which another TCP socket
    // may hold: pick again rather than fail (tests bind many such servers
    // at once).
    let mut attempts = if addr.port() == 0 { 16 } else { 1 };
    loop {
        let udp = UdpSocket::bind(addr).await.map_err(err)?;
        let bound = udp.local_addr().map_err(err)?;
        match TcpListener::bind(bound).await {
            Ok(tcp) => return Ok(Listeners { udp, tcp, addr: bound }),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && attempts > 1 => attempts -= 1,
            Err(e) => return Err(BindError { addr: bound, source: e }),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("DNS listener: {0}")]
    Io(#[from] std::io::Error),
    #[error("DNS server: {0}")]
    Server(#[from] hickory_server::net::NetError),
    #[error("a DNS server thread ended without a word")]
    Gone,
}

/// Serves DNS on the listeners until a UDP reader fails or TCP ends; the
/// reader threads end when this future is dropped.
///
/// A few threads (as many as cores, up to 4) each sleep in `recvmmsg` on
/// the one blocking UDP socket, as NSD's server processes share theirs: the
/// kernel wakes one per arrival, it answers the plain questions for the
/// zone itself and sends them in one batch. What needs hickory (other
/// names, odd or malformed packets) and TCP runs on the caller's runtime.
pub async fn serve(listeners: Listeners, dns: Arc<Dns>) -> Result<(), ServeError> {
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).clamp(1, 4);
    let udp = listeners.udp.into_std()?;
    udp.set_nonblocking(false)?;
    let udp = Arc::new(udp);
    let handler = Arc::new(Handler { dns: dns.clone() });
    let stop = Stop { udp: udp.clone(), stopping: Arc::new(AtomicBool::new(false)) };
    let runtime = tokio::runtime::Handle::current();
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<std::io::Error>();
    for i in 0..threads {
        let (udp, handler, runtime, done) = (udp.clone(), handler.clone(), runtime.clone(), done_tx.clone());
        let stopping = stop.stopping.clone();
        std::thread::Builder::new().name(format!("dns-udp-{i}")).spawn(move || {
            if let Err(e) = read_udp(&udp, &handler, &runtime, &stopping) {
                let _ = done.send(e);
            }
        })?;
    }
    drop(done_tx);
    let mut tcp = hickory_server::Server::new(Handler { dns });
    // Idle TCP clients are cut off after 10 s, so they cannot hold sockets.
    tcp.register_listener(listeners.tcp, Duration::from_secs(10), 64);
    let result = tokio::select! {
        e = done_rx.recv() => Err(e.map_or(ServeError::Gone, ServeError::from)),
        r = tcp.block_until_done() => r.map_err(ServeError::from),
    };
    drop(stop);
    result
}

/// Wakes and ends the UDP readers when dropped: a read shutdown makes
/// their `recvmmsg` return at once.
struct Stop {
    udp: Arc<std::net::UdpSocket>,
    stopping: Arc<AtomicBool>,
}

impl Drop for Stop {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        self.stopping.store(true, Ordering::Release);
        // Linux answers ENOTCONN for an unconnected UDP socket but still
        // shuts it down and wakes the readers.
        let _ = nix::sys::socket::shutdown(self.udp.as_raw_fd(), nix::sys::socket::Shutdown::Read);
    }
}

/// One UDP reader: answers the plain questions for the zone from this
/// thread's cache of encoded answers (`fast`) and sends them in one batch,
/// and gives every other packet to hickory's request handler in a task on
/// `runtime`. Returns when stopped, or on an error that will not pass.
fn read_udp(
    udp: &Arc<std::net::UdpSocket>,
    handler: &Arc<Handler>,
    runtime: &tokio::runtime::Handle,
    stopping: &AtomicBool,
) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = udp.as_raw_fd();
    let mut batch = Batch::default();
    let mut key = Vec::with_capacity(260);
    let mut cache = Cache::default();
    let fast_seconds = handler.dns.metrics.histogram("fast");
    loop {
        let result = batch.recv(fd);
        if stopping.load(Ordering::Acquire) {
            return Ok(());
        }
        let n = match result {
            Ok(n) => n,
            Err(e) => match e.kind() {
                // ICMP errors of earlier answers surface here on some
                // systems; a signal interrupts the wait.
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::Interrupted => continue,
                std::io::ErrorKind::NotConnected | std::io::ErrorKind::ConnectionAborted => return Err(e),
                _ => {
                    tracing::debug!(error = %e, "reading DNS queries");
                    continue;
                }
            },
        };
        let start = std::time::Instant::now();
        for i in 0..n {
            let (len, src) = batch.got[i];
            // hickory answers nobody at port 0 or an unspecified address.
            let Some(src) = src.filter(|s| s.port() != 0 && !s.ip().is_unspecified()) else { continue };
            if len == 0 {
                continue;
            }
            let packet = &batch.bufs[i][..len];
            if let Some(q) = parse(packet, &mut key) {
                let ra = handler.dns.may_forward(src.ip());
                let mut out = std::mem::take(&mut batch.out[batch.out_len].0);
                if cache.answer(&handler.dns, packet, &q, &key, ra, &mut out) {
                    if let Some(slot) = batch.slot() {
                        *slot = (out, src);
                    }
                    continue;
                }
                batch.out[batch.out_len].0 = out;
            }
            let (raw, udp, handler) = (packet.to_vec(), udp.clone(), handler.clone());
            runtime.spawn(async move { handler.udp_request(raw, src, udp).await });
        }
        let answers = batch.out_len;
        batch.send(fd);
        if answers > 0 {
            // Each answer of the batch waited for the whole batch.
            let seconds = start.elapsed().as_secs_f64();
            for _ in 0..answers {
                fast_seconds.observe(seconds);
            }
        }
    }
}

/// Sends one answer without waiting: when the socket's buffer is full the
/// answer is dropped, as UDP may (the client asks again).
fn send_udp(udp: &std::net::UdpSocket, bytes: &[u8], dst: SocketAddr) -> std::io::Result<()> {
    use nix::sys::socket::{sendto, MsgFlags, SockaddrStorage};
    use std::os::fd::AsRawFd;
    sendto(udp.as_raw_fd(), bytes, &SockaddrStorage::from(dst), MsgFlags::MSG_DONTWAIT)?;
    Ok(())
}

/// What the UDP listener sends back for one datagram `packet` from `src`
/// (`None`: nothing): the fast path's answer from `cache` when it has one,
/// else hickory's handler's. The listener's own steps, one packet at a
/// time, for tests and the fuzz target (`fuzz/fuzz_targets/dns_query.rs`).
pub async fn answer_udp(dns: &Arc<Dns>, cache: &mut Cache, packet: &[u8], src: SocketAddr) -> Option<Vec<u8>> {
    let mut key = Vec::with_capacity(260);
    if let Some(q) = parse(packet, &mut key) {
        let mut out = Vec::new();
        if cache.answer(dns, packet, &q, &key, dns.may_forward(src.ip()), &mut out) {
            return Some(out);
        }
    }
    Handler { dns: dns.clone() }.udp_answer(packet.to_vec(), src).await
}

struct Handler {
    dns: Arc<Dns>,
}

impl Handler {
    /// What hickory's server does with a UDP packet, for those the fast
    /// path leaves: a packet without a header is dropped, one that does not
    /// decode gets FORMERR, a response is ignored, the rest is handled.
    async fn udp_request(&self, raw: Vec<u8>, src: SocketAddr, udp: Arc<std::net::UdpSocket>) {
        if let Some(bytes) = self.udp_answer(raw, src).await {
            if let Err(e) = send_udp(&udp, &bytes, src) {
                tracing::debug!(error = %e, "could not send a DNS answer");
            }
        }
    }

    /// The bytes `udp_request` sends back to `src` for `raw`, if any.
    async fn udp_answer(&self, raw: Vec<u8>, src: SocketAddr) -> Option<Vec<u8>> {
        let header = hickory_proto::op::Header::from_bytes(raw.get(..12)?).ok()?;
        let request = match Request::from_bytes(raw, src, hickory_server::net::xfer::Protocol::Udp) {
            Ok(r) => r,
            Err(_) => {
                let mut metadata = Metadata::response_from_request(&header.metadata);
                metadata.response_code = ResponseCode::FormErr;
                let mut msg = hickory_proto::op::Message::new(metadata.id, MessageType::Response, metadata.op_code);
                msg.metadata = metadata;
                self.dns.metrics.counter(RecordType::Unknown(0), "formerr").inc();
                return msg.to_vec().ok();
            }
        };
        if request.metadata.message_type == MessageType::Response {
            return None;
        }
        let max = request.edns.as_ref().map_or(512, |e| e.max_payload().max(512));
        let responder = UdpResponder { out: Arc::default(), max };
        self.handle_request::<_, TokioTime>(&request, responder.clone()).await;
        let bytes = std::mem::take(&mut *responder.out.lock().unwrap_or_else(|p| p.into_inner()));
        (!bytes.is_empty()).then_some(bytes)
    }

    async fn send<R: ResponseHandler>(
        &self,
        request: &Request,
        mut response: R,
        reply: Reply,
        authoritative: bool,
    ) -> ResponseInfo {
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.authoritative = authoritative;
        metadata.recursion_available = self.dns.may_forward(request.src().ip());
        metadata.response_code = reply.code;
        let edns = response_edns(request);
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(e) = &edns {
            builder.edns(e);
        }
        let msg = builder.build(
            metadata,
            reply.answers.iter(),
            reply.authority.iter(),
            None::<&Record>,
            reply.additionals.iter(),
        );
        match response.send_response(msg).await {
            Ok(info) => info,
            Err(e) => {
                tracing::debug!(error = %e, "could not send a DNS answer");
                error_info(request, ResponseCode::ServFail)
            }
        }
    }

    async fn error<R: ResponseHandler>(&self, request: &Request, mut response: R, code: ResponseCode) -> ResponseInfo {
        let edns = response_edns(request);
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(e) = &edns {
            builder.edns(e);
        }
        let msg = builder.error_msg(&request.metadata, code);
        response.send_response(msg).await.unwrap_or_else(|_| error_info(request, code))
    }

    async fn forward<R: ResponseHandler>(&self, request: &Request, mut response: R, qname: &str) -> ResponseInfo {
        if !self.dns.may_forward(request.src().ip()) {
            self.dns.metrics.forwarded("refused");
            return self.error(request, response, ResponseCode::Refused).await;
        }
        let tcp = request.protocol() != hickory_server::net::xfer::Protocol::Udp;
        let Some(up) = self.dns.cfg.forwarder.forward(qname, request.as_slice(), request.metadata.id, tcp).await else {
            self.dns.metrics.forwarded("failed");
            return self.error(request, response, ResponseCode::ServFail).await;
        };
        self.dns.metrics.forwarded("answered");
        let mut metadata = up.metadata;
        metadata.id = request.metadata.id;
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(e) = &up.edns {
            builder.edns(e);
        }
        let msg =
            builder.build(metadata, up.answers.iter(), up.authorities.iter(), None::<&Record>, up.additionals.iter());
        response.send_response(msg).await.unwrap_or_else(|_| error_info(request, ResponseCode::ServFail))
    }
}

/// Takes hickory's answer to a UDP query the fast path left, limited to
/// the client's UDP size (hickory truncates and sets TC beyond it);
/// `udp_request` sends it.
#[derive(Clone)]
struct UdpResponder {
    out: Arc<std::sync::Mutex<Vec<u8>>>,
    max: u16,
}

#[async_trait::async_trait]
impl ResponseHandler for UdpResponder {
    async fn send_response<'a>(
        &mut self,
        response: hickory_server::zone_handler::MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, hickory_server::net::NetError> {
        let mut bytes = Vec::with_capacity(512);
        let mut encoder = BinEncoder::new(&mut bytes);
        encoder.set_max_size(self.max);
        let info =
            response.destructive_emit(&mut encoder).map_err(|e| hickory_server::net::NetError::from(e.to_string()))?;
        *self.out.lock().unwrap_or_else(|p| p.into_inner()) = bytes;
        Ok(info)
    }
}

/// RFC 6891: a query with EDNS gets an OPT record back.
fn response_edns(request: &Request) -> Option<Edns> {
    request.edns.as_ref().map(|req| {
        let mut e = Edns::new();
        e.set_max_payload(req.max_payload().max(512));
        e.set_version(0);
        e
    })
}

fn error_info(request: &Request, code: ResponseCode) -> ResponseInfo {
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.response_code = code;
    hickory_proto::op::Header { metadata, counts: Default::default() }.into()
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(&self, request: &Request, response: R) -> ResponseInfo {
        let start = std::time::Instant::now();
        let (info, forwarded) = self.answer(request, response).await;
        let qtype = request.request_info().map_or(RecordType::Unknown(0), |i| i.query.query_type());
        let outcome = if forwarded {
            "forwarded"
        } else {
            crate::metrics::outcome(info.response_code, info.counts().answers as usize)
        };
        self.dns.metrics.counter(qtype, outcome).inc();
        self.dns.metrics.histogram("full").observe(start.elapsed().as_secs_f64());
        info
    }
}

impl Handler {
    /// The answer, and whether the query was forwarded upstream.
    async fn answer<R: ResponseHandler>(&self, request: &Request, response: R) -> (ResponseInfo, bool) {
        if request.metadata.op_code != OpCode::Query {
            return (self.error(request, response, ResponseCode::NotImp).await, false);
        }
        if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
            return (self.error(request, response, ResponseCode::BADVERS).await, false);
        }
        let Ok(info) = request.request_info() else {
            // Not exactly one question.
            return (self.error(request, response, ResponseCode::FormErr).await, false);
        };
        let q = info.query;
        let mut qname = q.name().to_string().to_ascii_lowercase();
        if !qname.ends_with('.') {
            qname.push('.');
        }
        let class_ok = matches!(q.query_class(), DNSClass::IN | DNSClass::ANY);
        let reply = self.dns.read(|z| {
            if !class_ok {
                return z.in_zone(&qname).then(|| Reply { code: ResponseCode::Refused, ..Reply::default() });
            }
            answer(z, &qname, q.query_type(), &mut rand::thread_rng())
        });
        match reply {
            Some(reply) => (self.send(request, response, reply, class_ok).await, false),
            None => (self.forward(request, response, &qname).await, true),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::LabelSpec;

    fn config() -> DnsConfig {
        DnsConfig {
            zone: ZoneConfig { domain: "mesos".into(), spec: LabelSpec::Rfc1123, ttl: 5 },
            forwarder: Forwarder { upstreams: vec![], zones: vec![], timeout: Duration::from_secs(1) },
            forward_from: vec!["192.168.7.0/24".parse().expect("net")],
            ns_ip: None,
        }
    }

    /// Threads of this process named like the UDP readers.
    fn readers() -> usize {
        std::fs::read_dir("/proc/self/task")
            .expect("/proc")
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .filter(|name| name.starts_with("dns-udp-"))
            .count()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_udp_readers_answer_and_end_with_the_server() {
        let listeners = bind("127.0.0.1:0".parse().expect("addr")).await.expect("bind");
        let addr = listeners.addr;
        let server = tokio::spawn(serve(listeners, Dns::new(config())));
        let client = std::net::UdpSocket::bind("127.0.0.1:0").expect("client");
        client.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        // A name of the empty zone: NXDOMAIN (3), from a reader thread.
        let query = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x01x\x05mesos\x00\x00\x01\x00\x01";
        client.send_to(query, addr).expect("send");
        let mut buf = [0u8; 512];
        let (n, _) = client.recv_from(&mut buf).expect("an answer");
        assert_eq!((n > 12, &buf[..2], buf[3] & 0x0f), (true, &query[..2], 3));
        assert!(readers() > 0);
        server.abort();
        let _ = server.await;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while readers() > 0 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(readers(), 0, "the reader threads outlived the server");
    }

    #[test]
    fn only_loopback_the_nodes_and_configured_networks_may_forward() {
        let dns = Dns::new(config());
        let mut state = model::ClusterState::default();
        let mut n = model::NodeInfo {
            id: model::NodeId(1),
            hostname: "a".into(),
            advertise: "10.0.0.9".into(),
            http_addr: "10.0.0.9:8080".into(),
            rpc_addr: String::new(),
            resources: Default::default(),
            port_range: (1, 2),
            attributes: Default::default(),
            registered_at: model::UnixMillis(0),
            draining: false,
            unreachable_since: None,
            drivers: vec![model::DriverKind::Exec],
            images: Vec::new(),
        };
        state.nodes.insert(n.id, n.clone());
        dns.set_cluster(&state, &Masters::default());
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert!(dns.may_forward(ip("127.0.0.1")));
        assert!(dns.may_forward(ip("::1")));
        assert!(dns.may_forward(ip("10.0.0.9")), "a cluster node");
        assert!(dns.may_forward(ip("192.168.7.20")), "--dns-forward-from");
        assert!(!dns.may_forward(ip("8.8.8.8")), "never an open resolver");
        // A node that leaves stops being allowed.
        n.id = model::NodeId(2);
        n.advertise = "10.0.0.10".into();
        let mut state = model::ClusterState::default();
        state.nodes.insert(n.id, n);
        dns.set_cluster(&state, &Masters::default());
        assert!(!dns.may_forward(ip("10.0.0.9")));
    }
}
