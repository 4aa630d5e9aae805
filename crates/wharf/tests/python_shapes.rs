//! Strict clients keep working: tests/python/shapes_check.py loads every
//! kind of response from a real node (apps with every embed, tasks, an
//! in-flight deployment, groups with embeds, the queue with an item waiting on
//! a constraint, info, leader, and each event type Wharf sends) into
//! marathon-python's model classes, which fail on any field they do not know,
//! and checks the fields users read. Skipped, with a message, when
//! `python3 -c 'import marathon'` fails (`scripts/test` installs it).

mod common;

use common::Node;
use std::process::Command;

const SHIM: &str = "import collections, collections.abc; \
                    collections.Iterable = collections.abc.Iterable; \
                    collections.Mapping = collections.abc.Mapping; \
                    collections.MutableMapping = collections.abc.MutableMapping; import marathon";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_loads_into_marathon_python_models() {
    let have = Command::new("python3").args(["-c", SHIM]).output().is_ok_and(|o| o.status.success());
    if !have {
        println!("SKIPPED: python3 cannot import marathon (pip install marathon==0.13.0; scripts/test does)");
        return;
    }
    let node = Node::start().await;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/shapes_check.py");
    let addr = node.addr();
    let out = tokio::task::spawn_blocking(move || Command::new("python3").arg(script).arg(addr).output())
        .await
        .expect("join")
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "shapes_check.py failed\nstdout:\n{stdout}\nstderr:\n{stderr}\nnode log:\n{}",
        node.log()
    );
    assert!(stdout.contains("all checks passed"), "{stdout}");
}
