use super::*;
use model::{
    AppSpec, Constraint, ConstraintOp, DeclineReason, Deployment, DeploymentId, NodeId, NodeInfo, PortSpec, Resources,
    Step, TaskStatus,
};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::SeedableRng;
use store::apply::apply;
use store::Command;

fn node(id: u64, cpus: f64, mem: f64) -> NodeInfo {
    NodeInfo {
        id: NodeId(id),
        hostname: format!("host-{id}"),
        advertise: format!("10.0.0.{id}"),
        http_addr: String::new(),
        rpc_addr: String::new(),
        resources: Resources { cpus, mem, disk: 10_000.0, gpus: 0 },
        port_range: (31000, 31099),
        attributes: [("rack".to_string(), format!("r{}", id % 2))].into(),
        registered_at: UnixMillis(0),
        draining: false,
        unreachable_since: None,
        drivers: vec![model::DriverKind::Exec],
        images: Vec::new(),
    }
}

fn spec(id: &str, instances: u32, cpus: f64) -> AppSpec {
    let mut a = AppSpec::new(AppId::parse(id).expect("id"));
    a.instances = instances;
    a.resources.cpus = cpus;
    a.resources.mem = 64.0;
    a.ports.push(PortSpec { port: 0, name: None, protocol: "tcp".into(), labels: Default::default() });
    a
}

struct Sim {
    state: ClusterState,
    now: UnixMillis,
    rng: StdRng,
    deployments: u32,
}

impl Sim {
    fn new(nodes: Vec<NodeInfo>) -> Sim {
        let mut state = ClusterState::default();
        for n in nodes {
            apply(&mut state, &Command::RegisterNode(n));
        }
        Sim { state, now: UnixMillis(1_000_000), rng: StdRng::seed_from_u64(7), deployments: 0 }
    }

    fn put(&mut self, a: AppSpec) {
        self.deployments += 1;
        self.now.0 += 1;
        let d = Deployment {
            id: DeploymentId(format!("d{}", self.deployments)),
            version: self.now,
            affected_apps: vec![a.id.clone()],
            // As the API does for a new app: create, then scale.
            steps: vec![
                Step { actions: vec![(model::DeploymentAction::StartApplication, a.id.clone())] },
                Step { actions: vec![(model::DeploymentAction::ScaleApplication, a.id.clone())] },
            ],
            current_step: 1,
            started_at: self.now,
        };
        apply(
            &mut self.state,
            &Command::PutApp {
                app: a,
                at: self.now,
                deployment: d,
                force: true,
                create_only: false,
                expect: None,
                finish_if_idle: false,
            },
        );
    }

    /// One scheduler round: plan, apply, then agents start staged tasks and
    /// finish killed ones.
    fn round(&mut self) -> Outcome {
        self.round_in(Scope::All)
    }

    fn round_in(&mut self, scope: Scope<'_>) -> Outcome {
        let out = plan_scoped(&self.state, scope, self.now, &mut self.rng);
        apply(&mut self.state, &Command::ApplyPlan(out.plan.clone()));
        let statuses: Vec<TaskStatus> = self
            .state
            .tasks
            .values()
            .filter_map(|t| {
                let state = match (t.goal, t.state) {
                    (TaskGoal::Killed, s) if !s.is_terminal() => TaskState::Killed,
                    (TaskGoal::Running, TaskState::Staging) => TaskState::Running,
                    _ => return None,
                };
                Some(TaskStatus { task_id: t.id.clone(), state, at: self.now, message: None, container_ip: None })
            })
            .collect();
        apply(&mut self.state, &Command::TaskStatuses(statuses));
        self.now.0 += 100;
        out
    }

    fn running(&self, app: &str) -> usize {
        let id = AppId::parse(app).expect("id");
        self.state.tasks_of(&id).filter(|t| t.state == TaskState::Running && t.goal == TaskGoal::Running).count()
    }
}

