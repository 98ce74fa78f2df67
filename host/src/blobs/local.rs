//! Blobs in a directory: `<dir>/<project>/<domain>/sha256/<2 hex>/<64 hex>`,
//! written under `<dir>/.tmp/` and renamed into place, read-only once there.
//!
//! The same directory shared by several hosts (a network filesystem every
//! worker mounts) is the deployment for more than one machine: a blob is
//! written whole before it is renamed into place, so a host never sees half
//! of one, and two hosts storing the same bytes store the same file.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use cap_std::ambient_authority;
use cap_std::fs::{Dir, MetadataExt};
use sha2::{Digest as _, Sha256};

use super::{BlobError, BlobInfo, BlobStore, Put, Stored};
use crate::model::Tenant;
use crate::model::files::Digest;

/// Bytes read or written at a time: all the memory a blob of any size costs.
const CHUNK: usize = 1 << 20;
const TMP: &str = ".tmp";

/// A blob store in a directory.
pub struct LocalBlobs {
    path: PathBuf,
    root: Dir,
    tmp: Dir,
    /// Bytes per tenant, counted once and kept up to date by this process.
    usage: Mutex<HashMap<String, u64>>,
}

fn io(location: &Path, doing: impl Into<String>) -> impl FnOnce(std::io::Error) -> BlobError {
    let (location, doing) = (location.display().to_string(), doing.into());
    move |source| BlobError::Io { location, doing, source }
}

/// What an I/O error on a task's own file means to the task.
fn source_error(path: &str, error: &std::io::Error) -> BlobError {
    let why = match error.kind() {
        std::io::ErrorKind::NotFound => "no such file in the task's directory".to_owned(),
        std::io::ErrorKind::PermissionDenied => "not readable, or outside the task's directory".to_owned(),
        _ => error.to_string(),
    };
    BlobError::Source { path: path.to_owned(), why }
}

impl LocalBlobs {
    /// Opens (making it if need be) the store in `path`.
    pub fn open(path: &Path) -> Result<LocalBlobs, BlobError> {
        std::fs::create_dir_all(path.join(TMP)).map_err(io(path, "create the directory"))?;
        let root = Dir::open_ambient_dir(path, ambient_authority()).map_err(io(path, "open the directory"))?;
        let tmp = root.open_dir(TMP).map_err(io(path, "open .tmp"))?;
        Ok(LocalBlobs { path: path.to_path_buf(), root, tmp, usage: Mutex::new(HashMap::new()) })
    }

    fn err(&self, doing: impl Into<String>) -> impl FnOnce(std::io::Error) -> BlobError {
        io(&self.path, doing)
    }

    fn tenant_dir(tenant: &Tenant) -> PathBuf {
        Path::new(&tenant.project).join(&tenant.domain).join("sha256")
    }

    fn blob_path(tenant: &Tenant, digest: &Digest) -> PathBuf {
        Self::tenant_dir(tenant).join(&digest.hex()[..2]).join(digest.hex())
    }

    /// Copies `from` into `to` in chunks, hashing as it goes; fails past `max` bytes.
    fn copy_hashing(
        from: &mut impl Read,
        to: &mut impl Write,
        max: u64,
        shown: &str,
    ) -> Result<(Sha256, u64), BlobError> {
        let mut hash = Sha256::new();
        let mut buffer = vec![0u8; CHUNK];
        let mut size = 0u64;
        loop {
            let n = from.read(&mut buffer).map_err(|e| source_error(shown, &e))?;
            if n == 0 {
                return Ok((hash, size));
            }
            size += n as u64;
            if size > max {
                return Err(BlobError::TooLarge { path: shown.into(), size, limit: max, what: "it may have".into() });
            }
            hash.update(&buffer[..n]);
            to.write_all(&buffer[..n]).map_err(|e| source_error(shown, &e))?;
        }
    }

