//! The run journal: replay keys and record/lookup on top of the store.
//!
//! A call's key is (run, kind, name, sha256 of canonical input, occurrence),
//! where occurrence n means "the n-th call with this input in this attempt".
//! Each attempt starts counting from zero, so a retried or resumed attempt
//! that makes the same calls in the same order finds every recorded result.
//! A guest that changed makes different calls and simply misses: the call is
//! then made live, never answered with a wrong recording.
//!
//! Occurrences count within the enclosing traced step. A step that missed
//! (its body runs) opens a scope until its `record`; the calls its body makes
//! hash that scope into their keys. A resumed attempt that recalls the
//! completed step skips its body, and so its inner calls: counted in the
//! step's scope, they could not have moved the counters of the calls around
//! it, which therefore get exactly the keys (and answers) an uninterrupted
//! run gave them.

#[cfg(test)]
mod exact_replay;
pub mod load;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::model::{CallKind, Fence, JournalEntry, ReplayKey, Usage, cut_with_note, now_ms};
use crate::store::{JournalStore, StoreError};

/// Errors from journal access.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The store failed; the attempt cannot continue safely.
    #[error("journal of run {run_id}: {source}")]
    Store {
        /// The run.
        run_id: String,
        /// The store's error.
        source: StoreError,
    },
    /// In replay, the guest made a call the cassette does not have.
    #[error(
        "replay of run {source_run}: the cassette has no answer for {kind} call {name:?} #{occurrence} (input sha256 {input_hash}){detail}; live calls are forbidden in replay: record a new run, or check what changed in the guest"
    )]
    ReplayMiss {
        /// The run replayed.
        source_run: String,
        /// `llm` or `trace`.
        kind: &'static str,
        /// The call's name.
        name: String,
        /// Hash of its canonical input.
        input_hash: String,
        /// Which occurrence.
        occurrence: u32,
        /// A hint about the call, e.g. the prompt's start.
        detail: String,
    },
    /// The blocking store task panicked or was cancelled.
    #[error("journal of run {0}: the store worker stopped unexpectedly")]
    Worker(String),
    /// The run recorded more than its environment lets it.
    #[error(
        "journal of run {run_id}: this record would make the run's journal {records} entries of {bytes} bytes, past {}",
        if records > max_records { format!("the host's {max_records} entries per run; record fewer (fewer traced steps or children)") } else { format!("its environment's `resources.max_journal` of {max_bytes} bytes per run (LLM answers, traced steps, children, all attempts together); record less, or raise it") }
    )]
    TooLarge {
        /// The run.
        run_id: String,
        /// Entries and bytes with the refused one.
        records: u64,
        /// Bytes with the refused one.
        bytes: u64,
        /// The limits.
        max_records: u64,
        /// The limits.
        max_bytes: u64,
    },
}

/// Entries one run's journal may hold, whatever their size.
pub const MAX_RECORDS: u64 = 100_000;

/// A canonical text form of an input: JSON is re-serialised with sorted keys
/// and no insignificant whitespace; anything else is kept as is.
pub fn canonical_input(text: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(value) => value.to_string(),
        Err(_) => text.to_owned(),
    }
}

/// sha256 of `text`, hex.
pub fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Where a journal answers lookups from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JournalMode {
    /// The run's own journal; a miss makes the call live.
    Live,
    /// Another run's journal (a cassette); a miss is an error, nothing is called live.
    Replay {
        /// The run whose journal answers.
        source: String,
    },
}

/// A call's identity within a run: the replay key without the run id.
type CallId = (CallKind, String, String, u32);

/// A traced step whose body is running: where its `record` files its output,
/// and the scope of the calls its body makes.
struct OpenStep {
    name: String,
    /// sha256 of the step's canonical input, unscoped: what `record` matches.
    input: String,
    /// The key its recall missed, which its record fills.
    key: ReplayKey,
    /// What the calls inside it hash in with their inputs.
    scope: String,
}

