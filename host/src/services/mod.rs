//! The services behind the guest-facing adapters of [`crate::imports`]:
//! the logic of an interface lives here, where it can be tested without a
//! component, and the adapter only converts between WIT types and these.

pub mod blobs;
pub mod budget;
pub mod children;
pub mod fresh;
pub mod http;
pub mod instances;
pub mod llm;

use crate::journal::JournalError;

/// Why a service could not answer: the attempt cannot go on (the guest sees
/// a trap, the run a failure of the host or a replay miss).
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The journal could not be read or written, or a replay missed.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// A recorded answer could not be encoded or decoded.
    #[error("journal record of {what}: {source}")]
    Record {
        /// What was being encoded or decoded.
        what: &'static str,
        /// serde_json's explanation.
        source: serde_json::Error,
    },
    /// The budget ledger could not be read or written.
    #[error("the budget ledger: {0}")]
    Budget(crate::store::StoreError),
    /// The guest ran into one of the host's limits; the attempt ends with its failure.
    #[error(transparent)]
    Limit(#[from] crate::model::LimitHit),
}

impl ServiceError {
    /// An encoding error of `what`.
    pub fn record(what: &'static str) -> impl FnOnce(serde_json::Error) -> ServiceError {
        move |source| ServiceError::Record { what, source }
    }

    /// The error as a wasmtime error; a journal error stays downcastable,
    /// so the runner can tell a replay miss from a trap.
    pub fn into_wasmtime(self) -> wasmtime::Error {
        match self {
            ServiceError::Journal(e) => wasmtime::Error::new(e),
            ServiceError::Limit(hit) => wasmtime::Error::new(hit),
            other => wasmtime::Error::msg(other.to_string()),
        }
    }
}
