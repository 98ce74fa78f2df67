//! A journal load generator: many concurrent runs, each journaling calls
//! through the real [`Journal`] path. The group-commit benchmark and the
//! torn-write test (`cairn debug journal-load`, killed mid-flight) use it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Journal, JournalError, JournalMode};
use crate::model::{CallKind, ReplayKey};
use crate::store::JournalStore;

/// Called with each record's key once it is durable.
pub type AckFn = Arc<dyn Fn(&ReplayKey) + Send + Sync>;

/// What a load run did.
#[derive(Debug, Clone, Copy)]
pub struct LoadReport {
    /// Records made durable.
    pub records: u64,
    /// Wall time.
    pub elapsed: Duration,
}

/// The id of load run `i`.
pub fn load_run_id(i: usize) -> String {
    format!("load-{i:06}")
}

/// Runs `runs` concurrent writers, each recording `calls` entries with an
/// output of `payload` bytes, and reports once all are durable.
pub async fn journal_load(
    store: Arc<dyn JournalStore>,
    runs: usize,
    calls: usize,
    payload: usize,
    on_ack: Option<AckFn>,
) -> Result<LoadReport, JournalError> {
    let started = Instant::now();
    let output = format!("\"{}\"", "x".repeat(payload.saturating_sub(2)));
    let mut writers = tokio::task::JoinSet::new();
    for i in 0..runs {
        let store = store.clone();
        let output = output.clone();
        let on_ack = on_ack.clone();
        writers.spawn(async move {
            let mut journal = Journal::open(store, &load_run_id(i), 1, JournalMode::Live).await?;
            for call in 0..calls {
                let key = journal.next_key(CallKind::Llm, "load", &format!("call-{call}"));
                journal.record(key.clone(), output.clone(), String::new(), Duration::ZERO, None).await?;
                if let Some(ack) = &on_ack {
                    ack(&key);
                }
            }
            Ok::<u64, JournalError>(calls as u64)
        });
    }
    let mut records = 0;
    while let Some(done) = writers.join_next().await {
        records += done.map_err(|_| JournalError::Worker("load".into()))??;
    }
    Ok(LoadReport { records, elapsed: started.elapsed() })
}
