use super::*;
use model::{AppSpec, DeploymentAction, NodeInfo, PortSpec, Resources, Step, Task};

fn app(id: &str) -> AppSpec {
    let mut a = AppSpec::new(AppId::parse(id).expect("valid id"));
    a.ports.push(PortSpec { port: 0, name: None, protocol: "tcp".into(), labels: Default::default() });
    a
}

fn dep(id: &str, app: &AppId) -> Deployment {
    Deployment {
        id: DeploymentId(id.into()),
        version: UnixMillis(1),
        affected_apps: vec![app.clone()],
        steps: vec![Step { actions: vec![(DeploymentAction::StartApplication, app.clone())] }],
        current_step: 1,
        started_at: UnixMillis(1),
    }
}

fn node(id: u64) -> NodeInfo {
    NodeInfo {
        id: NodeId(id),
        hostname: format!("n{id}"),
        advertise: "127.0.0.1".into(),
        http_addr: String::new(),
        rpc_addr: String::new(),
        resources: Resources { cpus: 2.0, mem: 1024.0, disk: 1000.0, gpus: 0 },
        port_range: (31000, 31010),
        attributes: Default::default(),
        registered_at: UnixMillis(0),
        draining: false,
        unreachable_since: None,
        drivers: vec![model::DriverKind::Exec],
        images: Vec::new(),
    }
}

fn task(app: &AppId, n: u128, node: u64, port: u16) -> Task {
    Task {
        id: TaskId::new(app, uuid::Uuid::from_u128(n), 1),
        app_id: app.clone(),
        node: NodeId(node),
        host: "127.0.0.1".into(),
        app_version: UnixMillis(1),
        ports: vec![port],
        resources: Resources { cpus: 1.0, mem: 128.0, disk: 0.0, gpus: 0 },
        state: TaskState::Staging,
        goal: TaskGoal::Running,
        staged_at: UnixMillis(1),
        started_at: None,
        updated_at: UnixMillis(1),
        message: None,
        healthy: None,
        health: None,
        ready: None,
        readiness: Vec::new(),
        job_run: None,
        container_ip: None,
    }
}

fn put(state: &mut ClusterState, a: AppSpec, d: &str, force: bool) -> Applied {
    let id = a.id.clone();
    apply(
        state,
        &Command::PutApp {
            app: a,
            at: UnixMillis(5),
            deployment: dep(d, &id),
            force,
            create_only: false,
            expect: None,
            finish_if_idle: false,
        },
    )
}

#[test]
fn service_ports_are_assigned_and_kept() {
    let mut s = ClusterState::default();
    put(&mut s, app("/a"), "d1", false);
    put(&mut s, app("/b"), "d2", false);
    assert_eq!(s.apps[&AppId::parse("/a").expect("id")].spec.ports[0].port, 10000);
    assert_eq!(s.apps[&AppId::parse("/b").expect("id")].spec.ports[0].port, 10001);
    // An update with port 0 keeps the port the app had.
    let r = put(&mut s, app("/a"), "d3", true);
    assert!(matches!(r, Applied::App(_)));
    assert_eq!(s.apps[&AppId::parse("/a").expect("id")].spec.ports[0].port, 10000);
}

#[test]
fn locked_app_is_refused_without_force_and_state_is_untouched() {
    let mut s = ClusterState::default();
    put(&mut s, app("/a"), "d1", false);
    let before = s.clone();
    let mut changed = app("/a");
    changed.instances = 5;
    let r = put(&mut s, changed.clone(), "d2", false);
    assert_eq!(r, Applied::Rejected(Rejection::Locked(vec![DeploymentId("d1".into())])));
    assert_eq!(s, before);
    let r = put(&mut s, changed, "d2", true);
    assert!(matches!(r, Applied::App(_)));
    assert!(!s.deployments.contains_key(&DeploymentId("d1".into())));
    assert!(s.deployments.contains_key(&DeploymentId("d2".into())));
}

#[test]
fn taken_service_port_is_refused() {
    let mut s = ClusterState::default();
    let mut a = app("/a");
    a.ports[0].port = 12000;
    put(&mut s, a, "d1", false);
    let mut b = app("/b");
    b.ports[0].port = 12000;
    let r = put(&mut s, b, "d2", false);
    assert!(matches!(r, Applied::Rejected(Rejection::ServicePortTaken(12000, _))));
    assert!(!s.apps.contains_key(&AppId::parse("/b").expect("id")));
}

