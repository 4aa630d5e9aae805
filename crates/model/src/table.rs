//! `Table`: the persistent map that `ClusterState` is built from;
//! `TaskTable`, the task table with its indexes by app and by node (the
//! latter with what each task holds of its node); and `AppTable`, the app
//! table with its index of taken service ports.
//!
//! Persistent (`imbl`'s B-tree with structural sharing, values behind `Arc`),
//! so cloning a whole `ClusterState` costs a few reference counts: the store
//! publishes an immutable snapshot after every command and readers never
//! hold a lock that `apply` needs. Every write records the key it touched,
//! so the store can say exactly what a command changed (its effects) without
//! diffing the whole state.

use crate::{App, AppId, NodeId, Resources, Task, TaskId};
use imbl::{OrdMap, OrdSet};
use serde::de::{Deserialize, Deserializer};
use serde::ser::{Serialize, Serializer};
use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

/// A persistent ordered map that remembers which keys were written since
/// the last `take_touched`. Serialises exactly as a `BTreeMap` would.
#[derive(Clone)]
pub struct Table<K: Ord + Clone, V: Clone> {
    map: OrdMap<K, Arc<V>>,
    touched: BTreeSet<K>,
}

impl<K: Ord + Clone, V: Clone> Default for Table<K, V> {
    fn default() -> Self {
        Table { map: OrdMap::new(), touched: BTreeSet::new() }
    }
}

impl<K: Ord + Clone, V: Clone> Table<K, V> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get(&self, k: &K) -> Option<&V> {
        self.map.get(k).map(|v| v.as_ref())
    }

    /// The shared value itself: cheap to keep (effects, snapshots).
    pub fn get_arc(&self, k: &K) -> Option<Arc<V>> {
        self.map.get(k).cloned()
    }

    pub fn contains_key(&self, k: &K) -> bool {
        self.map.contains_key(k)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&K, &V)> + '_ {
        self.map.iter().map(|(k, v)| (k, v.as_ref()))
    }

    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &K> + '_ {
        self.map.keys()
    }

    pub fn values(&self) -> impl DoubleEndedIterator<Item = &V> + '_ {
        self.map.values().map(|v| v.as_ref())
    }

    /// The entries with their shared values: a reader that keeps something
    /// derived from a value can keep the value's `Arc` beside it and know the
    /// value is unchanged while `Arc::ptr_eq` holds (a write to a shared
    /// value copies it first).
    pub fn iter_shared(&self) -> impl DoubleEndedIterator<Item = (&K, &Arc<V>)> + '_ {
        self.map.iter()
    }

    pub fn insert(&mut self, k: K, v: V) {
        self.touched.insert(k.clone());
        self.map.insert(k, Arc::new(v));
    }

    pub fn remove(&mut self, k: &K) -> Option<V> {
        let old = self.map.remove(k)?;
        self.touched.insert(k.clone());
        Some(Arc::unwrap_or_clone(old))
    }

    /// Copy-on-write access: the value is copied only if a snapshot still
    /// shares it.
    pub fn get_mut(&mut self, k: &K) -> Option<&mut V> {
        let v = self.map.get_mut(k)?;
        self.touched.insert(k.clone());
        Some(Arc::make_mut(v))
    }

    /// The value at `k`, inserted with `make` first if absent.
    pub fn get_or_insert_with(&mut self, k: K, make: impl FnOnce() -> V) -> &mut V {
        self.touched.insert(k.clone());
        let v = self.map.entry(k).or_insert_with(|| Arc::new(make()));
        Arc::make_mut(v)
    }

    /// Keys written (inserted, changed or removed) since the last call.
    pub fn take_touched(&mut self) -> BTreeSet<K> {
        std::mem::take(&mut self.touched)
    }
}

/// Like `BTreeMap`'s: panics on a missing key (tests and checked lookups).
impl<K: Ord + Clone, V: Clone> std::ops::Index<&K> for Table<K, V> {
    type Output = V;
    fn index(&self, k: &K) -> &V {
        match self.get(k) {
            Some(v) => v,
            None => panic!("no such key in table"),
        }
    }
}

