//! Cassettes: a run and its journal in one JSON file, so that a task can be
//! replayed offline (in CI, on another machine) against recorded LLM answers
//! with `cairn run TASK --replay RUN`.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::model::{JournalEntry, RunRecord, Tenant};
use crate::store::StoreError;
use crate::store::prelude::*;

/// The format tag of a cassette file.
pub const FORMAT: &str = "cairn-cassette";
/// The version this build writes and reads.
pub const VERSION: u32 = 1;

/// Errors exporting or importing a cassette.
#[derive(Debug, thiserror::Error)]
pub enum CassetteError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The file could not be read or written.
    #[error("cassette {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a cassette this build understands.
    #[error("{path} is not a cairn cassette (version {VERSION}): {message}")]
    Format {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The run id is already in the store.
    #[error("run {0} is already in the store; nothing to import")]
    Exists(String),
}

/// A run and its journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cassette {
    /// Always [`FORMAT`].
    pub format: String,
    /// [`VERSION`].
    pub version: u32,
    /// The run.
    pub run: RunRecord,
    /// Its journal, in order.
    pub journal: Vec<JournalEntry>,
}

impl Cassette {
    /// A cassette of `run` and its journal.
    pub fn of(run: RunRecord, journal: Vec<JournalEntry>) -> Cassette {
        Cassette { format: FORMAT.into(), version: VERSION, run, journal }
    }

    /// Whether this build can import it: its format and version, a finished
    /// run with ids a host would make, and a journal of its own run only.
    /// `shown` names where it came from.
    pub fn check(&self, shown: &str) -> Result<(), CassetteError> {
        if self.format != FORMAT || self.version != VERSION {
            return Err(CassetteError::Format {
                path: shown.into(),
                message: format!("format {:?} version {}", self.format, self.version),
            });
        }
        let run = &self.run;
        let refuse = |message: String| Err(CassetteError::Format { path: shown.into(), message });
        for (what, id) in [("run id", Some(&run.id)), ("parent", run.parent.as_ref()), ("root", run.root.as_ref())] {
            if let Some(id) = id.filter(|id| !crate::model::is_run_id(id)) {
                return refuse(format!(
                    "{what} {id:?} is not a run id a host makes (letters, digits and dashes, at most 64)"
                ));
            }
        }
        for (what, name) in [("task", Some(&run.task)), ("group", run.group.as_ref())] {
            if let Some(name) = name.filter(|name| name.is_empty() || name.chars().any(char::is_control)) {
                return refuse(format!("{what} {name:?} is empty or holds control characters"));
            }
        }
        if !run.status.is_finished() {
            // Stored unheld, an unfinished run would be taken up and run live.
            return refuse(format!("its run is {}; export a run once it has finished", run.status.as_str()));
        }
        if self.journal.iter().any(|e| e.key.run_id != self.run.id) {
            return Err(CassetteError::Format { path: shown.into(), message: "journal entries of another run".into() });
        }
        Ok(())
    }

    /// Writes it to `path`.
    pub fn save(&self, path: &Path) -> Result<(), CassetteError> {
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| CassetteError::Format { path: path.display().to_string(), message: e.to_string() })?;
        std::fs::write(path, text).map_err(|source| CassetteError::Io { path: path.display().to_string(), source })
    }
}

/// Writes run `run_id` and its journal to `path`.
pub fn export(store: &dyn Store, tenant: &Tenant, run_id: &str, path: &Path) -> Result<Cassette, CassetteError> {
    let cassette = Cassette::of(store.get_run(tenant, run_id)?, store.journal_of(run_id)?);
    cassette.save(path)?;
    Ok(cassette)
}

/// Reads a cassette file and stores its run and journal under `tenant`.
pub async fn import(store: &dyn Store, tenant: &Tenant, path: &Path) -> Result<RunRecord, CassetteError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| CassetteError::Io { path: shown.clone(), source })?;
    store_cassette(store, tenant, parse(&text, &shown)?, &shown).await
}

/// Reads a cassette's text and checks what needs no store ([`Cassette::check`]);
/// `shown` names where it came from. The pure step of [`import`].
pub fn parse(text: &str, shown: &str) -> Result<Cassette, CassetteError> {
    let cassette: Cassette =
        serde_json::from_str(text).map_err(|e| CassetteError::Format { path: shown.into(), message: e.to_string() })?;
    cassette.check(shown)?;
    Ok(cassette)
}

/// Stores a cassette's run and journal under `tenant`; `shown` names where it came from.
pub async fn store_cassette(
    store: &dyn Store,
    tenant: &Tenant,
    cassette: Cassette,
    shown: &str,
) -> Result<RunRecord, CassetteError> {
    cassette.check(shown)?;
    // Journals, logs and reports are filed by run id: an id any tenant has
    // is taken, or the import would share (and could read) that run's records.
    for owner in store.tenants(false)? {
        if store.get_run(&owner, &cassette.run.id).is_ok() {
            return Err(CassetteError::Exists(cassette.run.id));
        }
    }
    if !store.journal_of(&cassette.run.id)?.is_empty() {
        return Err(CassetteError::Exists(cassette.run.id));
    }
    let mut run = cassette.run;
    run.tenant = tenant.clone();
    run.lease = None;
    // A replay names a run of its own tenant only (see `Host::drive`); an imported one names none.
    run.replay_of = None;
    store.journal_put_all(&cassette.journal).await?;
    store.create_run(&run).await?;
    Ok(run)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cassette_whose_run_id_a_host_would_not_make_is_refused() {
        let mut run = RunRecord::new("01a2-b3".into(), Tenant::default(), "t".into(), "{}".into());
        run.status = crate::model::RunStatus::Succeeded;
        let good = Cassette::of(run.clone(), Vec::new());
        assert!(good.check("c.json").is_ok());
        // A key separator in the id would file its journal under another run's prefix.
        for id in ["victim\u{1}x", "", "../x", &"a".repeat(65)] {
            let bad = Cassette::of(RunRecord { id: id.to_owned(), ..run.clone() }, Vec::new());
            let error = bad.check("c.json").unwrap_err().to_string();
            assert!(error.contains("run id"), "{id:?}: {error}");
        }
        let forged_parent = Cassette::of(RunRecord { parent: Some("p\u{1}x".into()), ..run.clone() }, Vec::new());
        assert!(forged_parent.check("c.json").unwrap_err().to_string().contains("parent"));
        let unfinished = Cassette::of(RunRecord { status: crate::model::RunStatus::Running, ..run }, Vec::new());
        assert!(unfinished.check("c.json").unwrap_err().to_string().contains("once it has finished"));
    }
}
