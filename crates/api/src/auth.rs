//! Who may call the HTTP API: one middleware layer in front of every route.
//!
//! Credentials are HTTP Basic (`--http-credentials user:pass`, Marathon's
//! flag; an admin) or a bearer token (`Authorization: Bearer <id>.<secret>`,
//! from `wharf token create`; its role is stored beside its hash). The UI's
//! event stream cannot send headers, so a `wharf_auth` cookie is accepted too,
//! for reads only (a cross-site form could not write with it).
//!
//! Authentication is on while this node has `--http-credentials` or the
//! cluster holds any token; otherwise the API is open, as Marathon's is by
//! default. Which role a request needs is decided by [`access`] from its
//! method and path alone, deny by default: a route nobody classified needs a
//! viewer to read and a deployer to write.

use crate::ApiContext;
use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, COOKIE, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use base64::Engine;
use model::Role;
use std::sync::Arc;

/// `--http-credentials user:pass`: HTTP Basic credentials with the admin role.
#[derive(Clone)]
pub struct Credentials {
    user: String,
    pass_sha256: [u8; 32],
}

impl Credentials {
    /// Parses `user:pass` (the password may contain colons).
    pub fn parse(s: &str) -> Result<Credentials, String> {
        match s.split_once(':') {
            Some((user, pass)) if !user.is_empty() && !pass.is_empty() => {
                Ok(Credentials { user: user.to_string(), pass_sha256: sha256(pass.as_bytes()) })
            }
            _ => Err("expected USER:PASSWORD, both non-empty".to_string()),
        }
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}:***)", self.user)
    }
}

/// What a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Nothing: liveness (`/ping`) and the UI's static files, which hold no
    /// data (the UI then logs in for every API call).
    Open,
    /// Credentials with at least this role.
    Needs(Role),
}

/// The role a request needs, from its method and path only.
pub fn access(method: &Method, path: &str) -> Access {
    let read = method == Method::GET || method == Method::HEAD;
    if path == "/ping" || (read && (path == "/" || path == "/ui" || path.starts_with("/ui/"))) {
        return Access::Open;
    }
    let secrets = path == "/wharf/v1/secrets" || path.starts_with("/wharf/v1/secrets/");
    let admin = path == "/wharf/v1/tokens"
        || path.starts_with("/wharf/v1/tokens/")
        || path == "/wharf/v1/unlock"
        || (!read && (secrets || path == "/v2/leader" || path.starts_with("/wharf/v1/nodes")));
    if admin {
        Access::Needs(Role::Admin)
    } else if secrets {
        // Deployers reference secrets by path; viewers do not see even that.
        Access::Needs(Role::Deployer)
    } else if read {
        Access::Needs(Role::Viewer)
    } else {
        Access::Needs(Role::Deployer)
    }
}

/// Puts the check in front of every route of `router` (the API's and any
/// merged into it), so none can be reached without it.
pub fn require(router: Router, ctx: Arc<ApiContext>) -> Router {
    router.layer(axum::middleware::from_fn_with_state(ctx, check))
}

/// Whether callers must authenticate on this node now.
pub fn enabled(ctx: &ApiContext) -> bool {
    ctx.credentials.is_some() || ctx.store.read(|s| !s.api_tokens.is_empty())
}

async fn check(State(ctx): State<Arc<ApiContext>>, req: Request, next: Next) -> Response {
    let Access::Needs(needed) = access(req.method(), req.uri().path()) else {
        return next.run(req).await;
    };
    if !enabled(&ctx) {
        return next.run(req).await;
    }
    let read = req.method() == Method::GET || req.method() == Method::HEAD;
    match authenticate(&ctx, req.headers(), read) {
        Identity::Anonymous => {
            unauthorized(req.headers(), "Authentication required: send HTTP Basic credentials or a bearer token")
        }
        Identity::Invalid => unauthorized(req.headers(), "Invalid username or password, or unknown token"),
        Identity::Known(role) if role >= needed => next.run(req).await,
        Identity::Known(role) => refuse(
            StatusCode::FORBIDDEN,
            format!("Not Authorized to perform this action: it needs the {needed} role, these credentials have {role}"),
        ),
    }
}

enum Identity {
    Anonymous,
    Invalid,
    Known(Role),
}

fn authenticate(ctx: &ApiContext, headers: &HeaderMap, read: bool) -> Identity {
    let header = headers.get(AUTHORIZATION).map(|v| v.to_str().map(str::to_string));
    let value = match header {
        Some(Ok(v)) => v,
        Some(Err(_)) => return Identity::Invalid,
        // Cookies only for reads: a write must carry its credentials itself.
        None if read => match cookie(headers) {
            Some(v) => v,
            None => return Identity::Anonymous,
        },
        None => return Identity::Anonymous,
    };
    let value = value.trim();
    // `token=...` is the DC/OS form, which marathon-python's auth_token sends.
    let role = match value.strip_prefix("token=") {
        Some(token) => bearer(ctx, token),
        None => match value.split_once(' ') {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("basic") => basic(ctx, rest.trim()),
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => bearer(ctx, rest.trim()),
            _ => None,
        },
    };
    role.map_or(Identity::Invalid, Identity::Known)
}

