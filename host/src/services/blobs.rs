//! Files that pass between tasks by reference (see [`crate::model::files`]).
//!
//! Each instance has a [`RunFiles`]: before a call, the references in the
//! run's input are staged read-only into the instance's `in/` (a directory
//! the guest sees through a read-only preopen, never through its own `.`),
//! and so are those in each child's output as the guest receives it. The
//! local references in the run's output, and in its children's inputs, are
//! stored in the blob store and rewritten to their stored form. A run
//! passes on only blobs it was given (its input, its children's outputs) or
//! stored itself: a digest it made up is refused, so no guest reaches a
//! blob it was not given.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use cap_std::ambient_authority;
use cap_std::fs::Dir;
use serde_json::Value;

use crate::blobs::{BlobError, BlobStore, Put};
use crate::model::files::{
    DirEntry, DirListing, FileRef, RefError, RefKind, STAGED_DIR, refs_in, rewrite_refs, staged_path,
};
use crate::model::{Failure, FailureKind, Tenant};

/// Which JSON a reference came in: it decides what a bad one is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The run's own input.
    RunInput,
    /// The run's output.
    RunOutput,
    /// The input of a child the run submits.
    ChildInput,
    /// The output of a child, as the run receives it.
    ChildOutput,
}

impl Side {
    fn bad(self, message: String) -> Failure {
        let kind = match self {
            Side::RunInput | Side::ChildInput => FailureKind::InvalidInput,
            Side::RunOutput => FailureKind::InvalidOutput,
            Side::ChildOutput => FailureKind::HostError,
        };
        Failure { kind, retryable: self == Side::ChildOutput, message: format!("{}: {message}", self.what()) }
    }

    fn what(self) -> &'static str {
        match self {
            Side::RunInput => "the run's input",
            Side::RunOutput => "the task's output",
            Side::ChildInput => "a child's input",
            Side::ChildOutput => "a child's output",
        }
    }
}

/// The limits of one call.
#[derive(Debug, Clone, Copy, Default)]
pub struct BlobLimits {
    /// Bytes the call may store (`resources.max_blobs`).
    pub per_attempt: u64,
    /// Bytes the tenant's blobs may take (its `blob_storage` quota).
    pub tenant: Option<u64>,
}

/// One instance's files by reference: where its blobs are, and its call's.
pub struct RunFiles {
    blobs: Option<Arc<dyn BlobStore>>,
    call: CallFiles,
}

/// A call's files: the instance's directories, the run's tenant and limits,
/// what the run was given and what it stored.
#[derive(Default)]
struct CallFiles {
    work: Option<Arc<Dir>>,
    inbox: Option<Arc<Dir>>,
    tenant: Tenant,
    /// Digests given to the run (or stored by it), each as the kind it came as:
    /// a file's digest is never read as a directory's listing.
    given: HashMap<crate::model::files::Digest, RefKind>,
    stored: u64,
    limits: BlobLimits,
}

/// A call's files lent to a blocking thread, with the store.
struct Job {
    blobs: Arc<dyn BlobStore>,
    call: CallFiles,
}

impl RunFiles {
    /// Files of an instance of a host whose blobs are in `blobs` (`None`:
    /// references are refused).
    pub fn new(blobs: Option<Arc<dyn BlobStore>>) -> Self {
        RunFiles { blobs, call: CallFiles::default() }
    }

    /// The instance's own directory (`work`, the guest's `.`) and the one
    /// references are staged into (`inbox`, the guest's read-only `in`);
    /// both exist (the caller made them to preopen them).
    pub fn set_dirs(&mut self, work: &Path, inbox: &Path) -> std::io::Result<()> {
        self.call.work = Some(Arc::new(Dir::open_ambient_dir(work, ambient_authority())?));
        self.call.inbox = Some(Arc::new(Dir::open_ambient_dir(inbox, ambient_authority())?));
        Ok(())
    }

