//! A reader of one `GET /v2/events` server-sent event stream.

use super::Node;
use reqwest::StatusCode;
use serde_json::Value;
use std::time::{Duration, Instant};

/// A reader of one SSE response.
pub struct Stream {
    resp: reqwest::Response,
    buf: String,
}

impl Stream {
    pub async fn open(node: &Node, query: &str) -> Stream {
        let client = reqwest::Client::new();
        let resp = client
            .get(format!("{}/v2/events{query}", node.addr()))
            .header("accept", "text/event-stream")
            .send()
            .await
            .expect("open stream");
        assert_eq!(resp.status(), StatusCode::OK);
        let ct = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        assert!(ct.starts_with("text/event-stream"), "content type {ct}");
        Stream { resp, buf: String::new() }
    }

    /// The next event as (type, data); None on timeout.
    pub async fn next(&mut self, timeout: Duration) -> Option<(String, Value)> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut kind = String::new();
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        kind = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim());
                    }
                }
                if kind.is_empty() {
                    continue; // keep-alive comment
                }
                return Some((kind, serde_json::from_str(&data).expect("event data is JSON")));
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            match tokio::time::timeout(left, self.resp.chunk()).await {
                Ok(Ok(Some(bytes))) => self.buf.push_str(&String::from_utf8_lossy(&bytes)),
                _ => return None,
            }
        }
    }

    /// Events until `stop` holds for one (included), each within `wait`.
    pub async fn until(
        &mut self,
        what: &str,
        wait: Duration,
        stop: impl Fn(&str, &Value) -> bool,
    ) -> Vec<(String, Value)> {
        let mut seen = Vec::new();
        loop {
            let Some((k, v)) = self.next(wait).await else {
                panic!("no {what} in {seen:#?}");
            };
            let done = stop(&k, &v);
            seen.push((k, v));
            if done {
                return seen;
            }
        }
    }
}
