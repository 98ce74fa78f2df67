//! The journal's records: what a call was, the key it is replayed by, and
//! what was recorded for it.

use serde::{Deserialize, Serialize};

use super::Usage;

/// What a journaled call was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CallKind {
    /// An `llm` import call.
    Llm,
    /// A `trace.record`ed guest step.
    Trace,
    /// A child run submitted through `tasks`; the output names the child.
    Child,
    /// A `tasks.group` opened.
    Group,
    /// An outbound `wasi:http` request and the response it got.
    Http,
    /// An LLM answer the guest rejected (`llm.reject`): its name, input hash
    /// and occurrence are the rejected call's, and later attempts ask again.
    Reject,
}

impl CallKind {
    /// Its name in keys and listings.
    pub fn as_str(self) -> &'static str {
        match self {
            CallKind::Llm => "llm",
            CallKind::Trace => "trace",
            CallKind::Child => "child",
            CallKind::Group => "group",
            CallKind::Http => "http",
            CallKind::Reject => "reject",
        }
    }
}

/// The replay key of a journaled call: the `occurrence`-th call of `kind`
/// `name` with input hash `input_hash` in run `run_id`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ReplayKey {
    /// The run.
    pub run_id: String,
    /// LLM call or traced step.
    pub kind: CallKind,
    /// Step name (traces) or call name (`complete`).
    pub name: String,
    /// sha256 of the canonical input, hex. A call made inside a traced step
    /// hashes the step's scope in too, so its occurrences count within the step.
    pub input_hash: String,
    /// 1-based occurrence of this (kind, name, input) within an attempt and
    /// the enclosing traced step.
    pub occurrence: u32,
}

impl ReplayKey {
    /// The key's string form, used as the database key. Sorts by run first.
    pub fn encode(&self) -> String {
        format!(
            "{}\u{1}{}\u{1}{}\u{1}{}\u{1}{:010}",
            self.run_id,
            self.kind.as_str(),
            self.name,
            self.input_hash,
            self.occurrence
        )
    }
}

/// A recorded result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JournalEntry {
    /// Where it is filed.
    pub key: ReplayKey,
    /// Position in the run's journal (0-based, recording order).
    pub seq: u64,
    /// Attempt that made the live call.
    pub attempt: u32,
    /// The result, JSON.
    pub output: String,
    /// A short human description (e.g. the model and prompt's start).
    pub summary: String,
    /// When it was recorded, ms since the Unix epoch.
    pub recorded_at_ms: u64,
    /// How long the live call took.
    pub duration_ms: u64,
    /// Tokens, for LLM calls.
    pub usage: Option<Usage>,
}