    /// Renames `.tmp/<name>` into place as `digest` (read-only), counting
    /// it in the tenant's usage if it is new.
    fn install(&self, tenant: &Tenant, name: &str, stored: Stored) -> Result<Stored, BlobError> {
        let path = Self::blob_path(tenant, &stored.digest);
        if let Some(parent) = path.parent() {
            self.root.create_dir_all(parent).map_err(self.err("make a blob folder"))?;
        }
        // Its time is when it was stored (or last stored again), whatever the
        // task set on its file: collection keeps blobs younger than its grace.
        let now = cap_std::time::SystemTime::from_std(std::time::SystemTime::now());
        if self.root.exists(&path) {
            // The same bytes are stored already: that file stays (a moved file
            // could still be open in the task), this one goes.
            let _ = self.tmp.remove_file(name);
            if let Ok(file) = self.root.open(&path) {
                let _ = file.into_std().set_modified(now.into_std());
            }
            return Ok(stored);
        }
        let file = self.tmp.open(name).map_err(self.err("open a stored blob"))?;
        file.into_std().set_modified(now.into_std()).map_err(self.err("date a blob"))?;
        self.tmp
            .set_permissions(name, cap_std::fs::Permissions::from_std(std::fs::Permissions::from_mode(0o444)))
            .map_err(self.err("make a blob read-only"))?;
        self.tmp.rename(name, &self.root, &path).map_err(self.err(format!("store blob {}", stored.digest)))?;
        {
            let mut usage = self.usage.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(bytes) = usage.get_mut(&tenant.to_string()) {
                *bytes += stored.size;
            }
        }
        Ok(stored)
    }

    fn scan(&self, tenant: &Tenant) -> Result<Vec<BlobInfo>, BlobError> {
        let base = Self::tenant_dir(tenant);
        let Ok(folders) = self.root.read_dir(&base) else { return Ok(Vec::new()) };
        let mut found = Vec::new();
        for folder in folders {
            let folder = folder.map_err(self.err("list blobs"))?;
            let Ok(entries) = folder.open_dir().and_then(|d| d.entries()) else { continue };
            for entry in entries {
                let entry = entry.map_err(self.err("list blobs"))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let Some(digest) = Digest::parse(&format!("sha256:{name}")) else { continue };
                let meta = entry.metadata().map_err(self.err("list blobs"))?;
                let stored_at_ms = meta
                    .modified()
                    .ok()
                    .and_then(|t| t.into_std().duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_millis() as u64);
                found.push(BlobInfo { digest, size: meta.len(), stored_at_ms });
            }
        }
        found.sort_by(|a, b| a.digest.cmp(&b.digest));
        Ok(found)
    }
}

impl BlobStore for LocalBlobs {
    fn put(&self, tenant: &Tenant, dir: &Dir, path: &str, how: Put, max: u64) -> Result<Stored, BlobError> {
        let meta = dir.symlink_metadata(path).map_err(|e| source_error(path, &e))?;
        if meta.is_dir() {
            return Err(BlobError::Source {
                path: path.into(),
                why: "it is a directory: refer to it with `$dir`".into(),
            });
        }
        if meta.is_file() && meta.len() > max {
            let what = "it may have".into();
            return Err(BlobError::TooLarge { path: path.into(), size: meta.len(), limit: max, what });
        }
        let name = format!("{}.partial", uuid::Uuid::new_v4());
        // A plain file with one link moves; anything else (a link, a file linked
        // twice, which the task could change through its other name) is copied.
        let single = meta.is_file() && meta.nlink() == 1;
        let moved = how == Put::Move && single && dir.rename(path, &self.tmp, &name).is_ok();
        let result = if moved {
            let mut file = self.tmp.open(&name).map_err(self.err("read a moved file"))?;
            Self::copy_hashing(&mut file, &mut std::io::sink(), u64::MAX, path)
        } else {
            let mut from = dir.open(path).map_err(|e| source_error(path, &e))?;
            let mut to = self.tmp.create(&name).map_err(self.err("write a blob"))?;
            Self::copy_hashing(&mut from, &mut to, max, path).and_then(|done| {
                to.sync_all().map_err(self.err("sync a blob"))?;
                Ok(done)
            })
        };
        let (hash, size) = match result {
            Ok(done) => done,
            Err(e) => {
                let _ = self.tmp.remove_file(&name);
                return Err(e);
            }
        };
        self.install(tenant, &name, Stored { digest: Digest::of_hash(&hash.finalize()), size })
    }

