//! Stored app versions as Marathon shows them: `GET /v2/apps/{id}/versions`
//! (`{"versions": [...]}`, newest first) and one version's definition.

use crate::render::spec_wire;
use crate::time::format_time;
use model::AppVersion;
use serde_json::{json, Value};

/// `{"versions": [...]}`, newest first.
pub fn render_versions<'a>(history: impl IntoIterator<Item = &'a AppVersion>) -> Value {
    let mut versions: Vec<&AppVersion> = history.into_iter().collect();
    versions.sort_by_key(|v| std::cmp::Reverse(v.version));
    let list: Vec<String> = versions.into_iter().map(|v| format_time(v.version)).collect();
    json!({ "versions": list })
}

/// The app definition of one stored version (`GET /v2/apps/{id}/versions/{ts}`).
pub fn render_app_version(v: &AppVersion) -> Value {
    let mut m = spec_wire(&v.spec);
    m.insert("version".into(), json!(format_time(v.version)));
    m.insert(
        "versionInfo".into(),
        json!({
            "lastScalingAt": format_time(v.last_scaling_at),
            "lastConfigChangeAt": format_time(v.last_config_change_at),
        }),
    );
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::{AppId, AppSpec, UnixMillis};

    fn version(ms: i64, instances: u32) -> AppVersion {
        let mut spec = AppSpec::new(AppId::parse("/a").expect("id"));
        spec.instances = instances;
        AppVersion {
            version: UnixMillis(ms),
            spec,
            last_scaling_at: UnixMillis(ms),
            last_config_change_at: UnixMillis(1),
        }
    }

    #[test]
    fn newest_first_and_full_definition() {
        let h = vec![version(1000, 1), version(3000, 3), version(2000, 2)];
        let v = render_versions(&h);
        assert_eq!(
            v,
            json!({"versions": ["1970-01-01T00:00:03.000Z", "1970-01-01T00:00:02.000Z", "1970-01-01T00:00:01.000Z"]})
        );
        let app = render_app_version(&h[1]);
        assert_eq!(app["id"], "/a");
        assert_eq!(app["instances"], 3);
        assert_eq!(app["version"], "1970-01-01T00:00:03.000Z");
        assert_eq!(app["versionInfo"]["lastConfigChangeAt"], "1970-01-01T00:00:00.001Z");
    }
}
