//! The big listings (`GET /v2/apps`, `GET /v2/tasks`) assembled from
//! pieces rendered once: an app's own fields (see `app_own_fields`), each
//! serialised on its own, and a task's whole object. Whoever keeps the
//! pieces between reads (the api crate's listing cache) decides when one is
//! still valid; this module only guarantees that an answer assembled from
//! pieces is byte for byte what serialising `app_wire` / `task_wire` gives.

use crate::render::{app_own_fields, Embed, TaskAppFacts};
use model::{App, Task};
use serde_json::Value;

/// An app's own fields, each serialised as `"key":value`, in key order
/// (the order serde_json writes an object's keys in).
#[derive(Debug, Clone)]
pub struct OwnFields(Vec<(String, Box<[u8]>)>);

impl OwnFields {
    pub fn render(app: &App, embed: &Embed) -> serde_json::Result<OwnFields> {
        let fields = app_own_fields(app, embed);
        let mut out = Vec::with_capacity(fields.len());
        for (k, v) in fields {
            let mut b = Vec::new();
            write_entry(&mut b, &k, &v)?;
            out.push((k, b.into_boxed_slice()));
        }
        Ok(OwnFields(out))
    }

    /// Bytes the pieces take (for sizing an answer).
    pub fn len_bytes(&self) -> usize {
        self.0.iter().map(|(_, b)| b.len() + 1).sum()
    }
}

fn write_entry(out: &mut Vec<u8>, key: &str, v: &Value) -> serde_json::Result<()> {
    serde_json::to_writer(&mut *out, key)?;
    out.push(b':');
    serde_json::to_writer(&mut *out, v)
}

/// One task's object, serialised (`task_wire_for`'s bytes).
pub fn task_bytes(task: &Task, app: &TaskAppFacts) -> serde_json::Result<Vec<u8>> {
    serde_json::to_vec(&crate::render::task_wire_for(task, app))
}

/// Writes one app's object: its own fields and `live` (from
/// `app_live_fields`, in key order) merged in key order, a live field
/// winning over an own one of the same name, then `"tasks"` with the given
/// task objects when the listing embeds them (as `AppWire` serialises).
pub fn write_app<'t>(
    out: &mut Vec<u8>,
    own: &OwnFields,
    live: &[(&str, Value)],
    tasks: Option<impl Iterator<Item = &'t [u8]>>,
) -> serde_json::Result<()> {
    out.push(b'{');
    let mut first = true;
    let mut sep = |out: &mut Vec<u8>| {
        if !std::mem::take(&mut first) {
            out.push(b',');
        }
    };
    let mut live = live.iter().peekable();
    for (k, bytes) in &own.0 {
        let mut replaced = false;
        while let Some((lk, lv)) = live.next_if(|(lk, _)| *lk <= k.as_str()) {
            sep(out);
            write_entry(out, lk, lv)?;
            replaced |= *lk == k.as_str();
        }
        if !replaced {
            sep(out);
            out.extend_from_slice(bytes);
        }
    }
    for (lk, lv) in live {
        sep(out);
        write_entry(out, lk, lv)?;
    }
    if let Some(tasks) = tasks {
        sep(out);
        out.extend_from_slice(b"\"tasks\":[");
        write_list(out, tasks);
        out.push(b']');
    }
    out.push(b'}');
    Ok(())
}

/// Writes pre-rendered objects separated by commas.
pub fn write_list<'t>(out: &mut Vec<u8>, items: impl Iterator<Item = &'t [u8]>) {
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(item);
    }
}
