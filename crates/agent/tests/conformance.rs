//! One suite that every driver passes, through the `Driver` trait only: output
//! captured in the sandbox, exit codes, kill with the grace period, the memory
//! limit, and recovery by a new driver after the old one is gone (as after an
//! agent restart). `exec` runs real processes under this crate's executor;
//! `docker` runs them in this machine's Docker engine, from an image built
//! `FROM scratch` with Debian's static busybox (its tests skip, saying why,
//! when no engine answers); `oci` runs the same image with the built-in
//! runtime, imported from `docker save` into the driver's image store
//! (skipped, saying why, without overlayfs or an engine to save the image).
//! Commands use `busybox` so they run in all three. Artifacts are fetched
//! from `file://` URIs (HTTP is the fetcher's own tests' and wharf's).

use agent::{DockerDriver, Driver, ExecDriver, OciDriver, TaskEvent, TaskLaunch};
use logfiles::LogLimits;
use model::{AppId, CommandSpec, Container, Resources, TaskId, TaskState};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

const IMAGE: &str = agent::driver::docker::BUSYBOX_IMAGE;

#[derive(Clone, Copy, Debug)]
enum Kind {
    Exec,
    Docker,
    Oci,
}

struct Fixture {
    kind: Kind,
    root: PathBuf,
    driver: Arc<dyn Driver>,
    events: UnboundedReceiver<TaskEvent>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Kind::Docker = self.kind {
            let filter = format!("label=wharf.sandbox-root={}", self.root.display());
            if let Ok(out) = Command::new("docker").args(["ps", "-aq", "--filter", &filter]).output() {
                let ids: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect();
                if !ids.is_empty() {
                    let _ = Command::new("docker").args(["rm", "-f"]).args(&ids).output();
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Builds the test image once; `false` (saying why) when no engine answers.
fn docker_ready() -> bool {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    let r = READY.get_or_init(|| {
        match Command::new("docker").args(["version", "--format", "{{.Server.Version}}"]).output() {
            Ok(o) if o.status.success() => {}
            Ok(o) => return Err(format!("no docker engine: {}", String::from_utf8_lossy(&o.stderr).trim())),
            Err(e) => return Err(format!("no docker client: {e}")),
        }
        agent::driver::docker::build_busybox_image().expect("the test image");
        Ok(())
    });
    if let Err(why) = r {
        eprintln!("skipped: {why}");
    }
    r.is_ok()
}

/// The test image saved with `docker save`, once; `None` (saying why) when
/// this machine cannot run the built-in runtime's tests.
fn oci_archive() -> Option<PathBuf> {
    static ARCHIVE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let r = ARCHIVE.get_or_init(|| {
        agent::driver::oci::supported().map_err(|e| format!("no built-in runtime here: {e}"))?;
        if !docker_ready() {
            return Err("no docker engine to save the test image".into());
        }
        let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("busybox-image.tar");
        let out = Command::new("docker").args(["save", "-o"]).arg(&path).arg(IMAGE).output().expect("docker save");
        assert!(out.status.success(), "docker save: {}", String::from_utf8_lossy(&out.stderr));
        Ok(path)
    });
    match r {
        Ok(p) => Some(p.clone()),
        Err(why) => {
            eprintln!("skipped: {why}");
            None
        }
    }
}

fn tempfile_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("wharf-conformance-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

async fn driver(kind: Kind, root: PathBuf) -> (Arc<dyn Driver>, UnboundedReceiver<TaskEvent>) {
    driver_with(kind, root, LogLimits::default()).await
}

async fn driver_with(kind: Kind, root: PathBuf, log: LogLimits) -> (Arc<dyn Driver>, UnboundedReceiver<TaskEvent>) {
    let (tx, rx) = unbounded_channel();
    let exe = vec![env!("CARGO_BIN_EXE_wharf-executor").into()];
    let d: Arc<dyn Driver> = match kind {
        Kind::Exec => Arc::new(ExecDriver::with_log_limits(root, exe, tx, log)),
        Kind::Docker => Arc::new(DockerDriver::connect_with_log_limits(root, tx, log).await.expect("docker engine")),
        Kind::Oci => {
            // Beside the sandboxes, under names that are not task ids.
            let images = image::ImageStore::open(root.join(".images"), Vec::new()).expect("image store");
            if images.get(IMAGE).is_none() {
                let archive = oci_archive().expect("the saved image");
                images.import_docker_archive(&archive, None).expect("import the image");
            }
            let executor = vec![env!("CARGO_BIN_EXE_wharf-executor").into()];
            Arc::new(OciDriver::new(
                root.clone(),
                root.join(".containers"),
                executor,
                tx,
                images,
                log,
                agent::network::NodeNetwork::default_for_tests(),
            ))
        }
    };
    (d, rx)
}

async fn fixture(kind: Kind) -> Option<Fixture> {
    fixture_with(kind, LogLimits::default()).await
}

async fn fixture_with(kind: Kind, log: LogLimits) -> Option<Fixture> {
    match kind {
        Kind::Docker if !docker_ready() => return None,
        Kind::Oci if oci_archive().is_none() => return None,
        _ => {}
    }
    let root = tempfile_dir();
    let (driver, events) = driver_with(kind, root.clone(), log).await;
    Some(Fixture { kind, root, driver, events })
}

fn launch(kind: Kind, sh: &str) -> TaskLaunch {
    let id = TaskId::new(&AppId::parse("/conformance").expect("app id"), uuid::Uuid::new_v4(), 1);
    let container = match kind {
        Kind::Exec => Container::default(),
        Kind::Docker | Kind::Oci => Container { image: Some(IMAGE.into()), ..Container::default() },
    };
    TaskLaunch {
        task_id: id,
        command: Some(CommandSpec::Shell(sh.into())),
        env: BTreeMap::from([("PATH".to_string(), "/usr/bin:/bin".to_string())]),
        resources: Resources { cpus: 0.2, mem: 32.0, disk: 0.0, gpus: 0 },
        kill_grace: Duration::from_secs(2),
        container,
        host_ports: Vec::new(),
        user: None,
        registry_auth: None,
        secrets: Default::default(),
        artifacts: Vec::new(),
    }
}

async fn next(rx: &mut UnboundedReceiver<TaskEvent>, within: Duration) -> TaskEvent {
    tokio::time::timeout(within, rx.recv()).await.expect("an event in time").expect("channel open")
}

async fn exited(rx: &mut UnboundedReceiver<TaskEvent>, id: &TaskId, within: Duration) -> (TaskState, String) {
    loop {
        match next(rx, within).await {
            TaskEvent::Starting { task_id, .. } | TaskEvent::Running { task_id, .. } if &task_id == id => continue,
            TaskEvent::Exited { task_id, state, message, .. } if &task_id == id => return (state, message),
            other => panic!("unexpected event {other:?}"),
        }
    }
}

fn read(f: &Fixture, id: &TaskId, file: &str) -> String {
    std::fs::read_to_string(f.root.join(id.as_str()).join(file)).unwrap_or_default()
}

async fn wait_output(f: &Fixture, id: &TaskId, what: &str) {
    let t = Instant::now();
    while !read(f, id, "stdout").contains(what) {
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}: no {what:?} in the output", f.kind);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A chatty task's output is rotated by size (`stdout`, `stdout.1`, ...),
/// and reading across the files gives every line once, in order.
async fn output_rotates_by_size(kind: Kind) {
    let Some(mut f) = fixture_with(kind, LogLimits { max_size: 4096, files: 4 }).await else { return };
    let t = launch(kind, "i=0; while [ $i -lt 1000 ]; do echo line $i; i=$((i+1)); done");
    let id = t.task_id.clone();
    f.driver.launch(t).await.expect("launch");
    let (state, message) = exited(&mut f.events, &id, Duration::from_secs(30)).await;
    assert_eq!(state, TaskState::Finished, "{kind:?}: {message}");
    let dir = f.root.join(id.as_str());
    for name in ["stdout", "stdout.1", "stdout.2"] {
        let len =
            std::fs::metadata(dir.join(name)).map(|m| m.len()).unwrap_or_else(|e| panic!("{kind:?}: {name}: {e}"));
        assert!(len <= 4096, "{kind:?}: {name} is {len} bytes");
    }
    let mut cursor = logfiles::Cursor::from_start(&dir, "stdout").expect("cursor");
    let mut all = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = cursor.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        all.extend_from_slice(&buf[..n]);
    }
    let want: String = (0..1000).map(|i| format!("line {i}\n")).collect();
    assert!(String::from_utf8_lossy(&all) == want, "{kind:?}: {} bytes read back, not every line once", all.len());
}

async fn output_and_exit_codes(kind: Kind) {
    let Some(mut f) = fixture(kind).await else { return };
    let t = launch(kind, "echo out; echo err >&2; exit 3");
    let id = t.task_id.clone();
    f.driver.launch(t).await.expect("launch");
    let (state, message) = exited(&mut f.events, &id, Duration::from_secs(20)).await;
    assert_eq!((state, message.as_str()), (TaskState::Failed, "exited with status 3"), "{kind:?}");
    assert_eq!(read(&f, &id, "stdout"), "out\n", "{kind:?}");
    assert_eq!(read(&f, &id, "stderr"), "err\n", "{kind:?}");
    let t = launch(kind, "exit 0");
    let id = t.task_id.clone();
    f.driver.launch(t).await.expect("launch");
    let (state, _) = exited(&mut f.events, &id, Duration::from_secs(20)).await;
    assert_eq!(state, TaskState::Finished, "{kind:?}");
    f.driver.remove(&id).expect("remove");
    assert!(!f.root.join(id.as_str()).exists(), "{kind:?}: sandbox removed");
}

async fn kill_after_the_grace_period(kind: Kind) {
    let Some(mut f) = fixture(kind).await else { return };
    let t = launch(kind, "trap 'echo ignored' TERM; echo ready; while true; do busybox sleep 1 & wait; done");
    let id = t.task_id.clone();
    f.driver.launch(t).await.expect("launch");
    wait_output(&f, &id, "ready").await;
    let t0 = Instant::now();
    f.driver.kill(&id).await.expect("kill");
    let (state, message) = exited(&mut f.events, &id, Duration::from_secs(20)).await;
    let took = t0.elapsed();
    assert_eq!(state, TaskState::Killed, "{kind:?}: {message}");
    assert!(message.starts_with("killed on request"), "{kind:?}: {message}");
    assert!(took >= Duration::from_millis(1900) && took < Duration::from_secs(8), "{kind:?}: {took:?}");
    assert!(read(&f, &id, "stdout").contains("ignored"), "{kind:?}: SIGTERM came first");
}

async fn memory_limit(kind: Kind) {
    let Some(mut f) = fixture(kind).await else { return };
    let t = launch(kind, "x=$(busybox head -c 200000000 /dev/zero | busybox tr '\\0' a); echo survived");
    let id = t.task_id.clone();
    f.driver.launch(t).await.expect("launch");
    let (state, message) = exited(&mut f.events, &id, Duration::from_secs(30)).await;
    assert_eq!(state, TaskState::Failed, "{kind:?}: {message}");
    assert!(message.starts_with("Memory limit exceeded: Requested: 32MB"), "{kind:?}: {message}");
    assert!(!read(&f, &id, "stdout").contains("survived"), "{kind:?}");
}

async fn recovery_by_a_new_driver(kind: Kind) {
    let Some(mut f) = fixture(kind).await else { return };
    let t = launch(kind, "echo started; exec busybox sleep 1000");
    let id = t.task_id.clone();
    f.driver.launch(t).await.expect("launch");
    wait_output(&f, &id, "started").await;
    // The old driver goes (an agent restart); the task does not.
    let (new, events) = driver(kind, f.root.clone()).await;
    f.driver = new;
    f.events = events;
    let found = f.driver.recover().await.expect("recover");
    let task = found.iter().find(|r| r.task_id == id).expect("the task is found");
    assert_eq!(task.state, TaskState::Running, "{kind:?}");
    // Recovered and supervised: a kill ends it and the new driver says so.
    f.driver.kill(&id).await.expect("kill");
    let (state, _) = exited(&mut f.events, &id, Duration::from_secs(20)).await;
    assert_eq!(state, TaskState::Killed, "{kind:?}");
    assert_eq!(read(&f, &id, "stdout"), "started\n", "{kind:?}: output neither lost nor repeated");
}

/// Every file under `dir` but `skip` whose bytes contain `needle`.
fn files_containing(dir: &std::path::Path, needle: &str, skip: &std::path::Path) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            match std::fs::symlink_metadata(&p) {
                Ok(m) if m.is_dir() => stack.push(p),
                Ok(m)
                    if m.is_file()
                        && p != skip
                        && String::from_utf8_lossy(&std::fs::read(&p).unwrap_or_default()).contains(needle) =>
                {
                    hits.push(p)
                }
                _ => {}
            }
        }
    }
    hits
}

/// A task's secrets reach its environment and a 0400 file in its sandbox,
/// and no other file the driver writes (`spec.json`, the runtime's config).
async fn secrets_reach_the_task_only(kind: Kind) {
    let Some(mut f) = fixture(kind).await else { return };
    let value = format!("v-{}", uuid::Uuid::new_v4());
    // The task compares its environment with the file: the command never holds the value.
    let mut t = launch(
        kind,
        "for d in . /mnt/mesos/sandbox; do [ -f $d/secrets/db ] && break; done; \
         [ \"$DB_PASSWORD\" = \"$(busybox cat $d/secrets/db)\" ] && echo same || echo differ; \
         echo mode=$(busybox stat -c %a $d/secrets/db)",
    );
    t.secrets.env.insert("DB_PASSWORD".into(), value.clone());
    t.secrets.files.push(agent::secrets::SecretFile { path: "secrets/db".into(), data: value.clone().into_bytes() });
    let id = t.task_id.clone();
    f.driver.launch(t).await.expect("launch");
    let (state, message) = exited(&mut f.events, &id, Duration::from_secs(30)).await;
    assert_eq!(state, TaskState::Finished, "{kind:?}: {message}");
    assert_eq!(read(&f, &id, "stdout"), "same\nmode=400\n", "{kind:?}");
    let file = f.root.join(id.as_str()).join("secrets/db");
    assert_eq!(std::fs::read_to_string(&file).expect("the secret file"), value, "{kind:?}");
    let hits = files_containing(&f.root, &value, &file);
    assert!(hits.is_empty(), "{kind:?}: the value in clear in {hits:?}");
}

/// Artifacts are in the sandbox when the task starts (an executable script,
/// an unpacked `.tgz`), and a missing one fails the launch naming it.
async fn artifacts_are_fetched_before_the_task_starts(kind: Kind) {
    let Some(mut f) = fixture(kind).await else { return };
    let src = f.root.with_extension("src");
    std::fs::create_dir_all(src.join("pack")).expect("src dir");
    std::fs::write(src.join("tool.sh"), "#!/bin/sh\necho from-tool\n").expect("tool");
    std::fs::write(src.join("pack/data.txt"), "from-archive\n").expect("data");
    let tgz = std::fs::File::create(src.join("data.tgz")).expect("tgz");
    let mut b = tar::Builder::new(flate2::write::GzEncoder::new(tgz, flate2::Compression::fast()));
    b.append_path_with_name(src.join("pack/data.txt"), "pack/data.txt").expect("append");
    b.into_inner().expect("tar").finish().expect("gz");
    let mut t = launch(
        kind,
        "for d in . /mnt/mesos/sandbox; do [ -f $d/tool.sh ] && break; done; \
         $d/tool.sh; busybox cat $d/pack/data.txt; echo mode=$(busybox stat -c %a $d/tool.sh)",
    );
    let uri = |name: &str| format!("file://{}", src.join(name).display());
    t.artifacts = vec![
        model::Artifact { executable: true, ..model::Artifact::from_uri(&uri("tool.sh")) },
        model::Artifact::from_uri(&uri("data.tgz")),
    ];
    let id = t.task_id.clone();
    f.driver.launch(t).await.expect("launch");
    let (state, message) = exited(&mut f.events, &id, Duration::from_secs(30)).await;
    assert_eq!(state, TaskState::Finished, "{kind:?}: {message}");
    assert_eq!(read(&f, &id, "stdout"), "from-tool\nfrom-archive\nmode=755\n", "{kind:?}");
    let mut t = launch(kind, "echo never");
    let missing = uri("missing.sh");
    t.artifacts = vec![model::Artifact::from_uri(&missing)];
    let id = t.task_id.clone();
    let e = f.driver.launch(t).await.expect_err("a missing artifact fails the launch");
    assert!(e.to_string().contains(&missing), "{kind:?}: {e}");
    assert!(read(&f, &id, "stderr").contains(&missing), "{kind:?}");
    assert_eq!(read(&f, &id, "stdout"), "", "{kind:?}: the task never ran");
    let _ = std::fs::remove_dir_all(&src);
}

macro_rules! suite {
    ($($name:ident),*) => {
        mod exec {
            $( #[tokio::test(flavor = "multi_thread")] async fn $name() { super::$name(super::Kind::Exec).await } )*
        }
        mod docker {
            $( #[tokio::test(flavor = "multi_thread")] async fn $name() { super::$name(super::Kind::Docker).await } )*
        }
        mod oci {
            $( #[tokio::test(flavor = "multi_thread")] async fn $name() { super::$name(super::Kind::Oci).await } )*
        }
    };
}

suite!(
    output_and_exit_codes,
    output_rotates_by_size,
    kill_after_the_grace_period,
    memory_limit,
    recovery_by_a_new_driver,
    secrets_reach_the_task_only,
    artifacts_are_fetched_before_the_task_starts
);
