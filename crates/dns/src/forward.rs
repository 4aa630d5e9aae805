//! Forwarding names outside the cluster domain to upstream resolvers.
//!
//! The query goes upstream as the client sent it and the upstream's answer
//! comes back whole (flags, sections, EDNS), so a forwarded answer is the
//! upstream's. Written on tokio sockets rather than with hickory's resolver:
//! a resolver re-asks and rebuilds answers, a forwarder must not.

use hickory_proto::op::Message;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

#[derive(Debug, Clone)]
pub struct Forwarder {
    /// Resolvers for every name without a zone of its own.
    pub upstreams: Vec<SocketAddr>,
    /// Per-zone resolvers (`zone.` lowercase, fully qualified), longest
    /// zone first.
    pub zones: Vec<(String, Vec<SocketAddr>)>,
    /// How long one upstream gets before the next is asked.
    pub timeout: Duration,
}

impl Forwarder {
    /// The upstreams for `qname`: the longest matching zone's, else the defaults.
    pub fn upstreams_for(&self, qname: &str) -> &[SocketAddr] {
        self.zones
            .iter()
            .find(|(zone, _)| qname == zone || qname.ends_with(&format!(".{zone}")))
            .map(|(_, ups)| ups.as_slice())
            .unwrap_or(&self.upstreams)
    }

    /// Asks each upstream in turn; `None` when every one failed (the
    /// caller answers SERVFAIL). Over TCP when the client asked over TCP or
    /// the UDP answer was truncated and the client can take a long answer.
    pub async fn forward(&self, qname: &str, raw: &[u8], id: u16, client_tcp: bool) -> Option<Message> {
        for up in self.upstreams_for(qname) {
            let answer = if client_tcp {
                ask_tcp(*up, raw, self.timeout).await
            } else {
                ask_udp(*up, raw, id, self.timeout).await
            };
            match answer {
                Ok(m) => return Some(m),
                Err(e) => tracing::debug!(upstream = %up, error = %e, "upstream DNS server failed"),
            }
        }
        None
    }
}

#[derive(Debug, thiserror::Error)]
enum AskError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("no answer within the timeout")]
    Timeout,
    #[error("unreadable answer: {0}")]
    Decode(String),
}

async fn ask_udp(up: SocketAddr, raw: &[u8], id: u16, timeout: Duration) -> Result<Message, AskError> {
    let local: SocketAddr =
        if up.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { (std::net::Ipv6Addr::UNSPECIFIED, 0).into() };
    let sock = UdpSocket::bind(local).await?;
    sock.connect(up).await?;
    sock.send(raw).await?;
    let mut buf = vec![0u8; 65535];
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let n = tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await.map_err(|_| AskError::Timeout)??;
        let m = Message::from_vec(&buf[..n]).map_err(|e| AskError::Decode(e.to_string()))?;
        // A stray datagram with another id is not our answer.
        if m.metadata.id == id {
            return Ok(m);
        }
    }
}

async fn ask_tcp(up: SocketAddr, raw: &[u8], timeout: Duration) -> Result<Message, AskError> {
    let work = async {
        let mut s = TcpStream::connect(up).await?;
        let len = u16::try_from(raw.len()).map_err(|_| AskError::Decode("query too long".into()))?;
        s.write_all(&len.to_be_bytes()).await?;
        s.write_all(raw).await?;
        let n = s.read_u16().await? as usize;
        let mut buf = vec![0u8; n];
        s.read_exact(&mut buf).await?;
        Message::from_vec(&buf).map_err(|e| AskError::Decode(e.to_string()))
    };
    tokio::time::timeout(timeout, work).await.map_err(|_| AskError::Timeout)?
}

/// The name servers listed in a resolv.conf text.
pub fn resolv_conf_servers(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.trim().split('%').next().and_then(|ip| ip.parse::<std::net::IpAddr>().ok()))
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_resolv_conf() {
        let t = "# comment\nnameserver 10.0.0.1\nsearch x\nnameserver fe80::1%eth0\nnameserver bogus\n";
        assert_eq!(resolv_conf_servers(t), vec!["10.0.0.1:53".parse().expect("a"), "[fe80::1]:53".parse().expect("b")]);
    }

    #[test]
    fn the_longest_zone_wins() {
        let f = Forwarder {
            upstreams: vec!["1.1.1.1:53".parse().expect("a")],
            zones: vec![
                ("a.corp.".into(), vec!["3.3.3.3:53".parse().expect("c")]),
                ("corp.".into(), vec!["2.2.2.2:53".parse().expect("b")]),
            ],
            timeout: Duration::from_secs(1),
        };
        assert_eq!(f.upstreams_for("x.a.corp.")[0].ip().to_string(), "3.3.3.3");
        assert_eq!(f.upstreams_for("x.corp.")[0].ip().to_string(), "2.2.2.2");
        assert_eq!(f.upstreams_for("example.org.")[0].ip().to_string(), "1.1.1.1");
    }
}
