//! The built-in runtime's part of `wharf bench containers`:
//! - start latency with the image present (imported into the node's image
//!   store from `docker save`), placement (`stagedAt`) to the container's
//!   process running (`startedAt`), beside `runc run` of the same image's
//!   root filesystem in the same run (spawn to its first line of output),
//!   and the same starts on the node's bridge beside them;
//! - the node's memory (RSS) with 100 containers running, and the
//!   executors' beside it;
//! - pull throughput from Debian's `docker-registry` on loopback for an
//!   image of about 100 MB, cold and again for an image sharing half of it.
//!
//! Cleans up every task, container, image and file it made.

use crate::bench::{cleanup, start_node_with};
use crate::bench_containers::summary;
use anyhow::{bail, Context};
use reqwest::Method;
use serde_json::json;
use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The reference the benchmark's apps use; imported, never pulled.
const BENCH_REF: &str = "wharf-bench/busybox:1";
/// Containers running at once for the memory figure.
const MANY: u32 = 100;

/// `skip`: parts left out (`bridge`, `memory`, `pulls`).
pub async fn run(starts: u32, image: &str, skip: &[String]) -> anyhow::Result<()> {
    let skipped = |part: &str| skip.iter().any(|s| s == part);
    if let Err(e) = agent::driver::oci::supported() {
        bail!("the built-in runtime cannot run here: {e}");
    }
    let dir = tempfile::tempdir()?;
    let data = std::fs::canonicalize(dir.path())?;
    let archive = data.join("image.tar");
    docker(&["save", "-o", &archive.to_string_lossy(), image])?;
    // Into the store the node will open (its data dir's `images`).
    let node_images = data.join("node").join("images");
    let store = image::ImageStore::open(node_images.clone(), Vec::new())?;
    let imported = store.import_docker_archive(&archive, Some(BENCH_REF))?;
    std::fs::remove_file(&archive)?;

    // As a container host should run (see `--cgroup-favordynmods`); the
    // setting is host-wide, so `runc run` beside has it too.
    let (node, c) = start_node_with(Some(data.join("node")), &["--cgroup-favordynmods"]).await?;
    let nodes = c.ok(Method::GET, "/wharf/v1/nodes", None).await?;
    if !nodes["nodes"][0]["drivers"].as_array().is_some_and(|d| d.iter().any(|x| x == "oci")) {
        bail!("the benchmark node has no oci driver: {}", nodes["nodes"][0]);
    }

    let favored = std::fs::read_to_string("/proc/self/mountinfo")
        .is_ok_and(|m| m.lines().any(|l| l.contains(" - cgroup2 ") && l.contains("favordynmods")));
    println!(
        "built-in runtime (oci driver), image {image} present, {starts} sequential starts each (cgroup favordynmods {}):",
        if favored { "on" } else { "off" }
    );
    let container = json!({"type": "MESOS", "docker": {"image": BENCH_REF}});
    let sandboxes = data.join("node").join("sandboxes");
    let mut steps = crate::bench_steps::Steps::default();
    let starts_result =
        crate::bench_containers::wharf_starts(&c, starts, container.clone(), Some((&sandboxes, &mut steps))).await;
    // The same starts on the node's bridge (`BRIDGE` in the docker section):
    // address lease, namespace, veth and DNAT rules before the container.
    let bridged = json!({"type": "MESOS", "docker": {"image": BENCH_REF, "network": "BRIDGE"},
                         "portMappings": [{"containerPort": 80}]});
    let bridge_result = match &starts_result {
        Ok(_) if !skipped("bridge") => crate::bench_containers::wharf_starts(&c, starts, bridged, None).await,
        _ => Ok(Vec::new()),
    };
    let memory = match &starts_result {
        Ok(_) if !skipped("memory") => many(&c, &node, container, &sandboxes).await.map(Some),
        _ => Ok(None),
    };
    cleanup(&c).await?;
    drop(node);
    let mut wharf = starts_result?;
    let layers: Vec<_> =
        imported.layers.iter().map(|l| node_images.join("layers").join(l.trim_start_matches("sha256:"))).collect();
    let mut runc = runc_starts(starts, &layers, &data)?;
    let mut bridge = bridge_result?;
    let (w50, w99) = summary("wharf (oci driver)", &mut wharf);
    steps.print();
    let (r50, r99) = summary("runc run", &mut runc);
    let ratio = |a: i64, b: i64| if b > 0 { a as f64 / b as f64 } else { f64::NAN };
    println!("  wharf / runc run: p50 {:.2}x, p99 {:.2}x", ratio(w50, r50), ratio(w99, r99));
    if !bridge.is_empty() {
        let (b50, b99) = summary("wharf (oci driver, bridge)", &mut bridge);
        println!("  bridge / host network: p50 {:.2}x, p99 {:.2}x", ratio(b50, w50), ratio(b99, w99));
    }
    if let Some(memory) = memory? {
        println!("{memory}");
    }
    if skipped("pulls") {
        return Ok(());
    }
    pulls().await
}

