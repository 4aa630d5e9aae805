//! Mesos-DNS's naming rules, so existing configurations keep working: the
//! label function, a Marathon app's Mesos task name, and the canonical
//! per-task name `{task}-{hash}-{agentTail}`.

use data_encoding::{Encoding, Specification};
use sha1::{Digest, Sha1};
use std::sync::OnceLock;

/// Which label rule applies: RFC 1123 (63 characters, Mesos-DNS's default)
/// or RFC 952 (24 characters, no leading digits; `--dns-rfc952`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum LabelSpec {
    Rfc1123,
    Rfc952,
}

/// Turns any name into one DNS label as Mesos-DNS does: lowercase; `.`, `_`
/// and `-` become `-`; other characters outside `[a-z0-9]` are dropped;
/// leading `-` (and, for RFC 952, leading digits) trimmed; cut to the
/// length limit; trailing `-` trimmed, refilled from the tail when the cut
/// left room.
pub fn label(name: &str, spec: LabelSpec) -> String {
    let mapped: Vec<char> = name
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            '.' | '_' | '-' => Some('-'),
            'a'..='z' | '0'..='9' => Some(c),
            _ => None,
        })
        .collect();
    let max = match spec {
        LabelSpec::Rfc1123 => 63,
        LabelSpec::Rfc952 => 24,
    };
    let start = mapped
        .iter()
        .position(|&c| c != '-' && !(spec == LabelSpec::Rfc952 && c.is_ascii_digit()))
        .unwrap_or(mapped.len());
    let body = &mapped[start..];
    let mut head: Vec<char> = body[..body.len().min(max)].to_vec();
    trim_dashes_end(&mut head);
    // Mesos-DNS refills what trimming at the cut freed from the rest of the
    // name, dropping the dashes at each seam.
    let mut tail = &body[body.len().min(max)..];
    while head.len() < max && !tail.is_empty() {
        let skip = tail.iter().take_while(|&&c| c == '-').count();
        tail = &tail[skip..];
        let n = tail.len().min(max - head.len());
        head.extend_from_slice(&tail[..n]);
        tail = &tail[n..];
        trim_dashes_end(&mut head);
    }
    head.into_iter().collect()
}

fn trim_dashes_end(s: &mut Vec<char>) {
    while s.last() == Some(&'-') {
        s.pop();
    }
}

/// A Marathon app's Mesos task name: its path segments in reverse, joined by
/// `.` (`/group/app` is `app.group`).
pub fn mesos_task_name(app: &model::AppId) -> String {
    let segments: Vec<&str> = app.segments().collect();
    segments.into_iter().rev().collect::<Vec<_>>().join(".")
}

/// Mesos-DNS's `hashString`: the first five characters of the z-base-32
/// encoding of the SHA-1 of `s`.
pub fn hash5(s: &str) -> String {
    let digest = Sha1::digest(s.as_bytes());
    let mut out = zbase32().encode(&digest);
    out.truncate(5);
    out
}

fn zbase32() -> &'static Encoding {
    static ENC: OnceLock<Encoding> = OnceLock::new();
    ENC.get_or_init(|| {
        let mut spec = Specification::new();
        spec.symbols.push_str("ybndrfg8ejkmcpqxot1uwisza345h769");
        // The alphabet above is valid: 32 distinct ASCII symbols.
        spec.encoding().unwrap_or_else(|_| data_encoding::BASE32_NOPAD.clone())
    })
}

/// The canonical per-task label: `{task}-{hash of the task id}-{agent tail}`.
pub fn canonical(task_label: &str, task_id: &str, agent_tail: &str) -> String {
    format!("{task_label}-{}-{}", hash5(task_id), agent_tail.to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_follow_mesos_dns() {
        assert_eq!(label("89fdgsf---gs7-fgs--d7fddg-123", LabelSpec::Rfc952), "fdgsf---gs7-fgs--d7fddg1");
        let long = format!("hello{}f", "-".repeat(60));
        assert_eq!(label(&long, LabelSpec::Rfc952), "hellof");
        assert_eq!(label("a.b.c.d.e", LabelSpec::Rfc1123), "a-b-c-d-e");
        assert_eq!(label("chronos with a space AND MIXED CASE-2.0.1", LabelSpec::Rfc952), "chronoswithaspaceandmixe");
        assert_eq!(
            label("chronos with a space AND MIXED CASE-2.0.1", LabelSpec::Rfc1123),
            "chronoswithaspaceandmixedcase-2-0-1"
        );
        assert_eq!(label("liquor.store", LabelSpec::Rfc1123), "liquor-store");
        assert_eq!(label("-x-", LabelSpec::Rfc1123), "x");
    }

    #[test]
    fn hashes_match_mesos_dns() {
        assert_eq!(hash5("test"), "iffe9");
        // Task ids of fake.json and the canonical names Mesos-DNS gives them.
        assert_eq!(hash5("liquor-store.b8db9f73-562f-11e4-a088-c20493233aa5"), "4dfjd");
        assert_eq!(hash5("liquor-store.b71166c1-562f-11e4-a088-c20493233aa5"), "zasmd");
        assert_eq!(hash5("car-store.43758382-562f-11e4-a088-c20493233aa5"), "zinaz");
        assert_eq!(hash5("chronos.49b91a9a-3dda-11e4-a088-c20493233aa5"), "rx8q6");
        assert_eq!(hash5("nginx.1bc32344-3dda-11e4-a088-c20493233aa5"), "6ud99");
        assert_eq!(hash5("reviewbot.8c9b3434-615a-11e4-a088-c20493233aa5"), "8sq89");
    }

    #[test]
    fn task_names_reverse_the_app_path() {
        let id = model::AppId::parse("/group/app").expect("id");
        assert_eq!(mesos_task_name(&id), "app.group");
        assert_eq!(label(&mesos_task_name(&id), LabelSpec::Rfc1123), "app-group");
    }
}