fn with_ports(id: &str, asked: &[u16]) -> AppSpec {
    let mut a = app(id);
    let template = a.ports[0].clone();
    a.ports = asked.iter().map(|p| model::PortSpec { port: *p, ..template.clone() }).collect();
    a
}

#[test]
fn service_ports_are_asked_for_kept_or_the_lowest_free() {
    let mut s = ClusterState::default();
    let ports = |s: &ClusterState, id: &str| -> Vec<u16> {
        s.apps[&AppId::parse(id).expect("id")].spec.ports.iter().map(|p| p.port).collect()
    };
    // Asked-for ports are honoured; the others take the lowest free, around them.
    put(&mut s, with_ports("/a", &[10001]), "d1", false);
    put(&mut s, with_ports("/b", &[0, 0, 10003]), "d2", false);
    assert_eq!(ports(&s, "/b"), vec![10000, 10002, 10003]);
    // An update keeps the ports the app had.
    put(&mut s, with_ports("/b", &[0, 0, 10003]), "d3", false);
    assert_eq!(ports(&s, "/b"), vec![10000, 10002, 10003]);
    // A port another app holds: refused, naming the port and the holder, nothing changed.
    let r = put(&mut s, with_ports("/c", &[10002]), "d4", false);
    assert!(
        matches!(&r, Applied::Rejected(Rejection::ServicePortTaken(10002, holder)) if holder.as_str() == "/b"),
        "{r:?}"
    );
    assert!(!s.apps.contains_key(&AppId::parse("/c").expect("id")));
    // A port freed by a removed app is free again.
    put(&mut s, with_ports("/d", &[0]), "d5", false);
    assert_eq!(ports(&s, "/d"), vec![10004]);
}

#[test]
fn the_lowest_free_service_port_skips_taken_ones_and_ends_at_the_range() {
    let mut s = ClusterState::default();
    // 9000 was asked for under a wider range, then the range narrowed: it stays /b's.
    apply(&mut s, &Command::SetServicePorts { range: ServicePortRange { lo: 9000, hi: 20000 } });
    put(&mut s, with_ports("/b", &[10000, 10001, 10003, 9000]), "d1", false);
    let range = ServicePortRange::DEFAULT;
    apply(&mut s, &Command::SetServicePorts { range });
    let (b, c) = (AppId::parse("/b").expect("id"), AppId::parse("/c").expect("id"));
    assert_eq!(lowest_free(&s, range, &c, &BTreeSet::new()), Some(10002));
    assert_eq!(lowest_free(&s, range, &c, &[10002].into_iter().collect()), Some(10004));
    assert_eq!(lowest_free(&s, range, &b, &BTreeSet::new()), Some(10000), "an app's own ports do not count");
    let all: BTreeSet<u16> = (range.lo..=range.hi).collect();
    assert_eq!(lowest_free(&ClusterState::default(), range, &c, &all), None);
}

#[test]
fn service_ports_come_from_the_clusters_range_and_asked_ones_must_lie_in_it() {
    let mut s = ClusterState::default();
    let range = ServicePortRange { lo: 20000, hi: 20001 };
    apply(&mut s, &Command::SetServicePorts { range });
    assert_eq!(s.settings.service_port_range(), range);
    let ports = |s: &ClusterState, id: &str| -> Vec<u16> {
        s.apps[&AppId::parse(id).expect("id")].spec.ports.iter().map(|p| p.port).collect()
    };
    put(&mut s, with_ports("/a", &[0, 0]), "d1", false);
    assert_eq!(ports(&s, "/a"), vec![20000, 20001]);
    // The range is used up: refused naming it, nothing stored.
    let r = put(&mut s, with_ports("/b", &[0]), "d2", false);
    assert_eq!(r, Applied::Rejected(Rejection::NoServicePort(20000, 20001)));
    assert!(!s.apps.contains_key(&AppId::parse("/b").expect("id")));
    // An asked-for port outside the range: 422 naming the port and the range.
    let r = put(&mut s, with_ports("/c", &[10000]), "d3", false);
    assert_eq!(r, Applied::Rejected(Rejection::ServicePortOutOfRange(10000, range)));
    let msg = Rejection::ServicePortOutOfRange(10000, range).to_string();
    assert!(msg.contains("10000") && msg.contains("20000-20001"), "{msg}");
    // Widening the range later keeps what /a holds; narrowing it does too.
    apply(&mut s, &Command::SetServicePorts { range: ServicePortRange { lo: 30000, hi: 30010 } });
    put(&mut s, with_ports("/a", &[20000, 20001]), "d4", true);
    assert_eq!(ports(&s, "/a"), vec![20000, 20001], "ports an app holds stay valid");
    put(&mut s, with_ports("/b", &[0]), "d5", false);
    assert_eq!(ports(&s, "/b"), vec![30000]);
}

