//! The host side of the `cairn:task` world, the wasmtime-wasi way: one
//! context per WIT interface ([`llm::LlmCtx`], [`trace::TraceCtx`],
//! [`secrets::SecretsCtx`], [`report::ReportCtx`], [`tasks::TasksCtx`],
//! [`http::HttpCtx`], which also serves `wasi:http`),
//! each linked through a projection of the store's data onto a small view of
//! what that interface may touch (its own context, and the run's journal
//! where it journals). The adapters are thin: the logic is in
//! [`crate::services`]. WASI 0.2 is linked whole (with sockets denied by the
//! context, and `wasi:http` through [`http`]), so guests from any toolchain
//! instantiate.
//!
//! Every context has the same life: made once per instance from the host's
//! [`HostServices`], [`Capability::reset`] before each call from its
//! [`CallSetup`], and [`Capability::drain`]ed into a [`CallReport`] after it.
//! A fresh instance and a reused one go through the same two steps.
//!
//! Adding a capability: a WIT file, a context with its adapter in this
//! directory, its service, and one line in [`capabilities!`] below.

pub mod descriptors;
pub mod http;
pub mod llm;
pub mod report;
pub mod secrets;
pub mod tasks;
pub mod trace;

use std::sync::Arc;

use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, ResourceLimiter};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::access::scrub::{ScrubbedJournal, ScrubbedOutputs, Scrubbers};
use crate::access::vault::Vault;
use crate::events::{Events, ObservedJournal};
use crate::journal::{Journal, JournalMode, SharedJournal};
use crate::llm::LlmProvider;
use crate::manifest::{Environment, TaskSpec};
use crate::model::{Report, Tenant};
use crate::progress::Progress;
use crate::services::children::ChildRuns;
use crate::services::llm::LlmStats;
use crate::store::{JournalStore, OutputStore, Store};

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

/// What every instance of a host gets, for the life of the instance: the
/// store by role (a context takes only the roles it needs), child runs and
/// the live counters. The tenant is the call's ([`CallSetup::tenant`]): an
/// instance serves one tenant's runs only, but its context is reset per call.
#[derive(Clone)]
pub struct HostServices {
    /// Run journals.
    pub journal: Arc<dyn JournalStore>,
    /// Opening the tenants' sealed secrets, and nothing else of them.
    pub secrets: Arc<Vault>,
    /// The secret values of the runs being driven, kept out of what they store.
    pub scrubbers: Arc<Scrubbers>,
    /// Logs and reports.
    pub outputs: Arc<dyn OutputStore>,
    /// Starts child runs; `None` where children are not allowed.
    pub children: Option<Arc<dyn ChildRuns>>,
    /// The host's live counters.
    pub progress: Arc<Progress>,
    /// The host's event stream.
    pub events: Events,
    /// The operator's list of outbound HTTP destinations, if any.
    pub outbound: Option<Arc<crate::sandbox::outbound::AllowList>>,
    /// Where files passed by reference are kept (`None`: not on this host).
    pub blobs: Option<Arc<dyn crate::blobs::BlobStore>>,
}

impl HostServices {
    /// The services of a host over `store`, split into its roles.
    pub fn new(
        store: &Arc<dyn Store>,
        secrets: Arc<Vault>,
        children: Option<Arc<dyn ChildRuns>>,
        progress: Arc<Progress>,
        events: Events,
    ) -> Self {
        let scrubbers = Arc::new(Scrubbers::default());
        let observed: Arc<dyn JournalStore> = Arc::new(ObservedJournal::new(store.clone(), events.clone()));
        HostServices {
            // Scrubbed first, so that the events tell of the scrubbed record too.
            journal: Arc::new(ScrubbedJournal::new(observed, scrubbers.clone())),
            secrets,
            outputs: Arc::new(ScrubbedOutputs::new(store.clone(), scrubbers.clone())),
            scrubbers,
            children,
            progress,
            events,
            outbound: None,
            blobs: None,
        }
    }
}