fn basic(ctx: &ApiContext, encoded: &str) -> Option<Role> {
    let creds = ctx.credentials.as_ref()?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, pass) = text.split_once(':')?;
    // Compares fixed-size hashes so the time taken says nothing of how much
    // of the password matched.
    let ok = user == creds.user && same(&sha256(pass.as_bytes()), &creds.pass_sha256);
    ok.then_some(Role::Admin)
}

fn bearer(ctx: &ApiContext, token: &str) -> Option<Role> {
    let (id, secret) = token.split_once('.')?;
    let stored = ctx.store.read(|s| s.api_tokens.get(id).cloned())?;
    same(hex(&sha256(secret.as_bytes())).as_bytes(), stored.secret_sha256.as_bytes()).then_some(stored.role)
}

/// The `wharf_auth` cookie the UI sets: `Bearer:<token>` or `Basic:<b64>`
/// (a colon, since cookie values cannot hold spaces).
fn cookie(headers: &HeaderMap) -> Option<String> {
    headers.get_all(COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|c| {
        let (name, value) = c.trim().split_once('=')?;
        (name == "wharf_auth").then(|| value.replacen(':', " ", 1))
    })
}

fn unauthorized(headers: &HeaderMap, message: &str) -> Response {
    let mut resp = refuse(StatusCode::UNAUTHORIZED, message.to_string());
    // A Basic challenge makes browsers open their own login dialog over the
    // page. The UI has its own form, so its requests (marked, or, for its
    // event stream, which cannot be marked, same-origin) get Bearer only.
    let from_ui = headers.contains_key("x-wharf-ui")
        || headers.get("sec-fetch-site").is_some_and(|v| v.as_bytes() == b"same-origin");
    let challenge = if from_ui { "Bearer realm=\"Wharf\"" } else { "Basic realm=\"Wharf\"" };
    resp.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
    resp
}

fn refuse(status: StatusCode, message: String) -> Response {
    (status, Json(marathon::ApiError::new(status.as_u16(), message).to_json())).into_response()
}

pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, data).as_ref());
    out
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Equality without an early exit.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_routes_are_ping_and_the_ui_files_only() {
        assert_eq!(access(&Method::GET, "/ping"), Access::Open);
        assert_eq!(access(&Method::GET, "/ui/app.js"), Access::Open);
        assert_eq!(access(&Method::POST, "/ui/app.js"), Access::Needs(Role::Deployer));
        assert_eq!(access(&Method::GET, "/metrics"), Access::Needs(Role::Viewer));
        assert_eq!(access(&Method::GET, "/uix"), Access::Needs(Role::Viewer));
    }

    #[test]
    fn roles_by_method_and_path() {
        assert_eq!(access(&Method::GET, "/v2/apps"), Access::Needs(Role::Viewer));
        assert_eq!(access(&Method::POST, "/v2/apps"), Access::Needs(Role::Deployer));
        assert_eq!(access(&Method::DELETE, "/v2/leader"), Access::Needs(Role::Admin));
        assert_eq!(access(&Method::GET, "/wharf/v1/tokens"), Access::Needs(Role::Admin));
        assert_eq!(access(&Method::POST, "/wharf/v1/nodes/1/drain"), Access::Needs(Role::Admin));
        assert_eq!(access(&Method::GET, "/wharf/v1/nodes"), Access::Needs(Role::Viewer));
        assert_eq!(access(&Method::OPTIONS, "/v2/info"), Access::Needs(Role::Deployer));
        assert_eq!(access(&Method::GET, "/wharf/v1/secrets"), Access::Needs(Role::Deployer));
        assert_eq!(access(&Method::GET, "/wharf/v1/secrets/a/b"), Access::Needs(Role::Deployer));
        assert_eq!(access(&Method::PUT, "/wharf/v1/secrets/a/b"), Access::Needs(Role::Admin));
        assert_eq!(access(&Method::DELETE, "/wharf/v1/secrets/a"), Access::Needs(Role::Admin));
        assert_eq!(access(&Method::POST, "/wharf/v1/unlock"), Access::Needs(Role::Admin));
    }

    #[test]
    fn credentials_need_a_user_and_a_password() {
        assert!(Credentials::parse("admin:s3:cret").is_ok());
        assert!(Credentials::parse("admin").is_err());
        assert!(Credentials::parse(":x").is_err());
        assert!(Credentials::parse("admin:").is_err());
        assert!(!format!("{:?}", Credentials::parse("a:hunter2")).contains("hunter2"));
    }

    #[test]
    fn cookie_values_become_authorization_values() {
        let mut h = HeaderMap::new();
        h.insert(COOKIE, HeaderValue::from_static("x=1; wharf_auth=Bearer:abc.def; y=2"));
        assert_eq!(cookie(&h).as_deref(), Some("Bearer abc.def"));
    }
}
