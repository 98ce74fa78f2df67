//! Secondary indexes over runs, and per-task counts, written in the same
//! transaction as the run they describe, so they are never out of step.
//!
//! | family | key                                            | answers |
//! |--------|------------------------------------------------|---------|
//! | `s`    | `s␁project/domain␁<status>␁<run id>`           | runs in a status (recovery reads only `running` and `pending`) |
//! | `t`    | `t␁project/domain␁<task>␁<run id>`             | runs of a task |
//! | `p`    | `p␁project/domain␁<parent, or empty>␁<run id>` | children of a run; top-level runs (empty parent) |
//! | `ps`   | `ps␁project/domain␁<status>␁<run id>`          | top-level runs in a status (`runs list --status`) |
//!
//! Run ids are UUIDv7, so within one index value the keys sort by creation
//! time and a page newest first is a reversed range: its cost does not grow
//! with the store. `task_stats` holds each task's [`TaskStats`], the sum over
//! its stored runs, adjusted by the difference every write makes.

use redb::{ReadableTable, Table, TableDefinition};

use super::{SEP, decode, encode, io};
use crate::model::{RunRecord, TaskStats, Tenant};
use crate::store::StoreError;
use crate::store::commit::Tables;

/// The run indexes: keys only, empty values.
pub(super) const RUN_INDEX: TableDefinition<&str, &[u8]> = TableDefinition::new("run_index");
/// `project/domain␁<task>` → JSON [`TaskStats`].
pub(super) const TASK_STATS: TableDefinition<&str, &[u8]> = TableDefinition::new("task_stats");

/// An index family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Family {
    /// By status.
    Status,
    /// By task.
    Task,
    /// By parent (empty for top-level runs).
    Parent,
    /// Top-level runs by status.
    TopLevelStatus,
}

impl Family {
    fn tag(self) -> &'static str {
        match self {
            Family::Status => "s",
            Family::Task => "t",
            Family::Parent => "p",
            Family::TopLevelStatus => "ps",
        }
    }
}

/// The key prefix of index `family` at `value`: every key under it ends in a run id.
pub(super) fn prefix(family: Family, tenant: &Tenant, value: &str) -> String {
    format!("{}{SEP}{tenant}{SEP}{value}{SEP}", family.tag())
}

/// The tenants with runs, or (`with_work`) with pending or running ones: a
/// skip-scan of the status family, one seek per tenant (its first key, then
/// past its last) and one per unfinished status.
pub(super) fn tenants(
    index: &impl ReadableTable<&'static str, &'static [u8]>,
    with_work: bool,
) -> Result<Vec<Tenant>, redb::Error> {
    let family = format!("{}{SEP}", Family::Status.tag());
    let end = format!("{}\u{2}", Family::Status.tag());
    let mut from = family.clone();
    let mut tenants = Vec::new();
    loop {
        let Some(item) = index.range(from.as_str()..end.as_str())?.next() else { break };
        let (key, _) = item?;
        let name = key.value()[family.len()..].split(SEP).next().unwrap_or_default().to_owned();
        if let Ok(tenant) = name.parse::<Tenant>() {
            let has = |status: &str| -> Result<bool, redb::Error> {
                let (start, stop) = super::prefix_range(&prefix(Family::Status, &tenant, status));
                Ok(index.range(start.as_str()..stop.as_str())?.next().is_some())
            };
            if !with_work || has("pending")? || has("running")? {
                tenants.push(tenant);
            }
        }
        // Past every key of this tenant: its name followed by a byte above the separator.
        from = format!("{family}{name}\u{2}");
    }
    Ok(tenants)
}

/// The index keys of `run`.
fn keys(run: &RunRecord) -> Vec<String> {
    let status = run.status.as_str();
    let parent = run.parent.as_deref().unwrap_or("");
    let mut keys = vec![
        prefix(Family::Status, &run.tenant, status) + &run.id,
        prefix(Family::Task, &run.tenant, &run.task) + &run.id,
        prefix(Family::Parent, &run.tenant, parent) + &run.id,
    ];
    if run.parent.is_none() {
        keys.push(prefix(Family::TopLevelStatus, &run.tenant, status) + &run.id);
    }
    keys
}