impl std::ops::Index<&TaskId> for TaskTable {
    type Output = Task;
    fn index(&self, k: &TaskId) -> &Task {
        &self.tasks[k]
    }
}

impl<K: Ord + Clone, V: Clone + PartialEq> PartialEq for Table<K, V> {
    fn eq(&self, other: &Self) -> bool {
        self.map == other.map
    }
}

impl<K: Ord + Clone + fmt::Debug, V: Clone + fmt::Debug> fmt::Debug for Table<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<K: Ord + Clone, V: Clone> FromIterator<(K, V)> for Table<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Table { map: iter.into_iter().map(|(k, v)| (k, Arc::new(v))).collect(), touched: BTreeSet::new() }
    }
}

impl<K: Ord + Clone + Serialize, V: Clone + Serialize> Serialize for Table<K, V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

impl<'de, K, V> Deserialize<'de> for Table<K, V>
where
    K: Ord + Clone + Deserialize<'de>,
    V: Clone + Deserialize<'de>,
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let m = std::collections::BTreeMap::<K, V>::deserialize(d)?;
        Ok(m.into_iter().collect())
    }
}

/// The task table with indexes by app and by node, kept by every write.
/// A task's app and node never change after it is placed; `update` re-indexes
/// anyway if a caller changes them, so the indexes cannot drift.
#[derive(Clone, Default, PartialEq)]
pub struct TaskTable {
    tasks: Table<TaskId, Task>,
    by_app: OrdMap<AppId, OrdSet<TaskId>>,
    /// Each node's tasks, with what each holds of the node: a node's usage
    /// is added up from here (in task id order, as before) without looking
    /// each task up in `tasks`, which at 100,000 tasks was a top cost of
    /// every plan and every plan's apply.
    by_node: OrdMap<NodeId, OrdMap<TaskId, Option<Held>>>,
}

/// What a task takes from its node while it holds resources
/// (`Task::holds_resources`).
#[derive(Debug, Clone, PartialEq)]
pub struct Held {
    pub resources: Resources,
    /// Shared: index nodes are copied on write, and with them their values.
    pub ports: Arc<[u16]>,
}

impl Held {
    fn of(t: &Task) -> Option<Held> {
        t.holds_resources().then(|| Held { resources: t.resources, ports: t.ports.as_slice().into() })
    }
}

impl TaskTable {
    pub fn get(&self, id: &TaskId) -> Option<&Task> {
        self.tasks.get(id)
    }

    pub fn get_arc(&self, id: &TaskId) -> Option<Arc<Task>> {
        self.tasks.get_arc(id)
    }

