//! What handlers share: the store, who this node is, and edge services
//! (clock, id generation, an HTTP client for reaching other nodes).

use model::{DeploymentId, NodeId, UnixMillis};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use store::Store;

/// The API's clock: proposers stamp times, so this is where they are read.
pub(crate) fn now() -> UnixMillis {
    UnixMillis::from_system_time(std::time::SystemTime::now())
}

pub struct ApiContext {
    pub store: Arc<Store>,
    pub node: NodeId,
    /// Where this node's task sandboxes live (for logs of local tasks).
    pub sandbox_root: PathBuf,
    /// The node-to-node client (mTLS), for reaching the node that runs a
    /// task through its RPC port.
    pub client: trust::RpcClient,
    /// The event stream's bus, started by its first subscriber.
    pub(crate) events: OnceLock<crate::events::EventBus>,
    /// The node's Prometheus registry (`/metrics`).
    pub(crate) metrics: crate::metrics::Metrics,
    /// `--http-credentials`: HTTP Basic credentials with the admin role.
    pub(crate) credentials: Option<crate::auth::Credentials>,
    /// `https` when the nodes serve the API over TLS (for `X-Marathon-Leader`).
    pub(crate) scheme: &'static str,
    /// What the big listings keep rendered between reads.
    pub(crate) pieces: crate::listing::Pieces,
}

impl ApiContext {
    pub fn new(store: Arc<Store>, sandbox_root: PathBuf) -> ApiContext {
        ApiContext::with_registry(store, sandbox_root, prometheus_client::registry::Registry::with_prefix("wharf"))
    }

    /// As `new`, with `/metrics` also encoding what `registry` holds (the
    /// node's agent and scheduler series). Its prefix should be `wharf`.
    pub fn with_registry(
        store: Arc<Store>,
        sandbox_root: PathBuf,
        registry: prometheus_client::registry::Registry,
    ) -> ApiContext {
        let node = store.node_id();
        let metrics = crate::metrics::Metrics::new(&store, registry);
        let client = store.rpc_client();
        ApiContext {
            store,
            node,
            sandbox_root,
            client,
            events: OnceLock::new(),
            metrics,
            credentials: None,
            scheme: "http",
            pieces: Default::default(),
        }
    }

    /// Accept these HTTP Basic credentials as an admin (and ask every
    /// caller for credentials, see `auth`).
    pub fn with_credentials(mut self, credentials: Option<crate::auth::Credentials>) -> ApiContext {
        self.credentials = credentials;
        self
    }

    /// The API is served over HTTPS (every node is assumed to be alike).
    pub fn with_https(mut self, https: bool) -> ApiContext {
        self.scheme = if https { "https" } else { "http" };
        self
    }

    pub fn now(&self) -> UnixMillis {
        now()
    }

    /// A version stamp strictly later than `prev` (two writes in one
    /// millisecond still get distinct versions).
    pub fn version_after(&self, prev: Option<UnixMillis>) -> UnixMillis {
        let now = self.now();
        match prev {
            Some(p) if p >= now => UnixMillis(p.0 + 1),
            _ => now,
        }
    }

    pub fn new_deployment_id(&self) -> DeploymentId {
        DeploymentId::new(uuid::Uuid::new_v4())
    }
}

/// Renders a large answer from an immutable snapshot on a blocking thread,
/// so a listing of every task never holds up the async workers (Raft's
/// heartbeats run there too). The renderer writes the JSON itself
/// (serialising typed wire structs straight from the snapshot, with no
/// `Value` tree in between).
pub(crate) async fn render_bytes_blocking<B: AsRef<[u8]> + Send + 'static>(
    store: &Store,
    render: impl FnOnce(&model::ClusterState) -> serde_json::Result<B> + Send + 'static,
) -> Result<axum::response::Response, crate::error::HttpError> {
    use axum::response::IntoResponse;
    let snap = store.snapshot();
    let bytes = tokio::task::spawn_blocking(move || render(&snap))
        .await
        .map_err(|e| crate::error::HttpError(marathon::ApiError::new(500, format!("rendering failed: {e}"))))?
        .map_err(|e| crate::error::HttpError(marathon::ApiError::new(500, format!("rendering failed: {e}"))))?;
    let body = axum::body::Bytes::from_owner(bytes);
    Ok(([(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response())
}
