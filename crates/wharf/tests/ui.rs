//! The web UI in a real browser: headless Chromium driven by Selenium
//! (tests/browser/ui_check.py) against a real node. It creates an app
//! through the form, sees a validation error beside its field, watches the
//! app turn healthy without a reload, reads a task's stdout and stderr,
//! scales through the dialog, diffs versions, reads a failed task's last
//! failure and its stderr, and reads the deployments and
//! queue pages, and sees the page say that the event stream was lost and
//! reconnect while the node restarts. A screenshot of each page is saved under
//! `<target>/ui-screenshots/`.
//!
//! Skipped, with the reason printed, when chromium, chromedriver or Python's
//! selenium is missing (`scripts/test` installs them).

mod common;

use common::Node;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

fn missing() -> Option<String> {
    for bin in [CHROMIUM, CHROMEDRIVER] {
        if !Path::new(bin).exists() {
            return Some(format!(
                "{bin} is not installed (apt-get install chromium chromium-driver; scripts/test does)"
            ));
        }
    }
    let selenium = Command::new("python3").args(["-c", "import selenium"]).output();
    if !selenium.is_ok_and(|o| o.status.success()) {
        return Some("python3 cannot import selenium (pip install selenium; scripts/test does)".into());
    }
    None
}

/// `<target>/ui-screenshots`, beside the build's own output.
fn screenshot_dir() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).join("ui-screenshots")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_in_a_real_browser() {
    if let Some(why) = missing() {
        println!("SKIPPED: {why}");
        return;
    }
    let node = Node::start_with(&["--resources", "cpus:2;mem:2048;disk:1000;gpus:0", "--attributes", "rack:r1"]).await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/ui_check.py");
    let shots = screenshot_dir();
    let mut child = tokio::process::Command::new("python3")
        .arg(script)
        .arg(node.addr())
        .arg(&shots)
        .env("CHROMIUM", CHROMIUM)
        .env("CHROMEDRIVER", CHROMEDRIVER)
        // Never let Selenium look for a driver on the network.
        .env("SE_OFFLINE", "true")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run python3");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut stderr = child.stderr.take().expect("stderr");
    let stderr = tokio::spawn(async move {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s).await;
        s
    });
    let mut stdout = String::new();
    let mut node = node;
    // The script asks for the node to go away and come back (its event
    // stream drops, the page must say so and reconnect).
    while let Ok(Some(line)) =
        tokio::time::timeout(Duration::from_secs(180), lines.next_line()).await.expect("script hangs")
    {
        println!("{line}");
        stdout.push_str(&line);
        stdout.push('\n');
        match line.as_str() {
            "STOP_NODE" => {
                node.stop();
                stdin.write_all(b"stopped\n").await.expect("to script");
            }
            "START_NODE" => {
                node.spawn().await;
                stdin.write_all(b"started\n").await.expect("to script");
            }
            _ => {}
        }
    }
    let status = child.wait().await.expect("wait");
    let stderr = stderr.await.unwrap_or_default();
    assert!(status.success(), "ui_check.py failed\nstdout:\n{stdout}\nstderr:\n{stderr}\nnode log:\n{}", node.log());
    assert!(stdout.contains("all checks passed"), "{stdout}");
    let pages = ["cluster", "apps-validation", "apps", "app", "app-versions", "deployments", "queue", "app-failure"];
    for page in pages.into_iter().chain(["disconnected"]) {
        let png = screenshot_dir().join(format!("{page}.png"));
        let len = std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0);
        assert!(len > 1000, "screenshot {} missing or empty", png.display());
    }
}

/// A node with `--http-credentials`: the page asks to log in, refuses a
/// wrong password, shows the cluster and follows events once logged in, and
/// asks again after logging out (tests/browser/login_check.py).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_login_in_a_real_browser() {
    if let Some(why) = missing() {
        println!("SKIPPED: {why}");
        return;
    }
    let node = Node::start_with_credentials("admin", "pa55word").await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/login_check.py");
    let out = tokio::process::Command::new("python3")
        .arg(script)
        .arg(node.addr())
        .arg(screenshot_dir())
        .args(["admin", "pa55word"])
        .env("CHROMIUM", CHROMIUM)
        .env("CHROMEDRIVER", CHROMEDRIVER)
        .env("SE_OFFLINE", "true")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(180), out).await.expect("script hangs").expect("run python3");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "login_check.py failed\nstdout:\n{stdout}\nstderr:\n{stderr}\nnode log:\n{}",
        node.log()
    );
    assert!(stdout.contains("all checks passed"), "{stdout}");
}