#[test]
fn plan_launches_are_rechecked_against_free_resources_and_ports() {
    let mut s = ClusterState::default();
    apply(&mut s, &Command::RegisterNode(node(1)));
    put(&mut s, app("/a"), "d1", false);
    let id = AppId::parse("/a").expect("id");
    // Three 1-cpu tasks on a 2-cpu node: the third is dropped. A fourth reuses a port.
    let plan = Plan {
        launches: vec![task(&id, 1, 1, 31000), task(&id, 2, 1, 31000), task(&id, 3, 1, 31001), task(&id, 4, 1, 31002)],
        ..Default::default()
    };
    let r = apply(&mut s, &Command::ApplyPlan(plan));
    let Applied::Planned { launched, dropped, .. } = r else { panic!("{r:?}") };
    assert_eq!(launched, 2);
    let reasons: Vec<(String, DropReason)> = dropped.into_iter().map(|d| (d.task.to_string(), d.reason)).collect();
    assert_eq!(
        reasons,
        vec![
            (task(&id, 2, 1, 31000).id.to_string(), DropReason::PortTaken(31000)),
            (task(&id, 4, 1, 31002).id.to_string(), DropReason::InsufficientResources),
        ]
    );
    assert_eq!(s.tasks.len(), 2);
}

#[test]
fn terminal_tasks_do_not_come_back_and_kill_with_scale_lowers_instances() {
    let mut s = ClusterState::default();
    apply(&mut s, &Command::RegisterNode(node(1)));
    let mut a = app("/a");
    a.instances = 2;
    put(&mut s, a, "d1", false);
    let id = AppId::parse("/a").expect("id");
    let t = task(&id, 1, 1, 31000);
    apply(&mut s, &Command::ApplyPlan(Plan { launches: vec![t.clone()], ..Default::default() }));
    let st = |state| TaskStatus { task_id: t.id.clone(), state, at: UnixMillis(9), message: None, container_ip: None };
    apply(&mut s, &Command::TaskStatuses(vec![st(TaskState::Running)]));
    assert_eq!(s.tasks[&t.id].started_at, Some(UnixMillis(9)));
    let r = apply(
        &mut s,
        &Command::KillTasks { ids: vec![t.id.clone()], scale: true, at: UnixMillis(10), deployment: None },
    );
    assert_eq!(r, Applied::Killed(vec![t.id.clone()]));
    assert_eq!(s.apps[&id].spec.instances, 1);
    apply(&mut s, &Command::TaskStatuses(vec![st(TaskState::Killed)]));
    apply(&mut s, &Command::TaskStatuses(vec![st(TaskState::Running)]));
    assert_eq!(s.tasks[&t.id].state, TaskState::Killed);
}