#[test]
fn launches_instances_spread_over_nodes_with_distinct_ports() {
    let mut sim = Sim::new(vec![node(1, 4.0, 4096.0), node(2, 4.0, 4096.0)]);
    sim.put(spec("/web", 4, 0.5));
    let out = sim.round();
    assert_eq!(out.plan.launches.len(), 4);
    let on_1 = out.plan.launches.iter().filter(|t| t.node == NodeId(1)).count();
    assert_eq!(on_1, 2, "spread evenly");
    for t in &out.plan.launches {
        assert!((31000..=31099).contains(&t.ports[0]));
        assert!(t.id.as_str().starts_with("web.instance-"));
    }
    assert_eq!(sim.running("/web"), 4);
    sim.round();
    assert!(sim.state.deployments.is_empty(), "deployment finished once converged");
}

#[test]
fn what_does_not_fit_stays_queued_with_a_reason() {
    let mut sim = Sim::new(vec![node(1, 1.0, 4096.0)]);
    sim.put(spec("/big", 3, 0.5));
    let out = sim.round();
    assert_eq!(out.plan.launches.len(), 2);
    assert_eq!(out.unplaced.len(), 1);
    assert_eq!(out.unplaced[0].count, 1);
    let offers = out.unplaced[0].offers();
    assert_eq!((offers.processed, offers.declined(DeclineReason::InsufficientCpus)), (1, 1), "{offers:?}");
    assert_eq!(offers.unused(), 1);
    let why = out.unplaced[0].explain(sim.now);
    assert_eq!(why, "1 of 1 nodes declined: insufficient cpus (1 node)");
    assert_eq!(sim.state.deployments.len(), 1, "deployment waits");
}

#[test]
fn container_tasks_go_only_to_nodes_with_their_driver() {
    let mut docker_node = node(2, 4.0, 4096.0);
    docker_node.drivers.push(model::DriverKind::Docker);
    let mut sim = Sim::new(vec![node(1, 4.0, 4096.0), docker_node]);
    let mut d = spec("/d", 2, 0.1);
    d.container = model::ContainerSpec::Docker(model::Container { image: Some("x".into()), ..Default::default() });
    sim.put(d);
    let mut o = spec("/o", 1, 0.1);
    o.container = model::ContainerSpec::Oci(model::Container { image: Some("x".into()), ..Default::default() });
    sim.put(o);
    let out = sim.round();
    assert!(out.plan.launches.iter().filter(|t| t.app_id.as_str() == "/d").all(|t| t.node == NodeId(2)));
    assert_eq!(out.plan.launches.iter().filter(|t| t.app_id.as_str() == "/d").count(), 2);
    // No node runs the built-in runtime yet: the app waits, saying why.
    let waiting: Vec<_> = out.unplaced.iter().filter(|u| u.app.as_str() == "/o").collect();
    assert_eq!(waiting.len(), 1, "{:?}", out.unplaced);
    let offers = waiting[0].offers();
    assert_eq!(offers.declined(DeclineReason::UnfulfilledConstraint), 2);
    assert_eq!(
        waiting[0].explain(sim.now),
        "2 of 2 nodes declined: no oci driver (the kernel has no overlayfs or the agent is not root) (2 nodes)"
    );
    assert!(out.plan.launches.iter().all(|t| t.app_id.as_str() != "/o"));
}

#[test]
fn scale_down_kills_youngest_first() {
    let mut sim = Sim::new(vec![node(1, 8.0, 8192.0)]);
    sim.put(spec("/a", 1, 0.1));
    sim.round();
    let first: Vec<TaskId> = sim.state.tasks.keys().cloned().collect();
    let mut a = spec("/a", 3, 0.1);
    sim.put(a.clone());
    sim.round();
    assert_eq!(sim.running("/a"), 3);
    a.instances = 1;
    sim.put(a);
    let out = sim.round();
    assert_eq!(out.plan.kills.len(), 2);
    assert!(!out.plan.kills.contains(&first[0]), "the oldest task survives");
    sim.round();
    assert_eq!(sim.running("/a"), 1);
    assert_eq!(sim.state.tasks.len(), 1, "killed tasks are expunged");
}

