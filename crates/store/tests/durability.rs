//! A real store on disk: writes are applied, survive a restart of the node,
//! and the node never re-initialises its cluster.

use model::{AppId, AppSpec, Deployment, DeploymentAction, DeploymentId, Step, UnixMillis};
use redb::ReadableDatabase;
use std::time::Duration;
use store::{Applied, Command, Store, StoreConfig, Update};

fn put(i: u32) -> Command {
    let id = AppId::parse(&format!("/app-{i}")).expect("valid id");
    Command::PutApp {
        app: AppSpec::new(id.clone()),
        at: UnixMillis(i as i64),
        deployment: Deployment {
            id: DeploymentId(format!("d{i}")),
            version: UnixMillis(i as i64),
            affected_apps: vec![id.clone()],
            steps: vec![Step { actions: vec![(DeploymentAction::StartApplication, id)] }],
            current_step: 1,
            started_at: UnixMillis(i as i64),
        },
        force: false,
        create_only: false,
        expect: None,
        finish_if_idle: false,
    }
}

async fn open(dir: &std::path::Path) -> Store {
    let mut cfg = StoreConfig::new(dir.to_path_buf(), "127.0.0.1:1".into());
    cfg.election_timeout_ms = (150, 300);
    let store = open_when_released(cfg).await.expect("open store");
    store.bootstrap_if_new().await.expect("bootstrap");
    store
}

/// Opens the store once the previous instance in this process has let go of
/// the database: openraft's tasks end shortly after `shutdown` returns. (A
/// restarted node is a new process and never waits here.)
async fn open_when_released(cfg: StoreConfig) -> Result<Store, store::StoreError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let c = StoreConfig {
            data_dir: cfg.data_dir.clone(),
            rpc_advertise: cfg.rpc_advertise.clone(),
            rpc_client: cfg.rpc_client.clone(),
            ..cfg
        };
        match Store::open(c).await {
            Err(store::StoreError::Database(redb::Error::DatabaseAlreadyOpen))
                if tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
}

#[tokio::test]
async fn writes_survive_restart_and_feed_reports_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node_id;
    {
        let store = open(dir.path()).await;
        node_id = store.node_id();
        let mut sub = store.subscribe();
        for i in 0..20 {
            let res = store.propose(put(i)).await.expect("propose");
            assert!(matches!(res, Applied::App(_)), "{res:?}");
        }
        assert_eq!(store.read(|s| s.apps.len()), 20);
        let mut seen = 0;
        while seen < 20 {
            match tokio::time::timeout(Duration::from_secs(2), sub.next()).await {
                Ok(Some(Update::Change(_))) => seen += 1,
                Ok(Some(Update::Reset { .. })) => {}
                other => panic!("feed ended early: {other:?}"),
            }
        }
        store.shutdown().await;
    }
    let store = open(dir.path()).await;
    assert_eq!(store.node_id(), node_id, "node id is kept");
    // Committed entries are re-applied after the restart.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while store.read(|s| s.apps.len()) < 20 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(store.read(|s| s.apps.len()), 20);
    // And the restarted node still accepts writes (it became leader again without re-initialising).
    let res = store.propose(put(99)).await.expect("propose after restart");
    assert!(matches!(res, Applied::App(_)));
    assert_eq!(store.read(|s| s.apps.len()), 21);
    store.shutdown().await;
}

/// Writers that propose at once are grouped into shared log entries (see
/// the store's `proposer`): each still gets its own answer (a duplicate
/// create alone is refused), the feed shows each write as its own change,
/// and every acknowledged write is there after a restart.
#[tokio::test]
async fn concurrent_writers_each_get_their_own_answer_and_survive_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let writers = 48u32;
    {
        let store = std::sync::Arc::new(open(dir.path()).await);
        let mut sub = store.subscribe();
        let mut create_once = put(1000);
        if let Command::PutApp { create_only, .. } = &mut create_once {
            *create_only = true;
        }
        assert!(matches!(store.propose(create_once.clone()).await, Ok(Applied::App(_))));
        let mut handles = Vec::new();
        for i in 0..writers {
            let (store, again) = (store.clone(), create_once.clone());
            handles.push(tokio::spawn(async move {
                // Every fourth writer also repeats the create: refused each time.
                let dup = if i % 4 == 0 { Some(store.propose(again)) } else { None };
                let put = store.propose(put(i));
                match dup {
                    Some(d) => {
                        let (d, p) = tokio::join!(d, put);
                        (Some(d.expect("propose")), p.expect("propose"))
                    }
                    None => (None, put.await.expect("propose")),
                }
            }));
        }
        for (i, h) in handles.into_iter().enumerate() {
            let (dup, put) = h.await.expect("writer");
            match put {
                Applied::App(a) => assert_eq!(a.spec.id.as_str(), format!("/app-{i}")),
                other => panic!("writer {i}: {other:?}"),
            }
            if let Some(d) = dup {
                assert!(matches!(d, Applied::Rejected(store::Rejection::AlreadyExists(_))), "{d:?}");
            }
        }
        assert_eq!(store.read(|s| s.apps.len()), writers as usize + 1);
        // One change per write on the feed, each carrying the writer's own command.
        let mut puts = 0;
        while puts < writers + 1 {
            match tokio::time::timeout(Duration::from_secs(5), sub.next()).await {
                Ok(Some(Update::Change(c))) => {
                    assert!(matches!(*c.command, Command::PutApp { .. }), "{:?}", c.command);
                    if c.effects.iter().any(|e| matches!(e, store::Effect::AppPut { .. })) {
                        puts += 1;
                    }
                }
                Ok(Some(Update::Reset { .. })) => panic!("the feed fell behind"),
                other => panic!("feed ended early: {other:?}"),
            }
        }
        store.shutdown().await;
    }
    let store = open(dir.path()).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while store.read(|s| s.apps.len()) < writers as usize + 1 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(store.read(|s| s.apps.len()), writers as usize + 1);
    store.shutdown().await;
}

