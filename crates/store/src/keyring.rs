//! The cluster's data key (DEK), which seals secret values before they are
//! proposed, so the Raft log, snapshots and redb files hold only ciphertext.
//!
//! The first node makes the DEK at bootstrap; a node that joins asks a member
//! for it over the node RPC (`POST /cluster/data-key`, answered only to a
//! member of the Raft membership; the RPC transport authenticates peers).
//! Each node keeps it in `<state>/data-key.json`, wrapped (AEAD) by a
//! key-encryption key (KEK). The KEK is in `<state>/key-encryption-key`
//! beside it, unless the node is autolocked: then it is shown once to the
//! operator and the node holds no DEK after a restart until it is unlocked
//! with it (Swarm's autolock).
//!
//! Cipher: ChaCha20-Poly1305 from `ring` (already the TLS provider), a fresh
//! random 96-bit nonce per value; the secret's path is the associated data.

use crate::raft_types::Raft;
use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use model::{Sealed, SecretPath};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use zeroize::Zeroizing;

const KEY_LEN: usize = 32;
const DEK_FILE: &str = "data-key.json";
const KEK_FILE: &str = "key-encryption-key";
/// Associated data of the wrapped DEK (a secret's is its path).
const WRAP_AAD: &[u8] = b"wharf data key";
/// Prefix of an autolock unlock key as shown to the operator.
const UNLOCK_PREFIX: &str = "WHARFKEY-1-";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("the system's random source failed")]
    Random,
    #[error("cannot use {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a data key file this version reads")]
    BadFile { path: PathBuf },
    #[error("this node is locked: run `wharf unlock` with the cluster's unlock key")]
    Locked,
    #[error("this node has no cluster data key yet (it is fetched from the cluster after joining)")]
    Missing,
    #[error("the unlock key is not valid for this node")]
    WrongUnlockKey,
    #[error("sealed with key {0}, which this node does not hold")]
    OtherKey(String),
    #[error("the sealed value is damaged or does not belong to this path")]
    Damaged,
}

/// The cluster's data key. Its bytes are wiped when dropped and never
/// formatted (`Debug` shows the id only).
pub struct DataKey {
    bytes: Zeroizing<[u8; KEY_LEN]>,
    id: String,
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DataKey({})", self.id)
    }
}

fn random<const N: usize>() -> Result<Zeroizing<[u8; N]>, KeyError> {
    let mut b = Zeroizing::new([0u8; N]);
    SystemRandom::new().fill(b.as_mut()).map_err(|_| KeyError::Random)?;
    Ok(b)
}

fn aead(key: &[u8; KEY_LEN]) -> Result<LessSafeKey, KeyError> {
    // `UnboundKey::new` checks only the length, which the type fixes.
    UnboundKey::new(&CHACHA20_POLY1305, key).map(LessSafeKey::new).map_err(|_| KeyError::Damaged)
}

/// Encrypts `plain` with `key`: (nonce, ciphertext with tag).
fn seal_with(key: &[u8; KEY_LEN], aad: &[u8], plain: &[u8]) -> Result<([u8; NONCE_LEN], Vec<u8>), KeyError> {
    let nonce = *random::<NONCE_LEN>()?;
    let mut buf = plain.to_vec();
    aead(key)?
        .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut buf)
        .map_err(|_| KeyError::Damaged)?;
    Ok((nonce, buf))
}

fn open_with(key: &[u8; KEY_LEN], aad: &[u8], nonce: &[u8], sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
    let mut buf = Zeroizing::new(sealed.to_vec());
    let n = aead(key).ok()?.open_in_place(nonce, Aad::from(aad), buf.as_mut_slice()).ok()?.len();
    buf.truncate(n);
    Some(buf)
}

impl DataKey {
    pub fn generate() -> Result<DataKey, KeyError> {
        Ok(DataKey::from_array(random::<KEY_LEN>()?))
    }

