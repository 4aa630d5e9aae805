//! Service discovery: a DNS server on every node, answering Mesos-DNS's names
//! for the cluster domain from this node's replica, and forwarding every
//! other name upstream; plus Mesos-DNS's HTTP API.
//!
//! Owns: the naming rules (`names`), the record table built from the store's
//! endpoint stream (`zone`), the query answering (`answer`), upstream
//! forwarding (`forward`) and the listeners (`server`).
//!
//! Invariants: records change only from the endpoint stream and the
//! leadership watch (nothing polls); a query never waits on the store.

pub mod answer;
pub mod batch;
pub mod fast;
pub mod forward;
pub mod http;
pub mod metrics;
pub mod names;
pub mod server;
pub mod zone;