    pub fn contains_key(&self, id: &TaskId) -> bool {
        self.tasks.contains_key(id)
    }

    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&TaskId, &Task)> + '_ {
        self.tasks.iter()
    }

    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &TaskId> + '_ {
        self.tasks.keys()
    }

    pub fn values(&self) -> impl DoubleEndedIterator<Item = &Task> + '_ {
        self.tasks.values()
    }

    /// Every task with its shared value (see `Table::iter_shared`).
    pub fn values_shared(&self) -> impl DoubleEndedIterator<Item = &Arc<Task>> + '_ {
        self.tasks.iter_shared().map(|(_, t)| t)
    }

    /// The tasks of one app with their shared values, from the index.
    pub fn of_app_shared<'a>(&'a self, app: &AppId) -> impl Iterator<Item = &'a Arc<Task>> + 'a {
        self.by_app.get(app).into_iter().flat_map(|ids| ids.iter()).filter_map(|id| self.tasks.map.get(id))
    }

    /// The tasks of one app, from the index.
    pub fn of_app<'a>(&'a self, app: &AppId) -> impl Iterator<Item = &'a Task> + 'a {
        self.by_app.get(app).into_iter().flat_map(|ids| ids.iter()).filter_map(|id| self.tasks.get(id))
    }

    /// Every app that has tasks, with its tasks, from the index.
    pub fn by_app(&self) -> impl Iterator<Item = (&AppId, impl Iterator<Item = &Task> + '_)> + '_ {
        self.by_app.iter().map(|(app, ids)| (app, ids.iter().filter_map(|id| self.tasks.get(id))))
    }

    /// The tasks placed on one node, from the index.
    pub fn on_node(&self, node: NodeId) -> impl Iterator<Item = &Task> + '_ {
        self.by_node.get(&node).into_iter().flat_map(|ids| ids.keys()).filter_map(|id| self.tasks.get(id))
    }

    /// Ids of the tasks on one node (to change them while iterating).
    pub fn ids_on(&self, node: NodeId) -> Vec<TaskId> {
        self.by_node.get(&node).map(|ids| ids.keys().cloned().collect()).unwrap_or_default()
    }

    /// What the tasks on `node` that hold resources take, in task id order.
    pub fn held_on(&self, node: NodeId) -> impl Iterator<Item = &Held> + '_ {
        self.by_node.get(&node).into_iter().flat_map(|ids| ids.values()).flatten()
    }

    pub fn insert(&mut self, task: Task) {
        if let Some(old) = self.tasks.get(&task.id) {
            let (app, node) = (old.app_id.clone(), old.node);
            self.unindex(&task.id, &app, node);
        }
        self.index(&task);
        self.tasks.insert(task.id.clone(), task);
    }

    pub fn remove(&mut self, id: &TaskId) -> Option<Task> {
        let t = self.tasks.remove(id)?;
        self.unindex(id, &t.app_id, t.node);
        Some(t)
    }

    /// Changes one task in place; returns what `f` returns, or `None` if
    /// there is no such task.
    pub fn update<R>(&mut self, id: &TaskId, f: impl FnOnce(&mut Task) -> R) -> Option<R> {
        let t = self.tasks.get_mut(id)?;
        let (app, node, held) = (t.app_id.clone(), t.node, Held::of(t));
        let r = f(t);
        if t.app_id != app || t.node != node {
            let t = t.clone();
            self.unindex(id, &app, node);
            self.index(&t);
        } else {
            let now = Held::of(t);
            if now != held {
                if let Some(slot) = self.by_node.get_mut(&node).and_then(|ids| ids.get_mut(id)) {
                    *slot = now;
                }
            }
        }
        Some(r)
    }

    pub fn take_touched(&mut self) -> BTreeSet<TaskId> {
        self.tasks.take_touched()
    }

    fn index(&mut self, t: &Task) {
        self.by_app.entry(t.app_id.clone()).or_default().insert(t.id.clone());
        self.by_node.entry(t.node).or_default().insert(t.id.clone(), Held::of(t));
    }

    fn unindex(&mut self, id: &TaskId, app: &AppId, node: NodeId) {
        if let Some(ids) = self.by_app.get_mut(app) {
            ids.remove(id);
            if ids.is_empty() {
                self.by_app.remove(app);
            }
        }
        if let Some(ids) = self.by_node.get_mut(&node) {
            ids.remove(id);
            if ids.is_empty() {
                self.by_node.remove(&node);
            }
        }
    }
}

/// The app table with an index of the service ports apps hold (port ->
/// holders), kept by every write, so assigning a port on a write reads the
/// index instead of scanning every app. Reads go through `Deref` to the
/// plain `Table`; writes go through `insert`, `remove` and `get_mut`, whose
/// guard re-indexes on drop if the ports changed, so the index cannot drift.
#[derive(Clone, Default, PartialEq)]
pub struct AppTable {
    apps: Table<AppId, App>,
    ports: OrdMap<u16, Vec<AppId>>,
}

fn held_ports(app: &App) -> impl Iterator<Item = u16> + '_ {
    app.spec.ports.iter().map(|p| p.port).filter(|p| *p != 0)
}

