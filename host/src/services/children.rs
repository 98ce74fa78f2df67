//! Child runs as the `tasks` interface submits them.
//!
//! A submission is journaled in the parent under (task, canonical input,
//! occurrence) with the child's run id. The guest does not wait for that
//! record to be durable, but the child does not start before it is, so a
//! crash never leaves a child the parent's journal does not know. A parent
//! retried or resumed finds the record and re-attaches to the same child.
//! Starting and tracking children is the host's ([`ChildRuns`], which the
//! runner implements); this service only speaks the protocol.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch};

use super::ServiceError;
use crate::journal::{Journal, canonical_input};
use crate::model::{CallKind, Failure, FailureKind, Fence, JournalEntry, Tenant};

/// What a parent's journal records about a child: the output of its `child` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildLink {
    /// The child run's id.
    pub run_id: String,
    /// The group it was submitted in, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// A child to start, or to re-attach to when it already exists.
#[derive(Debug)]
pub struct ChildStart {
    /// The child's run id.
    pub id: String,
    /// The submitting run.
    pub parent: String,
    /// The child's task.
    pub task: String,
    /// Its JSON input.
    pub input: String,
    /// The group it belongs to.
    pub group: Option<String>,
    /// The parent's journal record of the submission, to be stored before the
    /// child starts; `None` when it is already stored.
    pub record: Option<JournalEntry>,
    /// Told once `record` is stored (dropped if storing it failed).
    pub stored: Option<oneshot::Sender<()>>,
    /// The parent attempt's hold on its run, which `record` is stored under.
    pub fence: Option<Fence>,
    /// Replaying a cassette: read the child's recorded result, never run it.
    pub replay: bool,
    /// The parent's tenant, which the child belongs to.
    pub tenant: Tenant,
    /// Where the child sits in its tree.
    pub lineage: Lineage,
    /// Runs its tree may hold below its top-level run.
    pub max_descendants: u64,
}

/// Where a run sits in its tree of runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lineage {
    /// How far below its top-level run (0: it is one).
    pub depth: u32,
    /// Its top-level run (itself, for one).
    pub root: String,
}

impl Lineage {
    /// The lineage of a top-level run `id`.
    pub fn top(id: &str) -> Self {
        Lineage { depth: 0, root: id.to_owned() }
    }

    /// The lineage `run` records.
    pub fn of(run: &crate::model::RunRecord) -> Self {
        Lineage { depth: run.depth, root: run.root.clone().unwrap_or_else(|| run.id.clone()) }
    }
}

/// How far a run's submissions may grow its tree (from its environment's
/// `resources`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeLimits {
    /// Children one run may submit.
    pub children: u32,
    /// How far below the top-level run a child may sit.
    pub depth: u32,
    /// Runs the whole tree may hold below its top-level run.
    pub descendants: u64,
    /// Largest input of a child, in bytes.
    pub input: u64,
}

impl Default for TreeLimits {
    fn default() -> Self {
        TreeLimits { children: u32::MAX, depth: u32::MAX, descendants: u64::MAX, input: u64::MAX }
    }
}

/// The inputs of the children one call submits, in bytes together: a child
/// waiting for its turn keeps its input in the host's memory until it starts.
pub const MAX_CHILD_INPUTS: u64 = 256 << 20;

/// Groups open at once, one inside the other, that a call may have.
pub const MAX_GROUP_DEPTH: usize = 64;
/// The longest full path (names joined by `/`) of a group.
pub const MAX_GROUP_PATH: usize = 1024;
/// Groups one call may open (each is a journal record).
pub const MAX_GROUPS: u32 = 10_000;

/// A child's final outcome: its output, or the failure that ended it.
pub type ChildOutcome = Result<String, Failure>;

/// Watches a child until its outcome is known (`Some`).
pub type ChildHandle = watch::Receiver<Option<ChildOutcome>>;

/// What submitting children needs from the host.
pub trait ChildRuns: Send + Sync {
    /// Whether a run of `parent_task` may submit `task`; the error is what
    /// the guest is told.
    fn admit(&self, parent_task: &str, task: &str) -> Result<(), Failure>;
    /// Starts the child, or re-attaches to it if it exists, and returns a
    /// handle that resolves with its outcome.
    fn start(&self, child: ChildStart) -> ChildHandle;
}

