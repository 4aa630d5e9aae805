//! The node's images beyond one launch: registry credentials an app brings
//! (`container.docker.pullConfig`), and the upkeep loop that collects images
//! no task used for `--image-gc-after` and reports the node's images to the
//! cluster (`Command::NodeImages`, only when they changed, at most every
//! [`UPKEEP_EVERY`], so pulls cost no Raft traffic of their own).

use image::{ImageStore, RegistryConfig};
use model::{AppSpec, NodeId, NodeImage, UnixMillis};
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use store::{Command, Store};
use zeroize::Zeroizing;

/// How often the upkeep loop looks at the store (and collects, if due).
pub const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// A report's `last_used` is sent again only when it moved more than this,
/// so a busy image does not write to Raft on every launch.
const LAST_USED_SLACK_MS: u64 = 60_000;

/// The registry credentials of an app's `pullConfig`: the Docker
/// `config.json` document held by the app secret it names, opened with
/// `open` (on the node that runs the task). `Err` says why the task cannot
/// pull, naming the secret, never its value.
pub fn pull_config(
    app: &AppSpec,
    open: impl Fn(&str) -> Result<Zeroizing<Vec<u8>>, crate::secrets::SecretError>,
) -> Result<Option<RegistryConfig>, String> {
    let Some(name) = app.container.container().and_then(|c| c.pull_config.as_ref()) else { return Ok(None) };
    let doc = open(name).map_err(|e| format!("container.docker.pullConfig: {e}"))?;
    let text = std::str::from_utf8(&doc)
        .map_err(|_| format!("container.docker.pullConfig: secret '{name}' is not a UTF-8 config.json document"))?;
    RegistryConfig::parse(text, &format!("secret '{name}'"))
        .map(Some)
        .map_err(|e| format!("container.docker.pullConfig: {e}"))
}

/// Images the tasks assigned to this node (not ended) run.
fn images_of_live_tasks(store: &Store, node: NodeId) -> HashSet<String> {
    store.read(|s| {
        s.tasks_on(node)
            .filter(|t| !t.state.is_terminal())
            .filter_map(|t| match &t.job_run {
                Some(r) => s.jobs.get(&r.job).and_then(|j| j.spec.template().container.image().map(str::to_string)),
                None => s.apps.get(&t.app_id).and_then(|a| a.spec.container.image().map(str::to_string)),
            })
            .collect()
    })
}

fn report_of(images: &ImageStore) -> Vec<NodeImage> {
    images
        .list()
        .into_iter()
        .map(|i| NodeImage {
            reference: i.reference,
            digest: i.digest,
            size: i.size,
            last_used: UnixMillis(i64::try_from(i.last_used).unwrap_or(i64::MAX)),
        })
        .collect()
}

/// Whether `new` says something `old` does not: another image set, or a
/// last use that moved by more than the slack.
fn worth_reporting(old: &[NodeImage], new: &[NodeImage]) -> bool {
    old.len() != new.len()
        || old.iter().zip(new).any(|(a, b)| {
            a.reference != b.reference
                || a.digest != b.digest
                || a.size != b.size
                || a.last_used.0.abs_diff(b.last_used.0) > LAST_USED_SLACK_MS
        })
}

/// Aborts a spawned task when dropped.
pub(crate) struct AbortOnDrop(pub(crate) tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Collects and reports until the store shuts down. A collection runs every
/// quarter of `gc_after` (within [`UPKEEP_EVERY`] and an hour).
/// Persistent volumes of deleted apps go in the same rounds.
pub async fn upkeep(store: Arc<Store>, node: NodeId, images: ImageStore, gc_after: Duration, volumes: PathBuf) {
    let gc_every = (gc_after / 4).clamp(UPKEEP_EVERY, Duration::from_secs(3600));
    let mut last_gc = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(UPKEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        crate::volumes::sweep(&store, &volumes);
        if last_gc.elapsed() >= gc_every {
            last_gc = tokio::time::Instant::now();
            let keep = images_of_live_tasks(&store, node);
            let (images2, keep2) = (images.clone(), keep);
            let collected = tokio::task::spawn_blocking(move || images2.collect_garbage(gc_after, &keep2))
                .await
                .unwrap_or_default();
            if !collected.images.is_empty() || collected.layers > 0 {
                tracing::info!(images = ?collected.images, layers = collected.layers, "image garbage collected");
            }
        }
        let images2 = images.clone();
        let Ok(now) = tokio::task::spawn_blocking(move || report_of(&images2)).await else { continue };
        let stored = store.read(|s| s.nodes.get(&node).map(|n| n.images.clone()));
        let Some(stored) = stored else { continue };
        if worth_reporting(&stored, &now) {
            if let Err(e) = store.propose(Command::NodeImages { node, images: now }).await {
                tracing::warn!(error = %e, "could not report this node's images");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(r: &str, used: i64) -> NodeImage {
        NodeImage { reference: r.into(), digest: "sha256:00".into(), size: 1, last_used: UnixMillis(used) }
    }

    #[test]
    fn reports_go_out_for_new_images_and_old_last_uses_only() {
        assert!(!worth_reporting(&[img("a", 0)], &[img("a", 59_000)]));
        assert!(worth_reporting(&[img("a", 0)], &[img("a", 61_000)]));
        assert!(worth_reporting(&[img("a", 0)], &[img("a", 0), img("b", 0)]));
        assert!(worth_reporting(&[img("a", 0)], &[]));
    }
}