fn index_ports(index: &mut OrdMap<u16, Vec<AppId>>, id: &AppId, ports: impl Iterator<Item = u16>) {
    for p in ports {
        let holders = index.entry(p).or_default();
        if !holders.contains(id) {
            holders.push(id.clone());
        }
    }
}

fn unindex_ports(index: &mut OrdMap<u16, Vec<AppId>>, id: &AppId, ports: impl Iterator<Item = u16>) {
    for p in ports {
        if let Some(holders) = index.get_mut(&p) {
            holders.retain(|h| h != id);
            if holders.is_empty() {
                index.remove(&p);
            }
        }
    }
}

impl std::ops::Deref for AppTable {
    type Target = Table<AppId, App>;
    fn deref(&self) -> &Table<AppId, App> {
        &self.apps
    }
}

impl AppTable {
    pub fn insert(&mut self, k: AppId, v: App) {
        if let Some(old) = self.apps.get(&k) {
            unindex_ports(&mut self.ports, &k, held_ports(old));
        }
        index_ports(&mut self.ports, &k, held_ports(&v));
        self.apps.insert(k, v);
    }

    pub fn remove(&mut self, k: &AppId) -> Option<App> {
        let old = self.apps.remove(k)?;
        unindex_ports(&mut self.ports, k, held_ports(&old));
        Some(old)
    }

    /// Copy-on-write access; the guard re-indexes the app's service ports
    /// when it is dropped, if they changed.
    pub fn get_mut(&mut self, k: &AppId) -> Option<AppMut<'_>> {
        let AppTable { apps, ports } = self;
        let app = apps.get_mut(k)?;
        let before = held_ports(app).collect();
        Some(AppMut { app, index: ports, before })
    }

    pub fn take_touched(&mut self) -> BTreeSet<AppId> {
        self.apps.take_touched()
    }

    /// Apps holding service port `port` (normally at most one).
    pub fn port_holders(&self, port: u16) -> &[AppId] {
        self.ports.get(&port).map(Vec::as_slice).unwrap_or_default()
    }

    /// Taken service ports in `range`, in order, with their holders.
    pub fn ports_taken(&self, range: std::ops::RangeInclusive<u16>) -> impl Iterator<Item = (u16, &[AppId])> + '_ {
        self.ports.range(range).map(|(p, h)| (*p, h.as_slice()))
    }
}

/// A write to one app (see `AppTable::get_mut`).
pub struct AppMut<'a> {
    app: &'a mut App,
    index: &'a mut OrdMap<u16, Vec<AppId>>,
    before: Vec<u16>,
}

impl std::ops::Deref for AppMut<'_> {
    type Target = App;
    fn deref(&self) -> &App {
        self.app
    }
}

impl std::ops::DerefMut for AppMut<'_> {
    fn deref_mut(&mut self) -> &mut App {
        self.app
    }
}

impl Drop for AppMut<'_> {
    fn drop(&mut self) {
        if !held_ports(self.app).eq(self.before.iter().copied()) {
            let id = self.app.spec.id.clone();
            unindex_ports(self.index, &id, self.before.iter().copied());
            index_ports(self.index, &id, held_ports(self.app));
        }
    }
}

impl fmt::Debug for AppTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.apps.fmt(f)
    }
}

impl FromIterator<(AppId, App)> for AppTable {
    fn from_iter<I: IntoIterator<Item = (AppId, App)>>(iter: I) -> Self {
        let mut t = AppTable::default();
        for (k, v) in iter {
            t.insert(k, v);
        }
        t.take_touched();
        t
    }
}

impl Serialize for AppTable {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.apps.serialize(s)
    }
}

impl<'de> Deserialize<'de> for AppTable {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let m = std::collections::BTreeMap::<AppId, App>::deserialize(d)?;
        Ok(m.into_iter().collect())
    }
}

impl fmt::Debug for TaskTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.tasks.fmt(f)
    }
}

impl FromIterator<Task> for TaskTable {
    fn from_iter<I: IntoIterator<Item = Task>>(iter: I) -> Self {
        let mut t = TaskTable::default();
        for task in iter {
            t.insert(task);
        }
        t.take_touched();
        t
    }
}

