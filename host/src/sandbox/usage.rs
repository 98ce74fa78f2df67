//! What a run's directory takes on disk, measured by the host while the
//! guest works in it: `resources.max_disk` and `resources.max_files`.
//!
//! WASI's file calls go straight from wasmtime-wasi to the filesystem, so the
//! host cannot refuse one write; it measures the directory instead, every
//! [`WATCH_INTERVAL`] during a call (less often when a measurement is slow)
//! and once more when the call returns. A guest can therefore pass
//! `max_disk` by what it writes in one interval before its attempt ends.
//! Files the guest removed but still holds open take room no name shows;
//! they are counted from the guest's open files ([`HeldFiles`]).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cap_std::ambient_authority;
use cap_std::fs::{Dir, MetadataExt};

/// How often a call's directory is measured; stretched to ten times the
/// last measurement's own time, so measuring takes at most a tenth of a core.
pub const WATCH_INTERVAL: Duration = Duration::from_millis(100);

/// How deep directories may nest: the measurement holds one descriptor per
/// level, so a deeper tree is refused rather than followed.
pub const MAX_NESTING: usize = 128;

/// Up to this many entries the final measurement runs on the caller's
/// thread: it costs a few system calls each.
const INLINE_ENTRIES: u64 = 256;

/// The most a directory may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskLimits {
    /// Bytes: each file counts the larger of its length and its allocated
    /// blocks, so a sparse file counts its length.
    pub bytes: u64,
    /// Entries: files, directories and links (the directory itself not counted).
    pub entries: u64,
}

/// What a directory holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskUsage {
    /// Bytes, counted as [`DiskLimits::bytes`] says.
    pub bytes: u64,
    /// Entries.
    pub entries: u64,
}

/// Which limit a directory passed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiskOver {
    /// Its files take more bytes than allowed.
    #[error("its files take more than the {limit} bytes of `resources.max_disk` (at least {bytes} bytes)")]
    Bytes {
        /// Bytes counted when the measurement stopped.
        bytes: u64,
        /// The limit.
        limit: u64,
    },
    /// It holds more entries than allowed.
    #[error("it holds more than the {limit} entries of `resources.max_files` (files, directories and links)")]
    Entries {
        /// The limit.
        limit: u64,
    },
    /// Its directories nest deeper than the host measures.
    #[error("its directories nest more than {MAX_NESTING} deep")]
    Nesting,
}

/// The host files an instance's guest opened, held weakly: each is alive
/// while anything of the guest's (a descriptor, a stream) holds it.
#[derive(Clone, Default)]
pub struct HeldFiles(Arc<std::sync::Mutex<Vec<std::sync::Weak<std::fs::File>>>>);

impl HeldFiles {
    /// Keeps track of `file` for as long as the guest holds it.
    pub fn add(&self, file: &Arc<std::fs::File>) {
        self.lock().push(Arc::downgrade(file));
    }

    /// How many the guest still holds (forgetting the others).
    pub fn alive(&self) -> usize {
        let mut files = self.lock();
        files.retain(|file| file.strong_count() > 0);
        files.len()
    }

