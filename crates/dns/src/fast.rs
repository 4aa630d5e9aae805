//! The UDP fast path: plain questions for the cluster domain answered from
//! responses already encoded to wire format.
//!
//! Why a hand-written path beside hickory: for every query hickory decodes a
//! whole `Message`, builds a `MessageResponse`, clones the records and
//! encodes them again, which is most of the CPU of a lookup; NSD answers from
//! pre-compiled packets instead, and matching it needs the same. This path
//! takes only what it can answer byte for byte as hickory would (one IN
//! question in a standard query, no or a plain EDNS version 0 OPT, an answer
//! that fits in the client's UDP size) and hands everything else to hickory
//! unchanged: forwarding, other classes and opcodes, truncation, TCP,
//! malformed packets.
//!
//! Each DNS thread keeps its own cache (no lock on a hit), keyed by the
//! lower-cased wire name and type and dropped whole when the zone changes
//! (`Dns::generation`). An entry holds the answer in a few orders (rotations,
//! or shuffles for long answers), served in turn, so answers stay shuffled.
//! The question section is copied from the query so the name's case is
//! echoed, and the ID and flags are patched per query.

use crate::answer::{answer, Reply};
use crate::server::Dns;
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use prometheus_client::metrics::counter::Counter;
use rand::seq::SliceRandom;
use std::collections::HashMap;

/// Orders kept per answer: every rotation up to this many records (so each
/// record comes first equally often), this many shuffles beyond.
const ORDERS: usize = 16;
/// Entries per thread before the cache is emptied (names are client input).
const MAX_ENTRIES: usize = 50_000;
/// The OPT record a response to an EDNS query ends with: root owner, type
/// 41, the UDP size (patched), no extended code, version 0, no flags, no
/// options (what `Edns::new()` encodes in hickory's answers).
const OPT: [u8; 11] = [0, 0, 41, 0, 0, 0, 0, 0, 0, 0, 0];

/// A query this path can answer.
#[derive(Debug, PartialEq)]
pub struct Question<'a> {
    /// The question section as sent (name, type, class).
    pub section: &'a [u8],
    pub qtype: u16,
    /// The client's UDP size when it sent EDNS.
    pub edns: Option<u16>,
}

/// Reads `packet` as a plain query; `key` gets the lower-cased wire name
/// and the type. `None` for anything hickory must see.
pub fn parse<'a>(packet: &'a [u8], key: &mut Vec<u8>) -> Option<Question<'a>> {
    let h = packet.get(..12)?;
    // QR=0, opcode QUERY, not truncated (RD may be set); no Z bit, no rcode
    // (AD and CD may be set).
    if h[2] & 0xFE != 0 || h[3] & 0x4F != 0 {
        return None;
    }
    let count = |i: usize| u16::from_be_bytes([h[i], h[i + 1]]);
    let (qd, an, ns, ar) = (count(4), count(6), count(8), count(10));
    if qd != 1 || an != 0 || ns != 0 || ar > 1 {
        return None;
    }
    key.clear();
    let mut i = 12;
    loop {
        let len = *packet.get(i)? as usize;
        i += 1;
        if len == 0 {
            break;
        }
        // No compression in a question; zone names are letters, digits,
        // '-' and '_' only.
        if len > 63 {
            return None;
        }
        let label = packet.get(i..i + len)?;
        if !label.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_') {
            return None;
        }
        key.push(len as u8);
        key.extend(label.iter().map(u8::to_ascii_lowercase));
        i += len;
    }
    key.push(0);
    if key.len() > 255 {
        return None;
    }
    let tail = packet.get(i..i + 4)?;
    let qtype = u16::from_be_bytes([tail[0], tail[1]]);
    let qclass = u16::from_be_bytes([tail[2], tail[3]]);
    // IN only; no OPT, zone transfers or other meta types.
    if qclass != 1 || qtype == 41 || (249..=254).contains(&qtype) {
        return None;
    }
    key.extend_from_slice(&qtype.to_be_bytes());
    let section = &packet[12..i + 4];
    let rest = &packet[i + 4..];
    let edns = if ar == 0 {
        if !rest.is_empty() {
            return None;
        }
        None
    } else {
        // Root owner, type OPT, size, extended rcode 0, version 0, any
        // flags, then well-formed options (ignored, as hickory does).
        let opt = rest.get(..11)?;
        if opt[0] != 0 || opt[1..3] != [0, 41] || opt[5] != 0 || opt[6] != 0 {
            return None;
        }
        let rdlen = u16::from_be_bytes([opt[9], opt[10]]) as usize;
        let mut options = rest.get(11..)?;
        if options.len() != rdlen {
            return None;
        }
        while !options.is_empty() {
            let len = u16::from_be_bytes([*options.get(2)?, *options.get(3)?]) as usize;
            options = options.get(4 + len..)?;
        }
        Some(u16::from_be_bytes([opt[3], opt[4]]))
    };
    Some(Question { section, qtype, edns })
}