#[test]
fn failures_back_off_and_are_recorded() {
    let mut sim = Sim::new(vec![node(1, 8.0, 8192.0)]);
    let mut a = spec("/crashy", 1, 0.1);
    a.backoff.seconds = 2.0;
    sim.put(a);
    sim.round();
    let id = sim.state.tasks.keys().next().cloned().expect("a task");
    apply(
        &mut sim.state,
        &Command::TaskStatuses(vec![TaskStatus {
            task_id: id.clone(),
            state: TaskState::Failed,
            at: sim.now,
            message: Some("exited with status 1".into()),
            container_ip: None,
        }]),
    );
    let out = sim.round();
    assert_eq!(out.plan.expunges, vec![id.clone()]);
    assert!(out.plan.launches.is_empty(), "backoff delays the replacement");
    assert!(out.wake_at.is_some());
    let app = &sim.state.apps[&AppId::parse("/crashy").expect("id")];
    assert_eq!(app.last_task_failure.as_ref().map(|f| f.task_id.clone()), Some(id));
    assert_eq!(app.backoff.delay_seconds, 2.0);
    sim.now.0 += 2000;
    let out = sim.round();
    assert_eq!(out.plan.launches.len(), 1, "launched after the delay");
}

#[test]
fn new_version_replaces_tasks_keeping_capacity() {
    let mut sim = Sim::new(vec![node(1, 8.0, 8192.0)]);
    let mut a = spec("/v", 2, 0.1);
    sim.put(a.clone());
    sim.round();
    a.env.insert("V".into(), "2".into());
    sim.put(a);
    let out = sim.round();
    assert_eq!(out.plan.launches.len(), 2, "new tasks start before old ones go");
    assert!(out.plan.kills.is_empty(), "old tasks stay until new ones run");
    let out = sim.round();
    assert_eq!(out.plan.kills.len(), 2, "old tasks go once new ones run");
    sim.round();
    sim.round();
    assert_eq!(sim.running("/v"), 2);
    assert!(sim.state.deployments.is_empty());
}

#[test]
fn unique_hostname_leaves_the_rest_queued() {
    let mut sim = Sim::new(vec![node(1, 8.0, 8192.0), node(2, 8.0, 8192.0)]);
    let mut a = spec("/u", 3, 0.1);
    a.constraints.push(Constraint { field: "hostname".into(), op: ConstraintOp::Unique, value: None });
    sim.put(a);
    let out = sim.round();
    assert_eq!(out.plan.launches.len(), 2);
    assert_eq!(out.unplaced[0].count, 1);
    let offers = out.unplaced[0].offers();
    assert_eq!(offers.declined(DeclineReason::UnfulfilledConstraint), 2, "{offers:?}");
    assert_eq!(offers.unused(), 2);
    let why = out.unplaced[0].explain(sim.now);
    assert!(why.starts_with("2 of 2 nodes declined: constraint hostname:Unique"), "{why}");
}

#[test]
fn a_node_is_declined_for_its_earliest_reason_in_marathons_funnel() {
    // Node 1 lacks memory and breaks the constraint: counted as the
    // constraint. Node 2 is draining and lacks cpus: maintenance first.
    // Node 3 is unreachable: it makes no offer at all.
    let mut n1 = node(1, 8.0, 16.0);
    n1.attributes.insert("rack".into(), "b".into());
    let mut n2 = node(2, 0.01, 8192.0);
    n2.attributes.insert("rack".into(), "a".into());
    let mut n3 = node(3, 8.0, 8192.0);
    n3.attributes.insert("rack".into(), "a".into());
    let mut sim = Sim::new(vec![n1, n2, n3]);
    // Set after registering, which starts every node reachable and open.
    sim.state.nodes.get_mut(&NodeId(2)).expect("node 2").draining = true;
    sim.state.nodes.get_mut(&NodeId(3)).expect("node 3").unreachable_since = Some(UnixMillis(1));
    let mut a = spec("/f", 1, 0.5);
    a.resources.mem = 64.0;
    a.constraints.push(Constraint { field: "rack".into(), op: ConstraintOp::Is, value: Some("a".into()) });
    sim.put(a);
    let out = sim.round();
    assert!(out.plan.launches.is_empty());
    let offers = out.unplaced[0].offers();
    assert_eq!(offers.processed, 2, "the unreachable node is not counted");
    assert_eq!(offers.declined(DeclineReason::UnfulfilledConstraint), 1);
    assert_eq!(offers.declined(DeclineReason::AgentMaintenance), 1);
    assert_eq!(offers.declined(DeclineReason::InsufficientMemory), 0);
    assert_eq!(offers.declined(DeclineReason::InsufficientCpus), 0);
}

