//! The two big answers, `GET /v2/apps` and `GET /v2/tasks`, assembled from
//! pieces kept between reads (`Pieces`): each task's rendered object, and
//! each app's own fields rendered one by one. A read renders only what
//! changed since the last one and copies the rest; the counts and
//! deployments of each app are computed afresh every time.
//!
//! A piece is valid for exactly one value: it keeps the `Arc` of the task
//! or app it was rendered from, and is used only while the snapshot being
//! read holds that same `Arc` (`Arc::ptr_eq`). The store copies a shared
//! value before changing it, and the piece shares it, so a piece can never
//! describe anything but the snapshot's own value: an answer is always the
//! one the snapshot's state gives, and a read that follows a write sees it.

use marathon::pieces::{task_bytes, write_app, write_list, OwnFields};
use marathon::{Embed, TaskAppFacts};
use model::{App, AppId, AppSpec, ClusterState, Task, TaskState};
use std::borrow::Cow;
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex};

/// Which apps `GET /v2/apps` lists, and what it embeds.
#[derive(Debug, Clone, Default)]
pub struct AppsQuery {
    pub embed: Embed,
    /// `id=`: part of the app id.
    pub id: Option<String>,
    /// `cmd=`: part of the command.
    pub cmd: Option<String>,
    /// `label=`: Marathon's label selector.
    pub label: Option<String>,
}

impl AppsQuery {
    fn is_filtered(&self) -> bool {
        self.id.is_some() || self.cmd.is_some() || self.label.is_some()
    }

    fn wants(&self, spec: &AppSpec) -> bool {
        self.id.as_ref().is_none_or(|f| spec.id.as_str().contains(f.as_str()))
            && self.cmd.as_ref().is_none_or(|f| match &spec.command {
                Some(model::CommandSpec::Shell(c)) => c.contains(f.as_str()),
                Some(model::CommandSpec::Argv(v)) => v.join(" ").contains(f.as_str()),
                None => false,
            })
            && self.label.as_ref().is_none_or(|f| label_matches(spec, f))
    }
}

/// Marathon's label selector: `key`, `key==value`, `key!=value`, comma-separated (all must hold).
fn label_matches(spec: &AppSpec, selector: &str) -> bool {
    selector.split(',').map(str::trim).filter(|s| !s.is_empty()).all(|term| {
        if let Some((k, v)) = term.split_once("==") {
            spec.labels.get(k.trim()).is_some_and(|x| x == v.trim())
        } else if let Some((k, v)) = term.split_once("!=") {
            spec.labels.get(k.trim()).is_none_or(|x| x != v.trim())
        } else {
            spec.labels.contains_key(term)
        }
    })
}

/// Pieces are found by the address of the value they were rendered from:
/// the piece holds that value, so the address is not reused while it lives.
#[derive(Default)]
struct AddrHasher(u64);

impl Hasher for AddrHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_usize(&mut self, n: usize) {
        // Fibonacci hashing: allocations are aligned, so the low bits of an
        // address alone would crowd a few buckets.
        self.0 = (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(26);
    }
}

type ByAddr<V> = HashMap<usize, V, BuildHasherDefault<AddrHasher>>;

fn addr<T>(a: &Arc<T>) -> usize {
    Arc::as_ptr(a) as usize
}

struct TaskPiece {
    task: Arc<Task>,
    app: TaskAppFacts,
    bytes: Box<[u8]>,
    /// The read that last used it (pieces no full read used are dropped).
    seen: u64,
}

struct AppPiece {
    app: Arc<App>,
    own: OwnFields,
    seen: u64,
}

#[derive(Default)]
struct Store {
    tasks: ByAddr<TaskPiece>,
    /// By app id and whether the last failure is embedded (the only part
    /// of `embed` an app's own fields depend on). A launch copies its app
    /// without changing what these fields show (`same_own_fields`), so an
    /// app's piece is found by id and then checked, not by address.
    apps: HashMap<(AppId, bool), AppPiece>,
    read: u64,
    /// Size of the last answer of each kind, to allocate the next at once.
    apps_len: usize,
    tasks_len: usize,
}

/// The listing cache: one per API (`ApiContext`). Reads take it in turn;
/// assembling an answer from it takes a few milliseconds.
#[derive(Default)]
pub struct Pieces {
    store: Mutex<Store>,
    buffers: Arc<Buffers>,
}

