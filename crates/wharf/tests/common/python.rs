//! Runs one of the marathon-python check scripts (tests/python/*.py) against
//! a real node, as the client library's users would.

use super::Node;
use std::process::Command;

/// marathon-python predates Python 3.10, which removed these aliases.
const SHIM: &str = "import collections, collections.abc; \
                    collections.Iterable = collections.abc.Iterable; \
                    collections.Mapping = collections.abc.Mapping; \
                    collections.MutableMapping = collections.abc.MutableMapping; import marathon";

/// Starts a node and runs `tests/python/<script>` against it; it must exit 0
/// and print "all checks passed". Skipped, with a message, when python3
/// cannot import marathon (`scripts/test` installs marathon==0.13.0).
pub async fn run_check(script: &str) {
    if !have_marathon_python() {
        return;
    }
    let node = Node::start().await;
    run_on(&node, script, &[]).await;
}

/// Whether python3 can import marathon; says so when it cannot.
pub fn have_marathon_python() -> bool {
    let have = Command::new("python3").args(["-c", SHIM]).output().is_ok_and(|o| o.status.success());
    if !have {
        println!("SKIPPED: python3 cannot import marathon (pip install marathon==0.13.0; scripts/test does)");
    }
    have
}

/// Runs `tests/python/<script> URL ARGS...` against `node`; it must exit 0
/// and print "all checks passed".
pub async fn run_on(node: &Node, script: &str, args: &[String]) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python").join(script);
    let addr = node.addr();
    let args = args.to_vec();
    let out = tokio::task::spawn_blocking(move || Command::new("python3").arg(path).arg(addr).args(args).output())
        .await
        .expect("join")
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{script} failed\nstdout:\n{stdout}\nstderr:\n{stderr}\nnode log:\n{}", node.log());
    assert!(stdout.contains("all checks passed"), "{stdout}");
}
