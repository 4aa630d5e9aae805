//! Marathon's rules for the parts of an app with their own grammar:
//! constraints (`["hostname", "LIKE", "srv.*"]`), health checks, port names.

use crate::read::{get, Cx};
use model::{Constraint, ConstraintOp, HealthCheck, HealthProtocol};
use serde_json::Value;

pub(crate) const OPERATORS: &str = "UNIQUE, CLUSTER, GROUP_BY, LIKE, UNLIKE, MAX_PER, IS";

pub(crate) fn constraint_op(s: &str) -> Option<ConstraintOp> {
    Some(match s {
        "UNIQUE" => ConstraintOp::Unique,
        "CLUSTER" => ConstraintOp::Cluster,
        "GROUP_BY" => ConstraintOp::GroupBy,
        "LIKE" => ConstraintOp::Like,
        "UNLIKE" => ConstraintOp::Unlike,
        "MAX_PER" => ConstraintOp::MaxPer,
        "IS" => ConstraintOp::Is,
        _ => return None,
    })
}

pub(crate) fn constraint_op_name(op: ConstraintOp) -> &'static str {
    match op {
        ConstraintOp::Unique => "UNIQUE",
        ConstraintOp::Cluster => "CLUSTER",
        ConstraintOp::GroupBy => "GROUP_BY",
        ConstraintOp::Like => "LIKE",
        ConstraintOp::Unlike => "UNLIKE",
        ConstraintOp::MaxPer => "MAX_PER",
        ConstraintOp::Is => "IS",
    }
}

/// One `[field, OPERATOR(, value)]` at `/constraints(i)`.
pub(crate) fn constraint(cx: &mut Cx, v: &Value, rel: &str) -> Option<Constraint> {
    let arr = cx.array(v, rel)?;
    let mut parts = Vec::new();
    for (j, item) in arr.iter().enumerate() {
        parts.push(cx.string(item, &format!("{rel}({j})"))?);
    }
    if !(2..=3).contains(&parts.len()) {
        cx.invalid(rel, "Each constraint must be an array of 2 or 3 strings: [field, operator(, value)]");
        return None;
    }
    let field = parts[0].clone();
    if field.trim().is_empty() {
        cx.invalid(rel, "Constraint field name must not be empty");
        return None;
    }
    let Some(op) = constraint_op(&parts[1]) else {
        cx.invalid(rel, format!("Constraint operator must be one of the following: {OPERATORS} (got '{}')", parts[1]));
        return None;
    };
    let value = parts.get(2).cloned();
    let is_int = |s: &str| s.trim().parse::<i64>().is_ok();
    let err: Option<String> = match op {
        // Marathon 1.4 rendered UNIQUE with an empty value; accept that.
        ConstraintOp::Unique => match value.as_deref() {
            Some(s) if !s.is_empty() => Some("Value specified but not used".into()),
            _ => None,
        },
        ConstraintOp::Cluster | ConstraintOp::Is => match value.as_deref() {
            Some(s) if !s.is_empty() => None,
            _ => Some(format!("Missing value: {} requires a value", parts[1])),
        },
        ConstraintOp::GroupBy => match value.as_deref() {
            None | Some("") => None,
            Some(s) if is_int(s) => None,
            Some(_) => Some(
                "Value was specified but is not a number: GROUP_BY may either have no value or an integer value".into(),
            ),
        },
        ConstraintOp::MaxPer => match value.as_deref() {
            Some(s) if is_int(s) => None,
            _ => Some("Value was not specified or is not a number: MAX_PER must have an integer value".into()),
        },
        ConstraintOp::Like | ConstraintOp::Unlike => match value.as_deref() {
            None => Some("A regular expression value must be provided".into()),
            Some(p) => match regex::Regex::new(p) {
                Ok(_) => None,
                Err(e) => Some(format!("'{p}' is not a valid regular expression ({e})")),
            },
        },
    };
    if let Some(e) = err {
        cx.invalid(rel, e);
        return None;
    }
    let value = match (op, value) {
        (ConstraintOp::Unique | ConstraintOp::GroupBy, Some(s)) if s.is_empty() => None,
        (_, v) => v,
    };
    Some(Constraint { field, op, value })
}

/// Marathon's `LegacyName` pattern for port names: `^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`.
pub(crate) fn valid_port_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

pub(crate) fn valid_protocol(s: &str) -> bool {
    matches!(s, "tcp" | "udp" | "udp,tcp" | "tcp,udp")
}

