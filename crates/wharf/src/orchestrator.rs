//! The leader's loop: whenever a change takes effect (or a backoff expires),
//! run the pure scheduler over an immutable snapshot of the local replica
//! (on a blocking thread, so a plan over many tasks never holds up the async
//! workers or `apply`) and commit its plan as one `ApplyPlan` command. Only
//! the leader runs it; it stops when leadership moves elsewhere.
//!
//! Plan/apply split (Nomad's): the store re-checks every launch against the
//! newest state and returns the dropped ones with the index to refresh from;
//! the loop plans again at once from that index instead of sleeping.

use rand::rngs::StdRng;
use rand::SeedableRng;
use std::sync::Arc;
use std::time::Duration;
use store::{Applied, Command, Store, Update};

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
            let snap = store.snapshot();
            let made_at = snap.applied_index;
            let t = now();
            let planned = tokio::task::spawn_blocking(move || {
                let out = scheduler::plan(&snap, t, &mut rng);
                (out, rng)
            })
            .await;
            let out = match planned {
                Ok((out, r)) => {
                    rng = r;
                    out
                }
                Err(e) => {
                    // A panic in the scheduler: report it and let the
                    // supervisor decide (this loop cannot go on without a plan).
                    tracing::error!(error = %e, "the scheduler failed");
                    return;
                }
            };
            let mut pause = None;
            if !out.plan.is_empty() {
                match store.propose(Command::ApplyPlan(out.plan)).await {
                    Ok(Applied::Planned { launched, dropped, index }) if !dropped.is_empty() => {
                        tracing::debug!(
                            launched,
                            dropped = dropped.len(),
                            index,
                            "plan partly dropped; planning again"
                        );
                        if launched == 0 && index == made_at + 1 {
                            // Nothing else committed in between, yet every launch was
                            // refused: the scheduler and the applier disagree. Log it
                            // rather than spin.
                            tracing::warn!(?dropped, "the plan applier refused a plan made on its own state");
                            pause = Some(Duration::from_millis(500));
                        } else {
                            // The replica is at `index` already (propose returns after the
                            // local apply): plan again at once from the newer state.
                            continue;
                        }
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
            let sleep = tokio::time::sleep(wake);
            tokio::pin!(sleep);
            // Wait for a change that did something (a refused write changes
            // nothing and needs no new plan), then fold in all queued ones.
            loop {
                tokio::select! {
                    u = sub.next() => match u {
                        None => return,
                        Some(Update::Change(c)) if c.effects.is_empty() => continue,
                        Some(_) => {
                            sub.drain();
                            break;
                        }
                    },
                    _ = &mut sleep => break,
                    r = leadership.changed() => {
                        if r.is_err() {
                            return;
                        }
                        break;
                    }
                }
            }
        }
        tracing::info!("no longer leading");
    }
}
