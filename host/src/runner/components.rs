//! The component cache: a task's component loaded, compiled and
//! pre-instantiated once, and checked for changes at most every
//! [`RECHECK_COMPONENT_MS`].

use std::sync::Arc;

use rustc_hash::FxHashMap as HashMap;
use std::sync::Mutex;
use wasmtime::component::Linker;

use super::Host;
use crate::clock::coarse_now_ms;
use crate::engine::{CairnEngine, EngineError, FileIdentity};
use crate::imports::{HostState, TaskPre};
use crate::manifest::TaskSpec;
use crate::model::interface::TaskInterface;
use crate::model::{Failure, FailureKind};

/// Components loaded, compiled and pre-instantiated against the host's linker.
pub struct Components {
    engine: Arc<CairnEngine>,
    linker: Linker<HostState>,
    /// Pre-instantiated components by digest: two tasks of one file share one.
    pres: Mutex<HashMap<String, TaskPre<HostState>>>,
    /// Component files as last loaded, by task name.
    loaded: Mutex<HashMap<String, Loaded>>,
    /// Held while a component is loaded, so that many runs starting at once
    /// load it once (the others wait, then find it loaded).
    loading: tokio::sync::Mutex<()>,
    /// Interfaces by digest (`None`: the component has no `describe`).
    interfaces: Mutex<HashMap<String, Option<Arc<TaskInterface>>>>,
}

/// A component file as last loaded: what identified it, and when that was checked.
struct Loaded {
    identity: FileIdentity,
    /// When the identity was last checked, on the coarse clock.
    checked_at_ms: u64,
    digest: Arc<str>,
    pre: TaskPre<HostState>,
}

/// How long a loaded component's file is trusted unchanged before it is
/// checked again: a component rebuilt under a running host is picked up by
/// the next run that starts after this.
const RECHECK_COMPONENT_MS: u64 = 500;

impl Host {
    /// Loads (or finds) the task's component and pre-instantiates it.
    pub(super) async fn prepare(&self, task: &TaskSpec) -> Result<(TaskPre<HostState>, Arc<str>), Failure> {
        self.components.prepare(task).await
    }
}

impl Components {
    /// An empty cache over `engine`, linking with `linker`.
    pub fn new(engine: Arc<CairnEngine>, linker: Linker<HostState>) -> Self {
        Components {
            engine,
            linker,
            pres: Mutex::default(),
            loaded: Mutex::default(),
            loading: Default::default(),
            interfaces: Mutex::default(),
        }
    }

    /// The interface of the component `digest`, if it was asked for already.
    pub fn interface(&self, digest: &str) -> Option<Option<Arc<TaskInterface>>> {
        self.interfaces.lock().unwrap_or_else(|e| e.into_inner()).get(digest).cloned()
    }

    /// Keeps the interface of the component `digest`.
    pub fn set_interface(&self, digest: &str, interface: Option<Arc<TaskInterface>>) {
        self.interfaces.lock().unwrap_or_else(|e| e.into_inner()).insert(digest.to_owned(), interface);
    }

    /// The engine components are compiled for.
    pub fn engine(&self) -> &Arc<CairnEngine> {
        &self.engine
    }

    /// The task's component, pre-instantiated, and its digest. An unchanged
    /// file is not read again; a changed one is loaded and compiled (or
    /// found in the artifact cache).
    pub async fn prepare(&self, task: &TaskSpec) -> Result<(TaskPre<HostState>, Arc<str>), Failure> {
        if let Some(known) = self.known(task) {
            return Ok(known);
        }
        let _loading = self.loading.lock().await;
        if let Some(known) = self.known(task) {
            return Ok(known);
        }
        self.load(task).await
    }

    /// The task's component as loaded before, if its file is unchanged.
    fn known(&self, task: &TaskSpec) -> Option<(TaskPre<HostState>, Arc<str>)> {
        // An unchanged file needs no reading, hashing or loading again.
        {
            let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(known) = loaded.get_mut(&task.name) {
                let now = coarse_now_ms();
                if now.saturating_sub(known.checked_at_ms) < RECHECK_COMPONENT_MS {
                    return Some((known.pre.clone(), known.digest.clone()));
                }
                if FileIdentity::of(&task.component).is_some_and(|identity| identity == known.identity) {
                    known.checked_at_ms = now;
                    return Some((known.pre.clone(), known.digest.clone()));
                }
            }
        }
        None
    }

    /// Loads the task's component (from the artifact cache, or compiled) and pre-instantiates it.
    async fn load(&self, task: &TaskSpec) -> Result<(TaskPre<HostState>, Arc<str>), Failure> {
        let identity = FileIdentity::of(&task.component);
        let engine = self.engine.clone();
        let path = task.component.clone();
        let loaded = tokio::task::spawn_blocking(move || engine.load(&path))
            .await
            .map_err(|e| Failure::host(format!("component loader stopped: {e}")))?
            .map_err(|e| {
                let kind = match e {
                    EngineError::Missing(_) => FailureKind::MissingComponent,
                    _ => FailureKind::InvalidComponent,
                };
                Failure {
                    kind,
                    message: format!("task {:?} (cairn.toml line {}): {e}", task.name, task.component_line),
                    retryable: false,
                }
            })?;
        let known = self.pres.lock().unwrap_or_else(|e| e.into_inner()).get(&loaded.digest).cloned();
        let pre = match known {
            Some(pre) => pre,
            None => {
                let incompatible = |e: wasmtime::Error| Failure {
                    kind: FailureKind::InvalidComponent,
                    message: format!(
                        "component {} of task {:?} does not fit the cairn:task world: {e:#}. Rebuild it against this host's wit/ directory",
                        task.component.display(),
                        task.name
                    ),
                    retryable: false,
                };
                let pre = self.linker.instantiate_pre(&loaded.component).map_err(incompatible)?;
                let pre = TaskPre::new(pre).map_err(incompatible)?;
                self.pres.lock().unwrap_or_else(|e| e.into_inner()).insert(loaded.digest.clone(), pre.clone());
                pre
            }
        };
        if let Some(identity) = identity {
            let entry = Loaded {
                identity,
                checked_at_ms: coarse_now_ms(),
                digest: Arc::from(loaded.digest.as_str()),
                pre: pre.clone(),
            };
            self.loaded.lock().unwrap_or_else(|e| e.into_inner()).insert(task.name.clone(), entry);
        }
        Ok((pre, Arc::from(loaded.digest)))
    }
}