fn health_protocol(s: &str) -> Option<HealthProtocol> {
    Some(match s {
        "HTTP" | "MESOS_HTTP" => HealthProtocol::Http,
        "HTTPS" | "MESOS_HTTPS" => HealthProtocol::Https,
        "TCP" | "MESOS_TCP" => HealthProtocol::Tcp,
        "COMMAND" => HealthProtocol::Command,
        _ => return None,
    })
}

pub(crate) fn health_protocol_name(p: HealthProtocol) -> &'static str {
    match p {
        HealthProtocol::Http => "HTTP",
        HealthProtocol::Https => "HTTPS",
        HealthProtocol::Tcp => "TCP",
        HealthProtocol::Command => "COMMAND",
    }
}

/// One element of `healthChecks`, with Marathon's defaults. `port_count` is the
/// number of ports (definitions or mappings) a `portIndex` may address.
pub(crate) fn health_check(cx: &mut Cx, v: &Value, rel: &str, port_count: usize) -> Option<HealthCheck> {
    let o = cx.object(v, rel)?;
    let mesos_side =
        get(o, "protocol").and_then(Value::as_str).is_some_and(|p| p.starts_with("MESOS_") || p == "COMMAND");
    let protocol = match get(o, "protocol") {
        None => HealthProtocol::Http,
        Some(p) => {
            let s = cx.string(p, &format!("{rel}/protocol"))?;
            match health_protocol(&s) {
                Some(p) => p,
                None => {
                    cx.invalid(
                        &format!("{rel}/protocol"),
                        "must be one of HTTP, HTTPS, TCP, COMMAND, MESOS_HTTP, MESOS_HTTPS, MESOS_TCP",
                    );
                    return None;
                }
            }
        }
    };
    let secs = |cx: &mut Cx, key: &str, default: f64| -> f64 {
        match get(o, key) {
            None => default,
            Some(v) => cx.non_negative(v, &format!("{rel}/{key}")).map(|i| i as f64).unwrap_or(default),
        }
    };
    let grace_period_seconds = secs(cx, "gracePeriodSeconds", 300.0);
    let interval_seconds = secs(cx, "intervalSeconds", 60.0);
    let timeout_seconds = secs(cx, "timeoutSeconds", 20.0);
    let delay_seconds = secs(cx, "delaySeconds", 15.0);
    let max_consecutive_failures = secs(cx, "maxConsecutiveFailures", 3.0) as u32;
    let ignore_http1xx = match get(o, "ignoreHttp1xx") {
        None => false,
        Some(v) => cx.boolean(v, &format!("{rel}/ignoreHttp1xx")).unwrap_or(false),
    };
    if let Some(ip) = get(o, "ipProtocol") {
        if let Some(s) = cx.string(ip, &format!("{rel}/ipProtocol")) {
            if s != "IPv4" && s != "IPv6" {
                cx.invalid(&format!("{rel}/ipProtocol"), "must be one of IPv4, IPv6");
            }
        }
    }
    let port = get(o, "port").and_then(|v| cx.port(v, &format!("{rel}/port")));
    let mut port_index =
        get(o, "portIndex").and_then(|v| cx.non_negative(v, &format!("{rel}/portIndex"))).map(|i| i as usize);
    let command = match get(o, "command") {
        None => None,
        Some(c) => {
            let co = cx.object(c, &format!("{rel}/command"))?;
            match get(co, "value") {
                Some(v) => cx.string(v, &format!("{rel}/command/value")),
                None => {
                    cx.invalid(&format!("{rel}/command/value"), "error.path.missing");
                    None
                }
            }
        }
    };
    let path = match get(o, "path") {
        Some(p) => cx.string(p, &format!("{rel}/path")),
        None if matches!(protocol, HealthProtocol::Http | HealthProtocol::Https) => Some("/".to_string()),
        None => None,
    };
    if protocol == HealthProtocol::Command {
        if command.is_none() && get(o, "command").is_none() {
            cx.invalid(rel, "Command health checks require a command");
        }
    } else {
        if port.is_some() && port_index.is_some() {
            cx.invalid(rel, "Health checks may either specify a port or a portIndex");
        }
        if port.is_none() && port_index.is_none() {
            port_index = Some(0);
        }
        if let Some(i) = port_index {
            if port.is_none() && i >= port_count {
                cx.invalid(
                    rel,
                    "Health check port indices must address an element of the ports array or container port mappings.",
                );
            }
        }
    }
    Some(HealthCheck {
        protocol,
        path,
        port_index,
        port,
        command,
        grace_period_seconds,
        interval_seconds,
        timeout_seconds,
        max_consecutive_failures,
        delay_seconds,
        ignore_http1xx,
        mesos_side,
    })
}