/// The input hash of a call in `scope` (empty at the top of the attempt).
fn scoped_hash(scope: &str, input_hash: String) -> String {
    if scope.is_empty() { input_hash } else { sha256_hex(&format!("{scope}\n{input_hash}")) }
}

/// What a record counts against `max_journal`: its output, summary and key.
fn record_size(key: &ReplayKey, output: &str, summary: &str) -> u64 {
    (output.len() + summary.len() + key.name.len() + key.input_hash.len()) as u64
}

fn entry_size(entry: &JournalEntry) -> u64 {
    record_size(&entry.key, &entry.output, &entry.summary)
}

fn call_id(key: &ReplayKey) -> CallId {
    (key.kind, key.name.clone(), key.input_hash.clone(), key.occurrence)
}

/// One attempt's view of its run's journal. The run's recorded entries are
/// loaded once, at the attempt's first journaled call, so a replayed call
/// costs a map lookup and an attempt that journals nothing reads nothing.
pub struct Journal {
    store: Arc<dyn JournalStore>,
    run_id: String,
    attempt: u32,
    next_seq: u64,
    mode: JournalMode,
    loaded: bool,
    recorded: HashMap<CallId, JournalEntry>,
    occurrences: HashMap<(CallKind, String, String), u32>,
    /// Traced steps recalled without a hit, whose bodies are running,
    /// innermost last: each is the scope of the calls made inside it.
    open_steps: Vec<OpenStep>,
    /// LLM calls whose answers the guest rejected in an earlier attempt (or
    /// in the cassette's run): their occurrences are skipped, so the call is
    /// asked again instead of answered with what was rejected.
    rejected: HashSet<CallId>,
    /// What every record carries to show the run is still this host's.
    fence: Option<Fence>,
    /// Entries and bytes the run's journal holds (every attempt's, counted
    /// as it is loaded), and the most it may.
    records: u64,
    bytes: u64,
    max_bytes: u64,
}

/// One instance's journal, shared by the interfaces that journal: the
/// adapters lock it for a call, and work the guest left running in the
/// background (an outbound HTTP request) locks it when it completes.
pub type SharedJournal = Arc<tokio::sync::Mutex<Journal>>;

impl Journal {
    /// The journal of `run_id` as seen by attempt `attempt`. Nothing is read
    /// until the first call needs it, so an attempt that journals nothing
    /// costs no store read.
    pub fn new(store: Arc<dyn JournalStore>, run_id: &str, attempt: u32, mode: JournalMode) -> Self {
        Journal {
            store,
            run_id: run_id.to_owned(),
            attempt,
            next_seq: 0,
            mode,
            loaded: false,
            recorded: HashMap::new(),
            occurrences: HashMap::new(),
            open_steps: Vec::new(),
            rejected: HashSet::new(),
            fence: None,
            records: 0,
            bytes: 0,
            max_bytes: u64::MAX,
        }
    }

    /// Bounds what the run's journal may hold, all attempts together, to
    /// `max_bytes` (of outputs, summaries and names) and [`MAX_RECORDS`] entries.
    pub fn set_max_bytes(&mut self, max_bytes: u64) {
        self.max_bytes = max_bytes;
    }

    /// Records from now on carry `fence` (the attempt's hold on its run) and
    /// are refused once another host claimed the run.
    pub fn set_fence(&mut self, fence: Option<&Fence>) {
        if self.fence.as_ref() != fence {
            self.fence = fence.cloned();
        }
    }

    /// The fence records carry, if any.
    pub fn fence(&self) -> Option<&Fence> {
        self.fence.as_ref()
    }

    /// Turns this journal into [`Journal::new`]'s for another run or attempt,
    /// keeping its allocations (a warm instance's next call).
    pub fn reset(&mut self, run_id: &str, attempt: u32, mode: &JournalMode) {
        self.run_id.clear();
        self.run_id.push_str(run_id);
        self.attempt = attempt;
        self.next_seq = 0;
        if self.mode != *mode {
            self.mode = mode.clone();
        }
        self.loaded = false;
        self.recorded.clear();
        self.occurrences.clear();
        self.open_steps.clear();
        self.rejected.clear();
        self.records = 0;
        self.bytes = 0;
    }