    /// Gets ready for a call of `tenant`'s run: nothing given, nothing
    /// stored, and the staging directory empty (a warm instance's last run
    /// leaves nothing to the next).
    pub fn reset(&mut self, tenant: &Tenant, limits: BlobLimits) {
        let call = &mut self.call;
        call.tenant.clone_from(tenant);
        call.given.clear();
        call.stored = 0;
        call.limits = limits;
        if let Some(inbox) = &call.inbox
            && let Ok(entries) = inbox.entries()
        {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if let Err(e) = crate::sandbox::remove_tree(inbox, &name) {
                    tracing::warn!("cannot empty the staged files of an instance ({name}): {e}");
                }
            }
        }
    }

    /// Bytes stored by this call.
    pub fn stored(&self) -> u64 {
        self.call.stored
    }

    /// Whether `json` may hold a reference: a cheap look before parsing
    /// (an escaped key, `\u0024file`, counts as one too).
    fn may_refer(json: &str) -> bool {
        json.contains("$file") || json.contains("$dir") || json.contains("\\u")
    }

    /// Runs `work` on the call's files on a blocking thread, and takes them back.
    async fn on_thread<T: Send + 'static>(
        &mut self,
        side: Side,
        work: impl FnOnce(&mut Job) -> Result<T, Failure> + Send + 'static,
    ) -> Result<T, Failure> {
        let Some(blobs) = self.blobs.clone() else {
            return Err(side.bad("files by reference are not available on this host".into()));
        };
        // The call's setting stays, whatever becomes of the thread.
        let (work_dir, inbox) = (self.call.work.clone(), self.call.inbox.clone());
        let (tenant, limits, stored) = (self.call.tenant.clone(), self.call.limits, self.call.stored);
        let mut job = Job { blobs, call: std::mem::take(&mut self.call) };
        let done = tokio::task::spawn_blocking(move || {
            let result = work(&mut job);
            (job.call, result)
        })
        .await;
        match done {
            Ok((call, result)) => {
                self.call = call;
                result
            }
            Err(_) => {
                (self.call.work, self.call.inbox) = (work_dir, inbox);
                (self.call.tenant, self.call.limits, self.call.stored) = (tenant, limits, stored);
                Err(Failure::host("the file staging worker stopped unexpectedly"))
            }
        }
    }

    /// Stages every stored reference in `json` (from `side`) into `in/`, and
    /// counts it as given to the run.
    pub async fn stage(&mut self, json: &str, side: Side) -> Result<(), Failure> {
        if !Self::may_refer(json) {
            return Ok(());
        }
        let value: Value = serde_json::from_str(json).map_err(|e| side.bad(format!("not JSON: {e}")))?;
        let refs = refs_in(&value).map_err(|e| side.bad(e.0))?;
        if refs.is_empty() {
            return Ok(());
        }
        self.on_thread(side, move |job| refs.iter().try_for_each(|r| job.stage(r, side))).await
    }

    /// Stores every local reference in `json` (from `side`), checks every
    /// stored one was given, and returns `json` with local references in
    /// their stored form.
    pub async fn store(&mut self, json: String, how: Put, side: Side) -> Result<String, Failure> {
        if !Self::may_refer(&json) {
            return Ok(json);
        }
        let mut value: Value = serde_json::from_str(&json).map_err(|e| side.bad(format!("not JSON: {e}")))?;
        if refs_in(&value).map_err(|e| side.bad(e.0))?.is_empty() {
            return Ok(json);
        }
        self.on_thread(side, move |job| {
            let stored = rewrite_refs::<Outcome>(&mut value, &mut |r| job.store(r, how, side).map_err(Outcome));
            stored.map(|()| value.to_string()).map_err(|Outcome(f)| f)
        })
        .await
    }
}

/// A failure, carried through [`rewrite_refs`].
struct Outcome(Failure);

impl From<RefError> for Outcome {
    fn from(e: RefError) -> Self {
        Outcome(Failure::new(FailureKind::InvalidOutput, e.0, false))
    }
}

impl Job {
    fn store_error(&self, e: BlobError, side: Side) -> Failure {
        match e {
            BlobError::Source { .. } => side.bad(e.to_string()),
            BlobError::TooLarge { path, size, .. } => {
                let run_room = self.call.limits.per_attempt.saturating_sub(self.call.stored);
                let message = match self.tenant_room() {
                    Some(room) if room < run_room => format!(
                        "{path} ({size} bytes or more) would take tenant {} past its `blob_storage` quota of {} bytes; remove old runs (`cairn gc`) or raise the quota",
                        self.call.tenant,
                        self.call.limits.tenant.unwrap_or_default()
                    ),
                    _ => format!(
                        "{path} ({size} bytes or more) would take this attempt past its environment's `resources.max_blobs` of {} bytes ({} stored already); store less, or raise it",
                        self.call.limits.per_attempt, self.call.stored
                    ),
                };
                Failure { kind: FailureKind::BlobLimit, message, retryable: false }
            }
            other => Failure::host(other.to_string()),
        }
    }

    /// What the tenant may still store, if it has a quota.
    fn tenant_room(&self) -> Option<u64> {
        let quota = self.call.limits.tenant?;
        let used = self.blobs.usage(&self.call.tenant).unwrap_or(quota);
        Some(quota.saturating_sub(used))
    }

