//! Marathon placement constraints over `hostname` and node attributes:
//! UNIQUE, CLUSTER, GROUP_BY, LIKE, UNLIKE, MAX_PER, IS.

use model::{Constraint, ConstraintOp, NodeInfo};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConstraintViolation(pub String);

fn field_value<'a>(node: &'a NodeInfo, field: &str) -> Option<&'a str> {
    if field == "hostname" {
        Some(node.hostname.as_str())
    } else {
        node.attributes.get(field).map(String::as_str)
    }
}

fn full_match(pattern: &str, value: &str) -> bool {
    regex::Regex::new(&format!("^(?:{pattern})$")).is_ok_and(|r| r.is_match(value))
}

/// Whether placing one more task on `node` keeps `c` satisfied, given the
/// field values of the nodes that already run the app's tasks
/// (`placed`: value -> count) and every value seen across nodes.
pub fn check(
    c: &Constraint,
    node: &NodeInfo,
    placed: &BTreeMap<String, usize>,
    all_values: &[String],
) -> Result<(), ConstraintViolation> {
    let violation = || {
        let v = c.value.as_deref().map(|v| format!(":{v}")).unwrap_or_default();
        ConstraintViolation(format!("constraint {}:{:?}{} not satisfied", c.field, c.op, v))
    };
    let value = field_value(node, &c.field);
    let ok = match c.op {
        ConstraintOp::Unique => value.is_some_and(|v| !placed.contains_key(v)),
        ConstraintOp::Cluster => match (&c.value, value) {
            (Some(want), Some(v)) if !want.is_empty() => v == want,
            // Without a value, all tasks share whatever value the first got.
            (_, Some(v)) => placed.keys().all(|k| k == v),
            (_, None) => false,
        },
        ConstraintOp::Is => matches!((&c.value, value), (Some(want), Some(v)) if v == want),
        ConstraintOp::Like => matches!((&c.value, value), (Some(p), Some(v)) if full_match(p, v)),
        ConstraintOp::Unlike => match (&c.value, value) {
            (Some(p), Some(v)) => !full_match(p, v),
            (_, None) => true,
            (None, Some(_)) => false,
        },
        ConstraintOp::MaxPer => {
            let max: usize = c.value.as_deref().and_then(|v| v.parse().ok()).unwrap_or(0);
            value.is_some_and(|v| placed.get(v).copied().unwrap_or(0) < max)
        }
        ConstraintOp::GroupBy => match value {
            // Spread evenly: only values with the fewest tasks take the next one.
            Some(v) => {
                let count = |k: &str| placed.get(k).copied().unwrap_or(0);
                let min = all_values.iter().map(|k| count(k)).min().unwrap_or(0);
                count(v) <= min
            }
            None => false,
        },
    };
    if ok {
        Ok(())
    } else {
        Err(violation())
    }
}

/// Value of the constraint's field on `node` (for counting placements).
pub fn value_of(node: &NodeInfo, field: &str) -> Option<String> {
    field_value(node, field).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::{NodeId, Resources, UnixMillis};

    fn node(host: &str, rack: &str) -> NodeInfo {
        NodeInfo {
            id: NodeId(1),
            hostname: host.into(),
            advertise: host.into(),
            http_addr: String::new(),
            rpc_addr: String::new(),
            resources: Resources::default(),
            port_range: (1, 2),
            attributes: [("rack".to_string(), rack.to_string())].into(),
            registered_at: UnixMillis(0),
            draining: false,
            unreachable_since: None,
            drivers: vec![model::DriverKind::Exec],
            images: Vec::new(),
        }
    }

    fn c(field: &str, op: ConstraintOp, value: Option<&str>) -> Constraint {
        Constraint { field: field.into(), op, value: value.map(str::to_string) }
    }

    fn placed(items: &[(&str, usize)]) -> BTreeMap<String, usize> {
        items.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn each_operator() {
        let n = node("srv2.example", "r1");
        let values = vec!["r1".to_string(), "r2".to_string()];
        let cases: Vec<(Constraint, BTreeMap<String, usize>, bool)> = vec![
            (c("hostname", ConstraintOp::Unique, None), placed(&[]), true),
            (c("hostname", ConstraintOp::Unique, None), placed(&[("srv2.example", 1)]), false),
            (c("rack", ConstraintOp::Cluster, Some("r1")), placed(&[]), true),
            (c("rack", ConstraintOp::Cluster, Some("r2")), placed(&[]), false),
            (c("rack", ConstraintOp::Cluster, None), placed(&[("r2", 1)]), false),
            (c("hostname", ConstraintOp::Like, Some("srv2.*")), placed(&[]), true),
            (c("hostname", ConstraintOp::Like, Some("srv")), placed(&[]), false),
            (c("hostname", ConstraintOp::Unlike, Some("srv2.*")), placed(&[]), false),
            (c("rack", ConstraintOp::MaxPer, Some("2")), placed(&[("r1", 1)]), true),
            (c("rack", ConstraintOp::MaxPer, Some("2")), placed(&[("r1", 2)]), false),
            (c("rack", ConstraintOp::Is, Some("r1")), placed(&[]), true),
            (c("rack", ConstraintOp::GroupBy, None), placed(&[("r1", 1)]), false),
            (c("rack", ConstraintOp::GroupBy, None), placed(&[("r1", 1), ("r2", 1)]), true),
            (c("missing", ConstraintOp::Is, Some("x")), placed(&[]), false),
            (c("missing", ConstraintOp::Unlike, Some("x")), placed(&[]), true),
        ];
        for (con, p, want) in cases {
            assert_eq!(check(&con, &n, &p, &values).is_ok(), want, "{con:?} with {p:?}");
        }
    }
}
