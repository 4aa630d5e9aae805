//! Which images running containers use, removing images, and garbage
//! collection: images no task used for a while go, then the layers no
//! remaining image and no mounted container root stacks.
//!
//! "In use" is read from the host's mount table, not from a record kept
//! beside it: a container's root is an overlay whose `lowerdir` lists its
//! image's layers, mounted from its start until its end, so a crashed agent
//! or executor cannot leave a stale claim behind and none is ever missed.

use crate::{io_err, now_millis, Image, ImageError, ImageStore};
use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

/// What one garbage collection removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// References of the images removed.
    pub images: Vec<String>,
    /// Layers deleted.
    pub layers: usize,
}

/// The layer stacks of the overlay roots mounted on this host, each as
/// layer directory names, top layer first (as in `lowerdir`).
fn mounted_stacks() -> Vec<Vec<String>> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|line| {
            // Fields after " - " are: fstype, source, super options.
            let (_, tail) = line.split_once(" - ")?;
            let mut f = tail.split(' ');
            if f.next()? != "overlay" {
                return None;
            }
            let opts = f.nth(1)?;
            let lower = opts.split(',').find_map(|o| o.strip_prefix("lowerdir="))?;
            Some(lower.split(':').map(|p| p.rsplit('/').next().unwrap_or(p).to_string()).collect())
        })
        .collect()
}

impl ImageStore {
    /// The layer directory names of an image, top first.
    fn stack(&self, image: &Image) -> Vec<String> {
        image.layers.iter().rev().map(|l| crate::hex_of(l).unwrap_or(l).to_string()).collect()
    }

    /// Whether a mounted container root stacks exactly this image's layers.
    pub fn in_use(&self, image: &Image) -> bool {
        let stack = self.stack(image);
        !stack.is_empty() && mounted_stacks().contains(&stack)
    }

    /// Forgets an image, refusing one a running container uses, and deletes
    /// the layers no other image uses. `Ok(false)`: there was no such image.
    pub fn remove(&self, reference: &str) -> Result<bool, ImageError> {
        let path = self.record_path(reference);
        let Some(image) = self.record_at(&path) else { return Ok(false) };
        if self.in_use(&image) {
            return Err(ImageError::InUse { reference: reference.to_string() });
        }
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err("remove image")(e)),
        }
    }

    /// Deletes layers no recorded image uses and no mounted container root
    /// stacks (the image of a running container may have been removed);
    /// returns how many.
    pub fn gc(&self) -> usize {
        let used: HashSet<PathBuf> =
            self.list().iter().flat_map(|i| i.layers.iter().map(|l| self.layer_dir(l))).collect();
        let mounted: HashSet<String> = mounted_stacks().into_iter().flatten().collect();
        let Ok(entries) = std::fs::read_dir(self.root().join("layers")) else { return 0 };
        entries
            .flatten()
            .filter(|e| !used.contains(&e.path()))
            .filter(|e| !e.file_name().to_str().is_some_and(|hex| mounted.contains(hex)))
            .filter(|e| std::fs::remove_dir_all(e.path()).is_ok())
            .count()
    }

    /// Removes the images nothing used for `unused_for` (a running
    /// container's image counts as used now, and so does every reference in
    /// `keep`: images of tasks being launched here), then the layers left
    /// without an image. Layers a kept image shares stay.
    pub fn collect_garbage(&self, unused_for: Duration, keep: &HashSet<String>) -> GcReport {
        let Ok(_alone) = self.inner.gc_lock.try_write() else {
            // A pull is under way; the next round collects.
            return GcReport::default();
        };
        let now = now_millis();
        let horizon = now.saturating_sub(u64::try_from(unused_for.as_millis()).unwrap_or(u64::MAX));
        let stacks = mounted_stacks();
        let mut report = GcReport::default();
        for mut image in self.list() {
            let running = stacks.contains(&self.stack(&image));
            if running || keep.contains(&image.reference) {
                if running && image.last_used < now.saturating_sub(60_000) {
                    // Refreshed at most once a minute for a long-running task.
                    image.last_used = now;
                    let _ = self.record(&image);
                }
                continue;
            }
            if image.last_used > horizon {
                continue;
            }
            if std::fs::remove_file(self.record_path(&image.reference)).is_ok() {
                tracing::info!(image = %image.reference, "removed an image no task used for {unused_for:?}");
                report.images.push(image.reference);
            }
        }
        report.layers = self.gc();
        report
    }
}
