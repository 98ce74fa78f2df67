//! `cairn dlq list | show | retry | purge`: runs whose retries and fallbacks were all spent.

use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::Subcommand;

use super::backend::Backend;
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
pub fn dispatch(backend: &Backend, command: DlqCommand) -> Result<ExitCode> {
    match command {
        DlqCommand::List { json } => {
            let letters = backend.dead_letters()?;
            if json {
                for letter in &letters {
                    super::safe::print_json_line(letter)?;
                }
            } else {
                println!("{:<36}  {:<20}  {:>8}  error", "RUN", "TASK", "ATTEMPTS");
                for l in &letters {
                    println!(
                        "{:<36}  {:<20}  {:>8}  {}",
                        l.run_id,
                        l.task,
                        l.attempts.len(),
                        super::safe::line(&l.error.to_string())
                    );
                }
            }
        }
        DlqCommand::Show { run } => {
            let Some(letter) = backend.dead_letter(&run)? else {
                bail!("run {run} is not in the dead-letter queue; see `cairn dlq list`");
            };
            super::safe::print_json(&letter)?;
        }
        DlqCommand::Retry { run, stub_output, json } => {
            let run = backend.retry_dead(&run, stub_output)?;
            if json {
                super::safe::print_json(&run.view)?;
            } else {
                output::print_run_for_people(&run.record);
            }
            return Ok(output::exit_code(&run.record));
        }
        DlqCommand::Purge { run } => {
            let removed = backend.remove_dead_letters(run.as_deref())?;
            eprintln!("removed {removed} run(s) from the dead-letter queue");
        }
    }
    Ok(ExitCode::SUCCESS)
}
