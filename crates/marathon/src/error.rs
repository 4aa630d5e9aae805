//! Marathon's error body: `{"message": "...", "details": [{"path": "/cpus", "errors": ["..."]}]}`
//! and the HTTP status that goes with it. Handlers turn an `ApiError` into a response.

use serde_json::{json, Map, Value};

/// One failed rule, at a JSON-pointer-like path (`/constraints(0)`, `/portDefinitions(1)/name`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorDetail {
    pub path: String,
    pub errors: Vec<String>,
}

impl ErrorDetail {
    pub fn new(path: impl Into<String>, error: impl Into<String>) -> ErrorDetail {
        ErrorDetail { path: path.into(), errors: vec![error.into()] }
    }
}

/// An error as Marathon reports it, with its HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {message}")]
pub struct ApiError {
    pub status: u16,
    pub message: String,
    pub details: Vec<ErrorDetail>,
    /// Deployments that lock the resource (409 answers carry them).
    pub deployments: Vec<String>,
}

impl ApiError {
    pub fn new(status: u16, message: impl Into<String>) -> ApiError {
        ApiError { status, message: message.into(), details: Vec::new(), deployments: Vec::new() }
    }

    /// 400 with a plain message.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, message)
    }

    /// 400 "Invalid JSON": malformed JSON or a value of the wrong JSON type.
    pub fn invalid_json(details: Vec<ErrorDetail>) -> ApiError {
        ApiError { details, ..ApiError::new(400, "Invalid JSON") }
    }

    /// 422 "Object is not valid" with the failed rules.
    pub fn unprocessable(details: Vec<ErrorDetail>) -> ApiError {
        ApiError { details, ..ApiError::new(422, "Object is not valid") }
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(404, message)
    }

    /// 409: the resource is locked by running deployments (Marathon lists them).
    pub fn conflict<S: ToString>(message: impl Into<String>, deployments: &[S]) -> ApiError {
        ApiError { deployments: deployments.iter().map(ToString::to_string).collect(), ..ApiError::new(409, message) }
    }

    /// The response body. `details` and `deployments` appear only when non-empty.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("message".into(), json!(self.message));
        if !self.details.is_empty() {
            let details: Vec<Value> =
                self.details.iter().map(|d| json!({"path": d.path, "errors": d.errors})).collect();
            m.insert("details".into(), Value::Array(details));
        }
        if !self.deployments.is_empty() {
            let deps: Vec<Value> = self.deployments.iter().map(|d| json!({"id": d})).collect();
            m.insert("deployments".into(), Value::Array(deps));
        }
        Value::Object(m)
    }

    /// Whether any detail sits at `path`.
    pub fn has_path(&self, path: &str) -> bool {
        self.details.iter().any(|d| d.path == path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_have_marathon_shape() {
        let e = ApiError::unprocessable(vec![ErrorDetail::new("/cpus", "too small")]);
        assert_eq!(e.status, 422);
        assert_eq!(
            e.to_json(),
            json!({"message": "Object is not valid", "details": [{"path": "/cpus", "errors": ["too small"]}]})
        );
        assert_eq!(
            ApiError::not_found("App '/a' does not exist").to_json(),
            json!({"message": "App '/a' does not exist"})
        );
        let c = ApiError::conflict("locked", &["d1"]);
        assert_eq!(c.status, 409);
        assert_eq!(c.to_json()["deployments"], json!([{"id": "d1"}]));
    }
}
