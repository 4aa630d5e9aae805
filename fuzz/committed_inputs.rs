//! The committed inputs of a fuzz target, for the crates' `fuzz_regressions`
//! tests to replay on stable: crashes kept in `fuzz/regressions/<target>/`
//! and the seeds in `fuzz/corpus/<target>/`. Each test includes this file by
//! path (it is not a crate: the fuzz crate lives outside the workspace).

use std::path::{Path, PathBuf};

/// Every committed input of `target` with its path; panics (failing the
/// test) when there is none, so a renamed target cannot pass silently.
pub fn committed_inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut out = Vec::new();
    for dir in ["regressions", "corpus"] {
        let Ok(entries) = std::fs::read_dir(fuzz.join(dir).join(target)) else { continue };
        for e in entries {
            let path = e.expect("dir entry").path();
            let bytes = std::fs::read(&path).expect("read input");
            out.push((path, bytes));
        }
    }
    assert!(!out.is_empty(), "no committed inputs for {target}");
    out
}