/// A submitted child, as the parent holds it.
pub struct Submitted {
    /// The child's run id.
    pub run_id: String,
    /// Its task.
    pub task: String,
    /// Resolves with its outcome.
    pub handle: ChildHandle,
    /// The run that submitted it: a warm instance may hold a handle from an earlier run.
    pub parent: String,
}

/// The submissions and open groups of one guest call.
pub struct Submissions {
    children: Option<Arc<dyn ChildRuns>>,
    /// Open groups, innermost last: (id, full path).
    groups: Vec<(u64, String)>,
    /// Ids given to groups so far (never reused on an instance).
    next_group: u64,
    /// Submissions whose journal record is not stored yet.
    unstored: Vec<oneshot::Receiver<()>>,
    /// The calling run's tenant, which its children belong to.
    tenant: Tenant,
    /// Where the calling run sits in its tree, and how far it may grow it.
    lineage: Lineage,
    limits: TreeLimits,
    /// Children submitted (or re-attached to) in this call, and their inputs' bytes.
    submitted: u32,
    input_bytes: u64,
    /// Groups opened on the instance before this call (ids are never reused).
    groups_before: u64,
}

fn refused(kind: FailureKind, message: String) -> Failure {
    Failure::new(kind, message, false)
}

impl Submissions {
    /// Submissions through `children`; `None` where children are not allowed.
    pub fn new(children: Option<Arc<dyn ChildRuns>>) -> Self {
        Submissions {
            children,
            groups: Vec::new(),
            next_group: 0,
            unstored: Vec::new(),
            tenant: Tenant::default(),
            lineage: Lineage::default(),
            limits: TreeLimits::default(),
            submitted: 0,
            input_bytes: 0,
            groups_before: 0,
        }
    }

    /// Children submitted from now on are of a run at `lineage`, under `limits`.
    pub fn set_tree(&mut self, lineage: &Lineage, limits: TreeLimits) {
        self.lineage.clone_from(lineage);
        self.limits = limits;
    }

    /// Children submitted from now on belong to `tenant` (the calling run's).
    pub fn set_tenant(&mut self, tenant: &Tenant) {
        if self.tenant != *tenant {
            self.tenant = tenant.clone();
        }
    }

    /// Forgets the last call's open groups and pending records.
    pub fn reset(&mut self) {
        self.groups.clear();
        self.unstored.clear();
        self.submitted = 0;
        self.input_bytes = 0;
        self.groups_before = self.next_group;
    }

    /// Receivers told when each submission's record is stored: the attempt
    /// must not end before, so its retry finds every child.
    pub fn take_unstored(&mut self) -> Vec<oneshot::Receiver<()>> {
        std::mem::take(&mut self.unstored)
    }