#[test]
fn delete_marks_tasks_and_app_is_removed_only_when_empty() {
    let mut s = ClusterState::default();
    apply(&mut s, &Command::RegisterNode(node(1)));
    put(&mut s, app("/a"), "d1", false);
    let id = AppId::parse("/a").expect("id");
    let t = task(&id, 1, 1, 31000);
    apply(&mut s, &Command::ApplyPlan(Plan { launches: vec![t.clone()], ..Default::default() }));
    let d2 = dep("d2", &id);
    assert_eq!(
        apply(&mut s, &Command::DeleteApp { id: id.clone(), at: UnixMillis(6), deployment: d2.clone(), force: false }),
        Applied::Rejected(Rejection::Locked(vec![DeploymentId("d1".into())]))
    );
    apply(&mut s, &Command::DeleteApp { id: id.clone(), at: UnixMillis(6), deployment: d2, force: true });
    assert!(s.apps[&id].deleting, "the app is marked; the scheduler kills its tasks in turn");
    apply(&mut s, &Command::ApplyPlan(Plan { removed_apps: vec![id.clone()], ..Default::default() }));
    assert!(s.apps.contains_key(&id), "app with a live task stays");
    let killed = TaskStatus {
        task_id: t.id.clone(),
        state: TaskState::Killed,
        at: UnixMillis(7),
        message: None,
        container_ip: None,
    };
    apply(&mut s, &Command::TaskStatuses(vec![killed]));
    apply(
        &mut s,
        &Command::ApplyPlan(Plan {
            expunges: vec![t.id.clone()],
            removed_apps: vec![id.clone()],
            ..Default::default()
        }),
    );
    assert!(!s.apps.contains_key(&id));
}

#[test]
fn unhealthy_kill_records_the_reason_and_readiness_sticks_once_passed() {
    let mut s = ClusterState::default();
    apply(&mut s, &Command::RegisterNode(node(1)));
    put(&mut s, app("/a"), "d1", false);
    let id = AppId::parse("/a").expect("id");
    let t = task(&id, 1, 1, 31000);
    apply(&mut s, &Command::ApplyPlan(Plan { launches: vec![t.clone()], ..Default::default() }));
    let result = |ready| model::ReadinessResult { name: "r".into(), ready, last_response: None };
    let report = |ready| model::ReadinessReport {
        task_id: t.id.clone(),
        ready,
        results: vec![result(ready)],
        at: UnixMillis(8),
    };
    apply(&mut s, &Command::TaskReadiness(vec![report(false)]));
    assert_eq!(s.tasks[&t.id].ready, Some(false));
    apply(&mut s, &Command::TaskReadiness(vec![report(true)]));
    apply(&mut s, &Command::TaskReadiness(vec![report(false)]));
    assert_eq!(s.tasks[&t.id].ready, Some(true), "ready once, ready for good");
    assert_eq!(s.tasks[&t.id].readiness, vec![result(true)]);

    let kill = Command::KillUnhealthy { id: t.id.clone(), reason: "3 failures".into(), at: UnixMillis(9) };
    assert_eq!(apply(&mut s, &kill), Applied::Killed(vec![t.id.clone()]));
    assert_eq!(s.tasks[&t.id].goal, TaskGoal::Killed);
    assert_eq!(s.tasks[&t.id].message.as_deref(), Some("3 failures"));
    assert_eq!(apply(&mut s, &kill), Applied::Killed(Vec::new()), "a second kill changes nothing");
    assert_eq!(s.apps[&id].spec.instances, 1, "the app keeps its instances");
}

fn put_expecting(state: &mut ClusterState, a: AppSpec, at: i64, expect: Option<Precondition>) -> Applied {
    let id = a.id.clone();
    let mut deployment = dep(&format!("d{at}"), &id);
    deployment.version = UnixMillis(at);
    let cmd = Command::PutApp {
        app: a,
        at: UnixMillis(at),
        deployment,
        force: true,
        create_only: false,
        expect,
        finish_if_idle: false,
    };
    apply(state, &cmd)
}

#[test]
fn a_put_computed_from_an_old_version_is_refused_as_a_conflict() {
    let mut s = ClusterState::default();
    let id = AppId::parse("/a").expect("id");
    assert!(matches!(put_expecting(&mut s, app("/a"), 10, Some(Precondition::Absent)), Applied::App(_)));
    // A second create computed from "absent" lost the race.
    let r = put_expecting(&mut s, app("/a"), 11, Some(Precondition::Absent));
    assert_eq!(r, Applied::Rejected(Rejection::Conflict(id.clone())));
    // Two writers both read version 10: the first wins, the second must merge again.
    let mut first = app("/a");
    first.env.insert("ONE".into(), "1".into());
    assert!(matches!(put_expecting(&mut s, first, 12, Some(Precondition::Version(UnixMillis(10)))), Applied::App(_)));
    let mut second = app("/a");
    second.env.insert("TWO".into(), "2".into());
    let r = put_expecting(&mut s, second, 13, Some(Precondition::Version(UnixMillis(10))));
    assert_eq!(r, Applied::Rejected(Rejection::Conflict(id.clone())));
    assert_eq!(s.apps[&id].version, UnixMillis(12));
    assert!(s.apps[&id].spec.env.contains_key("ONE"));
}

