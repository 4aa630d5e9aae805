//! A recorded history of client operations on apps, and a checker that the
//! reads in it (above all the final reads after healing) are explained by a
//! serial order of the writes that respects real time.
//!
//! Pure: no I/O, no clock of its own (callers stamp the times). Each app is
//! judged on its own, and each of its registers (`exists`, then one per
//! modelled field) on its own: a read of value `v` is explained when some
//! write of `v` that may be included (acknowledged or unknown, never a
//! definite failure) could be the last one before the read, that is when no
//! acknowledged write of that register lies strictly between them in real
//! time. For a register of plain writes this is exact; across registers it is
//! a necessary condition only (the per-register orders are not tied into one).
//!
//! The write semantics follow Wharf's API: a create sets every field; a
//! PATCH/PUT of one field sets it and makes the app exist, and when it found
//! no app it creates one with defaults for the other fields (so it *may* write
//! each default); a delete removes the app.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Microseconds since the history's start, on the test's monotonic clock.
pub type Micros = u64;

pub type Fields = BTreeMap<String, Value>;

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub enum Op {
    Create {
        app: String,
        fields: Fields,
    },
    /// `PATCH` of one field, or `PUT {"instances": n}` (a scale).
    Patch {
        app: String,
        field: String,
        value: Value,
    },
    Delete {
        app: String,
    },
    /// What a client saw: `None` when the app did not exist.
    Read {
        app: String,
        seen: Option<Fields>,
    },
}

