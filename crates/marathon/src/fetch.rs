//! `fetch` (artifacts fetched into each task's sandbox) and the deprecated
//! `uris` it replaced, read into `model::Artifact`s and rendered back as
//! Marathon shows them: every flag present, `destPath` only when set.

use crate::read::{get, Cx};
use model::Artifact;
use serde_json::{json, Map, Value};

/// Reads `fetch` or, without it, `uris` (each URI a fetch entry that
/// extracts archives, as Marathon converts them). Both at once is a 422.
pub(crate) fn read(cx: &mut Cx, fetch: Option<&Value>, uris: Option<&Value>) -> Vec<Artifact> {
    let fetch = fetch.filter(|v| !v.is_null());
    let uris = uris.filter(|v| !v.is_null());
    let given = |v: Option<&Value>| v.is_some_and(|v| v.as_array().is_none_or(|a| !a.is_empty()));
    if given(fetch) && given(uris) {
        cx.invalid("/uris", "may not be set in conjunction with fetch");
        return Vec::new();
    }
    let mut out = Vec::new();
    if let Some(a) = fetch.and_then(|v| cx.array(v, "/fetch")) {
        for (i, item) in a.iter().enumerate() {
            if let Some(art) = read_one(cx, item, &format!("/fetch({i})")) {
                out.push(art);
            }
        }
    } else if let Some(a) = uris.and_then(|v| cx.array(v, "/uris")) {
        for (i, item) in a.iter().enumerate() {
            let rel = format!("/uris({i})");
            if let Some(uri) = cx.string(item, &rel) {
                let art = Artifact::from_uri(&uri);
                match art.check() {
                    Ok(()) => out.push(art),
                    Err((_, e)) => cx.invalid(&rel, e.to_string()),
                }
            }
        }
    }
    out
}

fn read_one(cx: &mut Cx, item: &Value, rel: &str) -> Option<Artifact> {
    let o = cx.object(item, rel)?;
    let flag = |cx: &mut Cx, o: &Map<String, Value>, key: &str, default: bool| match get(o, key) {
        None => default,
        Some(v) => cx.boolean(v, &format!("{rel}/{key}")).unwrap_or(default),
    };
    let extract = flag(cx, o, "extract", true);
    let executable = flag(cx, o, "executable", false);
    let cache = flag(cx, o, "cache", false);
    let dest_path = get(o, "destPath").and_then(|v| cx.string(v, &format!("{rel}/destPath")));
    let Some(uri) = get(o, "uri") else {
        cx.invalid(&format!("{rel}/uri"), "error.path.missing");
        return None;
    };
    let uri = cx.string(uri, &format!("{rel}/uri"))?;
    let art = Artifact { uri, executable, extract, cache, dest_path };
    match art.check() {
        Ok(()) => Some(art),
        Err((field, e)) => {
            cx.invalid(&format!("{rel}/{field}"), e.to_string());
            None
        }
    }
}

/// The `fetch` array as Marathon renders it.
pub(crate) fn render(artifacts: &[Artifact]) -> Value {
    Value::Array(
        artifacts
            .iter()
            .map(|a| {
                let mut o = json!({"uri": a.uri, "extract": a.extract, "executable": a.executable, "cache": a.cache});
                if let Some(d) = &a.dest_path {
                    o["destPath"] = json!(d);
                }
                o
            })
            .collect(),
    )
}