/// Answer buffers kept for the next read. An answer of megabytes written
/// into fresh memory page-faults all through it: the allocator hands such
/// blocks back to the kernel soon after they are freed.
#[derive(Default)]
struct Buffers(Mutex<Vec<Vec<u8>>>);

/// Buffers kept: one per kind of listing read at a time.
const BUFFERS_KEPT: usize = 2;

impl Buffers {
    fn take(self: &Arc<Self>, at_least: usize) -> Answer {
        let kept = self.0.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut buf = kept.unwrap_or_default();
        buf.clear();
        buf.reserve(at_least);
        Answer { buf, pool: Some(self.clone()) }
    }
}

/// A rendered listing; its buffer goes back to the listing cache when the
/// answer has been sent.
pub struct Answer {
    buf: Vec<u8>,
    pool: Option<Arc<Buffers>>,
}

impl AsRef<[u8]> for Answer {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Answer {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            let mut kept = pool.0.lock().unwrap_or_else(|e| e.into_inner());
            if kept.len() < BUFFERS_KEPT {
                kept.push(std::mem::take(&mut self.buf));
            }
        }
    }
}

impl Store {
    /// Makes sure there is a piece for `task` (with its app's part `app`),
    /// rendering it if there is none for this very value.
    fn ensure_task(&mut self, task: &Arc<Task>, app: &TaskAppFacts) -> serde_json::Result<()> {
        let read = self.read;
        match self.tasks.entry(addr(task)) {
            Entry::Occupied(e) => {
                let p = e.into_mut();
                if !Arc::ptr_eq(&p.task, task) || p.app != *app {
                    *p = TaskPiece { task: task.clone(), app: app.clone(), bytes: render_task(task, app)?, seen: read };
                }
                p.seen = read;
            }
            Entry::Vacant(e) => {
                e.insert(TaskPiece {
                    task: task.clone(),
                    app: app.clone(),
                    bytes: render_task(task, app)?,
                    seen: read,
                });
            }
        }
        Ok(())
    }

    /// The piece `ensure_task` made sure of.
    fn task(&self, task: &Arc<Task>) -> Option<&[u8]> {
        self.tasks.get(&addr(task)).filter(|p| Arc::ptr_eq(&p.task, task)).map(|p| &*p.bytes)
    }

    /// Makes sure there is a piece for `app`'s own fields as `embed` asks.
    fn ensure_app(&mut self, app: &Arc<App>, embed: &Embed) -> serde_json::Result<()> {
        let read = self.read;
        match self.apps.entry((app.spec.id.clone(), embed.last_task_failure)) {
            Entry::Occupied(e) => {
                let p = e.into_mut();
                if !Arc::ptr_eq(&p.app, app) {
                    if marathon::same_own_fields(&p.app, app, embed) {
                        // The same fields: from now on the piece is this value's.
                        p.app = app.clone();
                    } else {
                        *p = AppPiece { app: app.clone(), own: OwnFields::render(app, embed)?, seen: read };
                    }
                }
                p.seen = read;
            }
            Entry::Vacant(e) => {
                e.insert(AppPiece { app: app.clone(), own: OwnFields::render(app, embed)?, seen: read });
            }
        }
        Ok(())
    }

    /// The piece `ensure_app` made sure of.
    fn app(&self, app: &Arc<App>, embed: &Embed) -> Option<&OwnFields> {
        self.apps
            .get(&(app.spec.id.clone(), embed.last_task_failure))
            .filter(|p| Arc::ptr_eq(&p.app, app))
            .map(|p| &p.own)
    }

    /// After a read: drop the pieces of values the read passed over when it
    /// saw every one (they are of changed or removed tasks and apps), and
    /// bound what filtered reads leave behind.
    fn sweep(&mut self, state: &ClusterState, saw_all_tasks: bool, saw_all_apps: bool) {
        let read = self.read;
        if saw_all_tasks || self.tasks.len() > 2 * state.tasks.len() + 1024 {
            self.tasks.retain(|_, p| p.seen == read);
        }
        if saw_all_apps || self.apps.len() > 4 * state.apps.len() + 1024 {
            self.apps.retain(|_, p| p.seen == read);
        }
    }
}

