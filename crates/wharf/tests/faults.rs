//! Writes under faults and under races, judged by a serializability checker.

#[path = "common/history.rs"]
#[allow(dead_code)]
mod history;
