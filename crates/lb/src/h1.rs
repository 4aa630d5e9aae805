//! HTTP/1.1 message framing for the HTTP front (RFC 9112): heads are parsed
//! with `httparse`, bodies are delimited by `Content-Length` or chunked
//! framing and passed through as they came, never re-encoded.
//!
//! Hand-written on purpose: hyper's server and client pair cost a task
//! hand-off and a channel per request on each side (and a timer per request
//! head), which made the front slower than HAProxy; a proxy only needs to
//! find where a message ends, which is what this module does.

use std::fmt::Write as _;

/// The largest request or response head taken (larger ones: 431 / 502).
pub const MAX_HEAD: usize = 64 * 1024;
/// The most header fields a head may have.
pub const MAX_HEADERS: usize = 100;

/// How a message's body ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyLen {
    /// No body at all.
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked framing, passed through as is.
    Chunked,
    /// A response read until the backend closes (no framing header).
    UntilClose,
}

/// Why a message cannot be framed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("bad Content-Length")]
    BadLength,
    #[error("unsupported Transfer-Encoding")]
    BadTransferEncoding,
    #[error("both Content-Length and Transfer-Encoding")]
    Ambiguous,
    #[error("bad chunked framing")]
    BadChunk,
}

/// The facts about a message's header fields a proxy acts on.
#[derive(Default, Debug)]
pub struct Facts {
    pub content_length: Option<u64>,
    pub chunked: bool,
    /// `Connection: close` / `keep-alive` tokens.
    pub close: bool,
    pub keep_alive: bool,
    /// `Connection: upgrade` and an `Upgrade` field.
    pub upgrade_token: bool,
    pub has_upgrade: bool,
    /// `Expect: 100-continue`.
    pub expect_continue: bool,
}

/// Whether a field is hop-by-hop (RFC 9110 7.6.1) or framing, which the
/// proxy writes itself.
pub fn hop_by_hop(name: &str) -> bool {
    const HOP: [&str; 11] = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "expect",
    ];
    HOP.iter().any(|h| h.eq_ignore_ascii_case(name))
}

/// Reads the framing and connection fields of a head.
pub fn facts(headers: &[httparse::Header<'_>]) -> Result<Facts, FrameError> {
    let mut f = Facts::default();
    let mut te = false;
    for h in headers {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(h.value).map_err(|_| FrameError::BadLength)?.trim();
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                return Err(FrameError::BadLength);
            }
            let n: u64 = v.parse().map_err(|_| FrameError::BadLength)?;
            // Repeated fields must agree (RFC 9112 6.3).
            if f.content_length.is_some_and(|m| m != n) {
                return Err(FrameError::BadLength);
            }
            f.content_length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            te = true;
            // Only `chunked`, alone: other codings a proxy cannot frame.
            let v = std::str::from_utf8(h.value).map_err(|_| FrameError::BadTransferEncoding)?;
            if v.trim().eq_ignore_ascii_case("chunked") && !f.chunked {
                f.chunked = true;
            } else {
                return Err(FrameError::BadTransferEncoding);
            }
        } else if name.eq_ignore_ascii_case("connection") {
            for t in tokens(h.value) {
                if t.eq_ignore_ascii_case("close") {
                    f.close = true;
                } else if t.eq_ignore_ascii_case("keep-alive") {
                    f.keep_alive = true;
                } else if t.eq_ignore_ascii_case("upgrade") {
                    f.upgrade_token = true;
                }
            }
        } else if name.eq_ignore_ascii_case("upgrade") {
            f.has_upgrade = true;
        } else if name.eq_ignore_ascii_case("expect") {
            f.expect_continue = h.value.eq_ignore_ascii_case(b"100-continue");
        }
    }
    if te && f.content_length.is_some() {
        // A request smuggling vector: refused rather than guessed.
        return Err(FrameError::Ambiguous);
    }
    Ok(f)
}

/// The comma-separated tokens of a field value.
pub fn tokens(value: &[u8]) -> impl Iterator<Item = &str> {
    std::str::from_utf8(value).unwrap_or("").split(',').map(str::trim).filter(|t| !t.is_empty())
}

