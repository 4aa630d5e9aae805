//! The `marathon` client library from PyPI (marathon-python) against a real
//! node: tests/python/client_check.py creates, lists, gets, scales, kills
//! tasks, restarts, and reads deployments, groups, the queue and info.
//! Skipped, with a message, when `python3 -c 'import marathon'` fails
//! (`scripts/test` installs it).

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marathon_python_client_works() {
    common::python::run_check("client_check.py").await;
}
