//! The DNS server's series for `/metrics`: queries by type and outcome,
//! forwarded queries by result, and the time to answer. The registry and
//! the endpoint belong to the API; this owns the values only the DNS server
//! sees. Counters for the fast path are resolved once per cached answer, so
//! counting a query is one atomic add, not a label lookup.

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueryLabels {
    /// `A`, `AAAA`, `SRV`, `PTR`, `SOA`, `NS`, `ANY` or `other`.
    pub qtype: &'static str,
    /// `answer`, `nodata`, `nxdomain`, `forwarded`, `refused`, `servfail`,
    /// `formerr`, `notimp` or `other` (an error code).
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ForwardLabels {
    /// `answered` (an upstream answered), `failed` (every upstream failed:
    /// SERVFAIL) or `refused` (the client may not use this node as a
    /// resolver).
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PathLabels {
    /// `fast` (a pre-encoded answer over UDP) or `full` (hickory's path:
    /// TCP, forwarding, truncation, odd packets).
    pub path: &'static str,
}

#[derive(Clone, Debug)]
pub struct DnsMetrics {
    queries: Family<QueryLabels, Counter>,
    forwarded: Family<ForwardLabels, Counter>,
    answer_seconds: Family<PathLabels, Histogram>,
}

impl Default for DnsMetrics {
    fn default() -> DnsMetrics {
        DnsMetrics {
            queries: Family::default(),
            forwarded: Family::default(),
            // 2 µs .. ~1 s: a cached answer takes microseconds, a forwarded
            // one an upstream's round trip.
            answer_seconds: Family::new_with_constructor(
                (|| Histogram::new(exponential_buckets(0.000_002, 2.0, 20))) as fn() -> Histogram,
            ),
        }
    }
}

impl DnsMetrics {
    /// Adds the DNS series to `registry` (under its prefix, `wharf`).
    pub fn register(&self, registry: &mut Registry) {
        registry.register("dns_queries", "DNS queries answered, by query type and outcome", self.queries.clone());
        registry.register(
            "dns_forwarded",
            "DNS queries for names outside the cluster domain, by result",
            self.forwarded.clone(),
        );
        registry.register_with_unit(
            "dns_answer",
            "Time from reading a DNS query to sending its answer, by path",
            Unit::Seconds,
            self.answer_seconds.clone(),
        );
    }

    /// The counter of queries of `qtype` with `outcome` (kept by the fast
    /// path's cache so a hit costs no lookup).
    pub fn counter(&self, qtype: RecordType, outcome: &'static str) -> Counter {
        self.queries.get_or_create(&QueryLabels { qtype: type_label(qtype), outcome }).clone()
    }

    pub fn histogram(&self, path: &'static str) -> Histogram {
        self.answer_seconds.get_or_create(&PathLabels { path }).clone()
    }

    pub fn forwarded(&self, result: &'static str) {
        self.forwarded.get_or_create(&ForwardLabels { result }).inc();
    }
}

fn type_label(t: RecordType) -> &'static str {
    match t {
        RecordType::A => "A",
        RecordType::AAAA => "AAAA",
        RecordType::SRV => "SRV",
        RecordType::PTR => "PTR",
        RecordType::SOA => "SOA",
        RecordType::NS => "NS",
        RecordType::ANY => "ANY",
        _ => "other",
    }
}

/// The outcome label of an answer with `code` and `answers` records.
pub fn outcome(code: ResponseCode, answers: usize) -> &'static str {
    match code {
        ResponseCode::NoError if answers > 0 => "answer",
        ResponseCode::NoError => "nodata",
        ResponseCode::NXDomain => "nxdomain",
        ResponseCode::Refused => "refused",
        ResponseCode::ServFail => "servfail",
        ResponseCode::FormErr => "formerr",
        ResponseCode::NotImp => "notimp",
        _ => "other",
    }
}
