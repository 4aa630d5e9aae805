//! Where the built-in runtime's start latency goes: each start's
//! [`agent::sandbox::Timeline`] (the agent's and the executor's stamps, in
//! the task's `state.json`) turned into the time between consecutive steps,
//! from placement (`stagedAt`) on, with p50/p99 per step and the steps of
//! the slowest starts (what a p99 stall is made of) and of the first.

use crate::bench::percentile;
use std::path::Path;

/// What each step is the end of, as printed.
const LABELS: &[(&str, &str)] = &[
    ("agent", "placement -> agent takes the task"),
    ("image", "image present, config merged"),
    ("spec", "sandbox made, spec written"),
    ("executor", "executor forked and running"),
    ("rootfs", "overlay root mounted"),
    ("config", "runtime config written"),
    ("created", "libcontainer create"),
    ("started", "libcontainer start"),
];

/// One start: its placement-to-running total and each step's share (µs).
struct Start {
    total_ms: i64,
    steps: Vec<(String, i64)>,
}

impl Start {
    /// Each step with its share, in ms.
    fn describe(&self) -> String {
        let parts: Vec<String> = self.steps.iter().map(|(n, d)| format!("{n} {:.1}", *d as f64 / 1e3)).collect();
        parts.join(", ")
    }
}

#[derive(Default)]
pub(crate) struct Steps {
    starts: Vec<Start>,
}

impl Steps {
    /// Reads the timeline of the task whose sandbox is `sandbox`.
    pub(crate) fn record(&mut self, sandbox: &Path, staged_ms: i64, total_ms: i64) {
        let Ok(state) = agent::sandbox::read_json::<agent::sandbox::StateFile>(sandbox, agent::sandbox::STATE_FILE)
        else {
            return;
        };
        let mut prev = staged_ms * 1000;
        let steps = state
            .timeline
            .0
            .iter()
            .map(|(step, at)| {
                let d = *at as i64 - prev;
                prev = *at as i64;
                (step.clone(), d)
            })
            .collect();
        self.starts.push(Start { total_ms, steps });
    }

    pub(crate) fn print(&self) {
        if self.starts.is_empty() {
            return;
        }
        println!("  where the time goes (ms between steps, {} starts; placement is ms-grained):", self.starts.len());
        for (step, label) in LABELS {
            let mut us: Vec<i64> =
                self.starts.iter().filter_map(|s| s.steps.iter().find(|(n, _)| n == step).map(|(_, d)| *d)).collect();
            if us.is_empty() {
                continue;
            }
            us.sort_unstable();
            let (p50, p99) = (percentile(&us, 0.5), percentile(&us, 0.99));
            println!("    {label:<36} p50 {:>6.1}   p99 {:>6.1}", p50 as f64 / 1e3, p99 as f64 / 1e3);
        }
        // The node's first start pays what nothing warmed up before it
        // (once: the executor launcher, the image-reference grammar).
        if let Some(first) = self.starts.first() {
            println!("    first start, {} ms: {}", first.total_ms, first.describe());
        }
        let mut by_total: Vec<&Start> = self.starts.iter().collect();
        by_total.sort_by_key(|s| std::cmp::Reverse(s.total_ms));
        for s in by_total.iter().take(3) {
            println!("    slow start, {} ms: {}", s.total_ms, s.describe());
        }
    }
}