/// What one call of the guest's `run` is: whose run, which task and
/// environment, which attempt, and how its LLM calls are answered.
pub struct CallSetup<'a> {
    /// The run's id (empty while an instance is only being warmed).
    pub run_id: &'a str,
    /// The run's tenant: secrets are read, and children made, in its scope.
    pub tenant: &'a Tenant,
    /// The task.
    pub task: &'a TaskSpec,
    /// The task's environment (resources, secrets).
    pub env: &'a Environment,
    /// 1-based attempt number.
    pub attempt: u32,
    /// The submitting run, for a child.
    pub parent: Option<&'a str>,
    /// Where the journal answers from.
    pub mode: &'a JournalMode,
    /// The task's LLM provider.
    pub provider: &'a Arc<dyn LlmProvider>,
    /// Stub answer for the first LLM call that misses the journal.
    pub stub: Option<&'a str>,
    /// The attempt's hold on its run, carried by every journal record.
    pub fence: Option<&'a crate::model::Fence>,
    /// What the run's live LLM calls may spend (the tenant's quotas and the
    /// providers' prices); `None` where nothing is counted.
    pub budget: Option<&'a Arc<crate::services::budget::Budget>>,
    /// Where the run sits in its tree, which bounds the children it submits.
    pub lineage: &'a crate::services::children::Lineage,
    /// The tenant's `blob_storage` quota, if it has one.
    pub blob_quota: Option<u64>,
}

/// Counters of one call, reported in the run record.
#[derive(Debug, Default, Clone, Copy)]
pub struct AttemptStats {
    /// LLM use.
    pub llm: LlmStats,
    /// Traced steps answered from the journal.
    pub trace_replayed: u32,
    /// Outbound HTTP requests sent.
    pub http_live: u32,
    /// Outbound HTTP requests answered from the journal.
    pub http_replayed: u32,
}

/// What a call leaves behind besides its outcome.
#[derive(Default)]
pub struct CallReport {
    /// The report built.
    pub report: Report,
    /// Counters.
    pub stats: AttemptStats,
    /// Child submissions whose journal record is still being stored.
    pub unstored: Vec<tokio::sync::oneshot::Receiver<()>>,
    /// An error that ends the attempt whatever the guest returned: a journal
    /// error met by work the guest could not be failed from at once (a
    /// `wasi:http` request in the background).
    pub fatal: Option<wasmtime::Error>,
}

/// The life of one interface's context on an instance.
pub trait Capability: Send + Sized + 'static {
    /// The context of a new instance.
    fn new(services: &HostServices) -> Self;
    /// Gets ready for the call `call`, forgetting the last one.
    fn reset(&mut self, call: &CallSetup<'_>);
    /// Moves what the call left into `report`.
    fn drain(&mut self, report: &mut CallReport);
}