#[test]
fn backoff_is_a_wait_without_declines() {
    let mut sim = Sim::new(vec![node(1, 8.0, 8192.0)]);
    sim.put(spec("/b", 1, 0.1));
    let id = AppId::parse("/b").expect("id");
    let until = sim.now.plus_secs_f64(5.0);
    sim.state.apps.get_mut(&id).expect("app").backoff = LaunchBackoff { delay_seconds: 5.0, not_before: until };
    let out = plan(&sim.state, sim.now, &mut sim.rng);
    assert_eq!(out.unplaced[0].why, Waiting::Backoff { until });
    assert_eq!(out.unplaced[0].offers().processed, 0);
    assert_eq!(out.unplaced[0].explain(sim.now), "delayed by the restart backoff for 5.0s");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Whatever is asked, no node is ever oversubscribed, no host port is
    /// handed out twice on a node, and every app gets what fits.
    #[test]
    fn never_oversubscribes(
        nodes in prop::collection::vec((1u32..8, 256u32..4096), 1..5),
        apps in prop::collection::vec((1u32..6, 1u32..20), 1..6),
        seed in any::<u64>(),
    ) {
        let ns: Vec<NodeInfo> = nodes.iter().enumerate()
            .map(|(i, (c, m))| node(i as u64 + 1, *c as f64, *m as f64)).collect();
        let mut sim = Sim::new(ns);
        sim.rng = StdRng::seed_from_u64(seed);
        for (i, (inst, tenth)) in apps.iter().enumerate() {
            sim.put(spec(&format!("/app-{i}"), *inst, *tenth as f64 / 10.0));
        }
        for _ in 0..4 {
            sim.round();
            for n in sim.state.nodes.values() {
                let u = sim.state.usage(n.id);
                // The node index's account is what the node's tasks hold.
                let mut used = Resources::default();
                for t in sim.state.tasks_on(n.id).filter(|t| t.holds_resources()) {
                    used.add(&t.resources);
                }
                prop_assert_eq!(u.used, used);
                prop_assert!(u.used.cpus <= n.resources.cpus + 1e-6);
                prop_assert!(u.used.mem <= n.resources.mem + 1e-6);
                let ports: Vec<u16> = sim.state.tasks_on(n.id).filter(|t| t.holds_resources()).flat_map(|t| t.ports.clone()).collect();
                let uniq: BTreeSet<u16> = ports.iter().copied().collect();
                prop_assert_eq!(ports.len(), uniq.len());
            }
        }
        let out = plan(&sim.state, sim.now, &mut sim.rng);
        // Converged: nothing left to launch unless it cannot fit.
        for u in &out.unplaced {
            let o = u.offers();
            let resources = [DeclineReason::InsufficientCpus, DeclineReason::InsufficientMemory, DeclineReason::InsufficientPorts];
            prop_assert!(o.unused() == o.processed && o.unused() > 0, "{:?}", o);
            prop_assert_eq!(resources.iter().map(|r| o.declined(*r)).sum::<u32>(), o.unused(), "{:?}", o);
        }
        prop_assert!(out.plan.launches.is_empty() || !out.unplaced.is_empty() || out.plan.launches.len() <= apps.len() * 6);
    }
}