/// One name and type's answer, encoded in a few orders.
struct Entry {
    orders: Vec<Vec<u8>>,
    next: usize,
    code: ResponseCode,
    counter: Counter,
}

/// A DNS thread's answers, valid for one generation of the zone.
pub struct Cache {
    generation: u64,
    entries: HashMap<Box<[u8]>, Option<Entry>>,
}

impl Default for Cache {
    fn default() -> Cache {
        Cache { generation: u64::MAX, entries: HashMap::new() }
    }
}

impl Cache {
    /// Writes the answer to `q` into `out` (`ra`: the client may use this
    /// node as a resolver); false when hickory must answer instead.
    pub fn answer(&mut self, dns: &Dns, packet: &[u8], q: &Question, key: &[u8], ra: bool, out: &mut Vec<u8>) -> bool {
        let generation = dns.generation();
        if generation != self.generation || self.entries.len() >= MAX_ENTRIES {
            self.entries.clear();
            self.generation = generation;
        }
        let entry = match self.entries.get_mut(key) {
            Some(entry) => entry,
            None => self.entries.entry(key.into()).or_insert(build(dns, key, q.qtype)),
        };
        let Some(entry) = entry else { return false };
        let body = &entry.orders[entry.next % entry.orders.len()];
        let limit = q.edns.map_or(512, |size| size.max(512)) as usize;
        let opt = if q.edns.is_some() { OPT.len() } else { 0 };
        if body.len() + opt > limit || body.len() < 12 + q.section.len() {
            // Truncation is hickory's to do.
            return false;
        }
        entry.next = entry.next.wrapping_add(1);
        out.clear();
        out.extend_from_slice(body);
        out[..2].copy_from_slice(&packet[..2]);
        // QR, AA, RD as asked; RA when this client may recurse; CD echoed
        // (as hickory's `Metadata::response_from_request`).
        out[2] = 0x84 | (packet[2] & 0x01);
        out[3] = if ra { 0x80 } else { 0 } | (packet[3] & 0x10) | (u16::from(entry.code) as u8 & 0x0F);
        out[12..12 + q.section.len()].copy_from_slice(q.section);
        if let Some(size) = q.edns {
            let ar = u16::from_be_bytes([out[10], out[11]]).wrapping_add(1);
            out[10..12].copy_from_slice(&ar.to_be_bytes());
            let at = out.len();
            out.extend_from_slice(&OPT);
            out[at + 3..at + 5].copy_from_slice(&size.max(512).to_be_bytes());
        }
        entry.counter.inc();
        true
    }
}

/// The entry for `key` (wire name + type), or `None` when the name is not
/// the zone's (forwarded by hickory's path).
fn build(dns: &Dns, key: &[u8], qtype: u16) -> Option<Entry> {
    let qname = text_name(&key[..key.len() - 2])?;
    let rtype = RecordType::from(qtype);
    let mut rng = rand::thread_rng();
    let reply = dns.read(|z| answer(z, &qname, rtype, &mut rng))?;
    let n = reply.answers.len();
    let mut orders = Vec::new();
    if n <= ORDERS {
        for i in 0..n.max(1) {
            let mut answers = reply.answers.clone();
            answers.rotate_left(i);
            orders.push(encode(&qname, rtype, &reply, answers)?);
        }
    } else {
        for _ in 0..ORDERS {
            let mut answers = reply.answers.clone();
            answers.shuffle(&mut rng);
            orders.push(encode(&qname, rtype, &reply, answers)?);
        }
    }
    let counter = dns.metrics.counter(rtype, crate::metrics::outcome(reply.code, n));
    Some(Entry { orders, next: 0, code: reply.code, counter })
}

