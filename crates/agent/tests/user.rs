//! Marathon's `user` through the exec driver: real processes in real cgroups
//! run as the named user, in a sandbox that user owns and other users cannot
//! read; an unknown user fails the launch, saying so. Needs root.

use agent::{ExecDriver, LaunchSpec, TaskEvent};
use model::{AppId, CommandSpec, Resources, TaskId, TaskState};
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

struct Fixture {
    root: PathBuf,
    driver: ExecDriver,
    events: UnboundedReceiver<TaskEvent>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn fixture() -> Fixture {
    let root = std::env::temp_dir().join(format!("wharf-user-test-{}", uuid::Uuid::new_v4()));
    let (tx, events) = unbounded_channel();
    let executor = vec![env!("CARGO_BIN_EXE_wharf-executor").into()];
    Fixture { driver: ExecDriver::new(root.clone(), executor, tx), root, events }
}

fn spec(sh: &str, user: Option<&str>) -> LaunchSpec {
    LaunchSpec {
        task_id: TaskId::new(&AppId::parse("/test/user").expect("app id"), uuid::Uuid::new_v4(), 1),
        command: CommandSpec::Shell(sh.into()),
        env: BTreeMap::from([("PATH".to_string(), "/usr/bin:/bin".to_string())]),
        resources: Resources { cpus: 0.2, mem: 32.0, disk: 0.0, gpus: 0 },
        kill_grace: Duration::from_secs(2),
        log: Default::default(),
        user: user.map(str::to_string),
        oci: None,
        secrets_on_stdin: false,
        timeline: Default::default(),
    }
}

/// The task's end, skipping its Running event.
async fn ended(rx: &mut UnboundedReceiver<TaskEvent>, id: &TaskId) -> (TaskState, String) {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("event in time") {
            Some(TaskEvent::Exited { task_id, state, message, .. }) if &task_id == id => return (state, message),
            Some(_) => continue,
            None => panic!("event channel closed"),
        }
    }
}

#[tokio::test]
async fn a_task_runs_as_its_user_in_a_sandbox_only_it_can_read() {
    let mut f = fixture();
    let s = spec("id -u; id -g; touch mine && echo wrote", Some("nobody"));
    let id = s.task_id.clone();
    f.driver.launch(s).await.expect("launch");
    let (state, message) = ended(&mut f.events, &id).await;
    assert_eq!(state, TaskState::Finished, "{message}");
    let dir = f.driver.sandbox_dir(&id);
    let out = std::fs::read_to_string(dir.join("stdout")).expect("stdout");
    let nobody = nix::unistd::User::from_name("nobody").expect("lookup").expect("nobody exists");
    assert_eq!(out, format!("{}\n{}\nwrote\n", nobody.uid, nobody.gid));
    let meta = std::fs::metadata(&dir).expect("sandbox");
    assert_eq!((meta.uid(), meta.gid(), meta.mode() & 0o777), (nobody.uid.as_raw(), nobody.gid.as_raw(), 0o750));
    assert_eq!(std::fs::metadata(dir.join("mine")).expect("file the task made").uid(), nobody.uid.as_raw());

    // Without a user the task runs as the agent (root here).
    let s = spec("id -u", None);
    let id = s.task_id.clone();
    f.driver.launch(s).await.expect("launch");
    assert_eq!(ended(&mut f.events, &id).await.0, TaskState::Finished);
    let out = std::fs::read_to_string(f.driver.sandbox_dir(&id).join("stdout")).expect("stdout");
    assert_eq!(out.trim(), nix::unistd::geteuid().to_string());
}

#[tokio::test]
async fn an_unknown_user_fails_the_launch_and_says_so() {
    let mut f = fixture();
    let s = spec("echo should not run", Some("no-such-user-wharf"));
    let id = s.task_id.clone();
    match f.driver.launch(s).await {
        Err(e) => assert!(e.to_string().contains("user 'no-such-user-wharf' does not exist"), "{e}"),
        Ok(_) => {
            let (state, message) = ended(&mut f.events, &id).await;
            assert_eq!(state, TaskState::Failed, "{message}");
            assert!(message.contains("user 'no-such-user-wharf' does not exist on this node"), "{message}");
        }
    }
    let out = std::fs::read_to_string(f.driver.sandbox_dir(&id).join("stdout")).unwrap_or_default();
    assert!(out.is_empty(), "the command never ran: {out}");
}