impl Op {
    pub fn app(&self) -> &str {
        match self {
            Op::Create { app, .. } | Op::Patch { app, .. } | Op::Delete { app } | Op::Read { app, .. } => app,
        }
    }
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub enum Outcome {
    /// Acknowledged (2xx): must be in the serial order.
    Ok(Value),
    /// A definite refusal (4xx): had no effect.
    Failed(u16, String),
    /// Timeout, 5xx or connection error: may or may not have taken effect,
    /// at any time after it was invoked.
    Unknown(String),
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Event {
    pub client: usize,
    /// The node the request was sent to.
    pub node: usize,
    pub op: Op,
    pub invoke: Micros,
    pub complete: Micros,
    pub outcome: Outcome,
}

impl Event {
    fn acked(&self) -> bool {
        matches!(self.outcome, Outcome::Ok(_))
    }
    fn may_be_included(&self) -> bool {
        !matches!(self.outcome, Outcome::Failed(..))
    }
    /// An unknown outcome may take effect arbitrarily late.
    fn effective_complete(&self) -> Micros {
        match self.outcome {
            Outcome::Unknown(_) => Micros::MAX,
            _ => self.complete,
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let outcome = match &self.outcome {
            Outcome::Ok(_) => "ok".to_string(),
            Outcome::Failed(s, m) => format!("failed {s} {m}"),
            Outcome::Unknown(m) => format!("unknown ({m})"),
        };
        let op = match &self.op {
            Op::Create { app, fields } => {
                format!("create {app} {}", Value::Object(fields.clone().into_iter().collect()))
            }
            Op::Patch { app, field, value } => format!("patch {app} {field}={value}"),
            Op::Delete { app } => format!("delete {app}"),
            Op::Read { app, seen: None } => format!("read {app} -> absent"),
            Op::Read { app, seen: Some(s) } => {
                format!("read {app} -> {}", Value::Object(s.clone().into_iter().collect()))
            }
        };
        write!(
            f,
            "[{:>9.3}s..{:>9.3}s] client {} via node {}: {op}: {outcome}",
            self.invoke as f64 / 1e6,
            self.complete as f64 / 1e6,
            self.client,
            self.node
        )
    }
}

/// The fields the checker judges, and what a PATCH that creates an app gives
/// the fields it does not name.
pub struct Model {
    pub fields: Vec<String>,
    pub defaults: Fields,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    pub app: String,
    /// `exists` or a field name.
    pub register: String,
    /// Index of the read in the history.
    pub read: usize,
    pub seen: Option<Value>,
    pub why: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seen = self.seen.as_ref().map_or("nothing".to_string(), Value::to_string);
        write!(f, "{} {}: read #{} saw {seen}: {}", self.app, self.register, self.read, self.why)
    }
}

/// How an op writes one register: `None` if it does not.
#[derive(Clone, Copy, PartialEq)]
enum Writes {
    Definitely,
    /// Only if the op found no app (a PATCH that creates one).
    Maybe,
}

const EXISTS: &str = "exists";

/// The value `e` writes into `register`, if it writes it at all.
fn write_of(model: &Model, e: &Event, register: &str) -> Option<(Option<Value>, Writes)> {
    let default = || model.defaults.get(register).cloned();
    match &e.op {
        Op::Read { .. } => None,
        _ if register == EXISTS => Some((Some(Value::Bool(!matches!(e.op, Op::Delete { .. }))), Writes::Definitely)),
        Op::Create { fields, .. } => Some((fields.get(register).cloned().or_else(default), Writes::Definitely)),
        Op::Patch { field, value, .. } if field == register => Some((Some(value.clone()), Writes::Definitely)),
        Op::Patch { .. } => Some((default(), Writes::Maybe)),
        Op::Delete { .. } => Some((None, Writes::Definitely)),
    }
}

/// JSON equality, except that numbers compare as numbers (`8` == `8.0`).
fn same(a: &Option<Value>, b: &Option<Value>) -> bool {
    match (a, b) {
        (Some(Value::Number(x)), Some(Value::Number(y))) => x.as_f64() == y.as_f64(),
        (Some(Value::Object(x)), Some(Value::Object(y))) => {
            x.len() == y.len() && x.iter().all(|(k, v)| same(&Some(v.clone()), &y.get(k).cloned()))
        }
        _ => a == b,
    }
}

/// Checks every read in `history`; the empty list means all are explained.
pub fn check(model: &Model, history: &[Event]) -> Vec<Violation> {
    let mut out = Vec::new();
    for (ri, r) in history.iter().enumerate() {
        let Op::Read { app, seen } = &r.op else { continue };
        if !r.acked() {
            continue;
        }
        let ops: Vec<&Event> =
            history.iter().filter(|e| e.op.app() == app && !matches!(e.op, Op::Read { .. })).collect();
        let mut registers: Vec<(String, Option<Value>)> = vec![(EXISTS.into(), Some(Value::Bool(seen.is_some())))];
        if let Some(fields) = seen {
            registers.extend(model.fields.iter().map(|f| (f.clone(), fields.get(f).cloned())));
        }
        for (register, value) in registers {
            if let Some(why) = unexplained(model, &ops, r, &register, &value) {
                out.push(Violation { app: app.clone(), register, read: ri, seen: value, why });
            }
        }
    }
    out
}

/// Why read `r` of `value` in `register` has no explanation, if it has none.
fn unexplained(model: &Model, ops: &[&Event], r: &Event, register: &str, value: &Option<Value>) -> Option<String> {
    // Acknowledged definite writes of this register that completed before the read began.
    let acked_before: Vec<&Event> = ops
        .iter()
        .copied()
        .filter(|e| e.acked() && e.complete < r.invoke)
        .filter(|e| matches!(write_of(model, e, register), Some((_, Writes::Definitely))))
        .collect();
    let initial = if register == EXISTS { Some(Value::Bool(false)) } else { None };
    if same(&initial, value) && acked_before.is_empty() {
        return None;
    }
    let mut candidates = 0;
    let mut overwritten = Vec::new();
    for w in ops.iter().copied().filter(|e| e.may_be_included() && e.invoke < r.complete) {
        let Some((written, how)) = write_of(model, w, register) else { continue };
        if !same(&written, value) || (how == Writes::Maybe && !could_find_no_app(model, ops, w)) {
            continue;
        }
        candidates += 1;
        let done = w.effective_complete();
        match acked_before.iter().find(|later| done < later.invoke) {
            None => return None,
            Some(later) => overwritten.push(format!("\n    written by {w}\n    but later overwritten by {later}")),
        }
    }
    if candidates == 0 {
        let initial_note = if same(&initial, value) {
            format!(" (the initial value, but {} wrote it before the read)", acked_before[0])
        } else {
            String::new()
        };
        return Some(format!("no includable op wrote this value{initial_note}"));
    }
    Some(format!("every write of this value was overwritten before the read:{}", overwritten.join("")))
}

/// Whether `w` may have found no app (so that its maybe-writes happen): as if
/// it read `exists` = false while it ran.
fn could_find_no_app(model: &Model, ops: &[&Event], w: &Event) -> bool {
    let probe = Event {
        op: Op::Read { app: w.op.app().to_string(), seen: None },
        complete: w.effective_complete(),
        outcome: Outcome::Ok(Value::Null),
        ..w.clone()
    };
    unexplained(model, ops, &probe, EXISTS, &Some(Value::Bool(false))).is_none()
}

/// Turns one node's final view (`app` -> fields, absent apps missing) into
/// acknowledged reads of every app in `apps`, stamped `at`.
pub fn final_reads(
    node: usize,
    apps: &BTreeSet<String>,
    view: &BTreeMap<String, Fields>,
    invoke: Micros,
    complete: Micros,
) -> Vec<Event> {
    apps.iter()
        .map(|app| Event {
            client: usize::MAX,
            node,
            op: Op::Read { app: app.clone(), seen: view.get(app).cloned() },
            invoke,
            complete,
            outcome: Outcome::Ok(Value::Null),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn model() -> Model {
        Model {
            fields: vec!["env".into(), "instances".into()],
            defaults: [("env".to_string(), json!({})), ("instances".to_string(), json!(1))].into_iter().collect(),
        }
    }

    fn ev(op: Op, invoke: Micros, complete: Micros, outcome: Outcome) -> Event {
        Event { client: 0, node: 0, op, invoke, complete, outcome }
    }
    fn ok() -> Outcome {
        Outcome::Ok(Value::Null)
    }
    fn create(env: Value, i: u64) -> Op {
        Op::Create { app: "/a".into(), fields: [("env".to_string(), env), ("instances".to_string(), json!(i))].into() }
    }
    fn patch(field: &str, value: Value) -> Op {
        Op::Patch { app: "/a".into(), field: field.into(), value }
    }
    fn read(env: Value, i: u64) -> Op {
        Op::Read {
            app: "/a".into(),
            seen: Some([("env".to_string(), env), ("instances".to_string(), json!(i))].into()),
        }
    }
    fn absent() -> Op {
        Op::Read { app: "/a".into(), seen: None }
    }
    fn registers(v: &[Violation]) -> Vec<&str> {
        v.iter().map(|v| v.register.as_str()).collect()
    }

    #[test]
    fn sequential_writes_then_the_last_values_pass() {
        let h = vec![
            ev(create(json!({"A": "0"}), 0), 0, 10, ok()),
            ev(patch("env", json!({"A": "1"})), 20, 30, ok()),
            ev(patch("instances", json!(2)), 40, 50, ok()),
            ev(read(json!({"A": "1"}), 2), 60, 70, ok()),
        ];
        assert_eq!(check(&model(), &h), vec![]);
    }

    #[test]
    fn a_lost_update_fails() {
        // Two PATCHes of different fields, both acknowledged; one is gone.
        let h = vec![
            ev(create(json!({}), 0), 0, 10, ok()),
            ev(patch("env", json!({"A": "1"})), 20, 40, ok()),
            ev(patch("instances", json!(2)), 21, 39, ok()),
            ev(read(json!({}), 2), 60, 70, ok()),
        ];
        let v = check(&model(), &h);
        assert_eq!(registers(&v), vec!["env"], "{v:?}");
        assert!(v[0].why.contains("overwritten"), "{}", v[0]);
    }

    #[test]
    fn concurrent_writes_of_one_field_may_end_either_way() {
        let mut h = vec![
            ev(create(json!({}), 0), 0, 10, ok()),
            ev(patch("instances", json!(2)), 20, 40, ok()),
            ev(patch("instances", json!(3)), 25, 35, ok()),
        ];
        h.push(ev(read(json!({}), 2), 50, 60, ok()));
        h.push(ev(read(json!({}), 3), 50, 60, ok()));
        assert_eq!(check(&model(), &h), vec![]);
    }

    #[test]
    fn a_real_time_violation_fails() {
        // The write of 3 completed before the write of 2 began: 3 cannot be last.
        let h = vec![
            ev(create(json!({}), 0), 0, 10, ok()),
            ev(patch("instances", json!(3)), 20, 30, ok()),
            ev(patch("instances", json!(2)), 31, 40, ok()),
            ev(read(json!({}), 3), 50, 60, ok()),
        ];
        assert_eq!(registers(&check(&model(), &h)), vec!["instances"]);
    }

    #[test]
    fn a_stale_read_fails_but_an_overlapping_one_passes() {
        let h = vec![
            ev(create(json!({}), 0), 0, 10, ok()),
            ev(patch("instances", json!(4)), 20, 30, ok()),
            // Overlaps the write: may see either value.
            ev(read(json!({}), 0), 25, 28, ok()),
            // Began after the write was acknowledged: must see it.
            ev(read(json!({}), 0), 31, 35, ok()),
        ];
        let v = check(&model(), &h);
        assert_eq!(v.iter().map(|v| (v.read, v.register.as_str())).collect::<Vec<_>>(), vec![(3, "instances")]);
    }

    #[test]
    fn failures_are_excluded_and_unknowns_may_land_late() {
        let h = vec![
            ev(create(json!({}), 0), 0, 10, ok()),
            ev(patch("instances", json!(7)), 20, 30, Outcome::Failed(409, "locked".into())),
            ev(read(json!({}), 7), 40, 50, ok()),
        ];
        assert_eq!(registers(&check(&model(), &h)), vec!["instances"], "a refused write cannot be seen");
        let h = vec![
            ev(create(json!({}), 0), 0, 10, ok()),
            ev(patch("instances", json!(7)), 20, 30, Outcome::Unknown("timeout".into())),
            ev(patch("instances", json!(2)), 40, 50, ok()),
            ev(read(json!({}), 7), 60, 70, ok()),
            ev(read(json!({}), 2), 60, 70, ok()),
        ];
        assert_eq!(check(&model(), &h), vec![], "an unknown write may take effect after a later one");
    }

    #[test]
    fn an_acknowledged_create_must_be_visible_and_a_delete_must_stick() {
        let h = vec![ev(create(json!({}), 0), 0, 10, ok()), ev(absent(), 20, 30, ok())];
        assert_eq!(registers(&check(&model(), &h)), vec!["exists"], "a lost create");
        let h = vec![
            ev(create(json!({}), 0), 0, 10, ok()),
            ev(Op::Delete { app: "/a".into() }, 20, 30, ok()),
            ev(read(json!({}), 0), 40, 50, ok()),
        ];
        assert_eq!(registers(&check(&model(), &h)), vec!["exists", "env", "instances"], "a deleted app came back");
        let h = vec![ev(absent(), 0, 10, ok())];
        assert_eq!(check(&model(), &h), vec![], "never created");
    }

    #[test]
    fn a_patch_after_a_delete_recreates_with_defaults_not_old_fields() {
        let h = vec![
            ev(create(json!({"OLD": "1"}), 0), 0, 10, ok()),
            ev(Op::Delete { app: "/a".into() }, 20, 30, ok()),
            ev(patch("instances", json!(2)), 40, 50, ok()),
            ev(read(json!({}), 2), 60, 70, ok()),
            ev(read(json!({"OLD": "1"}), 2), 60, 70, ok()),
        ];
        let v = check(&model(), &h);
        assert_eq!(v.iter().map(|v| (v.read, v.register.as_str())).collect::<Vec<_>>(), vec![(4, "env")], "{v:?}");
    }

    #[test]
    fn a_patch_may_recreate_with_defaults_only_if_a_delete_came_first() {
        let h = vec![
            ev(create(json!({"OLD": "1"}), 0), 0, 10, ok()),
            ev(Op::Delete { app: "/a".into() }, 20, 30, Outcome::Unknown("timeout".into())),
            ev(patch("instances", json!(2)), 40, 50, ok()),
            ev(read(json!({}), 2), 60, 70, ok()),
        ];
        assert_eq!(check(&model(), &h), vec![], "the unknown delete may have happened");
        let mut h = h;
        h.remove(1);
        assert_eq!(registers(&check(&model(), &h)), vec!["env"], "no delete: the PATCH found the app");
    }

    #[test]
    fn a_value_nobody_wrote_fails() {
        let h = vec![ev(create(json!({}), 0), 0, 10, ok()), ev(read(json!({"X": "?"}), 0), 20, 30, ok())];
        let v = check(&model(), &h);
        assert_eq!(registers(&v), vec!["env"]);
        assert!(v[0].why.contains("no includable op"), "{}", v[0]);
    }

    #[test]
    fn numbers_compare_by_value() {
        let h = vec![ev(create(json!({}), 8), 0, 10, ok()), ev(read(json!({}), 8), 20, 30, ok())];
        let mut h2 = h.clone();
        if let Op::Read { seen: Some(s), .. } = &mut h2[1].op {
            s.insert("instances".into(), json!(8.0));
        }
        assert_eq!(check(&model(), &h2), vec![]);
    }
}
