//! `cairn:task/report`: HTML report tabs kept with the run. The context
//! holds the store's output role and nothing else of it.

use std::sync::Arc;

use wasmtime::component::{HasData, Linker};

use super::bindings::cairn::task::report::{self as wit, Host};
use super::{CallReport, CallSetup, Capability, HostServices, HostState};
use crate::model::Report;
use crate::store::OutputStore;

/// The tab `log` writes to.
pub const MAIN_TAB: &str = "main";

/// The `report` context of an instance: the current call's report.
pub struct ReportCtx {
    store: Arc<dyn OutputStore>,
    run_id: String,
    report: Report,
}

impl Capability for ReportCtx {
    fn new(services: &HostServices) -> Self {
        ReportCtx { store: services.outputs.clone(), run_id: String::new(), report: Report::default() }
    }

    fn reset(&mut self, call: &CallSetup<'_>) {
        self.run_id.clear();
        self.run_id.push_str(call.run_id);
        self.report = Report::default();
    }

    fn drain(&mut self, report: &mut CallReport) {
        report.report = std::mem::take(&mut self.report);
    }
}

struct ReportImports;

impl HasData for ReportImports {
    type Data<'a> = &'a mut ReportCtx;
}

/// Links `cairn:task/report`.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    wit::add_to_linker::<HostState, ReportImports>(linker, |state| &mut state.caps.report)
}

impl Host for &mut ReportCtx {
    async fn log(&mut self, html: String) -> wasmtime::Result<()> {
        self.report.tabs.entry(MAIN_TAB.to_owned()).or_default().push_str(&html);
        Ok(())
    }

    async fn replace(&mut self, tab: String, html: String) -> wasmtime::Result<()> {
        self.report.tabs.insert(tab, html);
        Ok(())
    }

    async fn append(&mut self, tab: String, html: String) -> wasmtime::Result<()> {
        self.report.tabs.entry(tab).or_default().push_str(&html);
        Ok(())
    }

    #[tracing::instrument(name = "report.flush", skip_all)]
    async fn flush(&mut self) -> wasmtime::Result<()> {
        self.store.put_report(&self.run_id, &self.report).await?;
        Ok(())
    }
}