#[test]
fn health_gates_replacement_of_old_tasks() {
    let mut sim = Sim::new(vec![node(1, 8.0, 8192.0)]);
    let mut a = spec("/h", 3, 0.1);
    a.health_checks.push(model::HealthCheck {
        protocol: model::HealthProtocol::Http,
        path: Some("/".into()),
        port_index: Some(0),
        port: None,
        command: None,
        grace_period_seconds: 10.0,
        interval_seconds: 1.0,
        timeout_seconds: 1.0,
        max_consecutive_failures: 3,
        delay_seconds: 0.0,
        ignore_http1xx: false,
        mesos_side: false,
    });
    a.upgrade.minimum_health_capacity = 0.5;
    a.upgrade.maximum_over_capacity = 0.0;
    sim.put(a.clone());
    sim.round();
    let ids: Vec<_> = sim.state.tasks.keys().cloned().collect();
    for id in ids {
        sim.state.tasks.update(&id, |t| t.healthy = Some(true));
    }
    a.env.insert("V".into(), "2".into());
    sim.put(a);
    // New tasks run but nobody has reported them healthy: at least 2 old stay.
    for _ in 0..5 {
        sim.round();
        let old_alive = sim
            .state
            .tasks
            .values()
            .filter(|t| t.healthy == Some(true) && t.goal == TaskGoal::Running && !t.state.is_terminal())
            .count();
        assert!(old_alive >= 2, "only {old_alive} healthy tasks left");
    }
}

#[test]
fn readiness_gates_replacement_and_the_deployment() {
    let mut sim = Sim::new(vec![node(1, 8.0, 8192.0)]);
    let mut a = spec("/r", 2, 0.1);
    a.ports[0].name = Some("http".into());
    a.readiness_checks.push(model::ReadinessCheck {
        name: "ready".into(),
        protocol: model::ReadinessProtocol::Http,
        path: "/ready".into(),
        port_name: "http".into(),
        interval_seconds: 1.0,
        timeout_seconds: 0.5,
        http_status_codes_for_ready: vec![200],
        preserve_last_response: false,
    });
    a.upgrade.minimum_health_capacity = 1.0;
    a.upgrade.maximum_over_capacity = 1.0;
    sim.put(a.clone());
    for _ in 0..3 {
        sim.round();
    }
    assert_eq!(sim.running("/r"), 2);
    assert_eq!(sim.state.deployments.len(), 1, "running but not ready: the deployment waits");
    let ready = |sim: &mut Sim, ids: &[TaskId]| {
        let reports = ids
            .iter()
            .map(|id| model::ReadinessReport { task_id: id.clone(), ready: true, results: Vec::new(), at: sim.now })
            .collect();
        apply(&mut sim.state, &Command::TaskReadiness(reports));
    };
    let first: Vec<TaskId> = sim.state.tasks.keys().cloned().collect();
    ready(&mut sim, &first);
    sim.round();
    assert!(sim.state.deployments.is_empty(), "ready tasks finish the deployment");

    a.env.insert("V".into(), "2".into());
    sim.put(a);
    for _ in 0..4 {
        let out = sim.round();
        assert!(out.plan.kills.iter().all(|k| !first.contains(k)), "old tasks stay until new ones are ready");
    }
    assert_eq!(sim.state.deployments.len(), 1);
    let new: Vec<TaskId> = sim.state.tasks.keys().filter(|id| !first.contains(id)).cloned().collect();
    assert_eq!(new.len(), 2);
    ready(&mut sim, &new);
    let out = sim.round();
    assert_eq!(out.plan.kills.len(), 2, "old tasks go once the new ones are ready");
    sim.round();
    sim.round();
    assert!(sim.state.deployments.is_empty());
    assert_eq!(sim.running("/r"), 2);
}

