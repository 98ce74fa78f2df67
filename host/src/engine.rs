//! The one wasmtime [`Engine`] of a host process, its epoch ticker and the
//! on-disk cache of precompiled components.
//!
//! A component compiles once: the artifact is stored under
//! `.cairn/artifacts/<component sha256>-<engine hash>.cwasm` and later loads
//! are an mmap ([`Component::deserialize_file`]). The engine hash covers the
//! wasmtime version and every compilation setting, so an artifact made by a
//! different build of the host is never loaded. An index under
//! `artifacts/index/` remembers each component file's digest by its path,
//! length, modification time and inode, so an unchanged file is not even
//! read again.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// Component instances the pooling allocator holds at once: warm instances
/// of every pool, fresh ones running and fresh ones parked (see
/// [`MAX_FRESH_INSTANCES`] and [`MAX_PARKED_INSTANCES`]), and the reaper's backlog.
pub const MAX_INSTANCES: u32 = 1600;
/// Fresh (not pooled) instances running at once; more attempts wait their turn.
pub const MAX_FRESH_INSTANCES: usize = 200;
/// Fresh instances parked at once: waiting on their children, they hold an
/// instance slot of the engine but none of [`MAX_FRESH_INSTANCES`].
pub const MAX_PARKED_INSTANCES: usize = 600;

/// How the fresh-instance slots are shared between trees of runs (see
/// [`crate::services::fresh`]): a tree holds up to half of them while others
/// might want the rest, and past that all but a tenth; it parks up to half
/// of the parking.
pub const FRESH_SLOTS: crate::services::fresh::SlotPolicy = crate::services::fresh::SlotPolicy {
    slots: MAX_FRESH_INSTANCES,
    share: MAX_FRESH_INSTANCES / 2,
    reserve: MAX_FRESH_INSTANCES / 10,
    parking: MAX_PARKED_INSTANCES,
    parking_per_tree: MAX_PARKED_INSTANCES / 2,
};
/// The most warm instances all pools together may hold: what is left of
/// [`MAX_INSTANCES`] after fresh instances, parked ones and the reaper's backlog.
pub const MAX_POOLED_INSTANCES: usize = 700;

/// How often the epoch advances; attempt timeouts are measured in these ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Errors from building the engine or loading a component.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// wasmtime refused the configuration.
    #[error("cannot create the wasmtime engine: {0}")]
    Config(String),
    /// The component file is not there.
    #[error("component {} does not exist; build it with `cairn build` or fix the task's `component` path", .0.display())]
    Missing(PathBuf),
    /// The component file cannot be read.
    #[error("cannot read component {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is a core module rather than a component.
    #[error(
        "{} is a core WebAssembly module, not a component; run `cairn build` (it componentizes core modules with the WASI adapter) or point the task at the built component",
        .0.display()
    )]
    CoreModule(PathBuf),
    /// The file is not WebAssembly at all.
    #[error("{} is not a WebAssembly component (bad magic number or version); rebuild it with `cairn build`", .0.display())]
    NotWasm(PathBuf),
    /// wasmtime rejected or failed to compile the component.
    #[error("cannot compile component {}: {message}", path.display())]
    Compile {
        /// The file.
        path: PathBuf,
        /// wasmtime's explanation.
        message: String,
    },
    /// The artifact cache could not be written.
    #[error("cannot write the precompiled-artifact cache at {}: {source}", path.display())]
    Cache {
        /// The cache file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Which instance allocator the engine ended up with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allocator {
    /// Pre-reserved slots: fastest instantiation.
    Pooling,
    /// Plain mmap per instance; used when the address space is too small for pooling.
    OnDemand,
}

/// A loaded component and where it came from.
#[derive(Clone)]
pub struct LoadedComponent {
    /// The compiled component.
    pub component: Component,
    /// sha256 of the component file, hex.
    pub digest: String,
    /// Whether it came from the artifact cache (`true`) or was compiled now.
    pub from_cache: bool,
}

/// The process-wide engine plus its epoch ticker.
pub struct CairnEngine {
    engine: Engine,
    allocator: Allocator,
    artifacts: PathBuf,
    ticker_stop: Arc<AtomicBool>,
}