    fn from_array(bytes: Zeroizing<[u8; KEY_LEN]>) -> DataKey {
        let digest = ring::digest::digest(&ring::digest::SHA256, bytes.as_ref());
        let id = digest.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect();
        DataKey { bytes, id }
    }

    fn from_slice(b: &[u8]) -> Option<DataKey> {
        let arr: [u8; KEY_LEN] = b.try_into().ok()?;
        Some(DataKey::from_array(Zeroizing::new(arr)))
    }

    /// A fingerprint naming the key (not secret).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Seals a secret's value for `path`.
    pub fn seal(&self, path: &SecretPath, value: &[u8]) -> Result<Sealed, KeyError> {
        let (nonce, ct) = seal_with(&self.bytes, path.as_str().as_bytes(), value)?;
        Ok(Sealed { key_id: self.id.clone(), nonce: B64.encode(nonce), ciphertext: B64.encode(ct) })
    }

    /// Opens a value sealed for `path` (wiped when dropped).
    pub fn open(&self, path: &SecretPath, sealed: &Sealed) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        if sealed.key_id != self.id {
            return Err(KeyError::OtherKey(sealed.key_id.clone()));
        }
        let nonce = B64.decode(&sealed.nonce).map_err(|_| KeyError::Damaged)?;
        let ct = B64.decode(&sealed.ciphertext).map_err(|_| KeyError::Damaged)?;
        open_with(&self.bytes, path.as_str().as_bytes(), &nonce, &ct).ok_or(KeyError::Damaged)
    }
}

/// `data-key.json`: the DEK wrapped by the KEK.
#[derive(Serialize, Deserialize)]
struct DekFile {
    format: u32,
    key_id: String,
    nonce: String,
    wrapped: String,
    /// The KEK is not on disk: the node waits for `wharf unlock`.
    #[serde(default)]
    autolock: bool,
}

/// This node's hold on the DEK: none yet, locked, or held.
pub struct Keyring {
    dir: PathBuf,
    key: RwLock<Option<Arc<DataKey>>>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io { path: path.to_path_buf(), source }
}

/// Writes `data` readable by the owner only, atomically.
fn write_private(path: &Path, data: &[u8]) -> Result<(), KeyError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp).map_err(io(&tmp))?;
    f.write_all(data).and_then(|()| f.sync_all()).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

impl Keyring {
    /// Reads the node's wrapped DEK from `dir` if it has one; an autolocked
    /// node starts locked.
    pub fn open(dir: &Path) -> Result<Keyring, KeyError> {
        let ring = Keyring { dir: dir.to_path_buf(), key: RwLock::new(None) };
        let Some(file) = ring.read_file()? else { return Ok(ring) };
        if !file.autolock {
            let kek_path = dir.join(KEK_FILE);
            let kek = Zeroizing::new(std::fs::read(&kek_path).map_err(io(&kek_path))?);
            let key = ring.unwrap_dek(&file, &kek).ok_or(KeyError::BadFile { path: kek_path })?;
            ring.set(key);
        }
        Ok(ring)
    }

