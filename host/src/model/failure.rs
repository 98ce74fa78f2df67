//! Why an attempt or a run failed: a typed kind, a message, and whether
//! another attempt may succeed.
//!
//! Kinds are what retry policies (`retry_on`) match on and what the CLI and
//! the dead-letter queue show. The host's own kinds are variants; a guest's
//! `task-error` may name any kind, kept as [`FailureKind::Guest`]. On disk
//! and on the wire a kind is its kebab-case name, so records written before
//! kinds were typed read back unchanged.

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! failure_kinds {
    ($($(#[$doc:meta])* $variant:ident = $name:literal,)*) => {
        /// The category of a failure. Two kinds are equal when their names
        /// are: a guest naming `timeout` itself is the host's `Timeout`.
        #[derive(Debug, Clone)]
        pub enum FailureKind {
            $($(#[$doc])* $variant,)*
            /// A kind the guest named itself (its `task-error`'s `kind`).
            Guest(String),
        }

        impl FailureKind {
            /// Its kebab-case name.
            pub fn as_str(&self) -> &str {
                match self {
                    $(FailureKind::$variant => $name,)*
                    FailureKind::Guest(name) => name,
                }
            }

            /// The kind named `name`: one of the host's, or the guest's own.
            pub fn parse(name: &str) -> Self {
                match name {
                    $($name => FailureKind::$variant,)*
                    other => FailureKind::Guest(other.to_owned()),
                }
            }
        }
    };
}

failure_kinds! {
    /// The guest trapped (a panic, an unreachable, a bad memory access).
    Trap = "trap",
    /// The attempt ran past its time limit.
    Timeout = "timeout",
    /// The guest tried to grow its memory past its limit.
    OutOfMemory = "out-of-memory",
    /// The run's input is not acceptable.
    InvalidInput = "invalid-input",
    /// The guest returned something that is not JSON.
    InvalidOutput = "invalid-output",
    /// The guest returned more than `max_output`.
    OutputTooLarge = "output-too-large",
    /// A replay met a call its cassette does not have.
    ReplayMiss = "replay-miss",
    /// The host itself failed (store, filesystem, engine slots).
    HostError = "host-error",
    /// The host stopped during the attempt (crash, kill, or a graceful stop).
    Interrupted = "interrupted",
    /// The run was cancelled on request.
    Cancelled = "cancelled",
    /// The task's circuit breaker is open.
    CircuitOpen = "circuit-open",
    /// Every instance of a pooled environment stayed busy past `queue_timeout`.
    QueueTimeout = "queue-timeout",
    /// The task is not (or no longer) in the manifest.
    UnknownTask = "unknown-task",
    /// The task's component file is missing.
    MissingComponent = "missing-component",
    /// The task's component cannot be loaded or does not fit the world.
    InvalidComponent = "invalid-component",
    /// A secret the environment exposes has no value.
    MissingSecret = "missing-secret",
    /// A child that would deadlock its parent's pool.
    InvalidChild = "invalid-child",
    /// A child handle kept by a reused instance from an earlier run.
    StaleHandle = "stale-handle",
    /// The LLM provider rate-limited the call.
    LlmRateLimited = "llm-rate-limited",
    /// The LLM call timed out.
    LlmTimeout = "llm-timeout",
    /// The LLM provider is unavailable.
    LlmUnavailable = "llm-unavailable",
    /// The provider refused the request.
    LlmInvalidRequest = "llm-invalid-request",
    /// The provider's answer was unusable.
    LlmInvalidResponse = "llm-invalid-response",
    /// A token or cost budget is spent.
    LlmBudgetExceeded = "llm-budget-exceeded",
    /// The run went over one of its tenant's quotas (tokens per run or per
    /// day, cost per day or per month): not retried.
    BudgetExceeded = "budget-exceeded",
    /// The LLM provider's circuit breaker is open.
    LlmCircuitOpen = "llm-circuit-open",
    /// A run submitted more children than its environment's
    /// `resources.max_children`: not retried.
    TooManyChildren = "too-many-children",
    /// A child would sit deeper below its top-level run than
    /// `resources.max_depth`: not retried.
    TooDeep = "too-deep",
    /// A tree of runs reached `resources.max_descendants` (of the
    /// submitting run's environment) below its top-level run: not retried.
    TooManyDescendants = "too-many-descendants",
    /// The run's input is larger than `resources.max_input`: not retried.
    InputTooLarge = "input-too-large",
    /// The run's report grew past `resources.max_report`: not retried.
    ReportTooLarge = "report-too-large",
    /// The guest nested groups deeper, or named them longer, than the host
    /// keeps: not retried.
    GroupLimit = "group-limit",
    /// A run recorded more in its journal than `resources.max_journal`
    /// (or 100,000 entries): not retried.
    JournalTooLarge = "journal-too-large",
    /// An instance held more handles (open files, streams, children) than
    /// `resources.max_handles`: not retried.
    TooManyHandles = "too-many-handles",
    /// An instance held more open files and directories (host descriptors)
    /// than `resources.max_open_files`: not retried.
    TooManyOpenFiles = "too-many-open-files",
    /// A run's directory grew past `resources.max_disk` bytes or
    /// `resources.max_files` entries: not retried.
    DiskLimit = "disk-limit",
    /// An attempt stored more bytes of files than `resources.max_blobs`, or
    /// its tenant's blobs passed the `blob_storage` quota: not retried.
    BlobLimit = "blob-limit",
}

impl FailureKind {
    /// Whether this ends a run because its tree of runs grew past a limit
    /// (children, depth, descendants): the tree is then cancelled, not grown further.
    pub fn is_tree_limit(&self) -> bool {
        matches!(self, FailureKind::TooManyChildren | FailureKind::TooDeep | FailureKind::TooManyDescendants)
    }
}

impl PartialEq for FailureKind {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for FailureKind {}

impl std::hash::Hash for FailureKind {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for FailureKind {
    fn from(name: &str) -> Self {
        FailureKind::parse(name)
    }
}

impl From<String> for FailureKind {
    fn from(name: String) -> Self {
        match FailureKind::parse(&name) {
            FailureKind::Guest(_) => FailureKind::Guest(name),
            known => known,
        }
    }
}

impl PartialEq<str> for FailureKind {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for FailureKind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl Serialize for FailureKind {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for FailureKind {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(FailureKind::from)
    }
}

/// Why an attempt or a run failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// Category retry policies match on.
    pub kind: FailureKind,
    /// What went wrong and how to fix it.
    pub message: String,
    /// Whether another attempt may succeed.
    pub retryable: bool,
}

impl Failure {
    /// A failure of `kind`.
    pub fn new(kind: FailureKind, message: impl Into<String>, retryable: bool) -> Self {
        Failure { kind, message: message.into(), retryable }
    }

    /// A failure of the host itself (store, filesystem, engine): retryable.
    pub fn host(message: impl Into<String>) -> Self {
        Failure::new(FailureKind::HostError, message, true)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

/// The longest error message the host keeps of a guest's; the rest is cut
/// with a note.
pub const MAX_GUEST_MESSAGE: usize = 16 << 10;
/// The longest error kind the host keeps of a guest's.
pub const MAX_GUEST_KIND: usize = 128;

/// A host limit a guest's call ran into. It ends the attempt with its
/// failure (a kind of its own), carried out of the guest as a trap is.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct LimitHit(pub Failure);

/// `text` cut to at most `most` bytes (at a character boundary), with a note
/// of how much was cut.
pub fn cut_with_note(mut text: String, most: usize) -> String {
    if text.len() <= most {
        return text;
    }
    let mut end = most;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let cut = text.len() - end;
    text.truncate(end);
    text.push_str(&format!(" [… {cut} more bytes cut by the host]"));
    text
}

impl Failure {
    /// The failure a guest returned, its kind and message cut to what the
    /// host keeps ([`MAX_GUEST_KIND`], [`MAX_GUEST_MESSAGE`]).
    pub fn from_guest(kind: String, message: String, retryable: bool) -> Failure {
        let kind = if kind.len() > MAX_GUEST_KIND { cut_with_note(kind, MAX_GUEST_KIND) } else { kind };
        Failure { kind: FailureKind::parse(&kind), message: cut_with_note(message, MAX_GUEST_MESSAGE), retryable }
    }

    /// The failure for the host's own log: its kind and message quoted and
    /// escaped (a guest chose both; a log line must stay one line, with no
    /// terminal controls in it).
    pub fn for_log(&self) -> String {
        format!("{:?}: {:?}", self.kind.as_str(), self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_keep_their_names_on_disk() {
        for name in ["trap", "timeout", "out-of-memory", "llm-circuit-open", "queue-timeout", "my-own-kind"] {
            let kind = FailureKind::parse(name);
            assert_eq!(kind.as_str(), name);
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("{name:?}"));
            assert_eq!(serde_json::from_str::<FailureKind>(&json).unwrap(), kind);
        }
        assert_eq!(FailureKind::parse("out-of-memory"), FailureKind::OutOfMemory);
        assert_eq!(FailureKind::parse("value-error"), FailureKind::Guest("value-error".into()));
        assert_eq!(FailureKind::Guest("trap".into()), FailureKind::Trap, "kinds are equal by name");
        let failure: Failure = serde_json::from_str(r#"{"kind":"timeout","message":"m","retryable":true}"#).unwrap();
        assert_eq!(failure.kind, FailureKind::Timeout);
    }
}
