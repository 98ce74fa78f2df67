//! `cairn worker`: a host with no API that works on the store's runs until
//! SIGTERM or SIGINT, then drains as `cairn serve` does.

use std::process::ExitCode;

use anyhow::Result;
use cairn::manifest::Manifest;
use cairn::runner::Host;

use super::WorkArgs;

pub fn run(manifest: Manifest, work: &WorkArgs, grace: &str) -> Result<ExitCode> {
    let grace = cairn::manifest::units::parse_duration(grace).map_err(anyhow::Error::msg)?;
    let (options, lease) = work.options("worker")?;
    super::runtime()?.block_on(async {
        let host = Host::open(manifest)?;
        host.set_lease(lease);
        eprintln!(
            "cairn worker {}: working on the runs of {} (up to {} at once, lease {:?})",
            host.host_id(),
            host.store_description(),
            options.concurrency,
            lease
        );
        host.work(options.clone(), cairn::server::stop_signal()).await;
        eprintln!("cairn worker: stopping; runs under way have {grace:?} to finish");
        let stopped = host.shutdown(grace).await;
        host.stop_working(&options).await;
        if stopped > 0 {
            eprintln!("cairn worker: {stopped} run(s) saved and released to the other workers");
        }
        eprintln!("cairn worker: stopped");
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