fn render_task(task: &Task, app: &TaskAppFacts) -> serde_json::Result<Box<[u8]>> {
    Ok(task_bytes(task, app)?.into_boxed_slice())
}

impl Pieces {
    fn lock(&self) -> std::sync::MutexGuard<'_, Store> {
        // A read that panicked leaves pieces that are each whole (a piece is
        // replaced in one assignment): keep using them.
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `GET /v2/apps` with `q`: `{"apps": [...]}`.
    pub fn apps(&self, state: &ClusterState, q: &AppsQuery) -> serde_json::Result<Answer> {
        let mut store = self.lock();
        store.read += 1;
        let deployments = marathon::deployments_by_app(state);
        let mut answer = self.buffers.take(store.apps_len + store.apps_len / 8);
        let out = &mut answer.buf;
        out.extend_from_slice(b"{\"apps\":[");
        for (i, (_, app)) in state.apps.iter_shared().filter(|(_, a)| q.wants(&a.spec)).enumerate() {
            if i > 0 {
                out.push(b',');
            }
            let shared: Vec<&Arc<Task>> =
                state.tasks.of_app_shared(&app.spec.id).filter(|t| !t.state.is_terminal()).collect();
            let tasks: Vec<&Task> = shared.iter().map(|t| t.as_ref()).collect();
            let deps = deployments.get(&app.spec.id).map(Vec::as_slice).unwrap_or_default();
            let live = marathon::app_live_fields(app, &tasks, state, &q.embed, deps);
            let facts = TaskAppFacts::of(Some(app));
            store.ensure_app(app, &q.embed)?;
            if q.embed.tasks {
                for t in &shared {
                    store.ensure_task(t, &facts)?;
                }
            }
            let own = match store.app(app, &q.embed) {
                Some(own) => Cow::Borrowed(own),
                None => Cow::Owned(OwnFields::render(app, &q.embed)?),
            };
            let pieces: Vec<Cow<'_, [u8]>> = if q.embed.tasks {
                shared
                    .iter()
                    .map(|t| piece_or_render(&store, t, || facts.clone()))
                    .collect::<serde_json::Result<_>>()?
            } else {
                Vec::new()
            };
            write_app(out, &own, &live, q.embed.tasks.then(|| pieces.iter().map(|p| &**p)))?;
        }
        out.extend_from_slice(b"]}");
        store.apps_len = out.len();
        let full = !q.is_filtered();
        store.sweep(state, full && q.embed.tasks, full);
        Ok(answer)
    }

    /// `GET /v2/tasks`, of the states in `states` (all when empty):
    /// `{"tasks": [...]}`. Job runs' tasks are Metronome's
    /// (`/v1/jobs/{id}/runs`), not Marathon's.
    pub fn tasks(&self, state: &ClusterState, states: &[TaskState]) -> serde_json::Result<Answer> {
        let mut store = self.lock();
        store.read += 1;
        let wanted = |t: &Task| t.job_run.is_none() && (states.is_empty() || states.contains(&t.state));
        // Tasks are in id order, which groups them by app: look the app up
        // once per run of its tasks.
        let mut facts: Option<(AppId, TaskAppFacts)> = None;
        let mut listed: Vec<&Arc<Task>> = Vec::with_capacity(state.tasks.len());
        for t in state.tasks.values_shared().filter(|t| wanted(t)) {
            if facts.as_ref().is_none_or(|(id, _)| *id != t.app_id) {
                facts = Some((t.app_id.clone(), TaskAppFacts::of(state.apps.get(&t.app_id))));
            }
            if let Some((_, f)) = &facts {
                store.ensure_task(t, f)?;
            }
            listed.push(t);
        }
        let mut answer = self.buffers.take(store.tasks_len + store.tasks_len / 8);
        let out = &mut answer.buf;
        out.extend_from_slice(b"{\"tasks\":[");
        let pieces: Vec<Cow<'_, [u8]>> = listed
            .iter()
            .map(|t| piece_or_render(&store, t, || TaskAppFacts::of(state.apps.get(&t.app_id))))
            .collect::<serde_json::Result<_>>()?;
        write_list(out, pieces.iter().map(|p| &**p));
        out.extend_from_slice(b"]}");
        drop(pieces);
        store.tasks_len = out.len();
        store.sweep(state, states.is_empty(), false);
        Ok(answer)
    }
}

