//! Endpoints: where an app can be reached right now. One rule says which task
//! is up ([`Task::is_up`]); the scheduler (deployments, capacity), the
//! endpoint stream (DNS, load balancer, UI) and the API all use it.

use crate::{App, AppId, AppSpec, NodeId, NodeInfo, Task, TaskGoal, TaskId, TaskState};
use std::net::IpAddr;

impl Task {
    /// Up: running, not being killed, healthy when the app has health checks,
    /// and ready (its readiness checks passed once) when it has readiness
    /// checks. Only such a task gets traffic and counts as up in a deployment.
    pub fn is_up(&self, app: &AppSpec) -> bool {
        self.state == TaskState::Running
            && self.goal == TaskGoal::Running
            && (app.health_checks.is_empty() || self.healthy == Some(true))
            && (app.readiness_checks.is_empty() || self.ready == Some(true))
    }
}

/// Transport of a port, as Marathon names them in `protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Transport {
    Tcp,
    Udp,
}

impl Transport {
    /// The transports a Marathon `protocol` value stands for (`tcp,udp` is both).
    pub fn parse_list(protocol: &str) -> Vec<Transport> {
        let mut out: Vec<Transport> = protocol
            .split(',')
            .filter_map(|p| match p.trim() {
                "udp" => Some(Transport::Udp),
                "tcp" | "" => Some(Transport::Tcp),
                _ => None,
            })
            .collect();
        out.dedup();
        if out.is_empty() {
            out.push(Transport::Tcp);
        }
        out
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
        }
    }
}

/// One port of an up task.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EndpointPort {
    /// Position in the app's port definitions.
    pub index: usize,
    /// The port on the node (the allocated host port).
    pub host_port: u16,
    /// The app's cluster-wide service port (0 when none is assigned).
    pub service_port: u16,
    pub name: Option<String>,
    pub transports: Vec<Transport>,
}

/// An up task of an app: what DNS answers and the load balancer forwards to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Endpoint {
    pub app: AppId,
    pub task: TaskId,
    pub node: NodeId,
    /// The node's advertised address, as the task's `host`.
    pub host: String,
    /// The address clients connect to: the node's, for host networking
    /// (`None` when `host` is a name that is not an IP address).
    pub ip: Option<IpAddr>,
    /// The container's own address on its node's bridge (bridge
    /// networking): reachable from that node only, so DNS answers with
    /// `ip`, as Mesos-DNS does by default (its `IPSources` start with the
    /// host's address for Marathon tasks).
    pub container_ip: Option<IpAddr>,
    pub ports: Vec<EndpointPort>,
}

/// The endpoint of `task` if it is up (and its app and node are known).
pub fn endpoint_of(app: &App, task: &Task, node: Option<&NodeInfo>) -> Option<Endpoint> {
    if !task.is_up(&app.spec) || app.deleting {
        return None;
    }
    let host = node.map(|n| n.advertise.clone()).unwrap_or_else(|| task.host.clone());
    let ports = task
        .ports
        .iter()
        .enumerate()
        .map(|(index, &host_port)| {
            let spec = app.spec.ports.get(index);
            EndpointPort {
                index,
                host_port,
                service_port: spec.map(|p| p.port).unwrap_or(0),
                name: spec.and_then(|p| p.name.clone()),
                transports: Transport::parse_list(spec.map(|p| p.protocol.as_str()).unwrap_or("tcp")),
            }
        })
        .collect();
    Some(Endpoint {
        app: app.spec.id.clone(),
        task: task.id.clone(),
        node: task.node,
        ip: host.parse().ok(),
        container_ip: task.container_ip,
        host,
        ports,
    })
}
