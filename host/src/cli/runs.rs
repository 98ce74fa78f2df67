//! `cairn runs list | show | journal | logs`.

use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::Subcommand;
use serde_json::json;

use cairn::manifest::Manifest;
use cairn::model::{RunStatus, Tenant};
use cairn::store::{Lineage, RunFilter};

use super::output;

/// Run inspection subcommands.
#[derive(Subcommand)]
pub enum RunsCommand {
    /// List runs, newest first.
    List {
        /// Only runs in this status (pending, running, succeeded, failed).
        #[arg(long)]
        status: Option<String>,
        /// Only runs of this task.
        #[arg(long)]
        task: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Only runs made before this one: the next page after a page that ended with RUN.
        #[arg(long, value_name = "RUN")]
        before: Option<String>,
        /// Also list child runs (submitted by other runs through `tasks`).
        #[arg(long)]
        children: bool,
        /// Only the children of this run.
        #[arg(long, value_name = "RUN")]
        parent: Option<String>,
        /// JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one run: attempts, errors, usage, output.
    Show {
        /// The run id.
        run: String,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show a run's journal: every recorded LLM call and traced step.
    Journal {
        /// The run id.
        run: String,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Resume runs a crashed host left behind (all whose lease is stale, or one).
    Resume {
        /// Only this run.
        run: Option<String>,
        /// Take the run over even if its lease looks alive.
        #[arg(long, requires = "run")]
        force: bool,
        /// Print the resumed runs as JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Write a run and its journal to a cassette file, for `cairn run --replay` elsewhere.
    Export {
        /// The run id.
        run: String,
        /// The file to write.
        #[arg(short, long)]
        output: std::path::PathBuf,
    },
    /// Load a cassette file written by `cairn runs export`.
    Import {
        /// The cassette file.
        file: std::path::PathBuf,
    },
    /// Print the stdout and stderr each attempt of a run wrote.
    Logs {
        /// The run id.
        run: String,
    },
}

/// Runs a `runs` subcommand.
pub fn dispatch(manifest: &Manifest, command: RunsCommand) -> Result<ExitCode> {
    let store = cairn::runner::open_store(manifest)?;
    let tenant = Tenant::default();
    match command {
        RunsCommand::List { status, task, limit, before, children, parent, json } => {
            let status = match status {
                None => None,
                Some(s) => match RunStatus::parse(&s) {
                    Some(status) => Some(status),
                    None => bail!("unknown status {s:?}; use pending, running, succeeded or failed"),
                },
            };
            let lineage = match (parent, children) {
                (Some(parent), _) => Lineage::ChildrenOf(parent),
                (None, true) => Lineage::Any,
                (None, false) => Lineage::TopLevel,
            };
            let filter = RunFilter { task, status, lineage, before, limit: Some(limit) };
            let runs = store.list_runs(&tenant, &filter)?;
            if json {
                for run in &runs {
                    println!("{}", output::run_json(run, store.as_ref()));
                }
            } else {
                println!("{:<36}  {:<20}  {:<9}  {:>8}  {:>8}  error", "RUN", "TASK", "STATUS", "ATTEMPTS", "MS");
                for run in &runs {
                    println!(
                        "{:<36}  {:<20}  {:<9}  {:>8}  {:>8}  {}",
                        run.id,
                        run.task,
                        run.status.as_str(),
                        run.attempts.len(),
                        output::duration_ms(run).map(|d| d.to_string()).unwrap_or_else(|| "-".into()),
                        run.error.as_ref().map(|e| e.kind.as_str()).unwrap_or("")
                    );
                }
                if let Some(last) = runs.last().filter(|_| runs.len() == limit) {
                    eprintln!("(more may follow: the next page is `cairn runs list --before {}`)", last.id);
                }
            }
        }
        RunsCommand::Show { run, json } => {
            let record = store.get_run(&tenant, &run)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&output::run_json(&record, store.as_ref()))?);
            } else {
                println!("run       {}", record.id);
                println!("task      {}", record.task);
                println!("status    {}", record.status.as_str());
                println!("input     {}", record.input);
                println!("tokens    {} in, {} out", record.usage.prompt_tokens, record.usage.completion_tokens);
                if let Some(task) = &record.produced_by {
                    println!(
                        "produced  by task {task}{}",
                        if record.degraded { " (degraded: a fallback answered)" } else { "" }
                    );
                }
                if let Some(from) = &record.cached_from {
                    println!("cached    output reused from run {from}");
                }
                if let Some(parent) = &record.parent {
                    let group = record.group.as_deref().map(|g| format!(" in group {g}")).unwrap_or_default();
                    println!("parent    run {parent}{group}");
                }
                let children: Vec<_> = store
                    .journal_of(&record.id)?
                    .into_iter()
                    .filter(|e| e.key.kind == cairn::model::CallKind::Child)
                    .collect();
                if !children.is_empty() {
                    println!("children  {} (see `cairn runs journal {}`)", children.len(), record.id);
                }
                if let Some(source) = &record.replay_of {
                    println!("replay    of run {source} (live calls forbidden)");
                }
                for a in &record.attempts {
                    println!(
                        "attempt {} {:>7} ms  llm {} live / {} replayed, traces replayed {}  {}",
                        a.number,
                        a.finished_at_ms.saturating_sub(a.started_at_ms),
                        a.llm_live,
                        a.llm_replayed,
                        a.trace_replayed,
                        a.error.as_ref().map(|e| e.to_string()).unwrap_or_else(|| "ok".into())
                    );
                }
                for e in store.journal_of(&record.id)? {
                    println!("  {}", journal_line(&e));
                }
                if let Some(error) = &record.error {
                    println!("error     {error}");
                }
                if let Some(out) = &record.output {
                    println!("output    {out}");
                }
            }
        }
        RunsCommand::Journal { run, json } => {
            store.get_run(&tenant, &run)?;
            let entries = store.journal_of(&run)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&json!(entries))?);
            } else {
                println!(
                    "{:>4}  {:<5}  {:<16}  {:>3}  {:>7}  {:>7}  summary",
                    "SEQ", "KIND", "NAME", "OCC", "ATTEMPT", "MS"
                );
                for e in entries {
                    println!("{}", journal_line(&e));
                }
            }
        }
        RunsCommand::Resume { run, force, json } => {
            drop(store);
            let host = cairn::runner::Host::open(manifest.clone())?;
            let runtime = super::runtime()?;
            let resumed = match run {
                Some(id) => vec![runtime.block_on(host.resume(&id, force))?],
                None => runtime.block_on(host.recover())?,
            };
            runtime.block_on(host.wait_for_children());
            if resumed.is_empty() {
                eprintln!("no interrupted runs to resume");
            }
            for record in &resumed {
                if json {
                    println!("{}", output::run_json(record, host.store().as_ref()));
                } else {
                    eprintln!("resumed run {} of {}: {}", record.id, record.task, record.status.as_str());
                }
            }
            if resumed.iter().any(|r| r.status != RunStatus::Succeeded) {
                return Ok(ExitCode::FAILURE);
            }
        }
        RunsCommand::Export { run, output } => {
            let cassette = cairn::cassette::export(store.as_ref(), &tenant, &run, &output)?;
            eprintln!("wrote run {run} with {} journal entries to {}", cassette.journal.len(), output.display());
        }
        RunsCommand::Import { file } => {
            let run = super::runtime()?.block_on(cairn::cassette::import(store.as_ref(), &tenant, &file))?;
            eprintln!(
                "imported run {} of {}; replay it with `cairn run {} --replay {}`",
                run.id, run.task, run.task, run.id
            );
            println!("{}", run.id);
        }
        RunsCommand::Logs { run } => {
            store.get_run(&tenant, &run)?;
            for (attempt, log) in store.logs_of(&run)? {
                println!("--- attempt {attempt} stdout ---\n{}", log.stdout);
                if !log.stderr.is_empty() {
                    println!("--- attempt {attempt} stderr ---\n{}", log.stderr);
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One journal entry as a table row.
fn journal_line(e: &cairn::model::JournalEntry) -> String {
    format!(
        "{:>4}  {:<5}  {:<16}  {:>3}  {:>7}  {:>7}  {}",
        e.seq,
        e.key.kind.as_str(),
        e.key.name,
        e.key.occurrence,
        e.attempt,
        e.duration_ms,
        e.summary
    )
}