    fn read_file(&self) -> Result<Option<DekFile>, KeyError> {
        let path = self.dir.join(DEK_FILE);
        match std::fs::read(&path) {
            Ok(b) => match serde_json::from_slice::<DekFile>(&b) {
                Ok(f) if f.format == 1 => Ok(Some(f)),
                _ => Err(KeyError::BadFile { path }),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&path)(e)),
        }
    }

    fn unwrap_dek(&self, file: &DekFile, kek: &[u8]) -> Option<DataKey> {
        let kek: &[u8; KEY_LEN] = kek.try_into().ok()?;
        let nonce = B64.decode(&file.nonce).ok()?;
        let wrapped = B64.decode(&file.wrapped).ok()?;
        let plain = open_with(kek, WRAP_AAD, &nonce, &wrapped)?;
        DataKey::from_slice(&plain).filter(|k| k.id == file.key_id)
    }

    fn set(&self, key: DataKey) {
        *self.key.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(key));
    }

    /// The DEK, if this node holds it.
    pub fn get(&self) -> Result<Arc<DataKey>, KeyError> {
        if let Some(k) = self.key.read().unwrap_or_else(|e| e.into_inner()).clone() {
            return Ok(k);
        }
        match self.read_file() {
            Ok(Some(f)) if f.autolock => Err(KeyError::Locked),
            _ => Err(KeyError::Missing),
        }
    }

    /// Whether this node has a DEK on disk (held or locked).
    pub fn has_key_file(&self) -> bool {
        self.dir.join(DEK_FILE).exists()
    }

    /// Keeps `key` as this node's DEK, wrapped by a new KEK. Without
    /// `autolock` the KEK is stored beside it; with it, the KEK is returned
    /// as the unlock key to give the operator, and is not stored.
    pub fn install(&self, key: DataKey, autolock: bool) -> Result<Option<Zeroizing<String>>, KeyError> {
        let kek = random::<KEY_LEN>()?;
        let (nonce, wrapped) = seal_with(&kek, WRAP_AAD, key.bytes.as_ref())?;
        let file = DekFile {
            format: 1,
            key_id: key.id.clone(),
            nonce: B64.encode(nonce),
            wrapped: B64.encode(wrapped),
            autolock,
        };
        let unlock = if autolock {
            let _ = std::fs::remove_file(self.dir.join(KEK_FILE));
            Some(Zeroizing::new(format!("{UNLOCK_PREFIX}{}", B64.encode(kek.as_ref()))))
        } else {
            write_private(&self.dir.join(KEK_FILE), kek.as_ref())?;
            None
        };
        let json = serde_json::to_vec(&file).map_err(|_| KeyError::BadFile { path: self.dir.join(DEK_FILE) })?;
        write_private(&self.dir.join(DEK_FILE), &json)?;
        self.set(key);
        Ok(unlock)
    }

    /// Unlocks an autolocked node with the key `install` returned.
    pub fn unlock(&self, unlock_key: &str) -> Result<(), KeyError> {
        let file = self.read_file()?.ok_or(KeyError::Missing)?;
        let b64 = unlock_key.trim().strip_prefix(UNLOCK_PREFIX).ok_or(KeyError::WrongUnlockKey)?;
        let kek = Zeroizing::new(B64.decode(b64).map_err(|_| KeyError::WrongUnlockKey)?);
        let key = self.unwrap_dek(&file, &kek).ok_or(KeyError::WrongUnlockKey)?;
        self.set(key);
        Ok(())
    }

    /// The DEK for a member that asks for it (base64), if held.
    fn export(&self) -> Option<Zeroizing<String>> {
        let k = self.key.read().unwrap_or_else(|e| e.into_inner()).clone()?;
        Some(Zeroizing::new(B64.encode(k.bytes.as_ref())))
    }
}

#[derive(Serialize, Deserialize)]
struct KeyRequest {
    id: u64,
}

#[derive(Serialize, Deserialize)]
enum KeyAnswer {
    Key(String),
    NotMember,
    NotHeld,
}

#[derive(Clone)]
struct KeyState {
    raft: Raft,
    ring: Arc<Keyring>,
}

/// `POST /cluster/data-key`: the DEK for a node of the membership.
pub(crate) fn router(raft: Raft, ring: Arc<Keyring>) -> Router {
    Router::new().route("/cluster/data-key", post(give_key)).with_state(KeyState { raft, ring })
}

async fn give_key(State(st): State<KeyState>, Json(req): Json<KeyRequest>) -> Json<KeyAnswer> {
    let member = st.raft.metrics().borrow().membership_config.membership().get_node(&req.id).is_some();
    Json(if !member {
        KeyAnswer::NotMember
    } else {
        match st.ring.export() {
            Some(k) => KeyAnswer::Key(k.to_string()),
            None => KeyAnswer::NotHeld,
        }
    })
}

