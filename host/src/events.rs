//! What a host's runs are doing, as a stream of events: a run started, an
//! attempt began or ended, a call was journaled, a child started or ended, a
//! report was flushed, a run finished. The server streams them to clients
//! (server-sent events); nothing in the host waits for a listener, and a
//! listener that falls behind loses the oldest events, never slows a run.

use std::sync::Arc;

use serde::Serialize;
use tokio::sync::broadcast;

use crate::model::{Failure, Fence, JournalEntry, ReplayKey, now_ms};
use crate::store::{JournalStore, StoreError};

/// Events a listener may fall behind by before it loses the oldest.
pub const BACKLOG: usize = 4096;

/// One event of one run.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// The run.
    pub run_id: String,
    /// When, ms since the Unix epoch.
    pub at_ms: u64,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What happened.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum EventKind {
    /// A run was made (top-level or child).
    RunStarted {
        /// Its task.
        task: String,
        /// The run that submitted it.
        parent: Option<String>,
    },
    /// An attempt began.
    AttemptStarted {
        /// Its number.
        attempt: u32,
        /// The task it runs (a fallback's, perhaps).
        task: String,
    },
    /// An attempt ended.
    AttemptEnded {
        /// Its number.
        attempt: u32,
        /// Why it failed, if it did.
        error: Option<Failure>,
        /// LLM calls it made live.
        llm_live: u32,
        /// LLM calls it answered from the journal.
        llm_replayed: u32,
    },
    /// A call's result was journaled (made live, or a traced step recorded).
    Call {
        /// The attempt that made it.
        attempt: u32,
        /// `llm` or `trace`.
        kind: String,
        /// The call's name.
        name: String,
        /// Its summary (model and prompt start, or the step).
        summary: String,
        /// How long it took.
        duration_ms: u64,
        /// Prompt tokens.
        prompt_tokens: u32,
        /// Completion tokens.
        completion_tokens: u32,
    },
    /// The run's report was stored.
    Report {
        /// Its tabs' names.
        tabs: Vec<String>,
    },
    /// The run finished.
    RunFinished {
        /// `succeeded`, `failed` or `cancelled`.
        status: String,
        /// The run that submitted it.
        parent: Option<String>,
    },
}

/// The host's event stream. Cheap to clone; sending never blocks.
#[derive(Debug, Clone)]
pub struct Events {
    tx: broadcast::Sender<Arc<Event>>,
}

impl Default for Events {
    fn default() -> Self {
        Events { tx: broadcast::channel(BACKLOG).0 }
    }
}

impl Events {
    /// Sends an event of `run_id` to every listener (none is fine).
    pub fn emit(&self, run_id: &str, kind: EventKind) {
        if self.tx.receiver_count() > 0 {
            let _ = self.tx.send(Arc::new(Event { run_id: run_id.to_owned(), at_ms: now_ms(), kind }));
        }
    }

    /// A listener of every event from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }
}

/// A journal store that reports each record it stores as a [`EventKind::Call`].
pub struct ObservedJournal {
    inner: Arc<dyn JournalStore>,
    events: Events,
}

impl ObservedJournal {
    /// `inner`, reporting to `events`.
    pub fn new(inner: Arc<dyn JournalStore>, events: Events) -> Self {
        ObservedJournal { inner, events }
    }

    fn report(&self, entry: &JournalEntry) {
        let usage = entry.usage.unwrap_or_default();
        self.events.emit(
            &entry.key.run_id,
            EventKind::Call {
                attempt: entry.attempt,
                kind: entry.key.kind.as_str().to_owned(),
                name: entry.key.name.clone(),
                summary: entry.summary.clone(),
                duration_ms: entry.duration_ms,
                prompt_tokens: usage.prompt_tokens,
                completion_tokens: usage.completion_tokens,
            },
        );
    }
}

#[async_trait::async_trait]
impl JournalStore for ObservedJournal {
    async fn journal_put(&self, entry: &JournalEntry, fence: Option<&Fence>) -> Result<(), StoreError> {
        self.inner.journal_put(entry, fence).await?;
        self.report(entry);
        Ok(())
    }

    async fn journal_put_all(&self, entries: &[JournalEntry]) -> Result<(), StoreError> {
        self.inner.journal_put_all(entries).await?;
        entries.iter().for_each(|entry| self.report(entry));
        Ok(())
    }

    fn journal_get(&self, key: &ReplayKey) -> Result<Option<JournalEntry>, StoreError> {
        self.inner.journal_get(key)
    }

    fn journal_of(&self, run_id: &str) -> Result<Vec<JournalEntry>, StoreError> {
        self.inner.journal_of(run_id)
    }
}