/// Whether the `Connection` fields name `name` (those fields are hop-by-hop too).
pub fn named_by_connection(headers: &[httparse::Header<'_>], name: &str) -> bool {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .any(|h| tokens(h.value).any(|t| t.eq_ignore_ascii_case(name)))
}

/// Appends the fields of `headers` a proxy passes on: not hop-by-hop, not
/// named by `Connection`, and not among `skip`.
pub fn copy_fields(out: &mut Vec<u8>, headers: &[httparse::Header<'_>], skip: &[&str]) {
    let named = headers.iter().any(|h| h.name.eq_ignore_ascii_case("connection"));
    for h in headers {
        if hop_by_hop(h.name)
            || skip.iter().any(|s| s.eq_ignore_ascii_case(h.name))
            || named && named_by_connection(headers, h.name)
        {
            continue;
        }
        field(out, h.name, h.value);
    }
}

/// Appends one field line.
pub fn field(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Appends a `Content-Length` field.
pub fn content_length(out: &mut Vec<u8>, n: u64) {
    let mut s = String::with_capacity(40);
    let _ = write!(s, "content-length: {n}\r\n");
    out.extend_from_slice(s.as_bytes());
}

/// A response's body length (RFC 9112 6.3), given the request's method.
pub fn response_body(status: u16, head_request: bool, f: &Facts) -> BodyLen {
    if head_request || (100..200).contains(&status) || status == 204 || status == 304 {
        BodyLen::None
    } else if f.chunked {
        BodyLen::Chunked
    } else if let Some(n) = f.content_length {
        BodyLen::Length(n)
    } else {
        BodyLen::UntilClose
    }
}

/// Finds where a chunked body ends, a piece at a time.
#[derive(Default, Debug)]
pub struct Chunks {
    state: ChunkState,
    size: u64,
}

#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    /// Chunk extensions or whitespace after the size, up to CR.
    Ext,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final CRLF).
    TrailerStart,
    TrailerLine,
    EndLf,
    Done,
}

impl Chunks {
    /// Scans `buf`, the body's next bytes; returns how many of them belong
    /// to the body (all of them, unless it ended inside `buf`).
    pub fn scan(&mut self, buf: &[u8]) -> Result<usize, FrameError> {
        use ChunkState::*;
        let mut i = 0;
        while i < buf.len() && self.state != Done {
            let b = buf[i];
            match self.state {
                Size => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        let d = (b as char).to_digit(16).unwrap_or(0) as u64;
                        if self.size > (u64::MAX >> 4) {
                            return Err(FrameError::BadChunk);
                        }
                        self.size = self.size << 4 | d;
                    }
                    b';' | b' ' | b'\t' => self.state = Ext,
                    b'\r' => self.state = SizeLf,
                    _ => return Err(FrameError::BadChunk),
                },
                Ext => {
                    if b == b'\r' {
                        self.state = SizeLf;
                    }
                }
                SizeLf => {
                    if b != b'\n' {
                        return Err(FrameError::BadChunk);
                    }
                    self.state = if self.size == 0 { TrailerStart } else { Data };
                }
                Data => {
                    let n = (buf.len() - i).min(usize::try_from(self.size).unwrap_or(usize::MAX));
                    self.size -= n as u64;
                    i += n;
                    if self.size == 0 {
                        self.state = DataCr;
                    }
                    continue;
                }
                DataCr => {
                    if b != b'\r' {
                        return Err(FrameError::BadChunk);
                    }
                    self.state = DataLf;
                }
                DataLf => {
                    if b != b'\n' {
                        return Err(FrameError::BadChunk);
                    }
                    self.state = Size;
                }
                TrailerStart => self.state = if b == b'\r' { EndLf } else { TrailerLine },
                TrailerLine => {
                    if b == b'\n' {
                        self.state = TrailerStart;
                    }
                }
                EndLf => {
                    if b != b'\n' {
                        return Err(FrameError::BadChunk);
                    }
                    self.state = Done;
                }
                Done => {}
            }
            i += 1;
        }
        Ok(i)
    }

    /// Whether the body has ended.
    pub fn done(&self) -> bool {
        self.state == ChunkState::Done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(body: &[u8]) -> Result<Option<usize>, FrameError> {
        let mut c = Chunks::default();
        let n = c.scan(body)?;
        Ok(c.done().then_some(n))
    }

    #[test]
    fn chunked_bodies_end_where_they_say() {
        assert_eq!(whole(b"3\r\nabc\r\n0\r\n\r\nNEXT"), Ok(Some(13)));
        assert_eq!(whole(b"3;x=y\r\nabc\r\n0\r\nTrailer: t\r\n\r\n"), Ok(Some(29)));
        assert_eq!(whole(b"3\r\nabc\r\n"), Ok(None));
        assert_eq!(whole(b"zz\r\n"), Err(FrameError::BadChunk));
        assert_eq!(whole(b"3\r\nabcd\r\n"), Err(FrameError::BadChunk));
        assert_eq!(whole(b"ffffffffffffffffff\r\n"), Err(FrameError::BadChunk));
        // A byte at a time ends at the same place.
        let body = b"a\r\n0123456789\r\n0\r\n\r\n";
        let mut c = Chunks::default();
        for (i, b) in body.iter().enumerate() {
            assert_eq!(c.scan(std::slice::from_ref(b)), Ok(1));
            assert_eq!(c.done(), i + 1 == body.len());
        }
    }

    #[test]
    fn framing_fields_are_checked() {
        let h = |n: &'static str, v: &'static [u8]| httparse::Header { name: n, value: v };
        assert_eq!(facts(&[h("Content-Length", b"12")]).map(|f| f.content_length), Ok(Some(12)));
        assert_eq!(facts(&[h("content-length", b"1x")]).map(|_| ()), Err(FrameError::BadLength));
        assert_eq!(
            facts(&[h("content-length", b"1"), h("content-length", b"2")]).map(|_| ()),
            Err(FrameError::BadLength)
        );
        assert_eq!(
            facts(&[h("content-length", b"1"), h("transfer-encoding", b"chunked")]).map(|_| ()),
            Err(FrameError::Ambiguous)
        );
        assert_eq!(facts(&[h("transfer-encoding", b"gzip")]).map(|_| ()), Err(FrameError::BadTransferEncoding));
        let f = facts(&[h("Connection", b"Upgrade, keep-alive"), h("Upgrade", b"websocket")]).expect("facts");
        assert!(f.upgrade_token && f.has_upgrade && f.keep_alive && !f.close);
        let mut out = Vec::new();
        copy_fields(&mut out, &[h("Connection", b"x-hop"), h("X-Hop", b"1"), h("Accept", b"*/*")], &[]);
        assert_eq!(out, b"Accept: */*\r\n");
    }
}