/// A store that snapshots every few entries, as a long-running node does.
async fn open_snapshotting(dir: &std::path::Path) -> Result<Store, store::StoreError> {
    let mut cfg = StoreConfig::new(dir.to_path_buf(), "127.0.0.1:1".into());
    cfg.election_timeout_ms = (150, 300);
    cfg.snapshot_every = 10;
    let store = open_when_released(cfg).await?;
    store.bootstrap_if_new().await?;
    Ok(store)
}

#[tokio::test]
async fn a_snapshot_restores_the_state_and_a_corrupt_one_stops_the_node() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = open_snapshotting(dir.path()).await.expect("open");
        for i in 0..40 {
            store.propose(put(i)).await.expect("propose");
        }
        store.shutdown().await;
    }
    let db_path = dir.path().join("state.redb");
    // The snapshot was written (its log prefix purged) and restores everything.
    {
        let store = open_snapshotting(dir.path()).await.expect("reopen");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while store.read(|s| s.apps.len()) < 40 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(store.read(|s| s.apps.len()), 40);
        store.shutdown().await;
    }
    {
        // As in `open_when_released`: the store's tasks let go of the file shortly.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let db = loop {
            match redb::Database::open(&db_path) {
                Err(redb::DatabaseError::DatabaseAlreadyOpen) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                other => break other.expect("open db"),
            }
        };
        let table: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("snapshot");
        let tx = db.begin_read().expect("tx");
        let t = tx.open_table(table).expect("table");
        let file = t.get("current.file").expect("get").expect("a snapshot was stored");
        let path = dir.path().join("snapshots").join(std::str::from_utf8(file.value()).expect("a file name"));
        std::fs::write(&path, b"{\"format\":1,\"state\":{\"apps\":[tru").expect("overwrite");
    }
    let err = match open_snapshotting(dir.path()).await {
        Ok(_) => panic!("a node with a corrupt snapshot must not start"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("snapshot cannot be decoded") && err.contains("data directory is damaged"), "{err}");
}

/// No snapshot while the log is below its floor (the entry bound far away);
/// one once it passes it; the next once the log has grown as large as that
/// snapshot; and a restart restores everything from them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_outgrowing_its_snapshot_builds_one_and_a_restart_restores_from_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = |floor: u64| {
        let mut cfg = StoreConfig::new(dir.path().to_path_buf(), "127.0.0.1:1".into());
        cfg.election_timeout_ms = (150, 300);
        cfg.snapshot_every = 1_000_000;
        cfg.snapshot_min_log_bytes = floor;
        cfg
    };
    let wait_snapshot = |store: &Store, after: Option<u64>| {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let at = store.raft_status().snapshot_index;
            if at > after || std::time::Instant::now() > deadline {
                return at;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let store = open_when_released(cfg(1 << 20)).await.expect("open");
    store.bootstrap_if_new().await.expect("bootstrap");
    let mut n = 0;
    // A few hundred bytes an entry: tens of KiB, below 1 MiB.
    while n < 100 {
        store.propose(put(n)).await.expect("propose");
        n += 1;
    }
    // The cadence looks once a second.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(store.raft_status().snapshot_index, None, "a snapshot while the log was below its floor");
    store.shutdown().await;

    // A lone node leads, and a leader waits for up to three times the
    // threshold (twice, plus a margin of up to half).
    let store = open_when_released(cfg(4 << 10)).await.expect("reopen");
    let first = tokio::task::block_in_place(|| wait_snapshot(&store, None));
    assert!(first.is_some(), "no snapshot once the log passed its floor");
    let size = store.metrics().snapshot_bytes();
    assert!(size > 4 << 10, "the snapshot's size is not recorded: {size}");
    // Entries of more than 100 bytes each: the log outgrows three times
    // the snapshot.
    let target = n + size as u32 / 25;
    while n < target {
        store.propose(put(n)).await.expect("propose");
        n += 1;
    }
    let second = tokio::task::block_in_place(|| wait_snapshot(&store, first));
    assert!(second > first, "no second snapshot after the log outgrew the first ({size} bytes)");
    store.shutdown().await;

    let store = open_when_released(cfg(4 << 10)).await.expect("reopen");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while store.read(|s| s.apps.len()) < n as usize && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(store.read(|s| s.apps.len()), n as usize);
    store.shutdown().await;
}