    /// Submits `task` on `input` as a child of the run `journal` belongs to
    /// (whose task is `parent_task`), or re-attaches to the child an earlier
    /// attempt submitted. The inner error is the guest's to handle.
    pub async fn submit(
        &mut self,
        journal: &mut Journal,
        parent_task: &str,
        task: String,
        input: String,
    ) -> Result<Result<Submitted, Failure>, ServiceError> {
        let Some(children) = self.children.clone() else {
            return Ok(Err(refused(FailureKind::HostError, "child tasks cannot be submitted from this call".into())));
        };
        if let Err(failure) = children.admit(parent_task, &task) {
            return Ok(Err(failure));
        }
        // A tree's growth is bounded, so a task submitting itself cannot fill the store.
        if self.submitted >= self.limits.children {
            let message = format!(
                "run {} already submitted {} children, its environment's `resources.max_children`; submit fewer, or raise it",
                journal.run_id(),
                self.limits.children
            );
            return Ok(Err(refused(FailureKind::TooManyChildren, message)));
        }
        if self.lineage.depth >= self.limits.depth {
            let message = format!(
                "a child of run {} would sit {} levels below its top-level run {}, past its environment's `resources.max_depth` of {}",
                journal.run_id(),
                self.lineage.depth.saturating_add(1),
                self.lineage.root,
                self.limits.depth
            );
            return Ok(Err(refused(FailureKind::TooDeep, message)));
        }
        if input.len() as u64 > self.limits.input {
            let message = format!(
                "the input of child task {task:?} is {} bytes, more than `resources.max_input` ({}); pass large data by reference (a file)",
                input.len(),
                self.limits.input
            );
            return Ok(Err(refused(FailureKind::InputTooLarge, message)));
        }
        if self.input_bytes + input.len() as u64 > MAX_CHILD_INPUTS {
            let message = format!(
                "the inputs of the children this attempt submits would pass {} MiB together; pass large data by reference (a file)",
                MAX_CHILD_INPUTS >> 20
            );
            return Ok(Err(refused(FailureKind::InputTooLarge, message)));
        }
        if let Err(e) = serde_json::from_str::<serde_json::Value>(&input) {
            let message = format!("the input of child task {task:?} is not JSON: {e}");
            return Ok(Err(refused(FailureKind::InvalidInput, message)));
        }
        let key = journal.next_key(CallKind::Child, &task, &canonical_input(&input));
        let group = self.groups.last().map(|(_, path)| path.clone());
        let (id, record) = match journal.lookup(&key).await? {
            Some(entry) => {
                let link: ChildLink =
                    serde_json::from_str(&entry.output).map_err(ServiceError::record("child link"))?;
                (link.run_id, None)
            }
            None => {
                let input_start: String = input.chars().take(60).collect();
                if let Some(miss) = journal.replay_miss(&key, format!(", input {input_start:?}")) {
                    return Err(miss.into());
                }
                let id = uuid::Uuid::now_v7().to_string();
                let link = serde_json::to_string(&ChildLink { run_id: id.clone(), group: group.clone() })
                    .map_err(ServiceError::record("child link"))?;
                let summary = match &group {
                    Some(group) => format!("{task} in {group}: {input_start}"),
                    None => format!("{task}: {input_start}"),
                };
                let entry = journal.record_deferred(key, link, summary, Duration::ZERO, None).await?;
                (id, Some(entry))
            }
        };
        let replay = !journal.live_allowed();
        // The attempt does not end before this record is stored, so its retry finds it.
        let stored = record.as_ref().map(|_| {
            let (sender, receiver) = oneshot::channel();
            self.unstored.push(receiver);
            sender
        });
        self.submitted += 1;
        self.input_bytes += input.len() as u64;
        let parent = journal.run_id().to_owned();
        let lineage = Lineage { depth: self.lineage.depth.saturating_add(1), root: self.lineage.root.clone() };
        let handle = children.start(ChildStart {
            id: id.clone(),
            parent: parent.clone(),
            task: task.clone(),
            input,
            group,
            record,
            stored,
            replay,
            fence: journal.fence().cloned(),
            tenant: self.tenant.clone(),
            lineage,
            max_descendants: self.limits.descendants,
        });
        Ok(Ok(Submitted { run_id: id, task, handle, parent }))
    }

    /// Opens group `name` inside the innermost open one; returns its id and
    /// full path. The opening is journaled, so `cairn runs journal` shows it.
    pub async fn open_group(&mut self, journal: &mut Journal, name: String) -> Result<(u64, String), ServiceError> {
        let path = match self.groups.last() {
            Some((_, outer)) => format!("{outer}/{name}"),
            None => name,
        };
        if self.next_group >= u64::from(MAX_GROUPS) + self.groups_before {
            let message = format!("the call opened {MAX_GROUPS} groups already, as many as the host keeps of one call");
            return Err(crate::model::LimitHit(Failure::new(FailureKind::GroupLimit, message, false)).into());
        }
        if self.groups.len() >= MAX_GROUP_DEPTH || path.len() > MAX_GROUP_PATH {
            let message = format!(
                "group {:?} would be {} deep with a path of {} bytes; the host keeps groups {MAX_GROUP_DEPTH} deep and {MAX_GROUP_PATH} bytes long at most (close groups you are done with)",
                crate::model::cut_with_note(path.clone(), 80),
                self.groups.len() + 1,
                path.len()
            );
            return Err(crate::model::LimitHit(Failure::new(FailureKind::GroupLimit, message, false)).into());
        }
        let key = journal.next_key(CallKind::Group, &path, "");
        if journal.lookup(&key).await?.is_none() && journal.live_allowed() {
            journal.record(key, "{}".into(), path.clone(), Duration::ZERO, None).await?;
        }
        self.next_group += 1;
        let id = self.next_group;
        self.groups.push((id, path.clone()));
        Ok((id, path))
    }

