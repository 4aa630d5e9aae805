//! Importing an OCI image layout (a directory with `oci-layout`,
//! `index.json` and `blobs/<alg>/<hex>`, or a tar of one), for hosts
//! without a registry: the image named by the reference (or the layout's only
//! one), an index resolved to this node's platform, every blob checked
//! against its digest before it is used, layers stored by digest and shared
//! like pulled ones.

use crate::{io_err, parse_reference, run_config, Image, ImageError, ImageStore};
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest, MediaType};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Where an image's name is kept in a layout's index: containerd and
/// Docker write the full reference here...
const IMAGE_NAME: &str = "io.containerd.image.name";
/// ...and OCI's own annotation, often a tag only.
const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// This node's architecture in OCI's words.
fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// Whether `dir` holds an OCI image layout.
pub(crate) fn is_layout(dir: &Path) -> bool {
    dir.join("oci-layout").is_file() && dir.join("index.json").is_file()
}

struct Layout<'a> {
    dir: &'a Path,
    origin: String,
}

impl Layout<'_> {
    fn bad(&self, message: impl Into<String>) -> ImageError {
        ImageError::Config { reference: self.origin.clone(), message: message.into() }
    }

    /// The path of a blob, after checking its digest and size.
    fn verified_blob(&self, d: &Descriptor) -> Result<PathBuf, ImageError> {
        let digest = d.digest().to_string();
        let hex = crate::hex_of(&digest).map_err(|m| self.bad(m))?;
        let path = self.dir.join("blobs").join("sha256").join(hex);
        let mut file = std::fs::File::open(&path)
            .map_err(|e| self.bad(format!("blob {digest} is missing from the layout: {e}")))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut size = 0u64;
        loop {
            let n = file.read(&mut buf).map_err(io_err(format!("read {}", path.display())))?;
            if n == 0 {
                break;
            }
            size += n as u64;
            hasher.update(&buf[..n]);
        }
        let actual = format!("sha256:{:x}", hasher.finalize());
        if actual != digest {
            return Err(self.bad(format!("blob {digest} does not match its digest (its content is {actual})")));
        }
        if size != d.size() {
            return Err(self.bad(format!("blob {digest} has {size} bytes, its descriptor says {}", d.size())));
        }
        Ok(path)
    }

    fn read_blob(&self, d: &Descriptor) -> Result<Vec<u8>, ImageError> {
        let path = self.verified_blob(d)?;
        std::fs::read(&path).map_err(io_err(format!("read {}", path.display())))
    }

    /// The descriptor of the image `wanted` names (or the only one).
    fn pick<'i>(&self, index: &'i ImageIndex, wanted: Option<&str>) -> Result<&'i Descriptor, ImageError> {
        let names = |d: &Descriptor| -> Vec<String> {
            let a = d.annotations().clone().unwrap_or_default();
            [IMAGE_NAME, REF_NAME].iter().filter_map(|k| a.get(*k).cloned()).collect()
        };
        let manifests = index.manifests();
        if let Some(w) = wanted {
            let full = parse_reference(w)?;
            let hit = manifests
                .iter()
                .find(|d| names(d).iter().any(|n| n == w || n == full.tag().unwrap_or("latest") || n == &full.whole()));
            if let Some(d) = hit {
                return Ok(d);
            }
        }
        match manifests.as_slice() {
            [only] => Ok(only),
            [] => Err(self.bad("index.json lists no image")),
            many => {
                let listed: Vec<String> = many.iter().flat_map(names).collect();
                Err(self.bad(format!(
                    "index.json lists {} images ({}); name one as the reference",
                    many.len(),
                    listed.join(", ")
                )))
            }
        }
    }

    /// A manifest descriptor, resolving nested indexes to this platform.
    fn manifest(&self, d: &Descriptor, depth: usize) -> Result<(ImageManifest, String), ImageError> {
        if depth > 4 {
            return Err(self.bad("indexes nested too deep"));
        }
        let data = self.read_blob(d)?;
        match d.media_type() {
            MediaType::ImageIndex => {
                let index = ImageIndex::from_reader(&data[..]).map_err(|e| self.bad(format!("index: {e}")))?;
                let arch = host_arch();
                let fits = index.manifests().iter().find(|m| {
                    m.platform()
                        .as_ref()
                        .is_some_and(|p| p.architecture().to_string() == arch && p.os().to_string() == "linux")
                });
                let m = fits.ok_or_else(|| self.bad(format!("the image has no linux/{arch} manifest")))?;
                self.manifest(m, depth + 1)
            }
            _ => {
                let m = ImageManifest::from_reader(&data[..]).map_err(|e| self.bad(format!("manifest: {e}")))?;
                Ok((m, d.digest().to_string()))
            }
        }
    }
}