impl Serialize for TaskTable {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.tasks.serialize(s)
    }
}

impl<'de> Deserialize<'de> for TaskTable {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let m = std::collections::BTreeMap::<TaskId, Task>::deserialize(d)?;
        Ok(m.into_values().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Resources, TaskState, UnixMillis};

    fn task(app: &str, n: u128, node: u64) -> Task {
        let app = AppId::parse(app).expect("app id");
        let id = TaskId::new(&app, uuid::Uuid::from_u128(n), 1);
        Task::staged(id, app, NodeId(node), vec![], Resources::default(), UnixMillis(1))
    }

    #[test]
    fn indexes_follow_inserts_updates_and_removes() {
        let mut t = TaskTable::default();
        let a = task("/a", 1, 1);
        let b = task("/b", 2, 1);
        let c = task("/a", 3, 2);
        for x in [&a, &b, &c] {
            t.insert(x.clone());
        }
        let ids = |it: Vec<&Task>| it.into_iter().map(|t| t.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(t.of_app(&a.app_id).collect()).len(), 2);
        assert_eq!(ids(t.on_node(NodeId(1)).collect()).len(), 2);
        t.update(&c.id, |x| x.node = NodeId(1));
        assert_eq!(t.on_node(NodeId(1)).count(), 3);
        assert_eq!(t.on_node(NodeId(2)).count(), 0);
        t.remove(&a.id);
        assert_eq!(ids(t.of_app(&a.app_id).collect()), vec![c.id.clone()]);
        let touched = t.take_touched();
        assert_eq!(touched.len(), 3);
        assert!(t.take_touched().is_empty());
    }

    #[test]
    fn the_node_index_holds_what_live_tasks_take() {
        let mut t = TaskTable::default();
        let mut a = task("/a", 1, 1);
        a.resources = Resources { cpus: 0.5, mem: 64.0, disk: 0.0, gpus: 0 };
        a.ports = vec![31000];
        let b = task("/b", 2, 1);
        t.insert(a.clone());
        t.insert(b.clone());
        let held =
            |t: &TaskTable| t.held_on(NodeId(1)).map(|h| (h.resources.cpus, h.ports.to_vec())).collect::<Vec<_>>();
        assert_eq!(held(&t), vec![(0.5, vec![31000]), (0.0, vec![])]);
        // An end frees what the task held; the task itself stays listed.
        t.update(&a.id, |x| x.state = TaskState::Finished);
        assert_eq!(held(&t), vec![(0.0, vec![])]);
        assert_eq!(t.on_node(NodeId(1)).count(), 2);
        t.update(&b.id, |x| x.node = NodeId(2));
        assert!(held(&t).is_empty());
        assert_eq!(t.held_on(NodeId(2)).count(), 1);
        let rebuilt: TaskTable = t.values().cloned().collect();
        assert_eq!(rebuilt, t);
    }

    #[test]
    fn a_snapshot_does_not_see_later_writes() {
        let mut t = TaskTable::default();
        let a = task("/a", 1, 1);
        t.insert(a.clone());
        let snap = t.clone();
        t.update(&a.id, |x| x.state = TaskState::Running);
        assert_eq!(snap.get(&a.id).map(|x| x.state), Some(TaskState::Staging));
        assert_eq!(t.get(&a.id).map(|x| x.state), Some(TaskState::Running));
    }

    #[test]
    fn serialises_as_a_plain_map_and_rebuilds_indexes() {
        let mut t = TaskTable::default();
        t.insert(task("/a", 1, 7));
        let json = serde_json::to_value(&t).expect("serialise");
        assert!(json.as_object().is_some_and(|m| m.len() == 1), "{json}");
        let back: TaskTable = serde_json::from_value(json).expect("deserialise");
        assert_eq!(back.on_node(NodeId(7)).count(), 1);
        assert_eq!(back, t);
    }
}
