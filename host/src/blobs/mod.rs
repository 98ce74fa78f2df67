//! The blob store: files that pass between tasks by reference, addressed by
//! their sha256, one namespace per tenant.
//!
//! [`BlobStore`] is what the host needs of one; [`local::LocalBlobs`] keeps
//! blobs in a directory: `.cairn/blobs/` by default, or a directory every
//! host of a deployment mounts (`[blobs] dir` in the manifest; see README,
//! "Files between tasks"). Files go in and out through cap-std directory
//! handles, never by ambient paths, and always in bounded chunks: a blob's
//! size never costs the host memory.

pub mod local;

use cap_std::fs::Dir;

use crate::model::Tenant;
use crate::model::files::{Digest, DirListing};

/// The largest directory listing read back (a directory of some 100,000 files).
pub const MAX_LISTING: u64 = 16 << 20;

/// Errors of the blob store.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// The store's directory failed.
    #[error("blob store {location}: cannot {doing}: {source}")]
    Io {
        /// The store.
        location: String,
        /// What it was doing.
        doing: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file to store is not there, or not a file.
    #[error("{path}: {why}")]
    Source {
        /// The path the task gave.
        path: String,
        /// What is wrong with it.
        why: String,
    },
    /// The file is larger than may be stored.
    #[error("{path} is {size} bytes, more than the {limit} bytes {what}")]
    TooLarge {
        /// The path the task gave.
        path: String,
        /// Its size (so far).
        size: u64,
        /// The limit.
        limit: u64,
        /// Whose limit.
        what: String,
    },
    /// No blob of this digest in the tenant's namespace.
    #[error("no blob {digest} in the store of {tenant}")]
    Missing {
        /// The tenant.
        tenant: String,
        /// The digest.
        digest: String,
    },
}

/// Whether a stored file may be moved out of its directory or must be copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    /// The task is done with it (its run ended): moved when the filesystem
    /// allows, else copied.
    Move,
    /// The task goes on and may change it: copied.
    Copy,
}

/// A stored blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Its address.
    pub digest: Digest,
    /// Its bytes.
    pub size: u64,
}

/// A blob as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    /// Its address.
    pub digest: Digest,
    /// Its bytes.
    pub size: u64,
    /// When it was stored, in ms since the epoch.
    pub stored_at_ms: u64,
}

/// Where blobs live. Every call blocks on the filesystem: call it off the
/// async threads.
pub trait BlobStore: Send + Sync {
    /// Stores file `path` of `dir` (opened through `dir`, so that nothing in
    /// it can lead elsewhere) for `tenant`, if it is at most `max` bytes.
    fn put(&self, tenant: &Tenant, dir: &Dir, path: &str, how: Put, max: u64) -> Result<Stored, BlobError>;
    /// Stores `bytes` (a directory listing).
    fn put_bytes(&self, tenant: &Tenant, bytes: &[u8]) -> Result<Stored, BlobError>;
    /// A small blob's bytes (a directory listing), at most `max` of them.
    fn read_small(&self, tenant: &Tenant, digest: &Digest, max: u64) -> Result<Vec<u8>, BlobError>;
    /// Makes the blob appear as file `path` of `dir` (made with its folders),
    /// without reading it through memory: a hard link where the filesystem
    /// allows, else a copy. `dir` must be one the guest sees read-only.
    fn stage(&self, tenant: &Tenant, digest: &Digest, dir: &Dir, path: &str) -> Result<(), BlobError>;
    /// The blob, to read.
    fn open(&self, tenant: &Tenant, digest: &Digest) -> Result<std::fs::File, BlobError>;
    /// A directory's listing: the blob `digest` read as one (at most
    /// [`MAX_LISTING`] bytes of JSON). Its paths are not checked here.
    fn listing(&self, tenant: &Tenant, digest: &Digest) -> Result<DirListing, BlobError> {
        let bytes = self.read_small(tenant, digest, MAX_LISTING)?;
        serde_json::from_slice(&bytes).map_err(|_| BlobError::Missing {
            tenant: tenant.to_string(),
            digest: format!("{digest} (as a directory)"),
        })
    }
    /// The tenant's blobs.
    fn list(&self, tenant: &Tenant) -> Result<Vec<BlobInfo>, BlobError>;
    /// Removes a blob; returns whether it was there.
    fn remove(&self, tenant: &Tenant, digest: &Digest) -> Result<bool, BlobError>;
    /// Bytes the tenant's blobs take.
    fn usage(&self, tenant: &Tenant) -> Result<u64, BlobError>;
    /// Where it is, for messages.
    fn location(&self) -> String;
}
