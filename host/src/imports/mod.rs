//! The host side of the `cairn:task` world: one file per WIT interface, each a
//! thin adapter from the generated bindings onto the services of
//! [`AttemptState`]. WASI 0.2 is linked whole (with sockets denied by the
//! context), so guests from any toolchain instantiate.

pub mod llm;
pub mod report;
pub mod secrets;
pub mod tasks;
pub mod trace;

use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, ResourceLimiter};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use self::tasks::{ChildRuns, RunContext};
use crate::journal::Journal;
use crate::llm::{LlmProvider, Usage};
use crate::manifest::SecretDecl;
use crate::progress::Progress;
use crate::store::{Report, Store, Tenant};

/// Bindings generated from `wit/`.
pub mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "task",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "cairn:task/tasks.pending": crate::imports::tasks::PendingChild,
            "cairn:task/tasks.group": crate::imports::tasks::GroupScope,
        },
    });
}

pub use bindings::{Task, TaskPre};

/// Counters of one attempt, reported in the run record.
#[derive(Debug, Default, Clone, Copy)]
pub struct AttemptStats {
    /// LLM calls made live.
    pub llm_live: u32,
    /// LLM calls answered from the journal.
    pub llm_replayed: u32,
    /// Traced steps answered from the journal.
    pub trace_replayed: u32,
    /// Tokens of live calls.
    pub usage: Usage,
    /// Whether a fallback LLM provider answered a live call.
    pub degraded_llm: bool,
    /// The wait the provider asked for when it last rate-limited this attempt.
    pub retry_after: Option<Duration>,
    /// Whether the host answered an LLM call with `circuit-open` in this attempt.
    pub circuit_open: bool,
}

/// Caps the guest's linear memory; remembers whether the cap was hit, so a
/// resulting trap is reported as `out-of-memory`.
pub struct MemoryCap {
    /// Bytes allowed.
    pub limit: u64,
    /// Whether a growth was refused.
    pub hit: bool,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired as u64 > self.limit {
            self.hit = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

/// Everything the host functions of one attempt reach.
pub struct AttemptState {
    /// The run's id.
    pub run_id: String,
    /// The run's tenant (secrets are read in its scope).
    pub tenant: Tenant,
    /// The run's journal as seen by this attempt.
    pub journal: Journal,
    /// The task's LLM provider (already wrapped with provider retries).
    pub llm: Arc<dyn LlmProvider>,
    /// Upper bound on one LLM call, retries included.
    pub llm_timeout: Duration,
    /// Secrets the task's environment declares.
    pub secrets: Arc<[SecretDecl]>,
    /// The store (secrets and report flushes).
    pub store: Arc<dyn Store>,
    /// The report built so far.
    pub report: Report,
    /// Counters.
    pub stats: AttemptStats,
    /// Answer the first LLM call that misses the journal with this text
    /// instead of calling the provider (a DLQ retry's stub).
    pub stub: Option<String>,
    /// The run as `tasks.current` reports it.
    pub context: RunContext,
    /// Starts child runs; `None` where children are not allowed.
    pub children: Option<Arc<dyn ChildRuns>>,
    /// Open groups, innermost last: (id, full path).
    pub groups: Vec<(u64, String)>,
    /// Ids given to groups so far (never reused on an instance).
    pub next_group: u64,
    /// Child submissions of this call whose journal record is not stored yet.
    pub unstored: Vec<tokio::sync::oneshot::Receiver<()>>,
    /// The host's live counters.
    pub progress: Arc<Progress>,
}

/// The data of a wasmtime `Store` running one attempt.
pub struct HostState {
    /// WASI context (preopens, env, captured stdio).
    pub wasi: WasiCtx,
    /// WASI resources.
    pub table: ResourceTable,
    /// Memory cap.
    pub memory: MemoryCap,
    /// Cairn's own services.
    pub attempt: AttemptState,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl bindings::cairn::task::types::Host for HostState {}

/// A linker with all of WASI 0.2 and every `cairn:task` interface.
pub fn linker(engine: &Engine) -> wasmtime::Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    Task::add_to_linker::<_, HasSelf<HostState>>(&mut linker, |state| state)?;
    Ok(linker)
}

#[cfg(test)]
mod tests {
    use wasmtime::component::Component;

    /// A component importing `trace.recall` from package version `version`.
    fn importing(version: &str) -> Vec<u8> {
        wat::parse_str(format!(
            r#"(component
                (import "cairn:task/trace@{version}" (instance
                    (export "recall" (func (param "name" string) (param "input" string) (result (option string))))
                ))
            )"#
        ))
        .unwrap()
    }

    #[test]
    fn components_built_against_0_1_0_still_link() {
        let engine = wasmtime::Engine::default();
        let linker = super::linker(&engine).unwrap();
        for version in ["0.1.0", "0.1.1"] {
            let component = Component::new(&engine, importing(version)).unwrap();
            linker.instantiate_pre(&component).unwrap_or_else(|e| panic!("{version}: {e:#}"));
        }
        let newer = Component::new(&engine, importing("0.2.0")).unwrap();
        assert!(linker.instantiate_pre(&newer).is_err(), "an incompatible version must not link");
    }
}
