//! The CLI's side of the HTTP API: requests, the event stream, and readable
//! errors (naming the field Marathon's validation complained about, or what
//! to do when no node answers). The commands are in `cmd`.

use anyhow::{anyhow, Context};
use base64::Engine;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::time::Duration;

#[derive(Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
}

/// Whole requests; streams (logs, events) have no overall limit.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

impl Client {
    pub fn new(addr: &str) -> anyhow::Result<Client> {
        Client::with_auth(addr, None, None)
    }

    /// A client that sends `token` as a bearer token, or the user and
    /// password in `addr` (`http://user:pass@host:port`) as HTTP Basic, and
    /// trusts `cacert` (PEM) for `https://` addresses.
    pub fn with_auth(addr: &str, token: Option<&str>, cacert: Option<&std::path::Path>) -> anyhow::Result<Client> {
        let mut url = reqwest::Url::parse(addr).with_context(|| format!("--addr: '{addr}' is not a URL"))?;
        let basic = (!url.username().is_empty()).then(|| {
            let user = percent_decode(url.username());
            let pass = url.password().map(percent_decode).unwrap_or_default();
            format!("{user}:{pass}")
        });
        let _ = url.set_username("");
        let _ = url.set_password(None);
        let base = url.as_str().trim_end_matches('/').to_string();
        let auth = match (token, basic) {
            (Some(t), _) => Some(format!("Bearer {}", t.trim())),
            (None, Some(b)) => Some(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(b))),
            (None, None) => None,
        };
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(a) = auth {
            let mut v = reqwest::header::HeaderValue::from_str(&a)
                .context("the token or password has characters HTTP cannot carry")?;
            v.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, v);
        }
        let mut builder = reqwest::Client::builder().connect_timeout(Duration::from_secs(10)).default_headers(headers);
        if let Some(path) = cacert {
            let pem = std::fs::read(path).with_context(|| format!("--cacert: cannot read {}", path.display()))?;
            let ca = reqwest::Certificate::from_pem(&pem)
                .with_context(|| format!("--cacert: {} is not a PEM certificate", path.display()))?;
            builder = builder.add_root_certificate(ca);
        }
        Ok(Client { base, http: builder.build()? })
    }

    /// What to tell a user whose request never reached a node.
    fn unreachable(&self) -> String {
        format!(
            "cannot reach Wharf at {}: is a node running there? Point WHARF_ADDR (or --addr) at any node's HTTP address",
            self.base
        )
    }

    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> anyhow::Result<(StatusCode, Value)> {
        let mut req = self.http.request(method, format!("{}{}", self.base, path)).timeout(REQUEST_TIMEOUT);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.with_context(|| self.unreachable())?;
        let status = resp.status();
        let text = resp.text().await?;
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, v))
    }

    /// A PUT of raw bytes (a secret's value); a non-2xx answer is an error.
    pub async fn put_bytes(&self, path: &str, body: Vec<u8>) -> anyhow::Result<(StatusCode, Value)> {
        let req = self
            .http
            .put(format!("{}{}", self.base, path))
            .timeout(REQUEST_TIMEOUT)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(body);
        let resp = req.send().await.with_context(|| self.unreachable())?;
        let status = resp.status();
        let text = resp.text().await?;
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status.is_success() {
            Ok((status, v))
        } else {
            Err(api_error(status, &v))
        }
    }

    /// Like `call`, but a non-2xx answer becomes an error that says why.
    pub async fn ok(&self, method: Method, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
        let (status, v) = self.call(method, path, body).await?;
        if status.is_success() {
            Ok(v)
        } else {
            Err(api_error(status, &v))
        }
    }

    /// A GET whose body is read as it comes (logs, events); a non-2xx
    /// answer is an error that says why.
    pub async fn stream(&self, path: &str) -> anyhow::Result<reqwest::Response> {
        let resp = self.http.get(format!("{}{}", self.base, path)).send().await.with_context(|| self.unreachable())?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        Err(api_error(status, &serde_json::from_str(&text).unwrap_or(Value::String(text))))
    }

    /// `/v2/events`: Marathon's events as `(eventType, event)`, in order.
    pub async fn events(&self) -> anyhow::Result<Events> {
        let resp = self.stream("/v2/events").await?;
        Ok(Events { body: Box::pin(resp.bytes_stream()), buf: Vec::new() })
    }
}

/// A server-sent event stream, read one event at a time.
pub struct Events {
    body: std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buf: Vec<u8>,
}

impl Events {
    /// The next event; `None` when the node closed the stream.
    pub async fn next(&mut self) -> anyhow::Result<Option<(String, Value)>> {
        use futures::StreamExt;
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let raw: Vec<u8> = self.buf.drain(..end + 2).collect();
                let text = String::from_utf8_lossy(&raw);
                let (mut kind, mut data) = (String::new(), String::new());
                for line in text.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        kind = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if data.is_empty() {
                    continue;
                }
                let v: Value = serde_json::from_str(&data).unwrap_or(Value::Null);
                if kind.is_empty() {
                    kind = v["eventType"].as_str().unwrap_or_default().to_string();
                }
                return Ok(Some((kind, v)));
            }
            match self.body.next().await {
                Some(chunk) => self.buf.extend_from_slice(&chunk.context("the event stream broke off")?),
                None => return Ok(None),
            }
        }
    }
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// `422: /cpus: must be at least 0.001` — one line per failed field.
pub fn api_error(status: StatusCode, v: &Value) -> anyhow::Error {
    let msg = v.get("message").and_then(Value::as_str).map(str::to_string).unwrap_or_else(|| v.to_string());
    let mut lines = vec![format!("{} ({})", msg, status.as_u16())];
    if let Some(details) = v.get("details").and_then(Value::as_array) {
        for d in details {
            let path = d.get("path").and_then(Value::as_str).unwrap_or("/");
            let errors: Vec<&str> = d
                .get("errors")
                .and_then(Value::as_array)
                .map(|e| e.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            lines.push(format!("  field {path}: {}", errors.join("; ")));
        }
    }
    if let Some(deps) = v.get("deployments").and_then(Value::as_array) {
        for d in deps {
            lines.push(format!("  held by deployment {}", d.get("id").and_then(Value::as_str).unwrap_or("?")));
        }
    }
    anyhow!(lines.join("\n"))
}
#[cfg(test)]
mod tests {
    #[test]
    fn credentials_in_the_address_are_percent_decoded() {
        assert_eq!(super::percent_decode("p%40ss%3Aword"), "p@ss:word");
    }
}
