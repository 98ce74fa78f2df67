//! `cairn:task/report`: HTML report tabs kept with the run.

use super::HostState;
use super::bindings::cairn::task::report::Host;

/// The tab `log` writes to.
pub const MAIN_TAB: &str = "main";

impl Host for HostState {
    async fn log(&mut self, html: String) -> wasmtime::Result<()> {
        self.attempt.report.tabs.entry(MAIN_TAB.to_owned()).or_default().push_str(&html);
        Ok(())
    }

    async fn replace(&mut self, tab: String, html: String) -> wasmtime::Result<()> {
        self.attempt.report.tabs.insert(tab, html);
        Ok(())
    }

    async fn append(&mut self, tab: String, html: String) -> wasmtime::Result<()> {
        self.attempt.report.tabs.entry(tab).or_default().push_str(&html);
        Ok(())
    }

    async fn flush(&mut self) -> wasmtime::Result<()> {
        let store = self.attempt.store.clone();
        let run_id = self.attempt.run_id.clone();
        let report = self.attempt.report.clone();
        store.put_report(&run_id, &report).await?;
        Ok(())
    }
}