#[test]
fn deployment_steps_start_dependencies_first() {
    let mut sim = Sim::new(vec![node(1, 8.0, 8192.0)]);
    let db = spec("/db", 1, 0.1);
    let web = spec("/web", 2, 0.1);
    sim.put(db.clone());
    sim.put(web.clone());
    // One deployment for both: /db first, then /web.
    sim.state.deployments = Default::default();
    let d = Deployment {
        id: DeploymentId("group".into()),
        version: sim.now,
        affected_apps: vec![db.id.clone(), web.id.clone()],
        steps: vec![
            Step {
                actions: vec![
                    (model::DeploymentAction::StartApplication, db.id.clone()),
                    (model::DeploymentAction::StartApplication, web.id.clone()),
                ],
            },
            Step { actions: vec![(model::DeploymentAction::ScaleApplication, db.id.clone())] },
            Step { actions: vec![(model::DeploymentAction::ScaleApplication, web.id.clone())] },
        ],
        current_step: 1,
        started_at: sim.now,
    };
    sim.state.deployments.insert(d.id.clone(), d);
    let out = sim.round();
    assert!(out.plan.launches.iter().all(|t| t.app_id == db.id), "only the dependency starts first");
    assert_eq!(out.plan.launches.len(), 1);
    // /db runs now: in the same round the deployment moves to /web's step
    // and /web launches.
    let out = sim.round();
    assert_eq!(out.plan.deployment_steps, vec![(DeploymentId("group".into()), 3)]);
    assert_eq!(out.plan.launches.iter().filter(|t| t.app_id == web.id).count(), 2);
    sim.round();
    sim.round();
    assert!(sim.state.deployments.is_empty());
    assert_eq!(sim.running("/web"), 2);
}

#[test]
fn at_scale_a_plan_is_bounded_and_still_spreads_and_converges() {
    // More nodes than one placement looks at, more instances than one plan holds.
    let nodes: Vec<NodeInfo> = (1..=200).map(|i| node(i, 8.0, 8192.0)).collect();
    let mut sim = Sim::new(nodes);
    sim.put(spec("/big", 3000, 0.01));
    sim.put(spec("/small", 150, 0.01));
    let out = sim.round();
    assert_eq!(out.plan.launches.len(), crate::reconcile::MAX_LAUNCHES_PER_PLAN);
    for _ in 0..5 {
        sim.round();
    }
    assert_eq!(sim.running("/big"), 3000);
    assert_eq!(sim.running("/small"), 150);
    // Each placement compares a few feasible nodes and takes the one with the
    // fewest tasks of the app: 150 instances land on at least 140 of 200 nodes.
    let id = AppId::parse("/small").expect("id");
    let nodes: std::collections::BTreeSet<NodeId> = sim.state.tasks_of(&id).map(|t| t.node).collect();
    assert!(nodes.len() >= 140, "only {} nodes used", nodes.len());
}

/// A job run takes only what services left free: on a full node it waits
/// in the queue with the reason, the services keep their tasks, and it is
/// placed once a service scales down.
#[test]
fn a_job_run_waits_for_room_and_never_takes_a_services_resources() {
    let mut sim = Sim::new(vec![node(1, 1.0, 4096.0)]);
    sim.put(spec("/svc", 2, 0.5));
    sim.round();
    assert_eq!(sim.running("/svc"), 2);
    let job: model::JobSpec = serde_json::from_value(serde_json::json!({
        "id": "batch", "description": null, "labels": {},
        "run": {"command": {"Shell": "true"}, "resources": {"cpus": 0.5, "mem": 32.0, "disk": 0.0, "gpus": 0},
                "env": {}, "container": "None", "constraints": [], "restart": "Never",
                "active_deadline_seconds": null, "max_launch_delay_seconds": 3600.0, "kill_grace_seconds": 3.0, "user": null}
    }))
    .expect("job");
    apply(&mut sim.state, &Command::PutJob { job, schedules: None, at: sim.now, create_only: true });
    let run = model::JobRunId("r1".into());
    let jid = model::JobId::parse("batch").expect("id");
    let start =
        Command::StartJobRun { job: jid.clone(), run: run.clone(), at: sim.now, trigger: model::RunTrigger::Manual };
    apply(&mut sim.state, &start);
    for _ in 0..3 {
        let out = sim.round();
        assert!(out.plan.launches.is_empty(), "no room: {:?}", out.plan.launches);
        assert_eq!(out.waiting_runs.len(), 1);
        let why = Unplaced { app: AppId::root(), count: 1, why: out.waiting_runs[0].why.clone() }.explain(sim.now);
        assert!(why.contains("insufficient cpus") || why.contains("cpus"), "{why}");
        assert_eq!(sim.running("/svc"), 2, "the service keeps its tasks");
    }
    sim.put(spec("/svc", 1, 0.5));
    for _ in 0..3 {
        sim.round();
    }
    assert_eq!(sim.running("/svc"), 1);
    let r = &sim.state.jobs.get(&jid).expect("job").runs[&run];
    assert_eq!(r.status, model::RunStatus::Active, "{r:?}");
    let task = sim.state.tasks.get(&r.tasks[0].id).expect("task");
    assert_eq!((task.state, task.node), (TaskState::Running, NodeId(1)));
}