fn encode(qname: &str, rtype: RecordType, reply: &Reply, answers: Vec<hickory_proto::rr::Record>) -> Option<Vec<u8>> {
    let mut msg = Message::new(0, MessageType::Response, OpCode::Query);
    msg.metadata.authoritative = true;
    msg.metadata.response_code = reply.code;
    msg.add_query(Query::query(Name::from_ascii(qname).ok()?, rtype));
    msg.add_answers(answers);
    msg.add_authorities(reply.authority.iter().cloned());
    msg.add_additionals(reply.additionals.iter().cloned());
    msg.to_vec().ok()
}

/// `\x03www\x05mesos\x00` → `www.mesos.` (labels already checked).
fn text_name(wire: &[u8]) -> Option<String> {
    let mut s = String::with_capacity(wire.len());
    let mut i = 0;
    loop {
        let len = *wire.get(i)? as usize;
        if len == 0 {
            break;
        }
        s.push_str(std::str::from_utf8(wire.get(i + 1..i + 1 + len)?).ok()?);
        s.push('.');
        i += 1 + len;
    }
    if s.is_empty() {
        s.push('.');
    }
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &[u8], qtype: u16, edns: Option<&[u8]>) -> Vec<u8> {
        let mut p = vec![0xab, 0xcd, 0x01, 0x20, 0, 1, 0, 0, 0, 0, 0, u8::from(edns.is_some())];
        p.extend_from_slice(name);
        p.extend_from_slice(&qtype.to_be_bytes());
        p.extend_from_slice(&[0, 1]);
        if let Some(opt) = edns {
            p.extend_from_slice(opt);
        }
        p
    }

    #[test]
    fn plain_queries_parse_and_odd_ones_go_to_hickory() {
        let mut key = Vec::new();
        let p = query(b"\x03WwW\x05mesos\x00", 1, None);
        let q = parse(&p, &mut key).expect("plain");
        assert_eq!((q.qtype, q.edns, q.section.len()), (1, None, 15));
        assert_eq!(key, b"\x03www\x05mesos\x00\x00\x01");
        // EDNS with a cookie option.
        let opt = b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x0c\x00\x0a\x00\x08\x01\x02\x03\x04\x05\x06\x07\x08";
        assert_eq!(parse(&query(b"\x01a\x00", 33, Some(opt)), &mut key).map(|q| q.edns), Some(Some(1232)));
        let refuse = |p: Vec<u8>| assert_eq!(parse(&p, &mut Vec::new()), None, "{p:?}");
        // EDNS version 1 (BADVERS is hickory's), a broken option list.
        refuse(query(b"\x01a\x00", 1, Some(b"\x00\x00\x29\x04\xd0\x00\x01\x00\x00\x00\x00")));
        refuse(query(b"\x01a\x00", 1, Some(b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x02\x00\x0a")));
        // A compression pointer, an odd byte in a label, class CH, AXFR.
        refuse(query(b"\xc0\x0c", 1, None));
        refuse(query(b"\x03a.b\x00", 1, None));
        let mut ch = query(b"\x01a\x00", 1, None);
        ch[18] = 3;
        refuse(ch);
        refuse(query(b"\x01a\x00", 252, None));
        // Another opcode, a response, trailing bytes, a cut-off packet.
        let mut notify = query(b"\x01a\x00", 1, None);
        notify[2] = 0x20;
        refuse(notify);
        let mut resp = query(b"\x01a\x00", 1, None);
        resp[2] |= 0x80;
        refuse(resp);
        let mut long = query(b"\x01a\x00", 1, None);
        long.push(0);
        refuse(long);
        refuse(query(b"\x01a\x00", 1, None)[..16].to_vec());
    }

    #[test]
    fn wire_names_read_back_as_text() {
        assert_eq!(text_name(b"\x03www\x05mesos\x00").as_deref(), Some("www.mesos."));
        assert_eq!(text_name(b"\x00").as_deref(), Some("."));
    }
}