/// Whether replacing `old` with `new` leaves every index entry and count as
/// it is: true of most writes (an attempt's progress, a lease, a heartbeat).
pub(super) fn unchanged(old: &RunRecord, new: &RunRecord) -> bool {
    old.status == new.status
        && old.task == new.task
        && old.parent == new.parent
        && old.tenant == new.tenant
        && TaskStats::of(old) == TaskStats::of(new)
}

/// Moves `old`'s index entries to `new`'s (either may be absent: a run
/// created or deleted).
fn reindex(
    index: &mut Table<'_, &'static str, &'static [u8]>,
    old: Option<&RunRecord>,
    new: Option<&RunRecord>,
) -> Result<(), StoreError> {
    let old_keys = old.map(keys).unwrap_or_default();
    let new_keys = new.map(keys).unwrap_or_default();
    for key in old_keys.iter().filter(|k| !new_keys.contains(k)) {
        index.remove(key.as_str()).map_err(|e| io("update run index")(e.into()))?;
    }
    for key in new_keys.iter().filter(|k| !old_keys.contains(k)) {
        index.insert(key.as_str(), [].as_slice()).map_err(|e| io("update run index")(e.into()))?;
    }
    Ok(())
}

fn stats_key(tenant: &Tenant, task: &str) -> String {
    format!("{tenant}{SEP}{task}")
}

/// Moves a run's index entries and task counts from `old` to `new` (either
/// may be absent: a run created or deleted), in the batch of `tables`.
pub(super) fn update(
    tables: &mut Tables<'_>,
    old: Option<&RunRecord>,
    new: Option<&RunRecord>,
) -> Result<(), StoreError> {
    reindex(tables.get(RUN_INDEX)?, old, new)?;
    defer_recount(tables, old, new);
    Ok(())
}

/// Notes in the batch what replacing `old` with `new` changes in the task
/// counts; [`flush_counts`] writes them once per task before the batch commits.
fn defer_recount(tables: &mut Tables<'_>, old: Option<&RunRecord>, new: Option<&RunRecord>) {
    if let Some(run) = old {
        let entry = tables.counts.entry(stats_key(&run.tenant, &run.task)).or_default();
        entry.1 = entry.1.plus(TaskStats::of(run));
    }
    if let Some(run) = new {
        let entry = tables.counts.entry(stats_key(&run.tenant, &run.task)).or_default();
        entry.0 = entry.0.plus(TaskStats::of(run));
    }
}

/// Writes a batch's count changes: one read and one write per task touched.
pub(super) fn flush_counts(tables: &mut Tables<'_>) -> Result<(), StoreError> {
    if tables.counts.is_empty() {
        return Ok(());
    }
    let counts = std::mem::take(&mut tables.counts);
    let stats = tables.get(TASK_STATS)?;
    for (key, (added, taken)) in counts {
        if added == taken {
            continue;
        }
        let current = match stats.get(key.as_str()).map_err(|e| io("update task stats")(e.into()))? {
            Some(bytes) => decode("task stats", bytes.value())?,
            None => TaskStats::default(),
        };
        // Added first: the true count never goes below zero, so nothing saturates.
        let next = current.plus(added).minus(taken);
        if next.is_empty() {
            stats.remove(key.as_str()).map_err(|e| io("update task stats")(e.into()))?;
        } else {
            let value = encode("task stats", &next)?;
            stats.insert(key.as_str(), value.as_slice()).map_err(|e| io("update task stats")(e.into()))?;
        }
    }
    Ok(())
}

/// The counts of every task of `tenant`, by task name.
pub(super) fn read_stats(
    stats: &impl ReadableTable<&'static str, &'static [u8]>,
    tenant: &Tenant,
) -> Result<Vec<(String, TaskStats)>, StoreError> {
    let prefix = format!("{tenant}{SEP}");
    let (start, end) = super::prefix_range(&prefix);
    let mut out = Vec::new();
    for item in stats.range(start.as_str()..end.as_str()).map_err(|e| io("read task stats")(e.into()))? {
        let (key, value) = item.map_err(|e| io("read task stats")(e.into()))?;
        out.push((key.value()[prefix.len()..].to_owned(), decode("task stats", value.value())?));
    }
    Ok(out)
}
