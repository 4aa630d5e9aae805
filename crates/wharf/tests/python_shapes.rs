//! Strict clients keep working: tests/python/shapes_check.py loads every
//! kind of response from a real node (apps with every embed, tasks, an
//! in-flight deployment, groups with embeds, the queue with an item waiting on
//! a constraint, info, leader, and each event type Wharf sends) into
//! marathon-python's model classes, which fail on any field they do not know,
//! and checks the fields users read. Skipped, with a message, when
//! `python3 -c 'import marathon'` fails (`scripts/test` installs it).

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_loads_into_marathon_python_models() {
    common::python::run_check("shapes_check.py").await;
}