fn docker(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("docker").args(args).output().context("running docker")?;
    if !out.status.success() {
        bail!("docker {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// Proportional set size: shared pages (the executors all map the same
/// binary) counted once across the processes sharing them.
fn pss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Pss:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Starts [`MANY`] containers of one app and reports the node's RSS
/// before and with them, and the executors' PSS.
async fn many(
    c: &crate::client::Client,
    node: &crate::bench::Node,
    container: serde_json::Value,
    sandboxes: &Path,
) -> anyhow::Result<String> {
    let before = rss_kb(node.pid());
    let def = json!({"id": "/bench/many", "cmd": "exec sleep 1000", "cpus": 0.01, "mem": 16, "instances": MANY,
                     "taskKillGracePeriodSeconds": 0, "container": container});
    c.ok(Method::POST, "/v2/apps", Some(&def)).await?;
    let t = Instant::now();
    loop {
        let v = c.ok(Method::GET, "/v2/apps/bench/many", None).await?;
        if v["app"]["tasksRunning"].as_u64() == Some(u64::from(MANY)) {
            break;
        }
        if t.elapsed() > Duration::from_secs(300) {
            bail!("{MANY} containers did not start within 300 s: {}", v["app"]["tasksRunning"]);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let took = t.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let with = rss_kb(node.pid());
    // This node's executors (their tasks' sandboxes are under its root),
    // and the launcher that forked them (the node's child).
    let executors: Vec<u32> = agent::driver::exec::live_executors()
        .into_iter()
        .filter(|(_, id)| sandboxes.join(id.as_str()).is_dir())
        .map(|(pid, _)| pid)
        .collect();
    let launcher_kb: u64 = std::fs::read_dir("/proc")?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let parent = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| s.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().nth(1)?.parse::<u32>().ok()));
            parent == Some(node.pid())
                && std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| c.split(|b| *b == 0).any(|a| a == agent::launcher::LAUNCHER_FLAG.as_bytes()))
        })
        .map(pss_kb)
        .sum();
    let exec_kb: u64 = executors.iter().map(|p| pss_kb(*p)).sum();
    Ok(format!(
        "  {MANY} containers running (all started in {:.1} s): node RSS {} MB (idle {} MB), {} executors {} MB in all (PSS, {} KB each; their launcher {} KB)",
        took.as_secs_f64(),
        with / 1024,
        before / 1024,
        executors.len(),
        exec_kb / 1024,
        exec_kb / executors.len().max(1) as u64,
        launcher_kb
    ))
}

