//! `cairn:task/report`: HTML report tabs kept with the run. The context
//! holds the store's output role and nothing else of it.

use std::sync::Arc;

use wasmtime::component::{HasData, Linker};

use super::bindings::cairn::task::report::{self as wit, Host};
use super::{CallReport, CallSetup, Capability, HostServices, HostState};
use crate::model::{Failure, FailureKind, LimitHit, Report};
use crate::store::OutputStore;

/// The tab `log` writes to.
pub const MAIN_TAB: &str = "main";

/// The `report` context of an instance: the current call's report.
pub struct ReportCtx {
    store: Arc<dyn OutputStore>,
    run_id: String,
    report: Report,
    /// Its tabs' names and HTML, in bytes, and the most the environment allows.
    bytes: u64,
    limit: u64,
}

impl Capability for ReportCtx {
    fn new(services: &HostServices) -> Self {
        ReportCtx {
            store: services.outputs.clone(),
            run_id: String::new(),
            report: Report::default(),
            bytes: 0,
            limit: u64::MAX,
        }
    }

    fn reset(&mut self, call: &CallSetup<'_>) {
        self.run_id.clear();
        self.run_id.push_str(call.run_id);
        self.report = Report::default();
        self.bytes = 0;
        self.limit = call.env.resources.max_report;
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

impl ReportCtx {
    /// Counts `added` more bytes and `removed` fewer; past the limit, the
    /// attempt ends `report-too-large` and the report is left as it was.
    fn grow(&mut self, added: usize, removed: usize) -> wasmtime::Result<()> {
        let bytes = (self.bytes + added as u64).saturating_sub(removed as u64);
        if bytes > self.limit {
            let message = format!(
                "the run's report would grow to {bytes} bytes, past its environment's `resources.max_report` of {}; write less, or raise it",
                self.limit
            );
            return Err(wasmtime::Error::new(LimitHit(Failure::new(FailureKind::ReportTooLarge, message, false))));
        }
        self.bytes = bytes;
        Ok(())
    }

    /// The bytes tab `tab` adds when it is new.
    fn new_tab(&self, tab: &str) -> usize {
        if self.report.tabs.contains_key(tab) { 0 } else { tab.len() }
    }
}

impl Host for &mut ReportCtx {
    async fn log(&mut self, html: String) -> wasmtime::Result<()> {
        self.grow(self.new_tab(MAIN_TAB) + html.len(), 0)?;
        self.report.tabs.entry(MAIN_TAB.to_owned()).or_default().push_str(&html);
        Ok(())
    }

    async fn replace(&mut self, tab: String, html: String) -> wasmtime::Result<()> {
        let old = self.report.tabs.get(&tab).map_or(0, String::len);
        self.grow(self.new_tab(&tab) + html.len(), old)?;
        self.report.tabs.insert(tab, html);
        Ok(())
    }

    async fn append(&mut self, tab: String, html: String) -> wasmtime::Result<()> {
        self.grow(self.new_tab(&tab) + html.len(), 0)?;
        self.report.tabs.entry(tab).or_default().push_str(&html);
        Ok(())
    }

    #[tracing::instrument(name = "report.flush", skip_all)]
    async fn flush(&mut self) -> wasmtime::Result<()> {
        self.store.put_report(&self.run_id, &self.report).await?;
        Ok(())
    }
}