    fn put_bytes(&self, tenant: &Tenant, bytes: &[u8]) -> Result<Stored, BlobError> {
        let name = format!("{}.partial", uuid::Uuid::new_v4());
        let mut file = self.tmp.create(&name).map_err(self.err("write a blob"))?;
        file.write_all(bytes).and_then(|()| file.sync_all()).map_err(self.err("write a blob"))?;
        let digest = Digest::of_hash(&Sha256::digest(bytes));
        self.install(tenant, &name, Stored { digest, size: bytes.len() as u64 })
    }

    fn read_small(&self, tenant: &Tenant, digest: &Digest, max: u64) -> Result<Vec<u8>, BlobError> {
        let mut file = self.open(tenant, digest)?;
        let mut bytes = Vec::new();
        (&mut file).take(max + 1).read_to_end(&mut bytes).map_err(self.err(format!("read blob {digest}")))?;
        if bytes.len() as u64 > max {
            let what = "a directory listing may have".into();
            return Err(BlobError::TooLarge { path: digest.to_string(), size: bytes.len() as u64, limit: max, what });
        }
        Ok(bytes)
    }

    fn stage(&self, tenant: &Tenant, digest: &Digest, dir: &Dir, path: &str) -> Result<(), BlobError> {
        let blob = Self::blob_path(tenant, digest);
        if !self.root.exists(&blob) {
            return Err(BlobError::Missing { tenant: tenant.to_string(), digest: digest.to_string() });
        }
        if let Some(parent) = Path::new(path).parent().filter(|p| !p.as_os_str().is_empty()) {
            dir.create_dir_all(parent).map_err(self.err(format!("make {}", parent.display())))?;
        }
        if dir.exists(path) {
            return Ok(());
        }
        if self.root.hard_link(&blob, dir, path).is_ok() {
            return Ok(());
        }
        let mut from = self.root.open(&blob).map_err(self.err(format!("read blob {digest}")))?;
        let mut to = dir.create(path).map_err(self.err(format!("stage {path}")))?;
        std::io::copy(&mut from, &mut to).map_err(self.err(format!("stage {path}")))?;
        Ok(())
    }

    fn open(&self, tenant: &Tenant, digest: &Digest) -> Result<std::fs::File, BlobError> {
        match self.root.open(Self::blob_path(tenant, digest)) {
            Ok(file) => Ok(file.into_std()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(BlobError::Missing { tenant: tenant.to_string(), digest: digest.to_string() })
            }
            Err(e) => Err(self.err(format!("read blob {digest}"))(e)),
        }
    }

    fn list(&self, tenant: &Tenant) -> Result<Vec<BlobInfo>, BlobError> {
        self.scan(tenant)
    }

    fn remove(&self, tenant: &Tenant, digest: &Digest) -> Result<bool, BlobError> {
        let path = Self::blob_path(tenant, digest);
        let size = match self.root.metadata(&path) {
            Ok(meta) => meta.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(self.err(format!("remove blob {digest}"))(e)),
        };
        self.root.remove_file(&path).map_err(self.err(format!("remove blob {digest}")))?;
        let mut usage = self.usage.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(bytes) = usage.get_mut(&tenant.to_string()) {
            *bytes = bytes.saturating_sub(size);
        }
        Ok(true)
    }

