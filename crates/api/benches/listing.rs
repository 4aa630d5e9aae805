//! Where a big listing's time goes: `GET /v2/apps?embed=apps.tasks` and
//! `GET /v2/tasks` rendered from a state of `APPS` apps with `PER_APP`
//! tasks each (the scale bench's 1,000 nodes), the whole answer serialised
//! at once (as before the listing cache) beside the cache cold, warm, and
//! after a few percent of the tasks changed (as between two reads during a
//! deploy). `cargo bench -p api --bench listing [-- APPS PER_APP]`.

use api::listing::{AppsQuery, Pieces};
use marathon::Embed;
use model::{App, AppId, ClusterState, NodeId, Resources, Task, TaskId, TaskState, UnixMillis};
use std::time::Instant;

fn state(apps: usize, per_app: usize) -> ClusterState {
    let mut s = ClusterState::default();
    for a in 0..apps {
        let body = serde_json::json!({"id": format!("/bench/app-{a}"), "cmd": "sleep 1000", "cpus": 0.01, "mem": 1,
                                      "instances": per_app, "portDefinitions": [{"port": 10000 + a}]});
        let spec = match marathon::app_from_value(body, "") {
            Ok(spec) => spec,
            Err(e) => panic!("bench app: {}", e.to_json()),
        };
        let id = spec.id.clone();
        let at = UnixMillis(1_700_000_000_000 + a as i64);
        let app = App::new(spec, at);
        s.apps.insert(id.clone(), app);
        for n in 0..per_app {
            s.tasks.insert(task(&id, (a * per_app + n) as u128, at));
        }
    }
    s
}

fn task(app: &AppId, n: u128, at: UnixMillis) -> Task {
    let node = (n % 1000) as u64;
    let mut t = Task::staged(
        TaskId::new(app, uuid::Uuid::from_u128(n), 1),
        app.clone(),
        NodeId(1 << 40 | node),
        vec![31000 + (n % 1000) as u16],
        Resources { cpus: 0.01, mem: 1.0, disk: 0.0, gpus: 0 },
        at,
    );
    t.host = format!("10.0.{}.{}", node >> 8, node & 255);
    t.state = TaskState::Running;
    t.started_at = Some(at);
    t
}

/// Reference: the answer serialised whole, as the handlers did before.
fn apps_whole(s: &ClusterState, embed: &Embed) -> Vec<u8> {
    let deployments = marathon::deployments_by_app(s);
    let apps: Vec<marathon::AppWire<'_>> = s
        .apps
        .values()
        .map(|a| {
            let deps = deployments.get(&a.spec.id).map(Vec::as_slice).unwrap_or_default();
            marathon::app_wire(a, s, embed, deps)
        })
        .collect();
    serde_json::to_vec(&std::collections::BTreeMap::from([("apps", apps)])).unwrap_or_default()
}

fn tasks_whole(s: &ClusterState) -> Vec<u8> {
    let tasks: Vec<marathon::TaskWire<'_>> = s.tasks.values().map(|t| marathon::task_wire(t, s)).collect();
    serde_json::to_vec(&std::collections::BTreeMap::from([("tasks", tasks)])).unwrap_or_default()
}

/// Median of `runs` timings of `f`, in ms.
fn time(runs: usize, mut f: impl FnMut() -> usize) -> (f64, usize) {
    let mut v = Vec::new();
    let mut len = 0;
    for _ in 0..runs {
        let t = Instant::now();
        len = f();
        v.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], len)
}

/// Changes `pct`% of the tasks (health and state), as a deploy does between two reads.
fn churn(s: &mut ClusterState, pct: usize, round: usize) {
    let ids: Vec<TaskId> = s.tasks.keys().cloned().collect();
    let step = 100 / pct.max(1);
    for id in ids.iter().skip(round % step).step_by(step) {
        s.tasks.update(id, |t| t.updated_at = UnixMillis(t.updated_at.0 + 1));
    }
}

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let apps = args.first().copied().unwrap_or(1000);
    let per_app = args.get(1).copied().unwrap_or(10);
    let mut s = state(apps, per_app);
    println!("{apps} apps x {per_app} tasks");
    let embed = Embed::parse(&["apps.tasks".into()]);
    let q = AppsQuery { embed, ..Default::default() };
    let runs = 15;

    let (whole, len) = time(runs, || apps_whole(&s, &embed).len());
    println!("GET /v2/apps?embed=apps.tasks ({:.1} MiB)", len as f64 / 1048576.0);
    println!("  serialised whole   {whole:7.2} ms");
    let (cold, _) = time(runs, || Pieces::default().apps(&s, &q).map(|b| b.as_ref().len()).unwrap_or(0));
    println!("  pieces, cold       {cold:7.2} ms");
    let pieces = Pieces::default();
    let (warm, _) = time(runs, || pieces.apps(&s, &q).map(|b| b.as_ref().len()).unwrap_or(0));
    println!("  pieces, warm       {warm:7.2} ms  ({:.1}x faster than whole)", whole / warm);
    let mut round = 0;
    let mut churned = Vec::new();
    for _ in 0..runs {
        churn(&mut s, 5, round);
        round += 1;
        let t = Instant::now();
        let _ = pieces.apps(&s, &q);
        churned.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    churned.sort_by(f64::total_cmp);
    println!("  pieces, 5% changed {:7.2} ms", churned[runs / 2]);
    assert_eq!(
        pieces.apps(&s, &q).map(|a| a.as_ref().to_vec()).unwrap_or_default(),
        apps_whole(&s, &embed),
        "pieces differ from whole"
    );

    let (whole, len) = time(runs, || tasks_whole(&s).len());
    println!("GET /v2/tasks ({:.1} MiB)", len as f64 / 1048576.0);
    println!("  serialised whole   {whole:7.2} ms");
    let (cold, _) = time(runs, || Pieces::default().tasks(&s, &[]).map(|b| b.as_ref().len()).unwrap_or(0));
    println!("  pieces, cold       {cold:7.2} ms");
    let (warm, _) = time(runs, || pieces.tasks(&s, &[]).map(|b| b.as_ref().len()).unwrap_or(0));
    println!("  pieces, warm       {warm:7.2} ms  ({:.1}x faster than whole)", whole / warm);
    let mut churned = Vec::new();
    for _ in 0..runs {
        churn(&mut s, 5, round);
        round += 1;
        let t = Instant::now();
        let _ = pieces.tasks(&s, &[]);
        churned.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    churned.sort_by(f64::total_cmp);
    println!("  pieces, 5% changed {:7.2} ms", churned[runs / 2]);
    assert_eq!(
        pieces.tasks(&s, &[]).map(|a| a.as_ref().to_vec()).unwrap_or_default(),
        tasks_whole(&s),
        "pieces differ from whole"
    );
}
