//! Per-run directories, made by the host through cap-std.
//!
//! `.cairn/runs/<run id>/work` is created through a [`cap_std::fs::Dir`]
//! handle on `.cairn/runs`, so nothing a guest left behind (a symlink, a `..`
//! entry) can lead the host outside it. The guest sees only that `work`
//! directory, preopened as `.` by WASI; the rest of the host's filesystem
//! does not exist for it.

pub mod outbound;
pub mod usage;

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
    /// The run's directory could not be removed (wholly).
    #[error("cannot remove the directory of run {run_id}: {source}; remove .cairn/runs/{run_id} by hand")]
    Remove {
        /// The run.
        run_id: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Removes directory `name` of `parent` and everything in it, holding at
/// most four descriptors however deep it is (a guest can build a tree far
/// deeper than a process may hold descriptors, which defeats a removal that
/// keeps one open per level). The tree is flattened as it is emptied: each
/// subdirectory's own subdirectories are moved up into `name` (renamed,
/// never followed; a link, `name` itself included, is removed, not its
/// target), then it is removed. An entry that vanishes meanwhile is
/// skipped; `NotFound` means `name` itself is gone.
pub fn remove_tree(parent: &Dir, name: &str) -> std::io::Result<()> {
    if parent.symlink_metadata(name)?.file_type().is_symlink() {
        return parent.remove_file(name);
    }
    let top = parent.open_dir(name)?;
    let tag = uuid::Uuid::now_v7().simple().to_string();
    let mut moved = 0u64;
    loop {
        let mut left = false;
        for entry in top.entries()? {
            let entry = entry?;
            left = true;
            let entry_name = entry.file_name();
            let emptied = if is_dir(&top, &entry_name, entry.file_type()?)? {
                empty_into(&top, &entry_name, &tag, &mut moved).and_then(|()| top.remove_dir(&entry_name))
            } else {
                top.remove_file(&entry_name)
            };
            match emptied {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                other => other?,
            }
        }
        if !left {
            break;
        }
    }
    drop(top);
    parent.remove_dir(name)
}

/// Removes the files of `top`'s subdirectory `name` and moves its own
/// subdirectories up into `top` (an empty one that cannot move is removed).
fn empty_into(top: &Dir, name: &std::ffi::OsStr, tag: &str, moved: &mut u64) -> std::io::Result<()> {
    let sub = top.open_dir(name)?;
    for inner in sub.entries()? {
        let inner = inner?;
        let inner_name = inner.file_name();
        let done = if is_dir(&sub, &inner_name, inner.file_type()?)? {
            *moved += 1;
            sub.rename(&inner_name, top, format!(".cairn-removing-{tag}-{moved}"))
                .or_else(|e| sub.remove_dir(&inner_name).map_err(|_| e))
        } else {
            sub.remove_file(&inner_name)
        };
        match done {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            other => other?,
        }
    }
    Ok(())
}

/// Whether entry `name` of `dir` (of listed type `listed`) is a directory,
/// asking the filesystem when the listing does not say (a link is not).
fn is_dir(dir: &Dir, name: &std::ffi::OsStr, listed: cap_std::fs::FileType) -> std::io::Result<bool> {
    if listed.is_dir() || listed.is_file() || listed.is_symlink() {
        return Ok(listed.is_dir());
    }
    Ok(dir.symlink_metadata(name)?.is_dir())
}

/// [`remove_tree`] of the directory at `path`.
pub fn remove_tree_at(path: &Path) -> std::io::Result<()> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} names no directory", path.display()),
        ));
    };
    remove_tree(&Dir::open_ambient_dir(parent, ambient_authority())?, name)
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
        match remove_tree(&self.root, run_id) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(SandboxError::Remove { run_id: run_id.to_owned(), source }),
        }
    }
}

/// Whether `run_id` can name a directory here: letters, digits and dashes only.
/// A run id (or an instance's name) that can name a directory: ASCII
/// letters, digits and dashes.
fn valid_run_id(run_id: &str) -> bool {
    (1..=128).contains(&run_id.len()) && run_id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
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

    #[test]
    fn a_tree_deeper_than_a_process_may_hold_descriptors_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let dirs = RunDirs::open(&dir.path().join("runs")).unwrap();
        let work = dirs.work_dir("0190-deep").unwrap();
        // 5,000 levels, each with a file, made through handles (a path that long
        // could not be named), as a guest can.
        let mut level = Dir::open_ambient_dir(&work, ambient_authority()).unwrap();
        for n in 0..5_000 {
            level.write(format!("f{n}"), b"x").unwrap();
            level.create_dir("d").unwrap();
            level = level.open_dir("d").unwrap();
        }
        level.symlink("../../../../../../../../../../..", "up").unwrap();
        drop(level);
        std::fs::write(dir.path().join("outside"), b"kept").unwrap();
        dirs.remove("0190-deep").unwrap();
        assert!(!dir.path().join("runs/0190-deep").exists());
        assert_eq!(std::fs::read(dir.path().join("outside")).unwrap(), b"kept", "a link's target is left alone");
        assert!(remove_tree_at(&dir.path().join("runs/nothing-here")).is_err());
        // A run "directory" that is a link to another run's: the link goes, the other stays.
        dirs.work_dir("0190-other").unwrap();
        std::fs::write(dir.path().join("runs/0190-other/work/file"), b"theirs").unwrap();
        std::os::unix::fs::symlink("0190-other", dir.path().join("runs/0190-link")).unwrap();
        dirs.remove("0190-link").unwrap();
        assert!(!dir.path().join("runs/0190-link").exists());
        assert_eq!(std::fs::read(dir.path().join("runs/0190-other/work/file")).unwrap(), b"theirs");
    }
}
