//! The load balancer's series for `/metrics`, read from the routing table at
//! scrape time (backends come and go with tasks, so they are not registered
//! one by one): per backend, requests, errors, bytes and connections as
//! counters and what is in flight as a gauge, labelled with the service
//! port or virtual host, the app and the task.

use crate::table::{Backend, Lb, Service};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::Ordering;
use std::sync::Arc;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabels {
    /// `tcp:10000`, `udp:10001` or `http:<host><path>`.
    frontend: String,
    app: String,
    task: String,
    backend: String,
}

/// Registers the LB's series (under the registry's prefix, `wharf`).
pub fn register(lb: Arc<Lb>, registry: &mut Registry) {
    registry.register_collector(Box::new(LbCollector(lb)));
}

#[derive(Debug)]
struct LbCollector(Arc<Lb>);

impl std::fmt::Debug for Lb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lb").field("cfg", &self.cfg).finish_non_exhaustive()
    }
}

type Row = (BackendLabels, Arc<Backend>);
/// A counter series: name, help and how to read it from a backend.
type CounterSeries = (&'static str, &'static str, fn(&Backend) -> u64);

impl Collector for LbCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let routes = self.0.routes();
        let mut rows: Vec<Row> = Vec::new();
        let mut add = |frontend: String, s: &Arc<Service>| {
            for b in &s.backends {
                let labels = BackendLabels {
                    frontend: frontend.clone(),
                    app: s.app.to_string(),
                    task: b.task.to_string(),
                    backend: b.addr.to_string(),
                };
                rows.push((labels, b.clone()));
            }
        };
        for (port, s) in &routes.ports {
            add(format!("tcp:{port}"), s);
        }
        for (port, s) in &routes.udp {
            add(format!("udp:{port}"), s);
        }
        for v in &routes.vhosts {
            add(format!("http:{}{}", v.host, v.path), &v.service);
        }
        let counters: [CounterSeries; 4] = [
            ("lb_backend_requests", "Requests (HTTP), connections (TCP) or datagrams (UDP) sent to a backend", |b| {
                b.requests.load(Ordering::Relaxed)
            }),
            ("lb_backend_errors", "Failed connections and requests of a backend (refused, timed out, 5xx)", |b| {
                b.errors.load(Ordering::Relaxed)
            }),
            ("lb_backend_bytes", "Bytes proxied to and from a backend", |b| b.bytes.load(Ordering::Relaxed)),
            ("lb_backend_connections", "Connections (TCP, websocket) and client sessions (UDP) to a backend", |b| {
                b.connections.load(Ordering::Relaxed)
            }),
        ];
        for (name, help, value) in counters {
            let mut family =
                encoder.encode_descriptor(name, help, None, prometheus_client::metrics::MetricType::Counter)?;
            for (labels, b) in &rows {
                ConstCounter::new(value(b)).encode(family.encode_family(labels)?)?;
            }
        }
        let mut active = encoder.encode_descriptor(
            "lb_backend_active",
            "Connections open or requests in flight to a backend now",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (labels, b) in &rows {
            ConstGauge::new(b.active.load(Ordering::Relaxed) as i64).encode(active.encode_family(labels)?)?;
        }
        Ok(())
    }
}