    fn usage(&self, tenant: &Tenant) -> Result<u64, BlobError> {
        let key = tenant.to_string();
        if let Some(bytes) = self.usage.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Ok(*bytes);
        }
        let bytes = self.scan(tenant)?.iter().map(|b| b.size).sum();
        self.usage.lock().unwrap_or_else(|e| e.into_inner()).insert(key, bytes);
        Ok(bytes)
    }

    fn location(&self) -> String {
        self.path.display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, LocalBlobs, Dir, Tenant) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("work")).unwrap();
        let blobs = LocalBlobs::open(&dir.path().join("blobs")).unwrap();
        let work = Dir::open_ambient_dir(dir.path().join("work"), ambient_authority()).unwrap();
        (dir, blobs, work, Tenant::default())
    }

    #[test]
    fn the_same_bytes_are_stored_once_and_counted_once() {
        let (_dir, blobs, work, tenant) = setup();
        work.write("a.txt", "same bytes").unwrap();
        work.write("b.txt", "same bytes").unwrap();
        let a = blobs.put(&tenant, &work, "a.txt", Put::Copy, u64::MAX).unwrap();
        assert_eq!(blobs.usage(&tenant).unwrap(), 10);
        let b = blobs.put(&tenant, &work, "b.txt", Put::Copy, u64::MAX).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.digest.to_string(), format!("sha256:{}", hex::encode(Sha256::digest(b"same bytes"))));
        assert_eq!(blobs.list(&tenant).unwrap().len(), 1);
        assert_eq!(blobs.usage(&tenant).unwrap(), 10, "a duplicate takes no more room");
        assert!(work.exists("a.txt") && work.exists("b.txt"), "copies leave the task's files");
        let other = Tenant::new("other", "prod").unwrap();
        assert!(matches!(blobs.open(&other, &a.digest), Err(BlobError::Missing { .. })), "one namespace per tenant");
        assert!(blobs.remove(&tenant, &a.digest).unwrap());
        assert_eq!(blobs.usage(&tenant).unwrap(), 0);
    }

    #[test]
    fn a_file_moves_unless_it_has_another_name_and_links_never_lead_out() {
        let (dir, blobs, work, tenant) = setup();
        work.write("alone.bin", vec![7u8; 3 * CHUNK + 5]).unwrap();
        let moved = blobs.put(&tenant, &work, "alone.bin", Put::Move, u64::MAX).unwrap();
        assert_eq!(moved.size, (3 * CHUNK + 5) as u64);
        assert!(!work.exists("alone.bin"), "moved, not copied");
        // A file with a second name could be changed through it: copied.
        work.write("twice.bin", "x").unwrap();
        work.hard_link("twice.bin", &work, "other-name.bin").unwrap();
        blobs.put(&tenant, &work, "twice.bin", Put::Move, u64::MAX).unwrap();
        assert!(work.exists("twice.bin"));
        // A link out of the task's directory is not followed.
        std::fs::write(dir.path().join("secret.txt"), "host file").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret.txt"), dir.path().join("work/escape")).unwrap();
        let refused = blobs.put(&tenant, &work, "escape", Put::Move, u64::MAX).unwrap_err();
        assert!(matches!(refused, BlobError::Source { .. }), "{refused}");
        assert!(matches!(blobs.put(&tenant, &work, "missing", Put::Copy, 9), Err(BlobError::Source { .. })));
        // Past the limit: refused, and nothing left half-written.
        work.write("big.bin", vec![1u8; 100]).unwrap();
        let over = blobs.put(&tenant, &work, "big.bin", Put::Copy, 99).unwrap_err();
        assert!(matches!(over, BlobError::TooLarge { size: 100, limit: 99, .. }), "{over}");
        assert_eq!(std::fs::read_dir(dir.path().join("blobs/.tmp")).unwrap().count(), 0);
    }

    #[test]
    fn a_staged_blob_is_a_read_only_link_in_its_folder() {
        let (dir, blobs, work, tenant) = setup();
        work.write("t.csv", "a,b\n").unwrap();
        let stored = blobs.put(&tenant, &work, "t.csv", Put::Copy, u64::MAX).unwrap();
        std::fs::create_dir(dir.path().join("in")).unwrap();
        let inbox = Dir::open_ambient_dir(dir.path().join("in"), ambient_authority()).unwrap();
        blobs.stage(&tenant, &stored.digest, &inbox, "0123/t.csv").unwrap();
        blobs.stage(&tenant, &stored.digest, &inbox, "0123/t.csv").unwrap();
        assert_eq!(inbox.read_to_string("0123/t.csv").unwrap(), "a,b\n");
        let meta = std::fs::metadata(dir.path().join("in/0123/t.csv")).unwrap();
        assert!(meta.permissions().readonly());
        let missing = Digest::parse(&format!("sha256:{}", "0".repeat(64))).unwrap();
        assert!(matches!(blobs.stage(&tenant, &missing, &inbox, "x"), Err(BlobError::Missing { .. })));
    }
}
