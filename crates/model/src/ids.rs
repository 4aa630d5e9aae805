//! Typed identifiers. An app id is an absolute path (`/group/app`); a task id
//! keeps its app recoverable (`group_app.instance-<uuid>._app.<n>`, Marathon's
//! modern form) because `/v2/tasks/delete` only receives task ids.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("path contains empty segment")]
    EmptySegment,
    #[error("'{0}' is not a valid path segment: it must consist of lowercase letters, digits, hyphens and dots, start and end with a letter or digit")]
    BadSegment(String),
    #[error("id must not be empty")]
    Empty,
    #[error("'{0}' is not a valid task id")]
    BadTaskId(String),
}

/// Absolute, normalised path of an app or group, e.g. `/prod/web`.
///
/// Ids are shared, not copied (`Arc<str>`): the state's persistent maps
/// copy whole index nodes on every write, keys included, and with `String`
/// keys that was an allocation and a copy per key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AppId(Arc<str>);

impl AppId {
    /// Parses an id, resolving it against the root group when relative
    /// (Marathon accepts `web` and means `/web`). `.` and `..` segments are
    /// resolved; a trailing `/` is ignored.
    pub fn parse(s: &str) -> Result<AppId, IdError> {
        Self::parse_relative(s, &AppId::root())
    }

    /// Parses `s` relative to `base` (a group), as Marathon does for apps
    /// nested in a group definition.
    pub fn parse_relative(s: &str, base: &AppId) -> Result<AppId, IdError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(IdError::Empty);
        }
        let mut segs: Vec<String> =
            if s.starts_with('/') { Vec::new() } else { base.segments().map(str::to_string).collect() };
        let trimmed = s.trim_start_matches('/').trim_end_matches('/');
        if trimmed.is_empty() {
            return Ok(AppId::from_segments(&segs));
        }
        for seg in trimmed.split('/') {
            match seg {
                "" => return Err(IdError::EmptySegment),
                "." => {}
                ".." => {
                    segs.pop();
                }
                other => {
                    if !valid_segment(other) {
                        return Err(IdError::BadSegment(other.to_string()));
                    }
                    segs.push(other.to_string());
                }
            }
        }
        Ok(AppId::from_segments(&segs))
    }

    pub fn root() -> AppId {
        AppId("/".into())
    }

    pub fn is_root(&self) -> bool {
        &*self.0 == "/"
    }

    fn from_segments(segs: &[String]) -> AppId {
        AppId(format!("/{}", segs.join("/")).into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/').filter(|s| !s.is_empty())
    }

    /// The enclosing group (`/a/b` -> `/a`; `/a` -> `/`).
    pub fn parent(&self) -> AppId {
        let segs: Vec<String> = self.segments().map(str::to_string).collect();
        AppId::from_segments(&segs[..segs.len().saturating_sub(1)])
    }

    /// Whether `self` is `group` or lies below it.
    pub fn is_within(&self, group: &AppId) -> bool {
        group.is_root() || self == group || self.0.starts_with(&format!("{}/", group.0))
    }

    /// The app's path with `/` replaced by `_`, used as task-id prefix.
    pub fn task_prefix(&self) -> String {
        self.segments().collect::<Vec<_>>().join("_")
    }
}

fn valid_segment(s: &str) -> bool {
    // Marathon: ^(([a-z0-9]|[a-z0-9][a-z0-9\-]*[a-z0-9])\.)*([a-z0-9]|[a-z0-9][a-z0-9\-]*[a-z0-9])$
    s.split('.').all(|label| {
        let b = label.as_bytes();
        !b.is_empty()
            && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
            && b[0] != b'-'
            && b[b.len() - 1] != b'-'
    })
}

impl fmt::Display for AppId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for AppId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        AppId::parse(&s)
    }
}

impl From<AppId> for String {
    fn from(id: AppId) -> String {
        id.0.to_string()
    }
}

/// `<app path with / as _>.instance-<uuid>._app.<attempt>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
/// Shared like `AppId`, for the same reason.
pub struct TaskId(Arc<str>);

impl TaskId {
    pub fn new(app: &AppId, instance: Uuid, attempt: u32) -> TaskId {
        TaskId(format!("{}.instance-{}._app.{}", app.task_prefix(), instance, attempt).into())
    }

