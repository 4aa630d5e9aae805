//! Path-aware readers over `serde_json::Value`. Wrong JSON types are collected
//! as 400 details (`error.expected.jsnumber`, Play-JSON style, as Marathon
//! says it); rule violations as 422 details.

use crate::error::{ApiError, ErrorDetail};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Collects errors while one definition is read.
pub(crate) struct Cx {
    prefix: String,
    bad: Vec<ErrorDetail>,
    invalid: Vec<ErrorDetail>,
}

impl Cx {
    pub(crate) fn new(prefix: &str) -> Cx {
        Cx { prefix: prefix.trim_end_matches('/').to_string(), bad: Vec::new(), invalid: Vec::new() }
    }

    pub(crate) fn path(&self, rel: &str) -> String {
        let p = format!("{}{}", self.prefix, rel);
        if p.is_empty() {
            "/".to_string()
        } else {
            p
        }
    }

    pub(crate) fn type_err(&mut self, rel: &str, expected: &str) {
        let path = self.path(rel);
        self.bad.push(ErrorDetail::new(path, format!("error.expected.js{expected}")));
    }

    /// A 422 rule violation at `rel`; messages at one path are grouped.
    pub(crate) fn invalid(&mut self, rel: &str, msg: impl Into<String>) {
        let path = self.path(rel);
        let msg = msg.into();
        match self.invalid.iter_mut().find(|d| d.path == path) {
            Some(d) => d.errors.push(msg),
            None => self.invalid.push(ErrorDetail::new(path, msg)),
        }
    }

    /// 400 when any value had the wrong type, else 422 when any rule failed.
    pub(crate) fn finish(self) -> Result<(), ApiError> {
        if !self.bad.is_empty() {
            Err(ApiError::invalid_json(self.bad))
        } else if !self.invalid.is_empty() {
            Err(ApiError::unprocessable(self.invalid))
        } else {
            Ok(())
        }
    }

    pub(crate) fn string(&mut self, v: &Value, rel: &str) -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            _ => {
                self.type_err(rel, "string");
                None
            }
        }
    }

    pub(crate) fn number(&mut self, v: &Value, rel: &str) -> Option<f64> {
        match v.as_f64() {
            Some(n) => Some(n),
            None => {
                self.type_err(rel, "number");
                None
            }
        }
    }

    /// An integer; `2.0` is accepted, `2.5` is not.
    pub(crate) fn integer(&mut self, v: &Value, rel: &str) -> Option<i64> {
        if let Some(i) = v.as_i64() {
            return Some(i);
        }
        match v.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Some(f as i64),
            _ => {
                self.type_err(rel, "number");
                None
            }
        }
    }

    pub(crate) fn boolean(&mut self, v: &Value, rel: &str) -> Option<bool> {
        match v {
            Value::Bool(b) => Some(*b),
            _ => {
                self.type_err(rel, "boolean");
                None
            }
        }
    }

    pub(crate) fn array<'a>(&mut self, v: &'a Value, rel: &str) -> Option<&'a Vec<Value>> {
        match v {
            Value::Array(a) => Some(a),
            _ => {
                self.type_err(rel, "array");
                None
            }
        }
    }

    pub(crate) fn object<'a>(&mut self, v: &'a Value, rel: &str) -> Option<&'a Map<String, Value>> {
        match v {
            Value::Object(o) => Some(o),
            _ => {
                self.type_err(rel, "object");
                None
            }
        }
    }

    /// A non-negative integer (`minimum: 0`), reported Marathon's way.
    pub(crate) fn non_negative(&mut self, v: &Value, rel: &str) -> Option<i64> {
        let i = self.integer(v, rel)?;
        if i < 0 {
            self.invalid(rel, format!("got {i}, expected 0 or more"));
            return None;
        }
        Some(i)
    }

    /// A port number 0..=65535.
    pub(crate) fn port(&mut self, v: &Value, rel: &str) -> Option<u16> {
        let i = self.integer(v, rel)?;
        match u16::try_from(i) {
            Ok(p) => Some(p),
            Err(_) => {
                self.invalid(rel, format!("got {i}, expected between 0 and 65535"));
                None
            }
        }
    }

    /// `{"k": "v"}` with string values (labels).
    pub(crate) fn string_map(&mut self, v: &Value, rel: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        if let Some(o) = self.object(v, rel) {
            for (k, val) in o {
                match val {
                    Value::String(s) => {
                        out.insert(k.clone(), s.clone());
                    }
                    _ => self.invalid(&format!("{rel}/{k}"), "must be a string"),
                }
            }
        }
        out
    }
}

/// Removes `key`, treating `null` as absent.
pub(crate) fn take(m: &mut Map<String, Value>, key: &str) -> Option<Value> {
    match m.remove(key) {
        None | Some(Value::Null) => None,
        Some(v) => Some(v),
    }
}

/// Looks `key` up, treating `null` as absent.
pub(crate) fn get<'a>(m: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    match m.get(key) {
        None | Some(Value::Null) => None,
        Some(v) => Some(v),
    }
}
