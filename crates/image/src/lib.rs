//! The node's image store: pulls OCI / Docker images from registries (v2)
//! with `oci-client`, keeps each layer once by digest, unpacked into its own
//! directory (OCI whiteouts turned into overlayfs ones, so the layers stack
//! as overlay lower dirs), and records each image's layers and run config.
//!
//! Layout under the store's root:
//! - `layers/<hex>/`: one layer, unpacked; shared by every image that has it.
//!   Created under a temporary name and renamed, so a present directory is a
//!   complete layer.
//! - `images/<hex of the reference>.json`: an [`Image`] (what a reference
//!   resolved to when it was last pulled, and when a task last used it).
//!
//! Credentials come from Docker `config.json` documents ([`RegistryConfig`]):
//! the node's file and, per pull, an app's `pullConfig` secret.

mod auth;
mod gc;
mod layout;
mod unpack;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// How stale an image's recorded last use may be (milliseconds).
const LAST_USED_GRAIN_MS: u64 = 10_000;

/// Numbers temporary files of concurrent pulls.
static PULLS: AtomicU64 = AtomicU64::new(0);

pub use auth::{default_registry_config, RegistryConfig};
pub use gc::GcReport;
pub use unpack::unpack_layer;

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("invalid image reference {reference:?}: {message}")]
    Reference { reference: String, message: String },
    #[error("pulling {reference}: {message}")]
    Pull { reference: String, message: String },
    #[error("image {reference}: {message}")]
    Config { reference: String, message: String },
    #[error("registry credentials in {origin}: {message}")]
    Credentials { origin: String, message: String },
    #[error("image {reference} is in use by a running container")]
    InUse { reference: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ImageError {
    let context = context.into();
    move |source| ImageError::Io { context, source }
}

/// What an image runs, from its config (Docker's and OCI's are the same
/// JSON for these fields).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RunConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `NAME=value` entries.
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
}

/// A pulled image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    /// The reference as the app gave it.
    pub reference: String,
    /// The digest of the manifest it resolved to.
    pub digest: String,
    /// Layer digests, lowest first.
    pub layers: Vec<String>,
    /// Compressed size of all layers in bytes.
    pub size: u64,
    pub config: RunConfig,
    /// When it was pulled or imported, a task was started from it (within
    /// 10 s) or a running container was found using it (Unix milliseconds);
    /// garbage collection goes by it.
    #[serde(default)]
    pub last_used: u64,
}

/// Registry credentials for a pull.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    // Never the password, whoever prints it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}:***)", self.username)
    }
}

/// How a store reaches registries.
#[derive(Debug, Clone, Default)]
pub struct StoreConfig {
    /// `host:port` of registries spoken to over plain HTTP.
    pub insecure: Vec<String>,
    /// The node's Docker `config.json` (`--registry-config`), read at every
    /// pull so a `docker login` after the node started counts.
    pub registry_config: Option<PathBuf>,
}

/// Image store of one node. Cheap to clone.
#[derive(Clone)]
pub struct ImageStore {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    config: StoreConfig,
    /// One lock per reference: concurrent launches of an app pull once.
    pulling: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Held (shared) by every `ensure`, and alone by garbage collection, so
    /// a layer unpacked for an image not recorded yet is never collected.
    gc_lock: tokio::sync::RwLock<()>,
}