impl CairnEngine {
    /// Builds the engine (pooling allocator if the machine allows it) and starts
    /// the epoch ticker. `artifacts` is the directory of precompiled components.
    pub fn new(artifacts: PathBuf) -> Result<Self, EngineError> {
        let (engine, allocator) = match Engine::new(&Self::config(Allocator::Pooling)) {
            Ok(engine) => (engine, Allocator::Pooling),
            Err(err) => {
                tracing::warn!(
                    "pooling allocator unavailable ({err}); falling back to on-demand allocation, which makes instantiation slower"
                );
                let engine =
                    Engine::new(&Self::config(Allocator::OnDemand)).map_err(|e| EngineError::Config(e.to_string()))?;
                (engine, Allocator::OnDemand)
            }
        };
        let ticker_stop = Arc::new(AtomicBool::new(false));
        let ticker_engine = engine.weak();
        let stop = ticker_stop.clone();
        std::thread::Builder::new()
            .name("cairn-epoch".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match ticker_engine.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                    crate::clock::tick_coarse();
                }
            })
            .map_err(|e| EngineError::Config(format!("cannot start the epoch ticker thread: {e}")))?;
        Ok(CairnEngine { engine, allocator, artifacts, ticker_stop })
    }

    fn config(allocator: Allocator) -> Config {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        if allocator == Allocator::Pooling {
            let mut pooling = PoolingAllocationConfig::default();
            // A componentized guest has several core instances and tables per
            // component instance (its module, the WASI adapter, shims).
            pooling.total_component_instances(MAX_INSTANCES);
            pooling.total_core_instances(MAX_INSTANCES * 10);
            pooling.total_memories(MAX_INSTANCES * 2);
            pooling.total_tables(MAX_INSTANCES * 10);
            pooling.total_stacks(MAX_INSTANCES);
            pooling.max_memory_size(4 << 30);
            pooling.max_unused_warm_slots(100);
            // A freed slot's touched pages are found with PAGEMAP_SCAN (Linux
            // 6.7+) and reset in place, up to 8 MiB, instead of being
            // decommitted: the next instance in the slot takes no page faults
            // and no TLB shootdown is needed.
            pooling.linear_memory_keep_resident(8 << 20);
            pooling.pagemap_scan(wasmtime::Enabled::Auto);
            config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
        }
        config
    }

    /// The wasmtime engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The allocator in use.
    pub fn allocator(&self) -> Allocator {
        self.allocator
    }

    /// A stable hash of everything that makes a precompiled artifact loadable
    /// by this engine (wasmtime version, target, settings).
    pub fn compatibility_hash(&self) -> String {
        let mut hasher = std::hash::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut hasher);
        format!("{:016x}", hasher.finish())
    }

    /// Loads the component at `path`, compiling it only if no artifact for
    /// this exact file and engine is cached.
    pub fn load(&self, path: &Path) -> Result<LoadedComponent, EngineError> {
        // A file unchanged since it was last loaded needs no reading or hashing.
        let identity = FileIdentity::of(path);
        if let Some(digest) = identity.as_ref().and_then(|id| self.indexed_digest(path, id)) {
            let artifact = self.artifact_path(&digest);
            // SAFETY: as below: our own artifact, named by the engine's compatibility hash.
            if artifact.is_file()
                && let Ok(component) = unsafe { Component::deserialize_file(&self.engine, &artifact) }
            {
                return Ok(LoadedComponent { component, digest, from_cache: true });
            }
        }
        let loaded = self.load_from_bytes(path)?;
        if let Some(identity) = identity {
            self.index(path, &identity, &loaded.digest);
        }
        Ok(loaded)
    }

    fn artifact_path(&self, digest: &str) -> PathBuf {
        self.artifacts.join(format!("{digest}-{}.cwasm", self.compatibility_hash()))
    }

    fn index_path(&self, path: &Path) -> PathBuf {
        let absolute = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let key = hex::encode(Sha256::digest(absolute.to_string_lossy().as_bytes()));
        self.artifacts.join("index").join(format!("{key}.json"))
    }

    fn indexed_digest(&self, path: &Path, identity: &FileIdentity) -> Option<String> {
        let text = std::fs::read_to_string(self.index_path(path)).ok()?;
        let (known, digest): (FileIdentity, String) = serde_json::from_str(&text).ok()?;
        (known == *identity).then_some(digest)
    }

    fn index(&self, path: &Path, identity: &FileIdentity, digest: &str) {
        let entry = self.index_path(path);
        let written = entry.parent().map_or(Ok(()), std::fs::create_dir_all).and_then(|()| {
            let partial = entry.with_extension(format!("partial-{}", uuid::Uuid::new_v4()));
            std::fs::write(&partial, serde_json::to_vec(&(identity, digest)).unwrap_or_default())?;
            std::fs::rename(&partial, &entry)
        });
        if let Err(e) = written {
            tracing::debug!("cannot index component {}: {e}", path.display());
        }
    }

    fn load_from_bytes(&self, path: &Path) -> Result<LoadedComponent, EngineError> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(EngineError::Missing(path.to_path_buf())),
            Err(source) => return Err(EngineError::Read { path: path.to_path_buf(), source }),
        };
        check_is_component(path, &bytes)?;
        let digest = hex::encode(Sha256::digest(&bytes));
        let artifact = self.artifact_path(&digest);
        if artifact.is_file() {
            // SAFETY: the artifact was written by this host from `Component::serialize`
            // into its own state directory, and its name pins the engine's
            // compatibility hash; wasmtime re-checks the header on load.
            match unsafe { Component::deserialize_file(&self.engine, &artifact) } {
                Ok(component) => return Ok(LoadedComponent { component, digest, from_cache: true }),
                Err(err) => tracing::warn!("ignoring unusable artifact {}: {err}", artifact.display()),
            }
        }
        let component = Component::new(&self.engine, &bytes)
            .map_err(|e| EngineError::Compile { path: path.to_path_buf(), message: format!("{e:#}") })?;
        // The cache only saves time: a failure to write it does not fail the load.
        if let Err(e) = self.store_artifact(&artifact, &component) {
            tracing::warn!("{e}");
        }
        Ok(LoadedComponent { component, digest, from_cache: false })
    }

    fn store_artifact(&self, artifact: &Path, component: &Component) -> Result<(), EngineError> {
        let serialized = component
            .serialize()
            .map_err(|e| EngineError::Compile { path: artifact.to_path_buf(), message: format!("{e:#}") })?;
        let cache_error = |source| EngineError::Cache { path: artifact.to_path_buf(), source };
        std::fs::create_dir_all(&self.artifacts).map_err(cache_error)?;
        // Write then rename, so a crash never leaves a half artifact under the final name.
        // A name of this write's own: concurrent loads of one component may race here.
        let partial = artifact.with_extension(format!("partial-{}", uuid::Uuid::new_v4()));
        std::fs::write(&partial, serialized).map_err(cache_error)?;
        std::fs::rename(&partial, artifact).map_err(cache_error)?;
        Ok(())
    }
}