    /// Bytes taken by the files the guest holds whose every name is gone
    /// (counted as [`DiskLimits::bytes`] says).
    pub fn unlinked_bytes(&self) -> u64 {
        let files: Vec<Arc<std::fs::File>> = self.lock().iter().filter_map(std::sync::Weak::upgrade).collect();
        files
            .iter()
            .filter_map(|file| file.metadata().ok())
            .filter(|meta| std::os::unix::fs::MetadataExt::nlink(meta) == 0)
            .map(|meta| room(meta.len(), std::os::unix::fs::MetadataExt::blocks(&meta)))
            .fold(0, u64::saturating_add)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<std::sync::Weak<std::fs::File>>> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Measures the directory `dir` (not following links), stopping as soon as
/// it passes `limits`. Holds one descriptor per level; entries that vanish
/// while it looks are skipped.
pub fn measure(dir: &Dir, limits: DiskLimits) -> std::io::Result<Result<DiskUsage, DiskOver>> {
    let mut usage = DiskUsage::default();
    // Each level: its directory and the names left to look at.
    let mut stack: Vec<(Dir, Vec<std::ffi::OsString>)> =
        vec![(dir.try_clone()?, names(dir, limits.entries.saturating_add(1))?)];
    loop {
        let depth = stack.len();
        let Some((level, left)) = stack.last_mut() else { break };
        let Some(name) = left.pop() else {
            stack.pop();
            continue;
        };
        // An entry the guest changes meanwhile (removed, renamed, turned from a
        // directory into a link) is counted and passed over: the measurement when
        // the call returns, with the guest stopped, sees what is left. (cap-std
        // refuses a link that leads out with PermissionDenied.)
        let meta = match level.symlink_metadata(&name) {
            Ok(meta) => meta,
            Err(e) if changed(&e) => continue,
            Err(e) => return Err(e),
        };
        usage.entries += 1;
        if usage.entries > limits.entries {
            return Ok(Err(DiskOver::Entries { limit: limits.entries }));
        }
        if meta.is_dir() {
            if depth > MAX_NESTING {
                return Ok(Err(DiskOver::Nesting));
            }
            // At most what is left of the limit is listed (one more shows it passed).
            let left = limits.entries - usage.entries + 1;
            match level.open_dir(&name).and_then(|sub| Ok((names(&sub, left)?, sub))) {
                Ok((inner, sub)) => stack.push((sub, inner)),
                Err(e) if changed(&e) => {}
                Err(e) => return Err(e),
            }
            continue;
        }
        usage.bytes = usage.bytes.saturating_add(room(meta.len(), meta.blocks()));
        if usage.bytes > limits.bytes {
            return Ok(Err(DiskOver::Bytes { bytes: usage.bytes, limit: limits.bytes }));
        }
    }
    Ok(Ok(usage))
}

/// The room a file of length `len` with `blocks` 512-byte blocks allocated
/// takes, as [`DiskLimits::bytes`] counts it.
fn room(len: u64, blocks: u64) -> u64 {
    len.max(blocks.saturating_mul(512))
}

/// The first `most` names of `dir`.
fn names(dir: &Dir, most: u64) -> std::io::Result<Vec<std::ffi::OsString>> {
    dir.entries()?.take(usize::try_from(most).unwrap_or(usize::MAX)).map(|entry| entry.map(|e| e.file_name())).collect()
}

/// Whether `error` says an entry changed while it was looked at (removed,
/// renamed, turned into a link or a file), rather than that looking failed.
fn changed(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory | std::io::ErrorKind::PermissionDenied
    ) || error.raw_os_error() == Some(libc::ELOOP)
}

/// [`measure`] of the directory at `path`.
pub fn measure_at(path: &Path, limits: DiskLimits) -> std::io::Result<Result<DiskUsage, DiskOver>> {
    measure(&Dir::open_ambient_dir(path, ambient_authority())?, limits)
}

/// [`measure_at`] of the directory at `path`, with the files the guest
/// removed but holds open (`held`) counted too.
pub fn measure_held(path: &Path, limits: DiskLimits, held: &HeldFiles) -> std::io::Result<Result<DiskUsage, DiskOver>> {
    let unlinked = held.unlinked_bytes();
    if unlinked > limits.bytes {
        return Ok(Err(DiskOver::Bytes { bytes: unlinked, limit: limits.bytes }));
    }
    let named = DiskLimits { bytes: limits.bytes - unlinked, entries: limits.entries };
    Ok(match measure_at(path, named)? {
        Ok(usage) => Ok(DiskUsage { bytes: usage.bytes + unlinked, entries: usage.entries }),
        Err(DiskOver::Bytes { bytes, .. }) => Err(DiskOver::Bytes { bytes: bytes + unlinked, limit: limits.bytes }),
        Err(over) => Err(over),
    })
}

/// Runs `call` while the directory at `path` (and the files of `held`) is
/// measured every [`WATCH_INTERVAL`]; ends it early with the limit it
/// passed, and measures once more after a call that returned. An error
/// measuring is logged and the call goes on.
pub async fn within<T, E>(
    path: PathBuf,
    limits: DiskLimits,
    held: HeldFiles,
    call: impl Future<Output = Result<T, E>>,
) -> Result<Result<T, E>, DiskOver> {
    let watch = watch(path.clone(), limits, held.clone());
    let result = tokio::select! {
        biased;
        result = call => result,
        over = watch => return Err(over),
    };
    if result.is_err() {
        return Ok(result);
    }
    // A few entries are measured on this thread (a few system calls); more, on a blocking one.
    let small = DiskLimits { bytes: limits.bytes, entries: limits.entries.min(INLINE_ENTRIES) };
    let last = match measure_held(&path, small, &held) {
        Ok(Err(DiskOver::Entries { .. })) if limits.entries > INLINE_ENTRIES => {
            tokio::task::spawn_blocking(move || measure_held(&path, limits, &held))
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())))
        }
        measured => measured,
    };
    match last {
        Ok(Err(over)) => Err(over),
        Ok(Ok(_)) => Ok(result),
        Err(e) => {
            tracing::warn!("cannot measure a run's directory: {e}");
            Ok(result)
        }
    }
}