    /// Accepts exactly the form [`TaskId::new`] makes: a non-empty prefix,
    /// `.instance-`, a UUID, `._app.` and an attempt number.
    pub fn parse(s: &str) -> Result<TaskId, IdError> {
        match split_task_id(s) {
            Some(_) => Ok(TaskId(s.into())),
            None => Err(IdError::BadTaskId(s.to_string())),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// An id already in the form `parse` accepts (job run tasks).
    pub(crate) fn from_raw(s: String) -> TaskId {
        TaskId(s.into())
    }

    /// The app this task belongs to. `_` in the prefix stands for `/`, so this
    /// is exact for every id Wharf makes (app segments never contain `_`).
    pub fn app_id(&self) -> AppId {
        AppId(format!("/{}", self.prefix().replace('_', "/")).into())
    }

    /// `<prefix>.instance-<uuid>`: Marathon's instance id, the task id
    /// without its attempt suffix.
    pub fn instance_id(&self) -> &str {
        let attempt = self.0.rfind("._app.").unwrap_or(self.0.len());
        &self.0[..attempt]
    }

    /// The instance's UUID and this task's attempt number.
    pub fn instance_attempt(&self) -> Option<(Uuid, u32)> {
        let (_, uuid) = split_task_id(&self.0)?;
        let attempt = self.0.rsplit_once("._app.")?.1.parse().ok()?;
        Some((uuid, attempt))
    }

    fn prefix(&self) -> &str {
        split_task_id(&self.0).map(|(prefix, _)| prefix).unwrap_or_default()
    }
}

/// Splits `<prefix>.instance-<uuid>._app.<n>` from the end, because an app
/// segment may itself contain `.instance-` (`/x.instance-y` is a valid app)
/// while the suffix after the last `.instance-` has a fixed form.
fn split_task_id(s: &str) -> Option<(&str, Uuid)> {
    let (rest, attempt) = s.rsplit_once("._app.")?;
    if attempt.is_empty() || !attempt.bytes().all(|b| b.is_ascii_digit()) || attempt.parse::<u32>().is_err() {
        return None;
    }
    let (prefix, instance) = rest.rsplit_once(".instance-")?;
    // Only the hyphenated form, which is what `TaskId::new` writes.
    let uuid = Uuid::try_parse(instance).ok().filter(|_| instance.len() == 36)?;
    (!prefix.is_empty()).then_some((prefix, uuid))
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for TaskId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        TaskId::parse(&s)
    }
}

impl From<TaskId> for String {
    fn from(id: TaskId) -> String {
        id.0.to_string()
    }
}

/// A node's Raft id; stable for the node's lifetime (kept in its data dir).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub u64);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DeploymentId(pub String);

impl DeploymentId {
    pub fn new(id: Uuid) -> DeploymentId {
        DeploymentId(id.to_string())
    }
}

impl fmt::Display for DeploymentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_ids_normalise() {
        assert_eq!(AppId::parse("web").map(|a| a.0.to_string()), Ok("/web".into()));
        assert_eq!(AppId::parse("/a/b/").map(|a| a.0.to_string()), Ok("/a/b".into()));
        assert_eq!(AppId::parse("/a/./b/../c").map(|a| a.0.to_string()), Ok("/a/c".into()));
        assert!(AppId::parse("/A").is_err());
        assert!(AppId::parse("/a_b").is_err());
        assert!(AppId::parse("/-a").is_err());
        assert!(AppId::parse("/a//b").is_err());
        assert!(AppId::parse("").is_err());
        assert_eq!(AppId::parse("/a.b-c/d").map(|a| a.0.to_string()), Ok("/a.b-c/d".into()));
    }

    #[test]
    fn task_id_recovers_app() {
        let app = AppId::parse("/prod/web").expect("valid");
        let t = TaskId::new(&app, Uuid::nil(), 1);
        assert_eq!(t.as_str(), "prod_web.instance-00000000-0000-0000-0000-000000000000._app.1");
        assert_eq!(t.app_id(), app);
        assert!(TaskId::parse(t.as_str()).is_ok());
        assert!(TaskId::parse("nonsense").is_err());
    }

    #[test]
    fn task_id_recovers_app_whose_name_contains_the_separator() {
        let uuid = Uuid::from_u128(0x1234_5678_9abc_def0_1234_5678_9abc_def0);
        for name in ["/x.instance-y", "/a.instance-b/c.instance-d", "/grp/x.instance-y.instance-z"] {
            let app = AppId::parse(name).expect("valid");
            let t = TaskId::new(&app, uuid, 3);
            assert_eq!(t.app_id(), app, "{t}");
            let parsed = TaskId::parse(t.as_str()).expect("a made id parses");
            assert_eq!(parsed.app_id(), app, "{t}");
            assert_eq!(parsed.instance_id(), format!("{}.instance-{uuid}", app.task_prefix()));
        }
        let nested = AppId::parse("/prod/x.instance-y/web").expect("valid");
        let t = TaskId::new(&nested, uuid, 1);
        assert_eq!(t.as_str(), format!("prod_x.instance-y_web.instance-{uuid}._app.1"));
        assert_eq!(t.app_id(), nested);
    }

    #[test]
    fn task_id_parse_wants_the_whole_suffix() {
        let uuid = "00000000-0000-0000-0000-000000000000";
        assert!(TaskId::parse(&format!("web.instance-{uuid}._app.1")).is_ok());
        assert!(TaskId::parse(&format!(".instance-{uuid}._app.1")).is_err(), "empty prefix");
        assert!(TaskId::parse("web.instance-nouuid._app.1").is_err(), "not a uuid");
        assert!(TaskId::parse(&format!("web.instance-{uuid}._app.")).is_err(), "no attempt");
        assert!(TaskId::parse(&format!("web.instance-{uuid}._app.x")).is_err(), "attempt not a number");
        assert!(TaskId::parse(&format!("web.instance-{uuid}")).is_err(), "no attempt suffix");
        assert!(TaskId::parse(&format!("web.instance-{uuid}._app.1/../x")).is_err());
    }

    #[test]
    fn parent_and_within() {
        let app = AppId::parse("/a/b/c").expect("valid");
        assert_eq!(app.parent().as_str(), "/a/b");
        assert!(app.is_within(&AppId::parse("/a").expect("valid")));
        assert!(!app.is_within(&AppId::parse("/a/bb").expect("valid")));
        assert!(app.is_within(&AppId::root()));
        assert_eq!(AppId::parse("/a").expect("valid").parent(), AppId::root());
    }
}
