//! A real store on disk: writes are applied, survive a restart of the node,
//! and the node never re-initialises its cluster.

use model::{AppId, AppSpec, Deployment, DeploymentAction, DeploymentId, Step, UnixMillis};
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
    }
}

async fn open(dir: &std::path::Path) -> Store {
    let mut cfg = StoreConfig::new(dir.to_path_buf(), "127.0.0.1:1".into());
    cfg.election_timeout_ms = (150, 300);
    let store = Store::open(cfg).await.expect("open store");
    store.bootstrap_if_new().await.expect("bootstrap");
    store
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