/// Loopback registries are spoken to over plain HTTP, as Docker does.
fn is_loopback(registry: &str) -> bool {
    let host = match registry.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => registry,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn hex_of(digest: &str) -> Result<&str, String> {
    match digest.split_once(':') {
        Some(("sha256", hex)) if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => Ok(hex),
        _ => Err(format!("unsupported digest {digest:?}")),
    }
}

/// Parses an image reference as Docker does (`busybox` is
/// `docker.io/library/busybox:latest`).
pub fn parse_reference(reference: &str) -> Result<Reference, ImageError> {
    reference
        .parse::<Reference>()
        .map_err(|e| ImageError::Reference { reference: reference.to_string(), message: e.to_string() })
}

/// The credentials a pull from `registry` uses: `app`'s (its `pullConfig`)
/// when it has some for that registry, else those of the node's file
/// (read now, so a `docker login` after the node started counts), else none.
fn credentials_for(
    registry: &str,
    app: Option<&RegistryConfig>,
    node_file: Option<&Path>,
) -> Result<Option<Credentials>, ImageError> {
    if let Some(c) = app.and_then(|a| a.credentials_for(registry)) {
        return Ok(Some(c.clone()));
    }
    let Some(path) = node_file else { return Ok(None) };
    Ok(RegistryConfig::load(path)?.credentials_for(registry).cloned())
}

/// The registry `reference` is pulled from (`host[:port]`; Docker Hub's is
/// `index.docker.io`) and the credentials for it, chosen as the store
/// chooses them: for pulls made elsewhere (the Docker engine's).
pub fn pull_credentials(
    reference: &str,
    app: Option<&RegistryConfig>,
    node_file: Option<&Path>,
) -> Result<(String, Option<Credentials>), ImageError> {
    let parsed = parse_reference(reference)?;
    let registry = parsed.resolve_registry().to_string();
    let credentials = credentials_for(&registry, app, node_file)?;
    Ok((registry, credentials))
}

impl ImageStore {
    pub fn open(root: PathBuf, insecure: Vec<String>) -> Result<ImageStore, ImageError> {
        ImageStore::open_with(root, StoreConfig { insecure, registry_config: None })
    }

    /// Opens the store; a registry config that cannot be read is an error
    /// now rather than at the first pull.
    pub fn open_with(root: PathBuf, config: StoreConfig) -> Result<ImageStore, ImageError> {
        if let Some(path) = &config.registry_config {
            RegistryConfig::load(path)?;
        }
        for d in ["layers", "images", "tmp"] {
            let dir = root.join(d);
            std::fs::create_dir_all(&dir).map_err(io_err(format!("create {}", dir.display())))?;
        }
        Ok(ImageStore {
            inner: Arc::new(Inner {
                root,
                config,
                pulling: Mutex::new(HashMap::new()),
                gc_lock: tokio::sync::RwLock::new(()),
            }),
        })
    }

    /// A fresh path under the store's `tmp/`.
    pub(crate) fn temp_path(&self, what: &str) -> PathBuf {
        let n = PULLS.fetch_add(1, Ordering::Relaxed);
        self.inner.root.join("tmp").join(format!("{what}.{}.{n}", std::process::id()))
    }

    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// The unpacked directory of a layer.
    pub fn layer_dir(&self, digest: &str) -> PathBuf {
        let hex = hex_of(digest).unwrap_or(digest);
        self.inner.root.join("layers").join(hex)
    }

    pub(crate) fn record_path(&self, reference: &str) -> PathBuf {
        let key = format!("{:x}", Sha256::digest(reference.as_bytes()));
        self.inner.root.join("images").join(format!("{key}.json"))
    }

    pub(crate) fn record_at(&self, path: &Path) -> Option<Image> {
        serde_json::from_slice(&std::fs::read(path).ok()?).ok()
    }

    /// The image as last pulled, if all its layers are still here.
    pub fn get(&self, reference: &str) -> Option<Image> {
        let image = self.record_at(&self.record_path(reference))?;
        image.layers.iter().all(|l| self.layer_dir(l).is_dir()).then_some(image)
    }

    /// Every image recorded here.
    pub fn list(&self) -> Vec<Image> {
        let Ok(entries) = std::fs::read_dir(self.inner.root.join("images")) else { return Vec::new() };
        let mut out: Vec<Image> = entries
            .flatten()
            .filter_map(|e| std::fs::read(e.path()).ok())
            .filter_map(|d| serde_json::from_slice(&d).ok())
            .collect();
        out.sort_by(|a: &Image, b| a.reference.cmp(&b.reference));
        out
    }

    /// The image, pulled first unless it is here already (always with
    /// `force_pull`), and marked used now. Layers already here are not
    /// downloaded again. Credentials for the registry come from `auth` (an
    /// app's `pullConfig`) when it has some for it, else from the node's
    /// registry config, else none.
    pub async fn ensure(
        &self,
        reference: &str,
        force_pull: bool,
        auth: Option<&RegistryConfig>,
    ) -> Result<Image, ImageError> {
        let parsed = parse_reference(reference)?;
        let lock = {
            let mut pulling = self.inner.pulling.lock().unwrap_or_else(|e| e.into_inner());
            pulling.entry(reference.to_string()).or_default().clone()
        };
        let _held = lock.lock().await;
        let _not_collecting = self.inner.gc_lock.read().await;
        if !force_pull {
            if let Some(mut image) = self.get(reference) {
                // Kept to within LAST_USED_GRAIN: a burst of launches of one
                // image writes its record once, not once per start.
                let now = now_millis();
                if now.saturating_sub(image.last_used) > LAST_USED_GRAIN_MS {
                    image.last_used = now;
                    self.record(&image)?;
                }
                return Ok(image);
            }
        }
        let credentials = self.credentials(parsed.resolve_registry(), auth)?;
        self.pull(reference, &parsed, credentials.as_ref()).await
    }

    /// The credentials a pull from `registry` uses.
    fn credentials(&self, registry: &str, auth: Option<&RegistryConfig>) -> Result<Option<Credentials>, ImageError> {
        credentials_for(registry, auth, self.registry_config())
    }

    /// The node's Docker `config.json` (`--registry-config`), if any.
    pub fn registry_config(&self) -> Option<&Path> {
        self.inner.config.registry_config.as_deref()
    }

    fn client(&self, registry: &str) -> Client {
        let mut insecure = self.inner.config.insecure.clone();
        if is_loopback(registry) {
            insecure.push(registry.to_string());
        }
        Client::new(ClientConfig {
            protocol: ClientProtocol::HttpsExcept(insecure),
            connect_timeout: Some(std::time::Duration::from_secs(10)),
            read_timeout: Some(std::time::Duration::from_secs(60)),
            ..ClientConfig::default()
        })
    }

    async fn pull(
        &self,
        reference: &str,
        parsed: &Reference,
        credentials: Option<&Credentials>,
    ) -> Result<Image, ImageError> {
        let pull_err = |e: oci_client::errors::OciDistributionError| ImageError::Pull {
            reference: reference.to_string(),
            message: describe(&e),
        };
        let client = self.client(parsed.resolve_registry());
        let auth = match credentials {
            Some(c) => RegistryAuth::Basic(c.username.clone(), c.password.clone()),
            None => RegistryAuth::Anonymous,
        };
        let (manifest, digest, config) = client.pull_manifest_and_config(parsed, &auth).await.map_err(pull_err)?;
        let config =
            run_config(&config).map_err(|message| ImageError::Config { reference: reference.to_string(), message })?;
        let mut layers = Vec::new();
        let mut size = 0u64;
        for layer in &manifest.layers {
            let hex = hex_of(&layer.digest)
                .map_err(|message| ImageError::Config { reference: reference.to_string(), message })?
                .to_string();
            size += u64::try_from(layer.size).unwrap_or(0);
            layers.push(layer.digest.clone());
            let dir = self.layer_dir(&layer.digest);
            if dir.is_dir() {
                continue;
            }
            // The blob goes to a file first: pull_blob checks its digest
            // while writing, and only a verified blob is unpacked.
            let tmp = self.inner.root.join("tmp");
            // Unique per pull: two images sharing a layer may pull it at once.
            let unique = format!("{hex}.{}.{}", std::process::id(), PULLS.fetch_add(1, Ordering::Relaxed));
            let blob = tmp.join(format!("{unique}.blob"));
            let file = tokio::fs::File::create(&blob).await.map_err(io_err(format!("create {}", blob.display())))?;
            let mut writer = tokio::io::BufWriter::with_capacity(1 << 20, file);
            let pulled = client.pull_blob(parsed, layer, &mut writer).await;
            let flushed = tokio::io::AsyncWriteExt::flush(&mut writer).await;
            drop(writer);
            if let Err(e) = pulled {
                let _ = std::fs::remove_file(&blob);
                return Err(pull_err(e));
            }
            flushed.map_err(io_err(format!("write {}", blob.display())))?;
            let (blob2, dir2, tmp2) = (blob.clone(), dir.clone(), tmp.join(unique));
            let unpacked = tokio::task::spawn_blocking(move || {
                let r = unpack::unpack_blob(&blob2, &tmp2).and_then(|()| match std::fs::rename(&tmp2, &dir2) {
                    Ok(()) => Ok(()),
                    // Unpacked meanwhile by another pull: the same bytes.
                    Err(_) if dir2.is_dir() => {
                        let _ = std::fs::remove_dir_all(&tmp2);
                        Ok(())
                    }
                    Err(e) => Err(e),
                });
                if r.is_err() {
                    let _ = std::fs::remove_dir_all(&tmp2);
                }
                let _ = std::fs::remove_file(&blob2);
                r
            })
            .await
            .map_err(|e| io_err("unpack layer")(std::io::Error::other(e)))?;
            unpacked.map_err(io_err(format!("unpack layer {}", layer.digest)))?;
        }
        let image = Image { reference: reference.to_string(), digest, layers, size, config, last_used: now_millis() };
        self.record(&image)?;
        Ok(image)
    }

    /// Imports an image from a file for hosts without a registry: an OCI
    /// image layout (a directory, or a tar of one) or a `docker save`
    /// archive, under `reference` or the name the file gives it.
    pub fn import(&self, path: &Path, reference: Option<&str>) -> Result<Image, ImageError> {
        if path.is_dir() {
            if !layout::is_layout(path) {
                return Err(ImageError::Config {
                    reference: path.display().to_string(),
                    message: "not an OCI image layout (no oci-layout and index.json)".into(),
                });
            }
            return self.import_layout(path, path, reference);
        }
        let tmp = self.temp_path("import");
        let r = self.import_tar(path, &tmp, reference);
        let _ = std::fs::remove_dir_all(&tmp);
        r
    }

    fn import_tar(&self, archive: &Path, tmp: &Path, reference: Option<&str>) -> Result<Image, ImageError> {
        let file = std::fs::File::open(archive).map_err(io_err(format!("open {}", archive.display())))?;
        tar::Archive::new(std::io::BufReader::new(file))
            .unpack(tmp)
            .map_err(io_err(format!("read {} (not a tar archive?)", archive.display())))?;
        if layout::is_layout(tmp) {
            self.import_layout(tmp, archive, reference)
        } else {
            self.import_docker_save(archive, tmp, reference)
        }
    }

    /// Imports a `docker save` archive (its first image, under its first
    /// tag, or `reference` when given), for hosts without a registry. Layers
    /// are identified by the sha256 of their tar, as in OCI image configs'
    /// `diff_ids`, and shared like pulled ones.
    pub fn import_docker_archive(&self, archive: &Path, reference: Option<&str>) -> Result<Image, ImageError> {
        self.import(archive, reference)
    }

    /// A `docker save` archive unpacked into `tmp`.
    fn import_docker_save(&self, archive: &Path, tmp: &Path, reference: Option<&str>) -> Result<Image, ImageError> {
        let bad = |message: String| ImageError::Config { reference: archive.display().to_string(), message };
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Entry {
            config: String,
            repo_tags: Option<Vec<String>>,
            layers: Vec<String>,
        }
        let manifest = std::fs::read(tmp.join("manifest.json")).map_err(|e| {
            bad(format!("neither an OCI image layout nor a docker save archive (no manifest.json): {e}"))
        })?;
        let entries: Vec<Entry> = serde_json::from_slice(&manifest).map_err(|e| bad(format!("manifest.json: {e}")))?;
        let entry = entries.into_iter().next().ok_or_else(|| bad("manifest.json lists no image".into()))?;
        let reference = match reference {
            Some(r) => r.to_string(),
            None => entry
                .repo_tags
                .and_then(|t| t.into_iter().next())
                .ok_or_else(|| bad("the image has no tag; give a reference".into()))?,
        };
        parse_reference(&reference)?;
        let config_json =
            std::fs::read_to_string(safe_path(tmp, &entry.config).ok_or_else(|| bad("bad config path".into()))?)
                .map_err(|e| bad(format!("config {}: {e}", entry.config)))?;
        let config = run_config(&config_json).map_err(bad)?;
        let mut layers = Vec::new();
        let mut size = 0;
        for l in &entry.layers {
            let path = safe_path(tmp, l).ok_or_else(|| bad(format!("bad layer path {l}")))?;
            let data = std::fs::read(&path).map_err(|e| bad(format!("layer {l}: {e}")))?;
            size += data.len() as u64;
            let digest = format!("sha256:{:x}", Sha256::digest(&data));
            let dir = self.layer_dir(&digest);
            if !dir.is_dir() {
                let staging = tmp.join(format!("layer.{}", layers.len()));
                unpack::unpack_blob(&path, &staging).map_err(io_err(format!("unpack layer {l}")))?;
                if std::fs::rename(&staging, &dir).is_err() && !dir.is_dir() {
                    return Err(bad(format!("cannot store layer {digest}")));
                }
            }
            layers.push(digest);
        }
        let digest = format!("sha256:{:x}", Sha256::digest(config_json.as_bytes()));
        let image = Image { reference: reference.clone(), digest, layers, size, config, last_used: now_millis() };
        self.record(&image)?;
        Ok(image)
    }

    fn record(&self, image: &Image) -> Result<(), ImageError> {
        let data = serde_json::to_vec_pretty(image).map_err(|e| io_err("encode image")(std::io::Error::other(e)))?;
        let path = self.record_path(&image.reference);
        // Unique: launches of one image may record it at once.
        let tmp = self.temp_path("record");
        std::fs::write(&tmp, data).and_then(|()| std::fs::rename(&tmp, &path)).map_err(io_err("record image"))
    }
}

/// `dir/rel` for a relative path that stays inside `dir`.
fn safe_path(dir: &Path, rel: &str) -> Option<PathBuf> {
    let p = Path::new(rel);
    p.components().all(|c| matches!(c, std::path::Component::Normal(_))).then(|| dir.join(p))
}

/// The registry's own words where it gave some.
fn describe(e: &oci_client::errors::OciDistributionError) -> String {
    use oci_client::errors::OciDistributionError as E;
    match e {
        E::RequestError(r) => {
            let mut msg = r.to_string();
            let mut src = std::error::Error::source(r);
            while let Some(s) = src {
                msg = format!("{msg}: {s}");
                src = s.source();
            }
            msg
        }
        // oci-client keeps only the url of a 401; say what it means.
        E::UnauthorizedError { url } => {
            format!("the registry answered 401 Unauthorized (missing or wrong credentials) for {url}")
        }
        other => other.to_string(),
    }
}

/// The run settings of an image config (OCI's `ImageConfiguration`).
fn run_config(json: &str) -> Result<RunConfig, String> {
    let parsed: oci_spec::image::ImageConfiguration =
        serde_json::from_str(json).map_err(|e| format!("bad image config: {e}"))?;
    let c = parsed.config().clone().unwrap_or_default();
    let nonempty = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
    Ok(RunConfig {
        entrypoint: c.entrypoint().clone().unwrap_or_default(),
        cmd: c.cmd().clone().unwrap_or_default(),
        env: c.env().clone().unwrap_or_default(),
        working_dir: nonempty(c.working_dir()),
        user: nonempty(c.user()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_registries_are_insecure() {
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(is_loopback("localhost:5000"));
        assert!(is_loopback("[::1]:5000"));
        assert!(!is_loopback("registry.example.com:5000"));
        assert!(!is_loopback("10.0.0.1"));
    }

    #[test]
    fn run_config_reads_docker_configs() {
        let json = r#"{"architecture":"amd64","os":"linux","config":{"Entrypoint":["/bin/httpd"],"Cmd":["-f"],"Env":["PATH=/bin"],"WorkingDir":"/www","User":""},"rootfs":{"type":"layers","diff_ids":[]}}"#;
        let c = run_config(json).expect("config");
        assert_eq!(c.entrypoint, vec!["/bin/httpd"]);
        assert_eq!(c.cmd, vec!["-f"]);
        assert_eq!(c.env, vec!["PATH=/bin"]);
        assert_eq!(c.working_dir.as_deref(), Some("/www"));
        assert_eq!(c.user, None);
    }

    #[test]
    fn bad_references_are_refused() {
        assert!(matches!(parse_reference("UPPER/Case::x"), Err(ImageError::Reference { .. })));
        assert!(parse_reference("busybox").is_ok());
        assert!(parse_reference(
            "127.0.0.1:5000/a/b@sha256:0000000000000000000000000000000000000000000000000000000000000000"
        )
        .is_ok());
    }
}