    /// [`Journal::new`], read at once.
    pub async fn open(
        store: Arc<dyn JournalStore>,
        run_id: &str,
        attempt: u32,
        mode: JournalMode,
    ) -> Result<Self, JournalError> {
        let mut journal = Self::new(store, run_id, attempt, mode);
        journal.load().await?;
        Ok(journal)
    }

    /// Reads the run's own records (and a cassette's, in replay) once.
    async fn load(&mut self) -> Result<(), JournalError> {
        if self.loaded {
            return Ok(());
        }
        let own = read_all(&self.store, &self.run_id).await?;
        self.next_seq = own.iter().map(|e| e.seq.saturating_add(1)).max().unwrap_or(0).max(self.next_seq);
        // Earlier attempts' records count against the run's limit: a retried run
        // cannot grow its journal by another `max_journal` per attempt.
        self.records += own.len() as u64;
        self.bytes += own.iter().map(entry_size).sum::<u64>();
        let answers = match &self.mode {
            JournalMode::Live => own,
            JournalMode::Replay { source } => read_all(&self.store, source).await?,
        };
        for answer in &answers {
            if answer.key.kind == CallKind::Reject {
                let k = &answer.key;
                self.rejected.insert((CallKind::Llm, k.name.clone(), k.input_hash.clone(), k.occurrence));
            }
        }
        self.recorded.extend(answers.into_iter().map(|e| (call_id(&e.key), e)));
        self.loaded = true;
        Ok(())
    }

    pub fn live_allowed(&self) -> bool {
        self.mode == JournalMode::Live
    }

    /// The error for a call that missed in replay mode (`None` in live mode).
    pub fn replay_miss(&self, key: &ReplayKey, detail: String) -> Option<JournalError> {
        match &self.mode {
            JournalMode::Live => None,
            JournalMode::Replay { source } => Some(JournalError::ReplayMiss {
                source_run: source.clone(),
                kind: key.kind.as_str(),
                name: key.name.clone(),
                input_hash: key.input_hash.clone(),
                occurrence: key.occurrence,
                detail,
            }),
        }
    }

    /// The run this journal belongs to.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// The key of the next call of `kind`/`name` with this canonical input,
    /// counted within the innermost open traced step.
    pub fn next_key(&mut self, kind: CallKind, name: &str, canonical: &str) -> ReplayKey {
        let scope = self.open_steps.last().map_or("", |step| step.scope.as_str());
        let input_hash = scoped_hash(scope, sha256_hex(canonical));
        let counter = self.occurrences.entry((kind, name.to_owned(), input_hash.clone())).or_insert(0);
        *counter += 1;
        ReplayKey { run_id: self.run_id.clone(), kind, name: name.to_owned(), input_hash, occurrence: *counter }
    }

    /// [`Journal::next_key`] for an LLM call, past the occurrences whose
    /// answers the guest rejected: the call is asked again, and its new answer
    /// recorded under a key of its own.
    pub async fn next_answer_key(&mut self, name: &str, canonical: &str) -> Result<ReplayKey, JournalError> {
        self.load().await?;
        let mut key = self.next_key(CallKind::Llm, name, canonical);
        while self.rejected.contains(&call_id(&key)) {
            key = self.next_key(CallKind::Llm, name, canonical);
        }
        Ok(key)
    }

    /// Records that the guest rejected the answer recorded under `key` (an
    /// LLM call), with its reason: later attempts ask that call again.
    pub async fn reject(&mut self, key: &ReplayKey, reason: &str) -> Result<(), JournalError> {
        let why = cut_with_note(reason.to_owned(), 1024);
        let summary = format!("rejected {} answer #{}", key.kind.as_str(), key.occurrence);
        let mark = ReplayKey { kind: CallKind::Reject, ..key.clone() };
        self.record(mark, why, summary, Duration::ZERO, None).await
    }

