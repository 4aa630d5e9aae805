//! A real store on disk: writes are applied, survive a restart of the node,
//! and the node never re-initialises its cluster.

use model::{AppId, AppSpec, Deployment, DeploymentAction, DeploymentId, Step, UnixMillis};
use redb::ReadableTable;
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
        let tx = db.begin_write().expect("tx");
        {
            let mut t = tx.open_table(table).expect("table");
            assert!(t.get("current.data").expect("get").is_some(), "a snapshot was stored");
            t.insert("current.data", b"{\"format\":1,\"state\":{\"apps\":[tru".as_slice()).expect("insert");
        }
        tx.commit().expect("commit");
    }
    let err = match open_snapshotting(dir.path()).await {
        Ok(_) => panic!("a node with a corrupt snapshot must not start"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("snapshot cannot be decoded") && err.contains("data directory is damaged"), "{err}");
}