    /// Closes the group with id `id`, wherever it is among the open ones.
    pub fn close_group(&mut self, id: u64) {
        if let Some(index) = self.groups.iter().position(|(open, _)| *open == id) {
            self.groups.remove(index);
        }
    }
}

/// Waits for a child's outcome; a failure keeps its kind and names the child.
pub async fn outcome(run_id: &str, task: &str, mut handle: ChildHandle) -> Result<String, Failure> {
    let outcome = loop {
        if let Some(outcome) = handle.borrow_and_update().clone() {
            break outcome;
        }
        if handle.changed().await.is_err() {
            break Err(Failure::host(format!("the host stopped running child run {run_id}")));
        }
    };
    outcome.map_err(|failure| Failure {
        kind: failure.kind,
        message: format!("child run {run_id} (task {task:?}) failed: {}", failure.message),
        retryable: failure.retryable,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::journal::JournalMode;
    use crate::store::JournalStore;
    use crate::store::redb::RedbStore;

    /// Children that finish at once with their input as output. Like the
    /// runner, it stores the parent's record before the child starts.
    struct Echo {
        store: Arc<dyn JournalStore>,
        started: Mutex<Vec<ChildStart>>,
    }

    impl Echo {
        fn new(store: Arc<dyn JournalStore>) -> Arc<Self> {
            Arc::new(Echo { store, started: Mutex::new(Vec::new()) })
        }
    }

    impl ChildRuns for Echo {
        fn admit(&self, _parent: &str, task: &str) -> Result<(), Failure> {
            match task {
                "forbidden" => Err(refused(FailureKind::InvalidChild, "no".into())),
                _ => Ok(()),
            }
        }

        fn start(&self, mut child: ChildStart) -> ChildHandle {
            if let Some(record) = &child.record {
                futures_lite_block_on(self.store.journal_put(record, None)).expect("the parent's record is stored");
            }
            if let Some(stored) = child.stored.take() {
                let _ = stored.send(());
            }
            let handle = watch::channel(Some(Ok(child.input.clone()))).1;
            self.started.lock().unwrap().push(child);
            handle
        }
    }

    /// Runs a store write to its end from synchronous code inside a test runtime.
    fn futures_lite_block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(future))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn submissions_past_the_tree_limits_are_refused_with_their_own_kinds() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn JournalStore> = Arc::new(RedbStore::open(&dir.path().join("s.redb")).unwrap());
        let echo = Echo::new(store.clone());
        let mut journal = Journal::new(store.clone(), "parent", 1, JournalMode::Live);
        let mut submissions = Submissions::new(Some(echo.clone()));
        let limits = TreeLimits { children: 2, depth: 3, descendants: 100, input: 64 };
        submissions.set_tree(&Lineage { depth: 1, root: "root".into() }, limits);
        let kind_of = |outcome: Result<Submitted, Failure>| outcome.err().map(|f| f.kind);
        let big = format!(r#"{{"pad": "{}"}}"#, "x".repeat(64));
        let refused = submissions.submit(&mut journal, "p", "c".into(), big).await.unwrap();
        assert_eq!(kind_of(refused), Some(FailureKind::InputTooLarge));
        for n in 0..2 {
            let ok = submissions.submit(&mut journal, "p", "c".into(), format!(r#"{{"n": {n}}}"#)).await.unwrap();
            assert!(ok.is_ok());
        }
        let third = submissions.submit(&mut journal, "p", "c".into(), "{}".into()).await.unwrap();
        assert_eq!(kind_of(third), Some(FailureKind::TooManyChildren));
        {
            let started = echo.started.lock().unwrap();
            let lineages: Vec<_> = started.iter().map(|c| (c.lineage.depth, c.lineage.root.as_str())).collect();
            assert_eq!(lineages, [(2, "root"), (2, "root")], "children sit one level below, in the same tree");
        }
        submissions.set_tree(&Lineage { depth: 3, root: "root".into() }, limits);
        submissions.reset();
        let deep = submissions.submit(&mut journal, "p", "c".into(), "{}".into()).await.unwrap();
        assert_eq!(kind_of(deep), Some(FailureKind::TooDeep));
        for stored in submissions.take_unstored() {
            stored.await.unwrap();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_retried_parent_re_attaches_to_the_same_children_in_their_groups() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn JournalStore> = Arc::new(RedbStore::open(&dir.path().join("s.redb")).unwrap());
        let echo = Echo::new(store.clone());
        let mut ids = Vec::new();
        for attempt in 1..=2 {
            let mut journal = Journal::new(store.clone(), "parent", attempt, JournalMode::Live);
            let mut submissions = Submissions::new(Some(echo.clone()));
            let (outer, _) = submissions.open_group(&mut journal, "batch".into()).await.unwrap();
            let (inner, path) = submissions.open_group(&mut journal, "part".into()).await.unwrap();
            assert_eq!(path, "batch/part", "groups nest");
            let child = submissions.submit(&mut journal, "driver", "writer".into(), r#"{"n": 1}"#.into());
            let child = child.await.unwrap().unwrap();
            assert_eq!(child.parent, "parent");
            assert_eq!(outcome(&child.run_id, &child.task, child.handle).await.unwrap(), r#"{"n": 1}"#);
            submissions.close_group(outer);
            submissions.close_group(inner);
            let outside = submissions.submit(&mut journal, "driver", "writer".into(), "{}".into()).await.unwrap();
            assert!(outside.is_ok());
            for stored in submissions.take_unstored() {
                stored.await.unwrap();
            }
            ids.push(child.run_id);
        }
        assert_eq!(ids[0], ids[1], "the retry re-attached to the child the first attempt submitted");
        let started = echo.started.lock().unwrap();
        let groups: Vec<_> = started.iter().map(|c| (c.group.clone(), c.record.is_some())).collect();
        assert_eq!(
            groups,
            [
                (Some("batch/part".to_owned()), true),
                (None, true),
                (Some("batch/part".to_owned()), false),
                (None, false)
            ],
            "the first attempt stores two records, the retry none"
        );
        let kinds: Vec<_> = store.journal_of("parent").unwrap().iter().map(|e| e.key.kind).collect();
        assert_eq!(kinds, [CallKind::Group, CallKind::Group, CallKind::Child, CallKind::Child]);
    }

    #[tokio::test]
    async fn a_failed_child_keeps_its_kind_and_is_named() {
        let (sender, handle) = watch::channel(None);
        sender.send(Some(Err(Failure::new(FailureKind::Timeout, "too slow", true)))).unwrap();
        let failure = outcome("c-1", "writer", handle).await.unwrap_err();
        assert_eq!(failure.kind, FailureKind::Timeout);
        assert!(failure.retryable);
        assert!(failure.message.contains("child run c-1 (task \"writer\") failed: too slow"), "{}", failure.message);
        let (sender, handle) = watch::channel(None);
        drop(sender);
        assert_eq!(outcome("c-2", "writer", handle).await.unwrap_err().kind, FailureKind::HostError);
    }

    #[tokio::test]
    async fn refusals_are_the_guests_to_handle() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn JournalStore> = Arc::new(RedbStore::open(&dir.path().join("s.redb")).unwrap());
        let mut journal = Journal::new(store.clone(), "parent", 1, JournalMode::Live);
        let mut none = Submissions::new(None);
        let refused = none.submit(&mut journal, "p", "t".into(), "{}".into()).await.unwrap();
        assert_eq!(refused.err().unwrap().kind, FailureKind::HostError);
        let mut some = Submissions::new(Some(Echo::new(store)));
        let forbidden = some.submit(&mut journal, "p", "forbidden".into(), "{}".into()).await.unwrap();
        assert_eq!(forbidden.err().unwrap().kind, FailureKind::InvalidChild);
        let bad = some.submit(&mut journal, "p", "t".into(), "not json".into()).await.unwrap();
        assert_eq!(bad.err().unwrap().kind, FailureKind::InvalidInput);
    }
}