    /// Gives back the occurrence [`Journal::next_key`] handed out for `key`
    /// when the call ended with nothing to record (a transient failure), so
    /// the next identical call takes it, as a resumed run's first would.
    /// Only the latest occurrence can be given back.
    pub fn release(&mut self, key: &ReplayKey) {
        if let Some(counter) = self.occurrences.get_mut(&(key.kind, key.name.clone(), key.input_hash.clone()))
            && *counter == key.occurrence
        {
            *counter -= 1;
        }
    }

    /// The recorded entry for `key`, if any. In replay mode a hit is also
    /// copied into this run's journal, so the run shows what it used.
    pub async fn lookup(&mut self, key: &ReplayKey) -> Result<Option<JournalEntry>, JournalError> {
        self.load().await?;
        let Some(entry) = self.recorded.get(&call_id(key)).cloned() else {
            return Ok(None);
        };
        if !self.live_allowed() {
            let copy = JournalEntry { key: key.clone(), seq: self.next_seq, attempt: self.attempt, ..entry.clone() };
            self.next_seq += 1;
            self.put(copy).await?;
        }
        Ok(Some(entry))
    }

    /// Records a live call's result durably; returns once it is stored.
    pub async fn record(
        &mut self,
        key: ReplayKey,
        output: String,
        summary: String,
        took: Duration,
        usage: Option<Usage>,
    ) -> Result<(), JournalError> {
        let entry = self.record_deferred(key, output, summary, took, usage).await?;
        self.put(entry).await
    }

    /// Takes a record into this attempt's view (and its sequence number) but
    /// leaves storing it to the caller: for work that must not start before
    /// the record is durable, without making the guest wait for that.
    pub async fn record_deferred(
        &mut self,
        key: ReplayKey,
        output: String,
        summary: String,
        took: Duration,
        usage: Option<Usage>,
    ) -> Result<JournalEntry, JournalError> {
        self.load().await?;
        let (records, bytes) = (self.records + 1, self.bytes + record_size(&key, &output, &summary));
        if records > MAX_RECORDS || bytes > self.max_bytes {
            return Err(JournalError::TooLarge {
                run_id: self.run_id.clone(),
                records,
                bytes,
                max_records: MAX_RECORDS,
                max_bytes: self.max_bytes,
            });
        }
        (self.records, self.bytes) = (records, bytes);
        let entry = JournalEntry {
            key,
            seq: self.next_seq,
            attempt: self.attempt,
            output,
            summary,
            recorded_at_ms: now_ms(),
            duration_ms: took.as_millis() as u64,
            usage,
        };
        self.next_seq += 1;
        if self.live_allowed() {
            self.recorded.insert(call_id(&entry.key), entry.clone());
        }
        Ok(entry)
    }

    /// The store this journal records into.
    pub fn store(&self) -> &Arc<dyn JournalStore> {
        &self.store
    }

    /// The attempt this view belongs to.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    async fn put(&self, entry: JournalEntry) -> Result<(), JournalError> {
        self.store
            .journal_put(&entry, self.fence.as_ref())
            .await
            .map_err(|source| JournalError::Store { run_id: self.run_id.clone(), source })
    }

    /// `trace.recall`: the recorded output of the next occurrence of this
    /// step. On a miss the step opens: the calls made until its
    /// [`Journal::trace_record`] count within it.
    pub async fn trace_recall(&mut self, name: &str, input: &str) -> Result<Option<String>, JournalError> {
        let canonical = canonical_input(input);
        let key = self.next_key(CallKind::Trace, name, &canonical);
        if let Some(entry) = self.lookup(&key).await? {
            return Ok(Some(entry.output));
        }
        let scope = sha256_hex(&format!("step\n{}\n{}\n{}", key.name, key.input_hash, key.occurrence));
        self.open_steps.push(OpenStep { name: name.to_owned(), input: sha256_hex(&canonical), key, scope });
        Ok(None)
    }

    /// `trace.record`: stores a step's output under the key its recall
    /// missed, and closes it (with any step inside it a guest abandoned, e.g.
    /// one whose body failed). A record with no recall takes the next key.
    pub async fn trace_record(&mut self, name: &str, input: &str, output: &str) -> Result<(), JournalError> {
        let canonical = canonical_input(input);
        let input_hash = sha256_hex(&canonical);
        let open = self.open_steps.iter().rposition(|step| step.name == name && step.input == input_hash);
        let key = match open {
            Some(at) => self.open_steps.drain(at..).next().map(|step| step.key),
            None => None,
        };
        let key = key.unwrap_or_else(|| self.next_key(CallKind::Trace, name, &canonical));
        let summary: String = canonical.chars().take(80).collect();
        self.record(key, output.to_owned(), summary, Duration::ZERO, None).await
    }
}

