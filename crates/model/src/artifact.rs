//! Artifacts: files a task's sandbox gets before the task starts (Marathon's
//! `fetch` and legacy `uris`, Metronome's `run.artifacts`), and the rules on
//! their URIs and names that both APIs check. Fetching them is the agent's.

use serde::{Deserialize, Serialize};

/// One file to fetch into the sandbox, as the Mesos fetcher took it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    /// `http://`, `https://`, `file://` or an absolute path on the node.
    pub uri: String,
    /// Mode 0755 after the download.
    #[serde(default)]
    pub executable: bool,
    /// Unpack an archive (`.tar`, `.tar.gz`/`.tgz`, `.tar.bz2`/`.tbz2`,
    /// `.zip`) into the sandbox, keeping the archive too.
    #[serde(default)]
    pub extract: bool,
    /// Accepted and shown; every launch downloads again.
    #[serde(default)]
    pub cache: bool,
    /// The file's name in the sandbox (a relative path) instead of the
    /// URI's last segment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dest_path: Option<String>,
}

/// The URI and path limit of Marathon's `strings.Uri` and `strings.Path`.
pub const MAX_ARTIFACT_URI: usize = 1024;

/// Archive endings the fetcher unpacks (what `extract` acts on).
const ARCHIVES: &[&str] = &[".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".zip"];

/// Why an artifact cannot be fetched as given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArtifactError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {MAX_ARTIFACT_URI} characters")]
    TooLong,
    #[error("unsupported scheme '{0}': wharf fetches http://, https://, file:// and absolute paths")]
    Scheme(String),
    #[error("must be an absolute URI (http://, https://, file://) or an absolute path")]
    Relative,
    #[error("names no file (the path ends in '/'): give destPath")]
    NoFileName,
    #[error("must be a relative path inside the sandbox without '..'")]
    Escapes,
}

/// Where the artifact comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArtifactSource<'a> {
    /// The whole `http(s)://` URI.
    Http(&'a str),
    /// A path on the node (`file://` stripped).
    Local(&'a str),
}

impl Artifact {
    /// Marathon's conversion of a legacy `uris` entry: archives are
    /// extracted, nothing else changes.
    pub fn from_uri(uri: &str) -> Artifact {
        Artifact { uri: uri.to_string(), executable: false, extract: is_archive(uri), cache: false, dest_path: None }
    }

    /// Checks the URI and `destPath` (the rules both APIs apply).
    pub fn check(&self) -> Result<(), (&'static str, ArtifactError)> {
        check_uri(&self.uri).map_err(|e| ("uri", e))?;
        match &self.dest_path {
            Some(d) => check_dest_path(d).map_err(|e| ("destPath", e)),
            None if uri_file_name(&self.uri).is_none() => Err(("uri", ArtifactError::NoFileName)),
            None => Ok(()),
        }
    }

    /// The file's path in the sandbox: `destPath`, else the URI's last
    /// path segment (query and fragment dropped).
    pub fn file_name(&self) -> Option<&str> {
        match &self.dest_path {
            Some(d) => Some(d.as_str()),
            None => uri_file_name(&self.uri),
        }
    }

    pub fn source(&self) -> Option<ArtifactSource<'_>> {
        source_of(&self.uri)
    }
}

/// Whether `name` ends like an archive the fetcher unpacks.
pub fn is_archive(name: &str) -> bool {
    let path = strip_query(name).to_ascii_lowercase();
    ARCHIVES.iter().any(|ext| path.ends_with(ext))
}

fn strip_query(uri: &str) -> &str {
    let end = uri.find(['?', '#']).unwrap_or(uri.len());
    &uri[..end]
}

fn scheme_of(uri: &str) -> Option<&str> {
    let (scheme, _) = uri.split_once("://")?;
    let valid = scheme.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && scheme.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    valid.then_some(scheme)
}

fn source_of(uri: &str) -> Option<ArtifactSource<'_>> {
    match scheme_of(uri).map(str::to_ascii_lowercase).as_deref() {
        Some("http" | "https") => Some(ArtifactSource::Http(uri)),
        Some("file") => {
            // `file:///p` and `file://localhost/p` are the node's `/p`.
            let rest = &uri["file://".len()..];
            let rest = rest.strip_prefix("localhost").unwrap_or(rest);
            rest.starts_with('/').then_some(ArtifactSource::Local(rest))
        }
        Some(_) => None,
        None => uri.starts_with('/').then_some(ArtifactSource::Local(uri)),
    }
}

