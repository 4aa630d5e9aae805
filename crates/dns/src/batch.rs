//! Reading and sending UDP datagrams in batches (`recvmmsg`/`sendmmsg`
//! through `nix`): under load one system call carries many queries or
//! answers, where one `recvfrom` and one `sendto` per query spent most of
//! the DNS server's time entering and leaving the kernel.
//!
//! The socket is a blocking one: a reader sleeps in `recvmmsg` until the
//! first datagram comes and then takes whatever else is waiting, so the
//! kernel wakes exactly one of the threads reading a socket per arrival
//! (an event loop per thread would wake every one of them).

use nix::sys::socket::{recvmmsg, sendmmsg, MsgFlags, MultiHeaders, SockaddrStorage};
use std::io::{IoSlice, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

/// Datagrams per system call.
pub const BATCH: usize = 32;
/// Room per datagram read (larger queries are not DNS over UDP anyway).
pub const DATAGRAM: usize = 4096;

/// Buffers reused across calls.
pub struct Batch {
    recv_headers: MultiHeaders<SockaddrStorage>,
    send_headers: MultiHeaders<SockaddrStorage>,
    pub bufs: Vec<Vec<u8>>,
    /// What the last `recv` read: length and sender of `bufs[i]`.
    pub got: Vec<(usize, Option<SocketAddr>)>,
    /// Answers to send, and where.
    pub out: Vec<(Vec<u8>, SocketAddr)>,
    pub out_len: usize,
}

impl Default for Batch {
    fn default() -> Batch {
        Batch {
            recv_headers: MultiHeaders::preallocate(BATCH, None),
            send_headers: MultiHeaders::preallocate(BATCH, None),
            bufs: (0..BATCH).map(|_| vec![0u8; DATAGRAM]).collect(),
            got: Vec::with_capacity(BATCH),
            out: (0..BATCH).map(|_| (Vec::with_capacity(512), SocketAddr::from(([0, 0, 0, 0], 0)))).collect(),
            out_len: 0,
        }
    }
}

impl Batch {
    /// Waits for a datagram on the blocking socket `fd`, then reads it and
    /// those waiting behind it into `bufs` and `got`.
    pub fn recv(&mut self, fd: RawFd) -> std::io::Result<usize> {
        self.got.clear();
        let mut iovs: Vec<[IoSliceMut<'_>; 1]> = self.bufs.iter_mut().map(|b| [IoSliceMut::new(b)]).collect();
        let results = recvmmsg(fd, &mut self.recv_headers, iovs.iter_mut(), MsgFlags::MSG_WAITFORONE, None)
            .map_err(std::io::Error::from)?;
        for r in results {
            let truncated = r.flags.contains(MsgFlags::MSG_TRUNC);
            let from = r.address.as_ref().and_then(socket_addr);
            self.got.push((if truncated { 0 } else { r.bytes }, from));
        }
        Ok(self.got.len())
    }

    /// The next answer slot to fill (`None` when the batch is full).
    pub fn slot(&mut self) -> Option<&mut (Vec<u8>, SocketAddr)> {
        let slot = self.out.get_mut(self.out_len)?;
        self.out_len += 1;
        Some(slot)
    }

    /// Sends the answers gathered so far (blocking while the socket's
    /// buffer is full) and empties the batch. An answer the kernel refuses
    /// is dropped, as UDP may.
    pub fn send(&mut self, fd: RawFd) {
        let n = std::mem::take(&mut self.out_len);
        let mut start = 0;
        while start < n {
            let pending = &self.out[start..n];
            let slices: Vec<[IoSlice<'_>; 1]> = pending.iter().map(|(b, _)| [IoSlice::new(b)]).collect();
            let addrs: Vec<Option<SockaddrStorage>> = pending.iter().map(|(_, a)| Some((*a).into())).collect();
            match sendmmsg(fd, &mut self.send_headers, slices.iter(), addrs, [], MsgFlags::empty()) {
                Ok(sent) => start += sent.count().max(1),
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => {
                    // Only the first message failed (sendmmsg reports later
                    // failures as a short count): skip it.
                    tracing::debug!(error = %e, to = %self.out[start].1, "could not send a DNS answer");
                    start += 1;
                }
            }
        }
    }
}

fn socket_addr(s: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = s.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::from(*v4)));
    }
    s.as_sockaddr_in6().map(|v6| SocketAddr::V6(SocketAddrV6::from(*v6)))
}