#[test]
fn a_resident_instance_is_replaced_on_its_node_with_the_next_attempt_and_scaling_up_adds_new_ones() {
    let oci = |i| {
        let mut n = node(i, 8.0, 8192.0);
        n.drivers.push(model::DriverKind::Oci);
        n
    };
    let mut sim = Sim::new((1..=4).map(oci).collect());
    let mut a = spec("/db", 2, 0.1);
    a.backoff.seconds = 0.0;
    a.upgrade.maximum_over_capacity = 0.0;
    a.upgrade.minimum_health_capacity = 0.5;
    a.container = model::ContainerSpec::Oci(model::Container {
        image: Some("db:1".into()),
        volumes: vec![model::Volume {
            container_path: "data".into(),
            host_path: None,
            mode: model::VolumeMode::Rw,
            persistent: Some(model::PersistentVolume { size_mb: 16 }),
            secret: None,
        }],
        ..model::Container::default()
    });
    let id = a.id.clone();
    sim.put(a.clone());
    sim.round();
    let first: Vec<Task> = sim.state.tasks_of(&id).cloned().collect();
    assert_eq!(first.len(), 2);
    let resident = sim.state.apps[&id].resident.clone();
    assert_eq!(resident.len(), 2, "each instance is pinned to its node");
    for _ in 0..5 {
        // The first task fails, again and again; its instance comes back
        // where its volume is, under the next attempt number.
        let victim = sim
            .state
            .tasks_of(&id)
            .find(|t| t.id.instance_attempt().map(|(u, _)| u) == first[0].id.instance_attempt().map(|(u, _)| u))
            .cloned()
            .expect("the instance's task");
        let fail = TaskStatus {
            task_id: victim.id.clone(),
            state: TaskState::Failed,
            at: sim.now,
            message: None,
            container_ip: None,
        };
        apply(&mut sim.state, &Command::TaskStatuses(vec![fail]));
        sim.round();
        sim.round();
        let back = sim
            .state
            .tasks_of(&id)
            .find(|t| {
                !t.state.is_terminal()
                    && t.id.instance_attempt().map(|(u, _)| u) == first[0].id.instance_attempt().map(|(u, _)| u)
            })
            .cloned()
            .expect("the instance runs again");
        assert_eq!(back.node, first[0].node, "on the node holding its volume");
        assert_eq!(back.id.instance_attempt().map(|(_, n)| n), victim.id.instance_attempt().map(|(_, n)| n + 1));
    }
    assert_eq!(sim.state.apps[&id].resident.len(), 2, "no new instance for a replacement");
    // Scaling up adds instances (and volumes) anew.
    a.instances = 3;
    sim.put(a);
    sim.round();
    assert_eq!(sim.running("/db"), 3);
    assert_eq!(sim.state.apps[&id].resident.len(), 3);
}

/// Apps whose record, tasks or deployments differ between two states: the
/// apps the effects of the commands in between name.
fn touched(a: &ClusterState, b: &ClusterState) -> BTreeSet<AppId> {
    let mut out = BTreeSet::new();
    for (x, y) in [(a, b), (b, a)] {
        for (id, t) in x.tasks.iter() {
            if y.tasks.get(id) != Some(t) {
                out.insert(t.app_id.clone());
            }
        }
        for (id, app) in x.apps.iter() {
            if y.apps.get(id) != Some(app) {
                out.insert(id.clone());
            }
        }
        for (id, d) in x.deployments.iter() {
            if y.deployments.get(id) != Some(d) {
                out.extend(d.affected_apps.iter().cloned());
            }
        }
    }
    out
}