impl ImageStore {
    /// Imports the image of the OCI layout in `dir` under `reference`, or
    /// under the name the layout gives it.
    pub(crate) fn import_layout(
        &self,
        dir: &Path,
        origin: &Path,
        reference: Option<&str>,
    ) -> Result<Image, ImageError> {
        let layout = Layout { dir, origin: origin.display().to_string() };
        let index_json = std::fs::read(dir.join("index.json")).map_err(|e| layout.bad(format!("index.json: {e}")))?;
        let index = ImageIndex::from_reader(&index_json[..]).map_err(|e| layout.bad(format!("index.json: {e}")))?;
        let desc = layout.pick(&index, reference)?;
        let reference = match reference {
            Some(r) => r.to_string(),
            None => {
                let a = desc.annotations().clone().unwrap_or_default();
                match (a.get(IMAGE_NAME), a.get(REF_NAME)) {
                    (Some(name), _) => name.clone(),
                    (None, Some(name)) if name.contains('/') => name.clone(),
                    (None, Some(tag)) => {
                        return Err(
                            layout.bad(format!("the layout names the image only by the tag '{tag}'; give a reference"))
                        )
                    }
                    (None, None) => return Err(layout.bad("the layout does not name the image; give a reference")),
                }
            }
        };
        parse_reference(&reference)?;
        let (manifest, digest) = layout.manifest(desc, 0)?;
        let config_json = layout.read_blob(manifest.config())?;
        let config_json = String::from_utf8(config_json).map_err(|_| layout.bad("the image config is not UTF-8"))?;
        let config = run_config(&config_json).map_err(|m| layout.bad(m))?;
        let mut layers = Vec::new();
        let mut size = 0;
        for (i, l) in manifest.layers().iter().enumerate() {
            let digest = l.digest().to_string();
            if matches!(l.media_type(), MediaType::ImageLayerZstd | MediaType::ImageLayerNonDistributableZstd) {
                return Err(layout.bad(format!("layer {digest} is zstd-compressed, which this node cannot unpack")));
            }
            let blob = layout.verified_blob(l)?;
            size += l.size();
            let dest = self.layer_dir(&digest);
            if !dest.is_dir() {
                let staging = self.temp_path(&format!("layout-layer.{i}"));
                let r = crate::unpack::unpack_blob(&blob, &staging).and_then(|()| {
                    std::fs::rename(&staging, &dest).or_else(|e| if dest.is_dir() { Ok(()) } else { Err(e) })
                });
                let _ = std::fs::remove_dir_all(&staging);
                r.map_err(io_err(format!("unpack layer {digest}")))?;
            }
            layers.push(digest);
        }
        let image = Image { reference, digest, layers, size, config, last_used: crate::now_millis() };
        self.record(&image)?;
        Ok(image)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    use crate::unpack::tests::layer as tar_of;

    /// Writes `blob` under `dir/blobs/sha256` and returns its descriptor.
    fn put(dir: &Path, media: &str, blob: &[u8]) -> serde_json::Value {
        let hex = format!("{:x}", Sha256::digest(blob));
        std::fs::create_dir_all(dir.join("blobs/sha256")).expect("blobs");
        std::fs::write(dir.join("blobs/sha256").join(&hex), blob).expect("blob");
        json!({"mediaType": media, "digest": format!("sha256:{hex}"), "size": blob.len()})
    }

    /// A two-layer layout: the upper layer deletes `gone`.
    fn write_layout(dir: &Path, name: Option<&str>) -> serde_json::Value {
        let l1 = put(dir, "application/vnd.oci.image.layer.v1.tar", &tar_of(&[("gone", b"x"), ("kept", b"y")]));
        let l2 = put(dir, "application/vnd.oci.image.layer.v1.tar", &tar_of(&[(".wh.gone", b"")]));
        let config = json!({"architecture": "amd64", "os": "linux",
            "config": {"Entrypoint": ["/kept"], "Env": ["A=1"]},
            "rootfs": {"type": "layers", "diff_ids": [l1["digest"], l2["digest"]]}});
        let config = put(dir, "application/vnd.oci.image.config.v1+json", config.to_string().as_bytes());
        let manifest = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config, "layers": [l1, l2]});
        let mut desc = put(dir, "application/vnd.oci.image.manifest.v1+json", manifest.to_string().as_bytes());
        if let Some(n) = name {
            desc["annotations"] = json!({REF_NAME: n});
        }
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).expect("oci-layout");
        let index = json!({"schemaVersion": 2, "manifests": [desc.clone()]});
        std::fs::write(dir.join("index.json"), index.to_string()).expect("index");
        desc
    }

    #[test]
    fn imports_a_layout_directory_and_a_tar_of_one() {
        let root = std::env::temp_dir().join(format!("wharf-layout-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let store = ImageStore::open(root.join("store"), Vec::new()).expect("store");
        let dir = root.join("layout");
        let desc = write_layout(&dir, Some("1.0"));
        // A bare tag does not name the image.
        let e = store.import(&dir, None).expect_err("tag only").to_string();
        assert!(e.contains("only by the tag '1.0'; give a reference"), "{e}");
        let img = store.import(&dir, Some("example.com/app:1.0")).expect("import");
        assert_eq!(img.digest, desc["digest"].as_str().expect("digest"));
        assert_eq!(img.layers.len(), 2);
        assert_eq!(img.config.entrypoint, vec!["/kept"]);
        assert!(store.layer_dir(&img.layers[1]).join("gone").exists(), "the whiteout is a device now");
        assert_eq!(store.get("example.com/app:1.0").map(|i| i.digest), Some(img.digest.clone()));

        // The same layout as a tar, under a full name.
        write_layout(&dir, Some("example.com/app:2"));
        let tarball = root.join("layout.tar");
        let mut b = tar::Builder::new(std::fs::File::create(&tarball).expect("tar"));
        b.append_dir_all(".", &dir).expect("append");
        b.finish().expect("finish");
        drop(b);
        let img2 = store.import(&tarball, None).expect("import tar");
        assert_eq!(img2.reference, "example.com/app:2");
        assert_eq!(img2.layers, img.layers, "layers shared by digest");

        // A blob whose content does not match its digest is refused.
        let l = img.layers[0].trim_start_matches("sha256:").to_string();
        std::fs::write(dir.join("blobs/sha256").join(&l), b"tampered").expect("tamper");
        let e = store.import(&dir, Some("example.com/app:3")).expect_err("tampered").to_string();
        assert!(e.contains("does not match its digest"), "{e}");
        assert!(store.get("example.com/app:3").is_none());
        let e = store.import(&root.join("store"), None).expect_err("not a layout").to_string();
        assert!(e.contains("not an OCI image layout"), "{e}");
        std::fs::remove_dir_all(&root).expect("cleanup");
    }
}