/// The rules for an artifact's URI.
pub fn check_uri(uri: &str) -> Result<(), ArtifactError> {
    if uri.trim().is_empty() {
        return Err(ArtifactError::Empty);
    }
    if uri.len() > MAX_ARTIFACT_URI {
        return Err(ArtifactError::TooLong);
    }
    match (scheme_of(uri), source_of(uri)) {
        (_, Some(_)) => Ok(()),
        (Some(s), None) if s.eq_ignore_ascii_case("file") => Err(ArtifactError::Relative),
        (Some(s), None) => Err(ArtifactError::Scheme(s.to_string())),
        (None, None) => Err(ArtifactError::Relative),
    }
}

/// The rules for `destPath`: a relative path that stays in the sandbox.
pub fn check_dest_path(p: &str) -> Result<(), ArtifactError> {
    if p.is_empty() {
        return Err(ArtifactError::Empty);
    }
    if p.len() > MAX_ARTIFACT_URI {
        return Err(ArtifactError::TooLong);
    }
    let mut parts = p.split('/').filter(|s| !s.is_empty() && *s != ".");
    if p.starts_with('/') || p.split('/').any(|s| s == "..") || parts.next().is_none() || p.ends_with('/') {
        return Err(ArtifactError::Escapes);
    }
    Ok(())
}

/// The URI's last path segment, if it names a file.
fn uri_file_name(uri: &str) -> Option<&str> {
    let path = strip_query(uri);
    let path = match path.split_once("://") {
        // The authority is not a file name: `http://host` names none.
        Some((_, rest)) => &rest[rest.find('/')?..],
        None => path,
    };
    let name = path.rsplit('/').next()?;
    (!name.is_empty() && name != "." && name != "..").then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn art(uri: &str) -> Artifact {
        Artifact { uri: uri.into(), executable: false, extract: false, cache: false, dest_path: None }
    }

    #[test]
    fn uris_and_their_file_names() {
        assert_eq!(art("http://h:8/a/b/run.sh?x=1#f").file_name(), Some("run.sh"));
        assert_eq!(art("file:///opt/x.tgz").source(), Some(ArtifactSource::Local("/opt/x.tgz")));
        assert_eq!(art("file://localhost/opt/x").source(), Some(ArtifactSource::Local("/opt/x")));
        assert_eq!(art("/opt/x").source(), Some(ArtifactSource::Local("/opt/x")));
        assert_eq!(art("HTTPS://h/x").source(), Some(ArtifactSource::Http("HTTPS://h/x")));
        assert_eq!(art("http://h").check(), Err(("uri", ArtifactError::NoFileName)));
        assert_eq!(art("http://h/dir/").check(), Err(("uri", ArtifactError::NoFileName)));
        let named = Artifact { dest_path: Some("bin/tool".into()), ..art("http://h/") };
        assert_eq!(named.check(), Ok(()));
        assert_eq!(named.file_name(), Some("bin/tool"));
    }

    #[test]
    fn bad_uris_and_paths_are_refused() {
        assert_eq!(check_uri(""), Err(ArtifactError::Empty));
        assert_eq!(check_uri("ftp://h/x"), Err(ArtifactError::Scheme("ftp".into())));
        assert_eq!(check_uri("hdfs://h/x"), Err(ArtifactError::Scheme("hdfs".into())));
        assert_eq!(check_uri("relative/x"), Err(ArtifactError::Relative));
        assert_eq!(check_uri("file://host/x"), Err(ArtifactError::Relative));
        assert_eq!(check_uri(&format!("http://h/{}", "a".repeat(1100))), Err(ArtifactError::TooLong));
        for bad in ["/abs", "../up", "a/../../b", "", "dir/", "."] {
            assert!(check_dest_path(bad).is_err(), "{bad}");
        }
        assert_eq!(check_dest_path("sub/name.bin"), Ok(()));
    }

    #[test]
    fn legacy_uris_extract_archives_only() {
        assert!(Artifact::from_uri("http://h/a.tar.gz").extract);
        assert!(Artifact::from_uri("http://h/a.ZIP?sig=1").extract);
        assert!(!Artifact::from_uri("http://h/run.sh").extract);
    }
}
