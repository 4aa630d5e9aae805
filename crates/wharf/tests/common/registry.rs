//! Debian's `docker-registry` on loopback for the image tests (the oci and
//! docker drivers'): plain HTTP, optionally with HTTP Basic credentials
//! from an htpasswd file, and the Docker `config.json` documents that carry
//! credentials for it.

use super::free_port;
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Debian's `docker-registry` on a loopback port, with its storage in a
/// temporary directory; stopped when dropped.
pub struct Registry {
    child: Child,
    pub addr: String,
    data: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Registry {
    pub fn start() -> Registry {
        Registry::serve(None, None)
    }

    /// Another registry serving this one's images, which asks for HTTP
    /// Basic credentials checked against `htpasswd` (bcrypt).
    pub fn with_basic_auth(&self, htpasswd: &std::path::Path) -> Registry {
        Registry::serve(Some(self.data.clone()), Some(htpasswd))
    }

    pub fn serve(data: Option<std::path::PathBuf>, htpasswd: Option<&std::path::Path>) -> Registry {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = data.unwrap_or_else(|| dir.path().join("data"));
        let addr = format!("127.0.0.1:{}", free_port());
        let auth = htpasswd.map_or(String::new(), |p| {
            format!("auth:\n  htpasswd:\n    realm: wharf-test\n    path: {}\n", p.display())
        });
        let config = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n{auth}",
            data.display()
        );
        std::fs::write(dir.path().join("config.yml"), config).expect("config");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("log")).expect("log"))
            .spawn()
            .expect("docker-registry (scripts/test installs Debian's docker-registry)");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(std::time::Instant::now() < deadline, "docker-registry did not listen on {addr}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Registry { child, addr, data, _dir: dir }
    }

    /// Pushes a local image as `name` and returns its reference here.
    pub fn push(&self, local: &str, name: &str) -> String {
        let reference = format!("{}/{name}", self.addr);
        let run = |args: &[&str]| {
            let out = Command::new("docker").args(args).output().expect("docker");
            assert!(out.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        run(&["tag", local, &reference]);
        run(&["push", &reference]);
        run(&["rmi", &reference]);
        reference
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An htpasswd file (bcrypt, `htpasswd -B` from apache2-utils) for one user.
pub fn htpasswd(dir: &std::path::Path, user: &str, pass: &str) -> std::path::PathBuf {
    let out = Command::new("htpasswd")
        .args(["-Bbn", user, pass])
        .output()
        .expect("htpasswd (scripts/test installs apache2-utils)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let p = dir.join("htpasswd");
    std::fs::write(&p, out.stdout).expect("htpasswd file");
    p
}

/// A Docker `config.json` with `auths` for (registry, user, password).
pub fn docker_config(auths: &[(&str, &str, &str)]) -> String {
    use base64::Engine;
    let b64 = |s: String| base64::engine::general_purpose::STANDARD.encode(s);
    let auths: serde_json::Map<String, Value> =
        auths.iter().map(|(r, u, p)| (r.to_string(), json!({"auth": b64(format!("{u}:{p}"))}))).collect();
    json!({"auths": auths}).to_string()
}
