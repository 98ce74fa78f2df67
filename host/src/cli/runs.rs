//! `cairn runs list | show | journal | logs | follow | cancel | resume | export | import`.

use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::Subcommand;
use serde_json::json;

use cairn::model::RunStatus;
use cairn::store::{Lineage, RunFilter};

use super::backend::Backend;
use super::output;

/// Run inspection subcommands.
#[derive(Subcommand)]
pub enum RunsCommand {
    /// List runs, newest first.
    List {
        /// Only runs in this status (pending, running, succeeded, failed, cancelled).
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
    /// Follow a run under way on the server to its end (the progress `cairn
    /// run` shows), then print it as `cairn run` does.
    Follow {
        /// The run id.
        run: String,
        /// Print one JSON object, as `cairn run --json` does.
        #[arg(long)]
        json: bool,
        /// Show no progress.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Cancel a run under way on the server, and its children: they end
    /// `cancelled`, with no retry and no dead letter.
    Cancel {
        /// The run id.
        run: String,
        /// Print the cancelled run as JSON.
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
pub fn dispatch(backend: &Backend, command: RunsCommand) -> Result<ExitCode> {
    match command {
        RunsCommand::List { status, task, limit, before, children, parent, json } => {
            let status = match status {
                None => None,
                Some(s) => match RunStatus::parse(&s) {
                    Some(status) => Some(status),
                    None => bail!("unknown status {s:?}; use pending, running, succeeded, failed or cancelled"),
                },
            };
            let lineage = match (parent, children) {
                (Some(parent), _) => Lineage::ChildrenOf(parent),
                (None, true) => Lineage::Any,
                (None, false) => Lineage::TopLevel,
            };
            let filter = RunFilter { task, status, lineage, before, limit: Some(limit) };
            let runs = backend.list_runs(filter)?;
            if json {
                for run in &runs {
                    super::safe::print_json_line(&run.view)?;
                }
            } else {
                println!("{:<36}  {:<20}  {:<9}  {:>8}  {:>8}  error", "RUN", "TASK", "STATUS", "ATTEMPTS", "MS");
                for run in runs.iter().map(|run| &run.record) {
                    println!(
                        "{:<36}  {:<20}  {:<9}  {:>8}  {:>8}  {}",
                        run.id,
                        run.task,
                        run.status.as_str(),
                        run.attempts.len(),
                        output::duration_ms(run).map(|d| d.to_string()).unwrap_or_else(|| "-".into()),
                        super::safe::line(run.error.as_ref().map(|e| e.kind.as_str()).unwrap_or(""))
                    );
                }
                if let Some(last) = runs.last().filter(|_| runs.len() == limit) {
                    eprintln!("(more may follow: the next page is `cairn runs list --before {}`)", last.record.id);
                }
            }
        }
        RunsCommand::Show { run, json } => {
            let run = backend.run(&run)?;
            if json {
                super::safe::print_json(&run.view)?;
            } else {
                show(&run.record, &backend.journal(&run.record.id)?);
            }
        }
        RunsCommand::Journal { run, json } => {
            let entries = backend.journal(&run)?;
            if json {
                super::safe::print_json(&json!(entries))?;
            } else {
                println!("{}", journal_header());
                for e in entries {
                    println!("{}", journal_line(&e));
                }
            }
        }
        RunsCommand::Follow { run, json, quiet } => {
            let (run, children) = backend.follow(&run, super::progress::Style::detect(quiet || json))?;
            return output::print_finished(&run, &children, json);
        }
        RunsCommand::Cancel { run, json } => {
            let run = backend.cancel(&run)?;
            if json {
                super::safe::print_json(&run.view)?;
            } else {
                eprintln!("run {} of {}: {}", run.record.id, run.record.task, run.record.status.as_str());
            }
        }
        RunsCommand::Resume { run, force, json } => {
            let resumed = backend.resume(run.as_deref(), force)?;
            if resumed.is_empty() {
                match backend {
                    Backend::Local(_) => eprintln!("no interrupted runs to resume"),
                    Backend::Remote(client) => eprintln!(
                        "the cairn server at {} resumes the runs a stopped host left behind when it starts; resume one run with `cairn runs resume RUN`",
                        client.url()
                    ),
                }
            }
            for run in &resumed {
                if json {
                    super::safe::print_json_line(&run.view)?;
                } else {
                    eprintln!("resumed run {} of {}: {}", run.record.id, run.record.task, run.record.status.as_str());
                }
            }
            if resumed.iter().any(|r| r.record.status != RunStatus::Succeeded) {
                return Ok(ExitCode::FAILURE);
            }
        }
        RunsCommand::Export { run, output } => {
            let cassette = cairn::cassette::Cassette::of(backend.run(&run)?.record, backend.journal(&run)?);
            cassette.save(&output)?;
            eprintln!("wrote run {run} with {} journal entries to {}", cassette.journal.len(), output.display());
        }
        RunsCommand::Import { file } => {
            let run = backend.import(&file)?;
            eprintln!(
                "imported run {} of {}; replay it with `cairn run {} --replay {}`",
                run.id, run.task, run.task, run.id
            );
            println!("{}", run.id);
        }
        RunsCommand::Logs { run } => {
            for (attempt, log) in backend.logs(&run)? {
                println!("--- attempt {attempt} stdout ---\n{}", super::safe::text(&log.stdout));
                if !log.stderr.is_empty() {
                    println!("--- attempt {attempt} stderr ---\n{}", super::safe::text(&log.stderr));
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `cairn runs show RUN` for people.
fn show(record: &cairn::model::RunRecord, journal: &[cairn::model::JournalEntry]) {
    println!("run       {}", record.id);
    println!("task      {}", record.task);
    println!("status    {}", record.status.as_str());
    println!("input     {}", super::safe::line(&record.input));
    println!("tokens    {} in, {} out", record.usage.prompt_tokens, record.usage.completion_tokens);
    if record.usage.cost_micros > 0 {
        println!("cost      ${:.6}", record.usage.cost_micros as f64 / 1e6);
    }
    if let Some(task) = &record.produced_by {
        println!("produced  by task {task}{}", if record.degraded { " (degraded: a fallback answered)" } else { "" });
    }
    if let Some(from) = &record.cached_from {
        println!("cached    output reused from run {from}");
    }
    if let Some(parent) = &record.parent {
        let group = record.group.as_deref().map(|g| format!(" in group {}", super::safe::line(g))).unwrap_or_default();
        println!("parent    run {parent}{group}");
    }
    let children = journal.iter().filter(|e| e.key.kind == cairn::model::CallKind::Child).count();
    if children > 0 {
        println!("children  {children} (see `cairn runs journal {}`)", record.id);
    }
    if let Some(source) = &record.replay_of {
        println!("replay    of run {source} (live calls forbidden)");
    }
    for a in &record.attempts {
        println!(
            "attempt {} {:>7} ms  llm {} live / {} replayed, traces replayed {}{}  {}",
            a.number,
            a.finished_at_ms.saturating_sub(a.started_at_ms),
            a.llm_live,
            a.llm_replayed,
            a.trace_replayed,
            if a.http_live + a.http_replayed > 0 {
                format!(", http {} live / {} replayed", a.http_live, a.http_replayed)
            } else {
                String::new()
            },
            super::safe::line(&a.error.as_ref().map(|e| e.to_string()).unwrap_or_else(|| "ok".into()))
        );
    }
    if !journal.is_empty() {
        println!("journal");
        println!("  {}", journal_header());
    }
    for e in journal {
        println!("  {}", journal_line(e));
    }
    if let Some(error) = &record.error {
        println!("error     {}", super::safe::line(&error.to_string()));
    }
    if let Some(out) = &record.output {
        println!("output    {}", super::safe::line(out));
    }
}

/// One journal entry as a table row.
/// The column names over [`journal_line`]s.
fn journal_header() -> String {
    format!("{:>4}  {:<5}  {:<16}  {:>3}  {:>7}  {:>7}  SUMMARY", "SEQ", "KIND", "NAME", "OCC", "ATTEMPT", "MS")
}

fn journal_line(e: &cairn::model::JournalEntry) -> String {
    format!(
        "{:>4}  {:<5}  {:<16}  {:>3}  {:>7}  {:>7}  {}",
        e.seq,
        e.key.kind.as_str(),
        super::safe::line(&e.key.name),
        e.key.occurrence,
        e.attempt,
        e.duration_ms,
        super::safe::line(&e.summary)
    )
}