/// Declares the capabilities: each line is a field of [`Capabilities`], its
/// context type, and the function that links its interface.
macro_rules! capabilities {
    ($($(#[$doc:meta])* $field:ident: $ctx:ty => $link:path,)*) => {
        /// Every interface's context of one instance.
        pub struct Capabilities {
            $($(#[$doc])* pub $field: $ctx,)*
        }

        impl Capabilities {
            fn new(services: &HostServices) -> Self {
                Capabilities { $($field: <$ctx as Capability>::new(services),)* }
            }

            fn reset(&mut self, call: &CallSetup<'_>) {
                $(self.$field.reset(call);)*
            }

            fn drain(&mut self, report: &mut CallReport) {
                $(self.$field.drain(report);)*
            }
        }

        fn link_capabilities(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
            $($link(linker)?;)*
            Ok(())
        }
    };
}

capabilities! {
    /// `cairn:task/llm`.
    llm: llm::LlmCtx => llm::add_to_linker,
    /// `cairn:task/trace`.
    trace: trace::TraceCtx => trace::add_to_linker,
    /// `cairn:task/secrets`.
    secrets: secrets::SecretsCtx => secrets::add_to_linker,
    /// `cairn:task/report`.
    report: report::ReportCtx => report::add_to_linker,
    /// `cairn:task/tasks`.
    tasks: tasks::TasksCtx => tasks::add_to_linker,
    /// `cairn:task/http` and `wasi:http`: outbound requests, journaled.
    http: http::HttpCtx => http::add_to_linker,
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

/// The data of a wasmtime `Store`: WASI, the memory cap, the run's journal
/// and every interface's context.
pub struct HostState {
    /// WASI context (preopens, env, captured stdio).
    pub wasi: WasiCtx,
    /// Resources of WASI and of `cairn:task` (pending children, groups).
    pub table: ResourceTable,
    /// Memory cap.
    pub memory: MemoryCap,
    /// Host descriptors the guest opened and holds.
    pub files: descriptors::OpenFiles,
    /// Files passed by reference: staged for the guest, stored from it.
    pub blobs: crate::services::blobs::RunFiles,
    /// The run's journal as seen by the current call; shared by the
    /// interfaces that journal, and by outbound requests still under way.
    pub journal: SharedJournal,
    /// The interfaces' contexts.
    pub caps: Capabilities,
}

impl HostState {
    /// The data of a new instance under `memory` bytes; ready for its first
    /// call after [`HostState::begin_call`].
    pub fn new(wasi: WasiCtx, memory: u64, services: &HostServices) -> Self {
        let journal =
            Arc::new(tokio::sync::Mutex::new(Journal::new(services.journal.clone(), "", 0, JournalMode::Live)));
        let mut caps = Capabilities::new(services);
        caps.http.share_journal(&journal);
        HostState {
            wasi,
            table: ResourceTable::new(),
            memory: MemoryCap { limit: memory, hit: false },
            files: descriptors::OpenFiles::new(u32::MAX),
            blobs: crate::services::blobs::RunFiles::new(services.blobs.clone()),
            journal,
            caps,
        }
    }

    /// Gets every context ready for `call` under `memory` bytes. Waits for a
    /// request the last call left running to finish recording, if one is.
    pub async fn begin_call(&mut self, call: &CallSetup<'_>, memory: u64) {
        self.memory = MemoryCap { limit: memory, hit: false };
        {
            let mut journal = self.journal.lock().await;
            journal.reset(call.run_id, call.attempt, call.mode);
            journal.set_max_bytes(call.env.resources.max_journal);
            journal.set_fence(call.fence);
        }
        self.table.set_max_capacity(call.env.resources.max_handles as usize);
        let limits =
            crate::services::blobs::BlobLimits { per_attempt: call.env.resources.max_blobs, tenant: call.blob_quota };
        self.blobs.reset(call.tenant, limits);
        self.files.set_max(call.env.resources.max_open_files);
        self.caps.reset(call);
    }

    /// What the last call left, leaving the contexts clean. Holds the
    /// journal meanwhile: a request the call left running either recorded
    /// before, or records nothing.
    pub async fn end_call(&mut self) -> CallReport {
        let journal = self.journal.clone();
        let _barrier = journal.lock().await;
        let mut report = CallReport::default();
        self.caps.drain(&mut report);
        report
    }
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
    descriptors::add_to_linker(&mut linker)?;
    bindings::cairn::task::types::add_to_linker::<_, HasSelf<HostState>>(&mut linker, |state| state)?;
    link_capabilities(&mut linker)?;
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
        for version in ["0.1.0", "0.1.1", "0.1.2"] {
            let component = Component::new(&engine, importing(version)).unwrap();
            linker.instantiate_pre(&component).unwrap_or_else(|e| panic!("{version}: {e:#}"));
        }
        let newer = Component::new(&engine, importing("0.2.0")).unwrap();
        assert!(linker.instantiate_pre(&newer).is_err(), "an incompatible version must not link");
    }
}
