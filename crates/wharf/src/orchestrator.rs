//! The leader's loop: whenever the state changes (or a backoff expires), run
//! the pure scheduler over the local replica and commit its plan as one
//! `ApplyPlan` command. Only the leader runs it; it stops when leadership
//! moves elsewhere.

use rand::rngs::StdRng;
use rand::SeedableRng;
use std::sync::Arc;
use std::time::Duration;
use store::{Applied, Command, Store};

use crate::clock::now;

pub async fn run(store: Arc<Store>) {
    let mut leadership = store.leadership();
    // Seeded once from the OS here at the edge; the scheduler itself only
    // sees the RNG it is handed.
    let mut rng = StdRng::from_entropy();
    loop {
        while !leadership.borrow_and_update().is_self {
            if leadership.changed().await.is_err() {
                return;
            }
        }
        tracing::info!("leading: scheduling");
        let mut sub = store.subscribe();
        loop {
            if !store.is_leader() {
                break;
            }
            let t = now();
            let out = store.read(|s| scheduler::plan(s, t, &mut rng));
            let mut pause = None;
            if !out.plan.is_empty() {
                match store.propose(Command::ApplyPlan(out.plan)).await {
                    Ok(Applied::Planned { launched: 0, dropped }) if dropped > 0 => {
                        // The plan raced with newer state; avoid a hot loop.
                        pause = Some(Duration::from_millis(200));
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "plan not committed");
                        pause = Some(Duration::from_millis(500));
                    }
                }
            }
            if let Some(p) = pause {
                tokio::time::sleep(p).await;
                continue;
            }
            let wake = out
                .wake_at
                .map(|w| Duration::from_millis((w.0 - now().0).max(1) as u64))
                .unwrap_or(Duration::from_secs(3600));
            tokio::select! {
                u = sub.next() => {
                    if u.is_none() {
                        return;
                    }
                    sub.drain();
                }
                _ = tokio::time::sleep(wake) => {}
                r = leadership.changed() => {
                    if r.is_err() {
                        return;
                    }
                }
            }
        }
        tracing::info!("no longer leading");
    }
}