/// The piece of `task`, or (never expected: `ensure_task` made it) the
/// task rendered now.
fn piece_or_render<'a>(
    store: &'a Store,
    task: &Arc<Task>,
    app: impl FnOnce() -> TaskAppFacts,
) -> serde_json::Result<Cow<'a, [u8]>> {
    match store.task(task) {
        Some(b) => Ok(Cow::Borrowed(b)),
        None => Ok(Cow::Owned(task_bytes(task, &app())?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::{Deployment, DeploymentId, NodeId, Resources, TaskFailure, TaskId, UnixMillis};
    use serde_json::json;

    fn app(body: serde_json::Value, at: i64) -> App {
        let spec = marathon::app_from_value(body, "").unwrap_or_else(|e| panic!("{}", e.to_json()));
        App::new(spec, UnixMillis(at))
    }

    fn task(app: &AppId, n: u128, state: TaskState) -> Task {
        let mut t = Task::staged(
            TaskId::new(app, uuid::Uuid::from_u128(n), 1),
            app.clone(),
            NodeId(7),
            vec![31000 + n as u16],
            Resources::default(),
            UnixMillis(1_000),
        );
        t.host = "10.0.0.5".into();
        t.state = state;
        t
    }

    /// Apps of several shapes, tasks in every kind of state, a deployment.
    fn state() -> ClusterState {
        let mut s = ClusterState::default();
        let web = app(
            json!({"id": "/web", "cmd": "x", "instances": 3, "healthChecks": [{"protocol": "HTTP"}],
                   "labels": {"tier": "front"}, "portDefinitions": [{"port": 10001, "name": "http"}]}),
            1_000,
        );
        let mut db = app(
            json!({"id": "/back/db", "container": {"type": "DOCKER", "docker": {"image": "postgres:16"},
                   "portMappings": [{"containerPort": 5432}]}, "networks": [{"mode": "container/bridge"}],
                   "tasksRunning": 99, "deployments": "kept verbatim"}),
            2_000,
        );
        db.last_task_failure = Some(TaskFailure {
            task_id: TaskId::new(&db.spec.id, uuid::Uuid::from_u128(99), 1),
            state: TaskState::Failed,
            message: "exit 1".into(),
            host: "10.0.0.5".into(),
            timestamp: UnixMillis(3_000),
            version: UnixMillis(2_000),
        });
        let idle = app(json!({"id": "/idle", "cmd": "y", "instances": 0}), 3_000);
        for a in [web, db, idle] {
            s.apps.insert(a.spec.id.clone(), a);
        }
        let web = AppId::parse("/web").unwrap_or_else(|e| panic!("{e}"));
        let db = AppId::parse("/back/db").unwrap_or_else(|e| panic!("{e}"));
        let mut healthy = task(&web, 1, TaskState::Running);
        healthy.healthy = Some(true);
        healthy.started_at = Some(UnixMillis(1_500));
        let mut sick = task(&web, 2, TaskState::Running);
        sick.healthy = Some(false);
        let mut bridged = task(&db, 3, TaskState::Running);
        bridged.container_ip = Some("172.17.0.2".parse().unwrap_or_else(|e| panic!("{e}")));
        for t in [healthy, sick, task(&web, 4, TaskState::Staging), task(&web, 5, TaskState::Failed), bridged] {
            s.tasks.insert(t);
        }
        let d = Deployment {
            id: DeploymentId("dep-1".into()),
            version: UnixMillis(1_000),
            affected_apps: vec![web.clone()],
            steps: Vec::new(),
            current_step: 1,
            started_at: UnixMillis(1_000),
        };
        s.deployments.insert(d.id.clone(), d);
        s
    }

    /// The answers as the handlers serialised them before the cache.
    fn apps_whole(s: &ClusterState, q: &AppsQuery) -> Vec<u8> {
        let deployments = marathon::deployments_by_app(s);
        let apps: Vec<marathon::AppWire<'_>> = s
            .apps
            .values()
            .filter(|a| q.wants(&a.spec))
            .map(|a| {
                let deps = deployments.get(&a.spec.id).map(Vec::as_slice).unwrap_or_default();
                marathon::app_wire(a, s, &q.embed, deps)
            })
            .collect();
        serde_json::to_vec(&std::collections::BTreeMap::from([("apps", apps)])).unwrap_or_default()
    }

    fn tasks_whole(s: &ClusterState, states: &[TaskState]) -> Vec<u8> {
        let tasks: Vec<marathon::TaskWire<'_>> = s
            .tasks
            .values()
            .filter(|t| t.job_run.is_none() && (states.is_empty() || states.contains(&t.state)))
            .map(|t| marathon::task_wire(t, s))
            .collect();
        serde_json::to_vec(&std::collections::BTreeMap::from([("tasks", tasks)])).unwrap_or_default()
    }

    fn queries() -> Vec<AppsQuery> {
        let embed = |e: &str| Embed::parse(&[e.to_string()]);
        vec![
            AppsQuery::default(),
            AppsQuery { embed: embed("apps.tasks"), ..Default::default() },
            AppsQuery {
                embed: embed("apps.tasks,apps.lastTaskFailure,apps.readiness,apps.counts,apps.deployments"),
                ..Default::default()
            },
            AppsQuery { embed: embed("apps.tasks"), id: Some("back".into()), ..Default::default() },
            AppsQuery { label: Some("tier==front".into()), ..Default::default() },
            AppsQuery { cmd: Some("y".into()), ..Default::default() },
        ]
    }

    /// Every query, twice (the second from pieces), against the whole answer.
    fn check(pieces: &Pieces, s: &ClusterState) {
        for _ in 0..2 {
            for q in queries() {
                let got = pieces.apps(s, &q).map(|a| a.as_ref().to_vec()).unwrap_or_default();
                assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(&apps_whole(s, &q)), "{q:?}");
            }
            for states in [vec![], vec![TaskState::Running], vec![TaskState::Failed, TaskState::Staging]] {
                let got = pieces.tasks(s, &states).map(|a| a.as_ref().to_vec()).unwrap_or_default();
                assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(&tasks_whole(s, &states)));
            }
        }
    }

    #[test]
    fn answers_are_byte_for_byte_the_whole_serialisation() {
        let s = state();
        check(&Pieces::default(), &s);
        let whole: serde_json::Value = serde_json::from_slice(
            &Pieces::default().apps(&s, &queries()[1]).map(|a| a.as_ref().to_vec()).unwrap_or_default(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let web = &whole["apps"][2];
        assert_eq!(web["id"], "/web");
        assert_eq!(web["tasks"].as_array().map(Vec::len), Some(3), "{web}");
        assert_eq!(web["tasksHealthy"], 1);
        assert_eq!(whole["apps"][0]["tasksRunning"], 1, "the live count wins over a verbatim field");
    }

    #[test]
    fn a_read_after_a_write_sees_the_write() {
        let pieces = Pieces::default();
        let mut s = state();
        check(&pieces, &s);
        // Each change as `apply` makes it, on a copy that shares every value
        // with the snapshot read before (so the old pieces stay around).
        let old = s.clone();
        let id = s.tasks.keys().next().cloned().unwrap_or_else(|| panic!("a task"));
        s.tasks.update(&id, |t| {
            t.state = TaskState::Killed;
            t.healthy = None;
        });
        check(&pieces, &s);
        let web = AppId::parse("/web").unwrap_or_else(|e| panic!("{e}"));
        if let Some(mut a) = s.apps.get_mut(&web) {
            a.spec.health_checks.clear();
            a.spec.ports[0].port = 10002;
            a.version = UnixMillis(5_000);
        }
        check(&pieces, &s);
        // A copy that changes nothing shown, then a change of the
        // definition alone (no new version stamp): both must show as they are.
        if let Some(mut a) = s.apps.get_mut(&web) {
            a.backoff.delay_seconds = 2.0;
        }
        check(&pieces, &s);
        if let Some(mut a) = s.apps.get_mut(&web) {
            a.spec.labels.insert("tier".into(), "back".into());
        }
        check(&pieces, &s);
        s.tasks.remove(&id);
        s.apps.remove(&AppId::parse("/idle").unwrap_or_else(|e| panic!("{e}")));
        s.deployments = Default::default();
        check(&pieces, &s);
        // An older snapshot read afterwards still gets its own answer.
        check(&pieces, &old);
    }
}