    /// Bytes the next file may have.
    fn room(&self) -> u64 {
        let run = self.call.limits.per_attempt.saturating_sub(self.call.stored);
        self.tenant_room().map_or(run, |tenant| tenant.min(run))
    }

    fn stage(&mut self, r: &FileRef, side: Side) -> Result<(), Failure> {
        let FileRef::Stored { kind, digest, name, .. } = r else {
            return Err(side.bad(format!(
                "{r:?} is a path, not a stored file: store it first (`cairn blobs put FILE` prints a reference)"
            )));
        };
        let Some(inbox) = self.call.inbox.clone() else {
            return Err(Failure::host("this instance has no staging directory"));
        };
        let inner = staged_path(digest, name);
        let inner = inner.strip_prefix(&format!("{STAGED_DIR}/")).unwrap_or(&inner).to_owned();
        let missing = |e: BlobError| match e {
            BlobError::Missing { .. } => side.bad(e.to_string()),
            other => Failure::host(other.to_string()),
        };
        match kind {
            RefKind::File => self.blobs.stage(&self.call.tenant, digest, &inbox, &inner).map_err(missing)?,
            RefKind::Dir => {
                let listing = self.listing(digest).map_err(missing)?;
                inbox.create_dir_all(&inner).map_err(|e| Failure::host(format!("cannot stage {name}: {e}")))?;
                for entry in &listing.files {
                    let at = format!("{inner}/{}", entry.path);
                    self.blobs.stage(&self.call.tenant, &entry.digest, &inbox, &at).map_err(missing)?;
                    self.call.given.insert(entry.digest.clone(), RefKind::File);
                }
            }
        }
        self.call.given.insert(digest.clone(), *kind);
        Ok(())
    }

    fn listing(&self, digest: &crate::model::files::Digest) -> Result<DirListing, BlobError> {
        let listing = self.blobs.listing(&self.call.tenant, digest)?;
        listing.check().map_err(|_| BlobError::Missing {
            tenant: self.call.tenant.to_string(),
            digest: format!("{digest} (as a directory)"),
        })?;
        Ok(listing)
    }

    fn store(&mut self, r: &FileRef, how: Put, side: Side) -> Result<Option<Value>, Failure> {
        match r {
            FileRef::Stored { digest, kind, .. } if self.call.given.get(digest) == Some(kind) => Ok(None),
            FileRef::Stored { digest, kind, .. } => Err(side.bad(format!(
                "it refers to {digest}, which this run was not given as a {} (a run passes on only the files and directories in its input, its children's outputs, and those it writes)",
                if *kind == RefKind::Dir { "directory" } else { "file" }
            ))),
            FileRef::Local { kind, path, name } => {
                let Some(work) = self.call.work.clone() else { return Err(Failure::host("this instance has no directory")) };
                let name = name.clone().unwrap_or_else(|| path.rsplit('/').next().unwrap_or(path).to_owned());
                match kind {
                    RefKind::File => {
                        let stored = self
                            .blobs
                            .put(&self.call.tenant, &work, path, how, self.room())
                            .map_err(|e| self.store_error(e, side))?;
                        self.call.stored += stored.size;
                        self.call.given.insert(stored.digest.clone(), RefKind::File);
                        Ok(Some(FileRef::stored_json(RefKind::File, &stored.digest, &name, stored.size, None)))
                    }
                    RefKind::Dir => {
                        let mut files = Vec::new();
                        self.walk(&work, path, "", how, side, &mut files)?;
                        files.sort_by(|a, b| a.path.cmp(&b.path));
                        let size = files.iter().map(|f| f.size).sum();
                        let count = files.len() as u64;
                        let listing = serde_json::to_vec(&DirListing { files })
                            .map_err(|e| Failure::host(format!("cannot write a directory listing: {e}")))?;
                        let stored =
                            self.blobs.put_bytes(&self.call.tenant, &listing).map_err(|e| self.store_error(e, side))?;
                        self.call.given.insert(stored.digest.clone(), RefKind::Dir);
                        Ok(Some(FileRef::stored_json(RefKind::Dir, &stored.digest, &name, size, Some(count))))
                    }
                }
            }
        }
    }

