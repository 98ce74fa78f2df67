//! `cairn:task/trace`: durable checkpoints of guest steps, on the run journal.

use wasmtime::component::{HasData, Linker};

use super::bindings::cairn::task::trace::{self as wit, Host};
use super::{CallReport, CallSetup, Capability, HostServices, HostState};
use crate::journal::SharedJournal;

/// The `trace` context of an instance: steps answered from the journal.
#[derive(Default)]
pub struct TraceCtx {
    replayed: u32,
}

impl Capability for TraceCtx {
    fn new(_services: &HostServices) -> Self {
        TraceCtx::default()
    }

    fn reset(&mut self, _call: &CallSetup<'_>) {
        self.replayed = 0;
    }

    fn drain(&mut self, report: &mut CallReport) {
        report.stats.trace_replayed = std::mem::take(&mut self.replayed);
    }
}

/// What the `trace` adapter reaches: its context and the run's journal.
pub struct TraceView<'a> {
    ctx: &'a mut TraceCtx,
    journal: &'a SharedJournal,
}

struct TraceImports;

impl HasData for TraceImports {
    type Data<'a> = TraceView<'a>;
}

/// Links `cairn:task/trace`.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    wit::add_to_linker::<HostState, TraceImports>(linker, |state| TraceView {
        ctx: &mut state.caps.trace,
        journal: &state.journal,
    })
}

impl Host for TraceView<'_> {
    #[tracing::instrument(name = "trace.recall", skip_all)]
    async fn recall(&mut self, name: String, input: String) -> wasmtime::Result<Option<String>> {
        let hit = self.journal.lock().await.trace_recall(&name, &input).await?;
        if hit.is_some() {
            self.ctx.replayed += 1;
        }
        Ok(hit)
    }

    #[tracing::instrument(name = "trace.record", skip_all)]
    async fn record(&mut self, name: String, input: String, output: String) -> wasmtime::Result<()> {
        self.journal.lock().await.trace_record(&name, &input, &output).await?;
        Ok(())
    }
}
