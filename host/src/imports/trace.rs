//! `cairn:task/trace`: durable checkpoints of guest steps, on the run journal.

use super::HostState;
use super::bindings::cairn::task::trace::Host;

impl Host for HostState {
    async fn recall(&mut self, name: String, input: String) -> wasmtime::Result<Option<String>> {
        let hit = self.attempt.journal.trace_recall(&name, &input).await?;
        if hit.is_some() {
            self.attempt.stats.trace_replayed += 1;
        }
        Ok(hit)
    }

    async fn record(&mut self, name: String, input: String, output: String) -> wasmtime::Result<()> {
        self.attempt.journal.trace_record(&name, &input, &output).await?;
        Ok(())
    }
}