    /// Stores every file under `base/inner` of `work`, depth first. Links
    /// are refused: a directory is stored as the files in it.
    fn walk(
        &mut self,
        work: &Dir,
        base: &str,
        inner: &str,
        how: Put,
        side: Side,
        files: &mut Vec<DirEntry>,
    ) -> Result<(), Failure> {
        let here = if inner.is_empty() { base.to_owned() } else { format!("{base}/{inner}") };
        let entries = work.read_dir(&here).map_err(|e| side.bad(format!("{here}: {e}")))?;
        for entry in entries {
            let entry = entry.map_err(|e| side.bad(format!("{here}: {e}")))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let relative = if inner.is_empty() { name.clone() } else { format!("{inner}/{name}") };
            let kind = entry.file_type().map_err(|e| side.bad(format!("{here}/{name}: {e}")))?;
            if kind.is_dir() {
                self.walk(work, base, &relative, how, side, files)?;
            } else if kind.is_file() {
                let path = format!("{base}/{relative}");
                let stored = self
                    .blobs
                    .put(&self.call.tenant, work, &path, how, self.room())
                    .map_err(|e| self.store_error(e, side))?;
                self.call.stored += stored.size;
                self.call.given.insert(stored.digest.clone(), RefKind::File);
                files.push(DirEntry { path: relative, digest: stored.digest, size: stored.size });
            } else {
                return Err(side.bad(format!(
                    "{here}/{name} is a link or a special file; a directory is stored as its plain files"
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use sha2::{Digest as _, Sha256};

    use super::*;
    use crate::blobs::local::LocalBlobs;

    fn files() -> (tempfile::TempDir, RunFiles) {
        let dir = tempfile::tempdir().unwrap();
        let blobs: Arc<dyn BlobStore> = Arc::new(LocalBlobs::open(&dir.path().join("blobs")).unwrap());
        std::fs::create_dir(dir.path().join("work")).unwrap();
        std::fs::create_dir(dir.path().join("in")).unwrap();
        let mut files = RunFiles::new(Some(blobs));
        files.set_dirs(&dir.path().join("work"), &dir.path().join("in")).unwrap();
        files.reset(&Tenant::default(), BlobLimits { per_attempt: 1 << 20, tenant: None });
        (dir, files)
    }

    #[tokio::test]
    async fn a_file_cannot_be_passed_on_as_a_directory() {
        let (dir, mut files) = files();
        // A listing forged by the guest, naming a blob it was never given.
        let secret = format!("sha256:{}", "ab".repeat(32));
        let listing = format!(r#"{{"files":[{{"path":"x","digest":"{secret}","size":0}}]}}"#);
        std::fs::write(dir.path().join("work/listing.json"), &listing).unwrap();
        let forged = format!("sha256:{}", hex::encode(Sha256::digest(listing.as_bytes())));
        let input = format!(r#"{{"a": {{"$file": "listing.json"}}, "b": {{"$dir": "{forged}"}}}}"#);
        let refused = files.store(input, Put::Copy, Side::ChildInput).await.unwrap_err();
        assert_eq!(refused.kind, FailureKind::InvalidInput);
        assert!(refused.message.contains("not given as a directory"), "{}", refused.message);
        // Passed on as the file it is, it goes.
        let input = format!(r#"{{"a": {{"$file": "listing.json"}}, "b": {{"$file": "{forged}"}}}}"#);
        files.store(input, Put::Copy, Side::ChildInput).await.unwrap();
    }

    #[tokio::test]
    async fn a_path_under_in_is_refused_with_what_to_do() {
        let (_dir, mut files) = files();
        let refused = files.store(r#"{"f": {"$file": "in/0123/t.csv"}}"#.into(), Put::Copy, Side::RunOutput).await;
        let refused = refused.unwrap_err();
        assert!(refused.message.contains("pass on the reference it came as"), "{}", refused.message);
    }

    #[tokio::test]
    async fn a_blob_stored_again_keeps_its_first_file() {
        let (dir, mut files) = files();
        std::fs::write(dir.path().join("work/a.txt"), "same").unwrap();
        let first = files.store(r#"{"f": {"$file": "a.txt"}}"#.into(), Put::Move, Side::RunOutput).await.unwrap();
        let stored = dir.path().join(format!(
            "blobs/default/development/sha256/{0}/{1}",
            &hex::encode(Sha256::digest(b"same"))[..2],
            hex::encode(Sha256::digest(b"same"))
        ));
        let inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&stored).unwrap());
        std::fs::write(dir.path().join("work/b.txt"), "same").unwrap();
        let second = files.store(r#"{"f": {"$file": "b.txt"}}"#.into(), Put::Move, Side::RunOutput).await.unwrap();
        assert_eq!(first.replace("a.txt", "b.txt"), second);
        // The task's second file (which it might still hold open) did not replace the stored one.
        assert_eq!(std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&stored).unwrap()), inode);
    }
}