/// The leader plans only the apps that changed since its last plan, the
/// apps still waiting for room, and the apps a full plan left over; when a
/// timer is due it plans all. Through scaling, a new version, a failure
/// with its backoff, a delete and a plan cut at its launch limit, such
/// plans are the very plans made over every app.
#[test]
fn a_plan_over_the_changed_apps_is_the_plan_over_all_apps() {
    let nodes: Vec<NodeInfo> = (1..=40).map(|i| node(i, 8.0, 8192.0)).collect();
    let (mut full, mut scoped) = (Sim::new(nodes.clone()), Sim::new(nodes));
    let mut crashy = spec("/crashy", 3, 0.1);
    crashy.backoff.seconds = 0.5;
    let apps = [spec("/big", 2500, 0.01), spec("/a", 30, 0.1), spec("/b", 10, 0.1), crashy, spec("/c", 5, 0.2)];
    let mut last: Option<(ClusterState, Outcome)> = None;
    let mut wake: Option<UnixMillis> = None;
    for round in 0..24 {
        for sim in [&mut full, &mut scoped] {
            match round {
                0 => apps.iter().for_each(|a| sim.put(a.clone())),
                5 => sim.put(spec("/b", 3, 0.1)),
                7 => {
                    let mut c = spec("/c", 5, 0.2);
                    c.env.insert("V".into(), "2".into());
                    sim.put(c);
                }
                9 => {
                    let id = AppId::parse("/crashy").expect("id");
                    let failed: Vec<TaskStatus> = sim
                        .state
                        .tasks_of(&id)
                        .map(|t| TaskStatus {
                            task_id: t.id.clone(),
                            state: TaskState::Failed,
                            at: sim.now,
                            message: None,
                            container_ip: None,
                        })
                        .collect();
                    apply(&mut sim.state, &Command::TaskStatuses(failed));
                }
                12 => {
                    let id = AppId::parse("/a").expect("id");
                    let d = Deployment {
                        id: DeploymentId("delete-a".into()),
                        version: sim.now,
                        affected_apps: vec![id.clone()],
                        steps: vec![Step { actions: vec![(model::DeploymentAction::StopApplication, id.clone())] }],
                        current_step: 1,
                        started_at: sim.now,
                    };
                    apply(&mut sim.state, &Command::DeleteApp { id, at: sim.now, deployment: d, force: true });
                }
                _ => {}
            }
        }
        let scope: Option<BTreeSet<AppId>> = match &last {
            None => None,
            // The earliest timer any plan since the last full one asked for.
            _ if wake.is_some_and(|w| w <= scoped.now) => None,
            Some((before, out)) => {
                let mut apps = touched(before, &scoped.state);
                apps.extend(out.deferred.iter().cloned());
                apps.extend(
                    out.unplaced.iter().filter(|u| matches!(u.why, Waiting::Declined { .. })).map(|u| u.app.clone()),
                );
                Some(apps)
            }
        };
        let before = scoped.state.clone();
        let want = full.round();
        let got = scoped.round_in(scope.as_ref().map_or(Scope::All, Scope::Apps));
        assert_eq!(got.plan, want.plan, "round {round}, scope {scope:?}");
        assert_eq!(scoped.state, full.state, "round {round}");
        wake = match (&scope, wake, got.wake_at) {
            (None, _, w) => w,
            (Some(_), Some(a), Some(b)) => Some(a.min(b)),
            (Some(_), a, b) => a.or(b),
        };
        last = Some((before, got));
    }
    assert_eq!(full.running("/big"), 2500);
    assert_eq!(full.running("/b"), 3);
    assert_eq!(full.running("/c"), 5);
    assert!(full.state.apps.get(&AppId::parse("/a").expect("id")).is_none(), "/a was deleted");
}
