//! The run journal: replay keys and record/lookup on top of the store.
//!
//! A call's key is (run, kind, name, sha256 of canonical input, occurrence),
//! where occurrence n means "the n-th call with this input in this attempt".
//! Each attempt starts counting from zero, so a retried or resumed attempt
//! that makes the same calls in the same order finds every recorded result.
//! A guest that changed makes different calls and simply misses: the call is
//! then made live, never answered with a wrong recording.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::llm::Usage;
use crate::store::{CallKind, JournalEntry, ReplayKey, Store, StoreError, now_ms};

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
    /// The blocking store task panicked or was cancelled.
    #[error("journal of run {0}: the store worker stopped unexpectedly")]
    Worker(String),
}

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

/// One attempt's view of its run's journal.
pub struct Journal {
    store: Arc<dyn Store>,
    run_id: String,
    attempt: u32,
    next_seq: u64,
    occurrences: HashMap<(CallKind, String, String), u32>,
    /// Trace steps recalled without a hit: the occurrence their `record` will use.
    pending_traces: HashMap<(String, String), Vec<u32>>,
}

impl Journal {
    /// Opens the journal of `run_id` for attempt `attempt`.
    pub async fn open(store: Arc<dyn Store>, run_id: &str, attempt: u32) -> Result<Self, JournalError> {
        let existing = {
            let store = store.clone();
            let run = run_id.to_owned();
            blocking(run_id, move || store.journal_of(&run)).await?
        };
        Ok(Journal {
            store,
            run_id: run_id.to_owned(),
            attempt,
            next_seq: existing.last().map_or(0, |e| e.seq + 1),
            occurrences: HashMap::new(),
            pending_traces: HashMap::new(),
        })
    }

    /// The key of the next call of `kind`/`name` with this canonical input.
    pub fn next_key(&mut self, kind: CallKind, name: &str, canonical: &str) -> ReplayKey {
        let input_hash = sha256_hex(canonical);
        let counter = self.occurrences.entry((kind, name.to_owned(), input_hash.clone())).or_insert(0);
        *counter += 1;
        ReplayKey { run_id: self.run_id.clone(), kind, name: name.to_owned(), input_hash, occurrence: *counter }
    }

    /// The recorded entry for `key`, if any.
    pub async fn lookup(&self, key: &ReplayKey) -> Result<Option<JournalEntry>, JournalError> {
        let store = self.store.clone();
        let key = key.clone();
        blocking(&self.run_id, move || store.journal_get(&key)).await
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
        let store = self.store.clone();
        blocking(&self.run_id, move || store.journal_put(&entry)).await
    }

    /// `trace.recall`: the recorded output of the next occurrence of this step.
    /// On a miss the occurrence is kept for the matching [`Journal::trace_record`].
    pub async fn trace_recall(&mut self, name: &str, input: &str) -> Result<Option<String>, JournalError> {
        let canonical = canonical_input(input);
        let key = self.next_key(CallKind::Trace, name, &canonical);
        match self.lookup(&key).await? {
            Some(entry) => Ok(Some(entry.output)),
            None => {
                self.pending_traces.entry((name.to_owned(), key.input_hash)).or_default().push(key.occurrence);
                Ok(None)
            }
        }
    }

    /// `trace.record`: stores a step's output under the occurrence its recall
    /// allocated, or the next one if the guest did not recall first.
    pub async fn trace_record(&mut self, name: &str, input: &str, output: &str) -> Result<(), JournalError> {
        let canonical = canonical_input(input);
        let input_hash = sha256_hex(&canonical);
        let pending = self.pending_traces.get_mut(&(name.to_owned(), input_hash.clone())).and_then(|stack| stack.pop());
        let key = match pending {
            Some(occurrence) => ReplayKey {
                run_id: self.run_id.clone(),
                kind: CallKind::Trace,
                name: name.to_owned(),
                input_hash,
                occurrence,
            },
            None => self.next_key(CallKind::Trace, name, &canonical),
        };
        let summary: String = canonical.chars().take(80).collect();
        self.record(key, output.to_owned(), summary, Duration::ZERO, None).await
    }
}

async fn blocking<T: Send + 'static>(
    run_id: &str,
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, JournalError> {
    match tokio::task::spawn_blocking(work).await {
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
        let store: Arc<dyn Store> = Arc::new(crate::store::redb::RedbStore::open(&dir.path().join("j.redb")).unwrap());
        let mut first = Journal::open(store.clone(), "run-1", 1).await.unwrap();
        assert_eq!(first.trace_recall("step", "{\"x\":1}").await.unwrap(), None);
        first.trace_record("step", "{\"x\":1}", "\"one\"").await.unwrap();
        assert_eq!(first.trace_recall("step", "{\"x\":1}").await.unwrap(), None);
        first.trace_record("step", "{\"x\":1}", "\"two\"").await.unwrap();

        let mut second = Journal::open(store.clone(), "run-1", 2).await.unwrap();
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
}
