//! `cairn dlq list | show | retry | purge`: runs whose retries and fallbacks were all spent.

use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::Subcommand;

use cairn::manifest::Manifest;
use cairn::model::{RunStatus, Tenant};
use cairn::runner::Host;

use super::output;

/// Dead-letter queue subcommands.
#[derive(Subcommand)]
pub enum DlqCommand {
    /// List dead-lettered runs, newest first.
    List {
        /// JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one dead letter: input, every attempt's error and timestamps.
    Show {
        /// The run id.
        run: String,
    },
    /// Retry a dead-lettered run on its own journal (recorded calls are not repeated).
    Retry {
        /// The run id.
        run: String,
        /// Answer the first LLM call the journal lacks (the one that kept failing) with this text.
        #[arg(long, value_name = "TEXT")]
        stub_output: Option<String>,
        /// Print the finished run as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove runs from the queue (their records stay in `cairn runs`).
    Purge {
        /// Only this run.
        run: Option<String>,
    },
}

/// Runs a `dlq` subcommand.
pub fn dispatch(manifest: &Manifest, command: DlqCommand) -> Result<ExitCode> {
    let tenant = Tenant::default();
    match command {
        DlqCommand::List { json } => {
            let store = cairn::runner::open_store(manifest)?;
            let letters = store.dlq_list(&tenant)?;
            if json {
                for letter in &letters {
                    println!("{}", serde_json::to_string(letter)?);
                }
            } else {
                println!("{:<36}  {:<20}  {:>8}  error", "RUN", "TASK", "ATTEMPTS");
                for l in &letters {
                    println!("{:<36}  {:<20}  {:>8}  {}", l.run_id, l.task, l.attempts.len(), l.error);
                }
            }
        }
        DlqCommand::Show { run } => {
            let store = cairn::runner::open_store(manifest)?;
            let Some(letter) = store.dlq_get(&tenant, &run)? else {
                bail!("run {run} is not in the dead-letter queue; see `cairn dlq list`");
            };
            println!("{}", serde_json::to_string_pretty(&letter)?);
        }
        DlqCommand::Retry { run, stub_output, json } => {
            let host = Host::open(manifest.clone())?;
            let record = super::runtime()?.block_on(host.retry_dead(&run, stub_output))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&output::run_json(&record, host.store().as_ref()))?);
            } else {
                output::print_run_for_people(&record);
            }
            if record.status != RunStatus::Succeeded {
                return Ok(ExitCode::FAILURE);
            }
        }
        DlqCommand::Purge { run } => {
            let store = cairn::runner::open_store(manifest)?;
            let runtime = super::runtime()?;
            let targets: Vec<String> = match run {
                Some(id) => vec![id],
                None => store.dlq_list(&tenant)?.into_iter().map(|l| l.run_id).collect(),
            };
            let mut removed = 0;
            for id in targets {
                removed += usize::from(runtime.block_on(store.dlq_remove(&tenant, &id))?);
            }
            eprintln!("removed {removed} run(s) from the dead-letter queue");
        }
    }
    Ok(ExitCode::SUCCESS)
}