/// Measures `path` and `held` every interval until they pass `limits`;
/// never returns otherwise.
async fn watch(path: PathBuf, limits: DiskLimits, held: HeldFiles) -> DiskOver {
    let mut pause = WATCH_INTERVAL;
    loop {
        tokio::time::sleep(pause).await;
        let (path, held) = (path.clone(), held.clone());
        let started = Instant::now();
        let measured = tokio::task::spawn_blocking(move || measure_held(&path, limits, &held)).await;
        pause = WATCH_INTERVAL.max(started.elapsed() * 10);
        match measured {
            Ok(Ok(Ok(_))) => {}
            Ok(Ok(Err(over))) => return over,
            Ok(Err(e)) => tracing::warn!("cannot measure a run's directory: {e}"),
            Err(e) => tracing::warn!("the measurement of a run's directory stopped: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOMY: DiskLimits = DiskLimits { bytes: 1 << 30, entries: 1000 };

    fn dir() -> (tempfile::TempDir, Dir) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Dir::open_ambient_dir(tmp.path(), ambient_authority()).unwrap();
        (tmp, dir)
    }

    #[test]
    fn counts_files_directories_and_links_without_following_links() {
        let (tmp, dir) = dir();
        std::fs::create_dir_all(tmp.path().join("a/b")).unwrap();
        std::fs::write(tmp.path().join("a/b/f"), vec![1u8; 10_000]).unwrap();
        std::fs::write(tmp.path().join("g"), b"hi").unwrap();
        // A link to a large tree outside counts as one small entry.
        std::os::unix::fs::symlink("/usr", tmp.path().join("link")).unwrap();
        let usage = measure(&dir, ROOMY).unwrap().unwrap();
        assert_eq!(usage.entries, 5);
        assert!((10_002..100_000).contains(&usage.bytes), "{usage:?}");
    }

    #[test]
    fn a_sparse_file_counts_its_length() {
        let (tmp, dir) = dir();
        std::fs::File::create(tmp.path().join("sparse")).unwrap().set_len(1 << 40).unwrap();
        let over = measure(&dir, ROOMY).unwrap().unwrap_err();
        assert_eq!(over, DiskOver::Bytes { bytes: 1 << 40, limit: 1 << 30 });
        assert!(over.to_string().contains("max_disk"), "{over}");
    }

    #[test]
    fn stops_at_the_first_entry_past_the_limit() {
        let (tmp, dir) = dir();
        for i in 0..20 {
            std::fs::write(tmp.path().join(i.to_string()), b"").unwrap();
        }
        let limits = DiskLimits { bytes: 1 << 30, entries: 10 };
        assert_eq!(measure(&dir, limits).unwrap(), Err(DiskOver::Entries { limit: 10 }));
        assert_eq!(measure(&dir, ROOMY).unwrap().unwrap().entries, 20);
    }

    #[test]
    fn a_tree_deeper_than_the_host_measures_is_refused() {
        let (tmp, dir) = dir();
        let mut path = tmp.path().to_path_buf();
        for _ in 0..MAX_NESTING {
            path.push("d");
        }
        std::fs::create_dir_all(&path).unwrap();
        let limits = DiskLimits { bytes: 1 << 30, entries: 10_000 };
        assert!(measure(&dir, limits).unwrap().is_ok(), "{MAX_NESTING} levels are measured");
        path.push("d");
        std::fs::create_dir_all(&path).unwrap();
        assert_eq!(measure(&dir, limits).unwrap(), Err(DiskOver::Nesting));
    }

    #[test]
    fn a_removed_file_still_held_open_counts() {
        let (tmp, _dir) = dir();
        let held = HeldFiles::default();
        let path = tmp.path().join("hidden");
        let file = Arc::new(std::fs::File::create(&path).unwrap());
        held.add(&file);
        std::io::Write::write_all(&mut &*file, &vec![1u8; 2 << 20]).unwrap();
        std::fs::remove_file(&path).unwrap();
        let limits = DiskLimits { bytes: 1 << 20, entries: 100 };
        assert!(matches!(measure_held(tmp.path(), limits, &held).unwrap(), Err(DiskOver::Bytes { .. })));
        assert_eq!(held.alive(), 1);
        // Closed, it takes no room and is forgotten.
        drop(file);
        assert_eq!(measure_held(tmp.path(), limits, &held).unwrap(), Ok(DiskUsage { bytes: 0, entries: 0 }));
        assert_eq!(held.alive(), 0);
    }

    #[tokio::test]
    async fn a_call_is_ended_when_its_directory_passes_the_limit_and_checked_when_it_returns() {
        let tmp = tempfile::tempdir().unwrap();
        let limits = DiskLimits { bytes: 1 << 20, entries: 100 };
        let path = tmp.path().to_path_buf();
        let writer = {
            let path = path.clone();
            async move {
                for i in 0.. {
                    std::fs::write(path.join(i.to_string()), vec![0u8; 64 << 10]).unwrap();
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Ok::<(), ()>(())
            }
        };
        let over =
            tokio::time::timeout(Duration::from_secs(10), within(path.clone(), limits, HeldFiles::default(), writer))
                .await;
        assert!(matches!(over, Ok(Err(DiskOver::Bytes { .. }))), "{over:?}");
        // A call that fills its directory and returns at once is caught as it returns.
        let quick = async { std::fs::write(path.join("quick"), vec![0u8; 2 << 20]).map_err(|_| ()) };
        assert!(matches!(within(path.clone(), limits, HeldFiles::default(), quick).await, Err(DiskOver::Bytes { .. })));
        std::fs::remove_file(path.join("quick")).unwrap();
        let fine = tempfile::tempdir().unwrap();
        let ok = within(fine.path().to_path_buf(), limits, HeldFiles::default(), async { Ok::<_, ()>(7) }).await;
        assert_eq!(ok, Ok(Ok(7)));
    }
}
