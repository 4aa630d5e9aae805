//! Metronome's error bodies: 422 `{"message":"Object is not valid","details":[{"path","errors"}]}`
//! for a definition that breaks a rule, 400 `{"message"}` for JSON that does not parse, and
//! `{"id","message"}`-style bodies for missing things.

use serde_json::{json, Value};

/// One broken rule at a JSON path (`/run/cpus`, `/schedules/0/cron`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detail {
    pub path: String,
    pub error: String,
}

/// An error as Metronome answers it: a status and the whole body.
#[derive(Debug, Clone, PartialEq)]
pub struct WireError {
    pub status: u16,
    pub body: Value,
}

impl WireError {
    /// 422 with every broken rule, grouped by path.
    pub fn invalid(details: &[Detail]) -> WireError {
        let mut grouped: Vec<(String, Vec<String>)> = Vec::new();
        for d in details {
            match grouped.iter_mut().find(|(p, _)| *p == d.path) {
                Some((_, errs)) => errs.push(d.error.clone()),
                None => grouped.push((d.path.clone(), vec![d.error.clone()])),
            }
        }
        let details: Vec<Value> =
            grouped.into_iter().map(|(path, errors)| json!({"path": path, "errors": errors})).collect();
        WireError { status: 422, body: json!({"message": "Object is not valid", "details": details}) }
    }

    /// 400: the body is not JSON.
    pub fn malformed(message: impl Into<String>, request_path: &str) -> WireError {
        WireError { status: 400, body: json!({"message": message.into(), "requestPath": request_path}) }
    }

    /// Any status with `{"message"}` (409 and business-rule 422s).
    pub fn message(status: u16, message: impl Into<String>) -> WireError {
        WireError { status, body: json!({"message": message.into()}) }
    }

    pub fn job_not_found(id: &str) -> WireError {
        WireError { status: 404, body: json!({"id": id, "message": "Job not found"}) }
    }

    pub fn schedule_not_found(id: &str) -> WireError {
        WireError { status: 404, body: json!({"id": id, "message": "Schedule not found"}) }
    }

    pub fn run_not_found(job: &str, run: &str) -> WireError {
        WireError { status: 404, body: json!({"jobSpec": job, "id": run, "message": "Job Run not found"}) }
    }
}