/// Asks `addrs` in turn for the DEK until one gives it; gives up after
/// `deadline`. The key is installed (wrapped) before this returns.
pub(crate) async fn fetch(
    client: &reqwest::Client,
    ring: &Keyring,
    me: u64,
    addrs: &[String],
    deadline: Duration,
    autolock: bool,
) -> Result<Option<Zeroizing<String>>, String> {
    let until = tokio::time::Instant::now() + deadline;
    let mut last = String::from("no member to ask");
    loop {
        for addr in addrs {
            let resp = client
                .post(format!("http://{addr}/cluster/data-key"))
                .timeout(Duration::from_secs(5))
                .json(&KeyRequest { id: me })
                .send()
                .await;
            match resp.map(|r| r.json::<KeyAnswer>()) {
                Ok(answer) => match answer.await {
                    Ok(KeyAnswer::Key(k)) => {
                        let bytes = Zeroizing::new(B64.decode(k).map_err(|_| "a malformed data key".to_string())?);
                        let key = DataKey::from_slice(&bytes).ok_or("a data key of the wrong length")?;
                        return ring.install(key, autolock).map_err(|e| e.to_string());
                    }
                    Ok(KeyAnswer::NotMember) => last = format!("{addr} does not count this node as a member yet"),
                    Ok(KeyAnswer::NotHeld) => last = format!("{addr} does not hold the data key"),
                    Err(e) => last = format!("{addr}: {e}"),
                },
                Err(e) => last = format!("{addr}: {e}"),
            }
        }
        if tokio::time::Instant::now() >= until {
            return Err(last);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(s: &str) -> SecretPath {
        SecretPath::parse(s).expect("path")
    }

    #[test]
    fn a_sealed_value_opens_only_with_its_key_and_path() {
        let k = DataKey::generate().expect("key");
        let s = k.seal(&path("a/b"), b"hunter2").expect("seal");
        assert!(!s.ciphertext.contains("hunter2"));
        assert_eq!(k.open(&path("a/b"), &s).expect("open").as_slice(), b"hunter2");
        assert!(matches!(k.open(&path("a/c"), &s), Err(KeyError::Damaged)), "bound to its path");
        let again = k.seal(&path("a/b"), b"hunter2").expect("seal");
        assert_ne!(again.nonce, s.nonce, "a nonce per value");
        let other = DataKey::generate().expect("key");
        assert!(matches!(other.open(&path("a/b"), &s), Err(KeyError::OtherKey(_))));
        let mut tampered = s.clone();
        tampered.ciphertext = B64.encode(b"garbage that is long enough to have a tag");
        assert!(matches!(k.open(&path("a/b"), &tampered), Err(KeyError::Damaged)));
    }

    #[test]
    fn the_key_survives_a_restart_and_autolock_needs_the_unlock_key() {
        let dir = tempfile::tempdir().expect("tmp");
        let ring = Keyring::open(dir.path()).expect("open");
        assert!(matches!(ring.get(), Err(KeyError::Missing)));
        let key = DataKey::generate().expect("key");
        let id = key.id().to_string();
        assert!(ring.install(key, false).expect("install").is_none());
        let again = Keyring::open(dir.path()).expect("reopen");
        assert_eq!(again.get().expect("held").id(), id);
        let on_disk = std::fs::read(dir.path().join(DEK_FILE)).expect("read");
        let raw = again.export().expect("export");
        assert!(!String::from_utf8_lossy(&on_disk).contains(raw.as_str()), "stored wrapped");

        let locked_dir = tempfile::tempdir().expect("tmp");
        let ring = Keyring::open(locked_dir.path()).expect("open");
        let unlock = ring.install(DataKey::generate().expect("key"), true).expect("install").expect("unlock key");
        assert!(!locked_dir.path().join(KEK_FILE).exists());
        let restarted = Keyring::open(locked_dir.path()).expect("reopen");
        assert!(matches!(restarted.get(), Err(KeyError::Locked)));
        assert!(matches!(restarted.unlock("WHARFKEY-1-AAAA"), Err(KeyError::WrongUnlockKey)));
        restarted.unlock(&unlock).expect("unlock");
        assert!(restarted.get().is_ok());
    }
}
