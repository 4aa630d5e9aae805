//! Answering one question from the zone, as a pure function: which records
//! go in which section with which response code. Better than Mesos-DNS on
//! purpose: a wrong type on an existing name is NODATA with the SOA, a
//! missing name NXDOMAIN with the SOA (both cacheable), empty non-terminals
//! exist, and SOA/NS are answered at the apex.

use crate::zone::{Rec, Zone};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{NS, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use rand::seq::SliceRandom;
use rand::Rng;

/// An authoritative answer.
#[derive(Debug, Default)]
pub struct Reply {
    pub code: ResponseCode,
    pub answers: Vec<Record>,
    pub authority: Vec<Record>,
    pub additionals: Vec<Record>,
}

/// The answer to `qname`/`qtype` (`qname` lowercase and fully qualified),
/// or `None` when the name is not this server's to answer (forward it).
pub fn answer(zone: &Zone, qname: &str, qtype: RecordType, rng: &mut impl Rng) -> Option<Reply> {
    let reverse = qname.ends_with(".in-addr.arpa.") || qname.ends_with(".ip6.arpa.");
    let ours = zone.in_zone(qname) || (reverse && zone.lookup(qname).is_some());
    if !ours {
        return None;
    }
    let soa = || soa_record(zone);
    if zone.lookup(qname).is_none() {
        return Some(Reply { code: ResponseCode::NXDomain, authority: vec![soa()], ..Reply::default() });
    }
    let mut reply = Reply::default();
    let apex = qname == zone.cfg.apex();
    match qtype {
        RecordType::SOA if apex => reply.answers.push(soa()),
        RecordType::NS if apex => {
            reply.answers.push(ns_record(zone));
            reply.additionals.extend(address_records(zone, &zone.cfg.ns_name()));
        }
        _ => {
            let mut picked: Vec<&(Rec, Record)> =
                zone.records(qname).iter().filter(|(r, _)| matches(r, qtype)).collect();
            picked.shuffle(rng);
            for (r, rec) in picked {
                reply.answers.push(rec.clone());
                if let Rec::Srv { target, .. } = r {
                    // The targets' addresses save the client a second query.
                    for a in address_records(zone, target) {
                        if !reply.additionals.contains(&a) {
                            reply.additionals.push(a);
                        }
                    }
                }
            }
        }
    }
    if reply.answers.is_empty() {
        reply.authority.push(soa());
    }
    Some(reply)
}

fn matches(r: &Rec, qtype: RecordType) -> bool {
    matches!(
        (r, qtype),
        (Rec::A(_), RecordType::A | RecordType::ANY)
            | (Rec::Aaaa(_), RecordType::AAAA | RecordType::ANY)
            | (Rec::Srv { .. }, RecordType::SRV | RecordType::ANY)
            | (Rec::Ptr(_), RecordType::PTR | RecordType::ANY)
    )
}

fn name(s: &str) -> Option<Name> {
    Name::from_ascii(s).ok()
}

fn address_records(zone: &Zone, owner: &str) -> Vec<Record> {
    zone.records(owner)
        .iter()
        .filter(|(r, _)| matches!(r, Rec::A(_) | Rec::Aaaa(_)))
        .map(|(_, rec)| rec.clone())
        .collect()
}

/// Mesos-DNS's SOA: `ns1.<domain>` and `root.ns1.<domain>`; the minimum is
/// the TTL, so negative answers are cached as long as positive ones.
pub fn soa_record(zone: &Zone) -> Record {
    let cfg = &zone.cfg;
    let apex = name(&cfg.apex()).unwrap_or_else(Name::root);
    let mname = name(&cfg.ns_name()).unwrap_or_else(Name::root);
    let rname = name(&format!("root.{}", cfg.ns_name())).unwrap_or_else(Name::root);
    let soa = SOA::new(mname, rname, zone.serial, 60, 600, 86400, cfg.ttl);
    Record::from_rdata(apex, cfg.ttl, RData::SOA(soa))
}

fn ns_record(zone: &Zone) -> Record {
    let cfg = &zone.cfg;
    let apex = name(&cfg.apex()).unwrap_or_else(Name::root);
    let ns = name(&cfg.ns_name()).unwrap_or_else(Name::root);
    Record::from_rdata(apex, cfg.ttl, RData::NS(NS(ns)))
}