#[test]
fn put_apps_stores_all_or_nothing_with_one_deployment() {
    let mut s = ClusterState::default();
    let (a, b) = (AppId::parse("/a").expect("id"), AppId::parse("/b").expect("id"));
    let mut d = dep("many", &a);
    d.affected_apps.push(b.clone());
    let puts = vec![
        AppPut { app: app("/a"), expect: Some(Precondition::Absent) },
        AppPut { app: app("/b"), expect: Some(Precondition::Absent) },
    ];
    let cmd = Command::PutApps { apps: puts.clone(), at: UnixMillis(5), deployment: d.clone(), force: false };
    let Applied::Apps(stored) = apply(&mut s, &cmd) else { panic!("not stored") };
    assert_eq!(stored.len(), 2);
    assert_eq!(s.deployments.len(), 1);
    // The same again: /a is held by "many" now, so nothing changes at all.
    let before = s.clone();
    let mut d2 = d.clone();
    d2.id = DeploymentId("again".into());
    let r = apply(&mut s, &Command::PutApps { apps: puts, at: UnixMillis(6), deployment: d2, force: false });
    assert!(matches!(r, Applied::Rejected(Rejection::Conflict(_))), "{r:?}");
    assert_eq!(s, before);
}

#[test]
fn rollback_returns_apps_to_their_previous_version_in_one_deployment() {
    let mut s = ClusterState::default();
    let id = AppId::parse("/a").expect("id");
    put_expecting(&mut s, app("/a"), 10, None);
    s.deployments = Default::default();
    let mut v2 = app("/a");
    v2.env.insert("V".into(), "2".into());
    put_expecting(&mut s, v2, 20, None);
    let holding: Vec<DeploymentId> = s.deployments.keys().cloned().collect();
    assert_eq!(holding.len(), 1);
    let new_id = DeploymentId("rollback".into());
    let cmd = Command::RollbackDeployment { id: holding[0].clone(), new_id: new_id.clone(), at: UnixMillis(30) };
    let Applied::RolledBack(Some(d)) = apply(&mut s, &cmd) else { panic!("not rolled back") };
    assert_eq!(d.id, new_id);
    assert_eq!(d.steps[0].actions, vec![(DeploymentAction::RestartApplication, id.clone())]);
    assert!(!s.apps[&id].spec.env.contains_key("V"), "back at the first version");
    assert_eq!(s.deployments.keys().cloned().collect::<Vec<_>>(), vec![new_id.clone()]);
    // Rolling back the creation deletes the app.
    let cmd = Command::RollbackDeployment { id: new_id, new_id: DeploymentId("r2".into()), at: UnixMillis(40) };
    assert!(matches!(apply(&mut s, &cmd), Applied::RolledBack(Some(_))));
    let missing = Command::RollbackDeployment {
        id: DeploymentId("nope".into()),
        new_id: DeploymentId("r3".into()),
        at: UnixMillis(50),
    };
    assert_eq!(apply(&mut s, &missing), Applied::Rejected(Rejection::NoSuchDeployment(DeploymentId("nope".into()))));
}

#[test]
fn reset_delay_forgets_the_backoff_only() {
    let mut s = ClusterState::default();
    let id = AppId::parse("/a").expect("id");
    put_expecting(&mut s, app("/a"), 10, None);
    if let Some(mut a) = s.apps.get_mut(&id) {
        a.backoff = LaunchBackoff { delay_seconds: 4.0, not_before: UnixMillis(99) };
    }
    assert_eq!(apply(&mut s, &Command::ResetDelay { id: id.clone() }), Applied::Done);
    assert_eq!(s.apps[&id].backoff, LaunchBackoff::default());
    assert_eq!(s.apps[&id].version, UnixMillis(10));
    let other = AppId::parse("/b").expect("id");
    assert_eq!(
        apply(&mut s, &Command::ResetDelay { id: other.clone() }),
        Applied::Rejected(Rejection::NoSuchApp(other))
    );
}