impl Drop for CairnEngine {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

/// What says a file is unchanged: its length, modification time and inode.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileIdentity {
    len: u64,
    modified_ns: u128,
    inode: u64,
}

impl FileIdentity {
    /// The identity of the file at `path`, if it can be read.
    pub fn of(path: &Path) -> Option<Self> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path).ok()?;
        let modified_ns = meta.modified().ok()?.duration_since(std::time::UNIX_EPOCH).ok()?.as_nanos();
        Some(FileIdentity { len: meta.len(), modified_ns, inode: meta.ino() })
    }
}

/// Checks the header: a component, not a core module or something else.
pub fn check_is_component(path: &Path, bytes: &[u8]) -> Result<(), EngineError> {
    if wasmparser::Parser::is_component(bytes) {
        Ok(())
    } else if wasmparser::Parser::is_core_wasm(bytes) {
        Err(EngineError::CoreModule(path.to_path_buf()))
    } else {
        Err(EngineError::NotWasm(path.to_path_buf()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unchanged_file_loads_from_the_index_and_a_changed_one_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let component = dir.path().join("c.wasm");
        std::fs::write(&component, wat::parse_str("(component)").unwrap()).unwrap();
        let artifacts = dir.path().join("artifacts");
        let first = CairnEngine::new(artifacts.clone()).unwrap().load(&component).unwrap();
        assert!(!first.from_cache);
        let engine = CairnEngine::new(artifacts).unwrap();
        let identity = FileIdentity::of(&component).unwrap();
        assert_eq!(engine.indexed_digest(&component, &identity).as_deref(), Some(first.digest.as_str()));
        let again = engine.load(&component).unwrap();
        assert!(again.from_cache);
        assert_eq!(again.digest, first.digest);
        // A different component at the same path: a new digest, compiled afresh.
        std::fs::write(&component, wat::parse_str("(component (core module))").unwrap()).unwrap();
        let changed = engine.load(&component).unwrap();
        assert_ne!(changed.digest, first.digest);
        assert!(!changed.from_cache);
        std::fs::write(&component, b"junk").unwrap();
        assert!(matches!(engine.load(&component), Err(EngineError::NotWasm(_))));
    }

    #[test]
    fn concurrent_first_loads_of_one_component_all_succeed() {
        let dir = tempfile::tempdir().unwrap();
        let component = dir.path().join("c.wasm");
        std::fs::write(&component, wat::parse_str("(component (core module))").unwrap()).unwrap();
        let engine = CairnEngine::new(dir.path().join("artifacts")).unwrap();
        std::thread::scope(|scope| {
            let loads: Vec<_> = (0..8).map(|_| scope.spawn(|| engine.load(&component).map(|l| l.digest))).collect();
            let digests: Vec<String> = loads.into_iter().map(|l| l.join().unwrap().unwrap()).collect();
            assert!(digests.windows(2).all(|pair| pair[0] == pair[1]));
        });
        assert!(engine.load(&component).unwrap().from_cache);
    }
}
