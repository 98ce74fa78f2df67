//! Per-run directories, made by the host through cap-std.
//!
//! `.cairn/runs/<run id>/work` is created through a [`cap_std::fs::Dir`]
//! handle on `.cairn/runs`, so nothing a guest left behind (a symlink, a `..`
//! entry) can lead the host outside it. The guest sees only that `work`
//! directory, preopened as `.` by WASI; the rest of the host's filesystem
//! does not exist for it.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use cap_std::ambient_authority;
use cap_std::fs::Dir;

/// Errors preparing a run's directory.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The runs directory could not be opened or created.
    #[error("cannot open the runs directory {}: {source}", path.display())]
    Root {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A run id that is not a plain name.
    #[error("run id {0:?} cannot name a directory")]
    BadRunId(String),
    /// The run's directory could not be created.
    #[error("cannot create the directory of run {run_id}: {source}")]
    Create {
        /// The run.
        run_id: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// How many made directories are remembered before the memory starts over.
const MADE_REMEMBERED: usize = 100_000;

/// The directory holding every run's files.
pub struct RunDirs {
    root: Dir,
    root_path: PathBuf,
    /// Runs whose directory this process made (or found), so a retried
    /// attempt does not walk the path again.
    made: Mutex<HashSet<String>>,
}

impl RunDirs {
    /// Opens (creating if needed) the runs directory at `path`.
    pub fn open(path: &Path) -> Result<Self, SandboxError> {
        let root_error = |source| SandboxError::Root { path: path.to_path_buf(), source };
        std::fs::create_dir_all(path).map_err(root_error)?;
        let root = Dir::open_ambient_dir(path, ambient_authority()).map_err(root_error)?;
        Ok(RunDirs { root, root_path: path.to_path_buf(), made: Mutex::new(HashSet::new()) })
    }

    /// Creates the work directory of `run_id` and returns its host path,
    /// which the runner preopens for the guest.
    pub fn work_dir(&self, run_id: &str) -> Result<PathBuf, SandboxError> {
        if !valid_run_id(run_id) {
            return Err(SandboxError::BadRunId(run_id.to_owned()));
        }
        let relative = Path::new(run_id).join("work");
        if !self.made.lock().unwrap_or_else(|e| e.into_inner()).contains(run_id) {
            self.root
                .create_dir_all(&relative)
                .map_err(|source| SandboxError::Create { run_id: run_id.to_owned(), source })?;
            let mut made = self.made.lock().unwrap_or_else(|e| e.into_inner());
            if made.len() >= MADE_REMEMBERED {
                made.clear();
            }
            made.insert(run_id.to_owned());
        }
        Ok(self.root_path.join(relative))
    }
}

impl RunDirs {
    /// [`RunDirs::remove`] for a run that may never have made a directory
    /// (answered from the cache, run on a pooled instance): then it costs one `stat`.
    pub fn remove_if_present(&self, run_id: &str) -> Result<(), SandboxError> {
        let made = self.made.lock().unwrap_or_else(|e| e.into_inner()).contains(run_id);
        if made || (valid_run_id(run_id) && self.root.symlink_metadata(run_id).is_ok()) {
            return self.remove(run_id);
        }
        Ok(())
    }

    /// Deletes a run's directory and everything in it, if it exists. Goes
    /// through the cap-std handle, so links inside cannot redirect it.
    pub fn remove(&self, run_id: &str) -> Result<(), SandboxError> {
        if !valid_run_id(run_id) {
            return Err(SandboxError::BadRunId(run_id.to_owned()));
        }
        self.made.lock().unwrap_or_else(|e| e.into_inner()).remove(run_id);
        match self.root.remove_dir_all(run_id) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(SandboxError::Create { run_id: run_id.to_owned(), source }),
        }
    }
}

/// Whether `run_id` can name a directory here: letters, digits and dashes only.
fn valid_run_id(run_id: &str) -> bool {
    !run_id.is_empty() && run_id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_cannot_escape() {
        let dir = tempfile::tempdir().unwrap();
        let dirs = RunDirs::open(&dir.path().join("runs")).unwrap();
        assert!(dirs.work_dir("0190-abc").unwrap().ends_with("0190-abc/work"));
        assert!(dirs.work_dir("../etc").is_err());
        assert!(dirs.work_dir("a/b").is_err());
        assert!(dirs.work_dir("").is_err());
        dirs.remove("0190-abc").unwrap();
        assert!(!dir.path().join("runs/0190-abc").exists());
        dirs.remove("0190-abc").unwrap();
        assert!(dirs.remove("..").is_err());
    }
}