/// One of every `Command` variant, in an order that makes each one act on
/// something. The `match` in `variant` has no wildcard: a new variant does
/// not compile until it is added here and to the golden file.
fn every_command() -> Vec<Command> {
    let a = AppId::parse("/golden/a").expect("id");
    let b = AppId::parse("/golden/b").expect("id");
    let d = |n: &str, app: &AppId, v: i64| {
        let mut x = dep(n, app);
        x.version = UnixMillis(v);
        x.started_at = UnixMillis(v);
        x
    };
    let t1 = task(&a, 1, 1, 31000);
    let t2 = task(&a, 2, 1, 31001);
    let mut many = d("d-many", &b, 30);
    many.affected_apps = vec![a.clone(), b.clone()];
    vec![
        Command::RegisterNode(node(1)),
        Command::RegisterNode(node(2)),
        Command::PutApp {
            app: app("/golden/a"),
            at: UnixMillis(10),
            deployment: d("d-a", &a, 10),
            force: false,
            create_only: true,
            expect: Some(Precondition::Absent),
            finish_if_idle: false,
        },
        Command::ApplyPlan(Plan {
            launches: vec![t1.clone(), t2.clone()],
            finished_deployments: vec![DeploymentId("d-a".into())],
            ..Default::default()
        }),
        Command::TaskStatuses(vec![TaskStatus {
            task_id: t1.id.clone(),
            state: TaskState::Running,
            at: UnixMillis(11),
            message: None,
            container_ip: None,
        }]),
        Command::TaskHealth(vec![model::HealthReport {
            task_id: t1.id.clone(),
            alive: true,
            consecutive_failures: 0,
            at: UnixMillis(12),
            cause: None,
        }]),
        Command::TaskReadiness(vec![model::ReadinessReport {
            task_id: t1.id.clone(),
            ready: true,
            results: vec![],
            at: UnixMillis(12),
        }]),
        Command::KillUnhealthy { id: t2.id.clone(), reason: "failed 3 checks".into(), at: UnixMillis(13) },
        Command::RestartApp { id: a.clone(), at: UnixMillis(20), deployment: d("d-restart", &a, 20), force: false },
        Command::CancelDeployment { id: DeploymentId("d-restart".into()) },
        Command::PutApps {
            apps: vec![AppPut { app: app("/golden/b"), expect: Some(Precondition::Absent) }],
            at: UnixMillis(30),
            deployment: many,
            force: true,
        },
        Command::RollbackDeployment {
            id: DeploymentId("d-many".into()),
            new_id: DeploymentId("d-rollback".into()),
            at: UnixMillis(40),
        },
        Command::ResetDelay { id: a.clone() },
        Command::KillTasks {
            ids: vec![t1.id.clone()],
            scale: true,
            at: UnixMillis(50),
            deployment: Some(d("d-kill", &a, 50)),
        },
        Command::PutGroup {
            apps: vec![app("/golden/c")],
            remove_apps: vec![],
            groups: vec![(
                AppId::parse("/golden").expect("id"),
                GroupMeta { dependencies: vec![], version: UnixMillis(60) },
            )],
            remove_groups: vec![],
            at: UnixMillis(60),
            deployment: d("d-group", &b, 60),
            force: true,
        },
        Command::DeleteApp { id: a.clone(), at: UnixMillis(70), deployment: d("d-delete", &a, 70), force: true },
        Command::NodeLiveness { node: NodeId(2), reachable: false, at: UnixMillis(80) },
        Command::DrainNode { node: NodeId(1), draining: true },
        Command::NodeImages {
            node: NodeId(1),
            images: vec![model::NodeImage {
                reference: "127.0.0.1:5000/web:1".into(),
                digest: format!("sha256:{}", "ab".repeat(32)),
                size: 1_000_000,
                last_used: UnixMillis(85),
            }],
        },
        Command::RemoveNode { node: NodeId(2), at: UnixMillis(90) },
        Command::PutApiToken(model::ApiToken {
            id: "tok1".into(),
            role: model::Role::Deployer,
            name: "ci".into(),
            secret_sha256: "00".repeat(32),
            created_at: UnixMillis(100),
        }),
        Command::PutApiToken(model::ApiToken {
            id: "tok2".into(),
            role: model::Role::Viewer,
            name: String::new(),
            secret_sha256: "11".repeat(32),
            created_at: UnixMillis(101),
        }),
        Command::RemoveApiToken { id: "tok2".into() },
        Command::RotateJoinSecret { secret: "refused-before-a-ca".into() },
        Command::InitTrust(model::ClusterTrust {
            ca_name: "wharf cluster CA golden".into(),
            ca_cert_pem: "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n".into(),
            ca_key_pem: "-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----\n".into(),
            join_secret: "first".into(),
        }),
        Command::RotateJoinSecret { secret: "second".into() },
        Command::PutSecret(secret("prod/db", 110)),
        Command::PutSecret(secret("prod/gone", 111)),
        Command::PutSecret(secret("prod/db", 112)),
        Command::RemoveSecret { path: model::SecretPath::parse("prod/gone").expect("path") },
    ]
    .into_iter()
    .chain(super::jobs::tests::golden_commands())
    .chain([
        Command::SetServicePorts { range: ServicePortRange { lo: 10000, hi: 30000 } },
        // Two writers' commands grouped into one entry.
        Command::Batch(vec![
            Command::PutApiToken(model::ApiToken {
                id: "tok3".into(),
                role: model::Role::Viewer,
                name: "batched".into(),
                secret_sha256: "33".repeat(32),
                created_at: UnixMillis(120),
            }),
            Command::RemoveApiToken { id: "tok1".into() },
        ]),
    ])
    .collect()
}