async fn read_all(store: &Arc<dyn JournalStore>, run_id: &str) -> Result<Vec<JournalEntry>, JournalError> {
    let store = store.clone();
    let run = run_id.to_owned();
    match tokio::task::spawn_blocking(move || store.journal_of(&run)).await {
        Ok(result) => result.map_err(|source| JournalError::Store { run_id: run_id.to_owned(), source }),
        Err(_) => Err(JournalError::Worker(run_id.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_ignores_key_order_and_spacing() {
        assert_eq!(canonical_input(r#"{ "b": 1, "a": [1, 2] }"#), canonical_input(r#"{"a":[1,2],"b":1}"#));
        assert_eq!(canonical_input("not json"), "not json");
    }

    #[tokio::test]
    async fn occurrences_replay_in_order_across_attempts() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn JournalStore> =
            Arc::new(crate::store::redb::RedbStore::open(&dir.path().join("j.redb")).unwrap());
        let mut first = Journal::open(store.clone(), "run-1", 1, JournalMode::Live).await.unwrap();
        assert_eq!(first.trace_recall("step", "{\"x\":1}").await.unwrap(), None);
        first.trace_record("step", "{\"x\":1}", "\"one\"").await.unwrap();
        assert_eq!(first.trace_recall("step", "{\"x\":1}").await.unwrap(), None);
        first.trace_record("step", "{\"x\":1}", "\"two\"").await.unwrap();

        let mut second = Journal::open(store.clone(), "run-1", 2, JournalMode::Live).await.unwrap();
        assert_eq!(second.trace_recall("step", "{ \"x\": 1 }").await.unwrap().as_deref(), Some("\"one\""));
        assert_eq!(second.trace_recall("step", "{\"x\":1}").await.unwrap().as_deref(), Some("\"two\""));
        assert_eq!(
            second.trace_recall("step", "{\"x\":1}").await.unwrap(),
            None,
            "a third occurrence was never recorded"
        );
        assert_eq!(store.journal_of("run-1").unwrap().len(), 2);
        assert_eq!(second.next_seq, 2);
    }

    #[tokio::test]
    async fn the_journal_limit_counts_every_attempt_of_the_run() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn JournalStore> =
            Arc::new(crate::store::redb::RedbStore::open(&dir.path().join("j.redb")).unwrap());
        let value = format!("\"{}\"", "v".repeat(200));
        let mut first = Journal::new(store.clone(), "run-1", 1, JournalMode::Live);
        first.set_max_bytes(1000);
        for i in 0..2 {
            first.trace_record(&format!("step-{i}"), "{}", &value).await.unwrap();
        }
        // A retry starts from what the run already holds: room for one more, not three.
        let mut second = Journal::new(store.clone(), "run-1", 2, JournalMode::Live);
        second.set_max_bytes(1000);
        second.trace_record("step-2", "{}", &value).await.unwrap();
        let refused = second.trace_record("step-3", "{}", &value).await.unwrap_err();
        let JournalError::TooLarge { records, max_bytes, .. } = &refused else { panic!("{refused}") };
        assert_eq!((*records, *max_bytes), (4, 1000));
        assert!(refused.to_string().contains("per run"), "{refused}");
        assert_eq!(store.journal_of("run-1").unwrap().len(), 3);
        // Another run has its own room.
        let mut other = Journal::new(store, "run-2", 1, JournalMode::Live);
        other.set_max_bytes(1000);
        other.trace_record("step-0", "{}", &value).await.unwrap();
    }
}