/// `runc run` of the image's root filesystem (its layers as an overlay with
/// a writable layer, mounted once for all starts, where the oci driver
/// mounts one per task), host network as the oci driver's tasks.
fn runc_starts(starts: u32, layers: &[std::path::PathBuf], data: &Path) -> anyhow::Result<Vec<i64>> {
    let bundle = data.join("runc-bundle");
    let rootfs = bundle.join("rootfs");
    std::fs::create_dir_all(&rootfs)?;
    let (upper, work) = (bundle.join("upper"), bundle.join("work"));
    std::fs::create_dir_all(&upper)?;
    std::fs::create_dir_all(&work)?;
    let lower: Vec<String> = layers.iter().rev().map(|p| p.display().to_string()).collect();
    let opts = format!("lowerdir={},upperdir={},workdir={}", lower.join(":"), upper.display(), work.display());
    nix::mount::mount(Some("overlay"), &rootfs, Some("overlay"), nix::mount::MsFlags::empty(), Some(opts.as_str()))
        .context("mounting the image for runc")?;
    let result = (|| {
        let out = Command::new("runc")
            .args(["spec", "--bundle"])
            .arg(&bundle)
            .output()
            .context("runc spec (Debian's runc)")?;
        if !out.status.success() {
            bail!("runc spec: {}", String::from_utf8_lossy(&out.stderr));
        }
        let mut spec: serde_json::Value = serde_json::from_slice(&std::fs::read(bundle.join("config.json"))?)?;
        spec["process"]["terminal"] = json!(false);
        spec["process"]["args"] = json!(["sh", "-c", "echo up"]);
        spec["root"]["readonly"] = json!(false);
        if let Some(ns) = spec["linux"]["namespaces"].as_array_mut() {
            ns.retain(|n| n["type"] != "network");
        }
        std::fs::write(bundle.join("config.json"), serde_json::to_vec(&spec)?)?;
        let mut out = Vec::new();
        for i in 0..starts {
            let id = format!("wharf-bench-{}-{i}", std::process::id());
            let t = Instant::now();
            let mut child = Command::new("runc")
                .args(["run", "--bundle"])
                .arg(&bundle)
                .arg(&id)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .context("runc run")?;
            let mut line = String::new();
            if let Some(stdout) = child.stdout.take() {
                std::io::BufReader::new(stdout).read_line(&mut line)?;
            }
            let ms = t.elapsed().as_millis() as i64;
            let res = child.wait_with_output()?;
            if line.trim() != "up" || !res.status.success() {
                bail!("runc run: {}, printed {line:?}: {}", res.status, String::from_utf8_lossy(&res.stderr));
            }
            out.push(ms);
        }
        Ok(out)
    })();
    let _ = nix::mount::umount2(&rootfs, nix::mount::MntFlags::MNT_DETACH);
    result
}

/// Debian's docker-registry on a loopback port; killed when dropped.
struct Registry(std::process::Child);

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Pull throughput: an image of two 50 MB layers (random data) cold, then
/// an image sharing the base and one of those layers.
async fn pulls() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let port = crate::bench::free_port()?;
    let addr = format!("127.0.0.1:{port}");
    let config = format!(
        "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
        dir.path().join("registry").display()
    );
    std::fs::write(dir.path().join("registry.yml"), config)?;
    let _registry = Registry(
        Command::new("docker-registry")
            .arg("serve")
            .arg(dir.path().join("registry.yml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting docker-registry (Debian's docker-registry)")?,
    );
    let ctx = dir.path().join("ctx");
    std::fs::create_dir_all(&ctx)?;
    for name in ["a", "b", "c"] {
        let out = Command::new("head").args(["-c", "52428800", "/dev/urandom"]).output()?;
        std::fs::write(ctx.join(name), out.stdout)?;
    }
    let base = crate::bench_containers::DEFAULT_IMAGE;
    let cold = format!("{addr}/bench/pull-cold:1");
    let shared = format!("{addr}/bench/pull-shared:1");
    let built = (|| {
        for (tag, second) in [(&cold, "b"), (&shared, "c")] {
            std::fs::write(ctx.join("Dockerfile"), format!("FROM {base}\nCOPY a /a\nCOPY {second} /{second}\n"))?;
            docker(&["build", "-q", "-t", tag, &ctx.to_string_lossy()])?;
            docker(&["push", tag])?;
        }
        anyhow::Ok(())
    })();
    let _ = docker(&["rmi", &cold, &shared]);
    let _ = std::fs::remove_dir_all(&ctx);
    built?;
    let store = image::ImageStore::open(dir.path().join("store"), Vec::new())?;
    println!("image pulls from docker-registry on loopback (plain HTTP), verified and unpacked:");
    for (what, reference) in [("cold", &cold), ("with shared layers", &shared)] {
        let before = dir_size(&store.root().join("layers"));
        let t = Instant::now();
        let img = store.ensure(reference, false, None).await?;
        let secs = t.elapsed().as_secs_f64();
        let added = dir_size(&store.root().join("layers")).saturating_sub(before);
        let mb = img.size as f64 / 1e6;
        println!(
            "  {what:<20} {mb:>6.1} MB image in {secs:>5.2} s: {:>6.1} MB/s of image, {:.1} MB new on disk",
            mb / secs,
            added as f64 / 1e6
        );
    }
    Ok(())
}

fn dir_size(p: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(p) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}