fn secret(path: &str, at: i64) -> model::StoredSecret {
    model::StoredSecret {
        path: model::SecretPath::parse(path).expect("path"),
        sealed: model::Sealed { key_id: "k1".into(), nonce: format!("n{at}"), ciphertext: format!("c{at}") },
        created_at: UnixMillis(at),
        updated_at: UnixMillis(at),
    }
}

fn variant(c: &Command) -> &'static str {
    match c {
        Command::RegisterNode(_) => "RegisterNode",
        Command::PutApp { .. } => "PutApp",
        Command::DeleteApp { .. } => "DeleteApp",
        Command::RestartApp { .. } => "RestartApp",
        Command::KillTasks { .. } => "KillTasks",
        Command::ApplyPlan(_) => "ApplyPlan",
        Command::TaskStatuses(_) => "TaskStatuses",
        Command::CancelDeployment { .. } => "CancelDeployment",
        Command::NodeLiveness { .. } => "NodeLiveness",
        Command::DrainNode { .. } => "DrainNode",
        Command::NodeImages { .. } => "NodeImages",
        Command::RemoveNode { .. } => "RemoveNode",
        Command::PutGroup { .. } => "PutGroup",
        Command::TaskHealth(_) => "TaskHealth",
        Command::KillUnhealthy { .. } => "KillUnhealthy",
        Command::TaskReadiness(_) => "TaskReadiness",
        Command::PutApps { .. } => "PutApps",
        Command::RollbackDeployment { .. } => "RollbackDeployment",
        Command::ResetDelay { .. } => "ResetDelay",
        Command::PutApiToken(_) => "PutApiToken",
        Command::RemoveApiToken { .. } => "RemoveApiToken",
        Command::InitTrust(_) => "InitTrust",
        Command::RotateJoinSecret { .. } => "RotateJoinSecret",
        Command::PutSecret(_) => "PutSecret",
        Command::RemoveSecret { .. } => "RemoveSecret",
        Command::PutJob { .. } => "PutJob",
        Command::RemoveJob { .. } => "RemoveJob",
        Command::PutSchedule { .. } => "PutSchedule",
        Command::RemoveSchedule { .. } => "RemoveSchedule",
        Command::StartJobRun { .. } => "StartJobRun",
        Command::StopJobRun { .. } => "StopJobRun",
        Command::SetJobHistoryCount { .. } => "SetJobHistoryCount",
        Command::StartJobRuns { .. } => "StartJobRuns",
        Command::SetServicePorts { .. } => "SetServicePorts",
        Command::Batch(_) => "Batch",
    }
}

fn golden_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// An old log must always replay: the committed encodings of every command
/// still decode, and applied in order they give the committed state.
/// `WHARF_BLESS=1` writes the files anew (only when a variant is added).
#[test]
fn the_golden_log_decodes_and_replays_to_the_golden_state() {
    let dir = golden_dir();
    if std::env::var("WHARF_BLESS").is_ok_and(|v| v == "1") {
        let lines: Vec<String> = every_command().iter().map(|c| serde_json::to_string(c).expect("encode")).collect();
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("commands.jsonl"), lines.join("\n") + "\n").expect("write");
        let mut s = ClusterState::default();
        for c in every_command() {
            apply(&mut s, &c);
        }
        std::fs::write(dir.join("state-after.json"), serde_json::to_string_pretty(&s).expect("encode")).expect("write");
    }
    let log = std::fs::read_to_string(dir.join("commands.jsonl")).expect("golden log");
    let commands: Vec<Command> =
        log.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
    let mut seen: Vec<&str> = commands.iter().map(variant).collect();
    seen.sort();
    seen.dedup();
    let mut all: Vec<&str> = every_command().iter().map(variant).collect();
    all.sort();
    all.dedup();
    assert_eq!(seen, all, "the golden log must hold every Command variant (WHARF_BLESS=1 to add a new one)");
    let mut s = ClusterState::default();
    for c in &commands {
        apply(&mut s, c);
    }
    let want: ClusterState =
        serde_json::from_str(&std::fs::read_to_string(dir.join("state-after.json")).expect("golden state"))
            .expect("decode golden state");
    assert_eq!(s, want);
    // The replay did something of every kind: tasks placed, apps kept and removed, a node gone.
    assert!(s.removed_nodes.contains(&NodeId(2)));
    assert!(s.apps.contains_key(&AppId::parse("/golden/c").expect("id")));
}

#[test]
fn a_plan_made_before_a_node_went_unreachable_places_nothing_there() {
    let mut s = ClusterState::default();
    apply(&mut s, &Command::RegisterNode(node(1)));
    put(&mut s, app("/a"), "d1", false);
    let id = AppId::parse("/a").expect("id");
    apply(&mut s, &Command::NodeLiveness { node: NodeId(1), reachable: false, at: UnixMillis(7) });
    let plan = Plan { launches: vec![task(&id, 1, 1, 31000)], ..Default::default() };
    let Applied::Planned { launched, dropped, .. } = apply(&mut s, &Command::ApplyPlan(plan)) else {
        panic!("not a plan answer")
    };
    assert_eq!(launched, 0);
    assert_eq!(dropped[0].reason, DropReason::NodeUnavailable);
    assert!(s.tasks.is_empty());
}

#[test]
fn a_late_report_does_not_bring_a_task_on_a_lost_node_back_to_life() {
    let mut s = ClusterState::default();
    apply(&mut s, &Command::RegisterNode(node(1)));
    put(&mut s, app("/a"), "d1", false);
    let id = AppId::parse("/a").expect("id");
    let t = task(&id, 1, 1, 31000);
    apply(&mut s, &Command::ApplyPlan(Plan { launches: vec![t.clone()], ..Default::default() }));
    let st = |state| TaskStatus { task_id: t.id.clone(), state, at: UnixMillis(6), message: None, container_ip: None };
    apply(&mut s, &Command::NodeLiveness { node: NodeId(1), reachable: false, at: UnixMillis(7) });
    // Sent while the node still answered, committed after it was found lost.
    apply(&mut s, &Command::TaskStatuses(vec![st(TaskState::Running)]));
    assert_eq!(s.tasks[&t.id].state, TaskState::Unreachable, "still lost: its replacement must come");
    apply(&mut s, &Command::NodeLiveness { node: NodeId(1), reachable: true, at: UnixMillis(8) });
    assert_eq!(s.tasks[&t.id].state, TaskState::Running, "back with its node");
    apply(&mut s, &Command::NodeLiveness { node: NodeId(1), reachable: false, at: UnixMillis(9) });
    apply(&mut s, &Command::TaskStatuses(vec![st(TaskState::Failed)]));
    assert_eq!(s.tasks[&t.id].state, TaskState::Failed, "an end is taken at once");
}
