//! Where a command gets its data and does its work: the project's store and
//! host opened here (no server), or the project's server through its API.
//! Each operation answers in the same types either way (a run is its record
//! and its JSON view), so every command has one body and prints the same.

use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};

use anyhow::{Context, Result, bail};
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};

use cairn::gc::GcReport;
use cairn::manifest::Manifest;
use cairn::model::{AttemptLog, DeadLetter, JournalEntry, Report, RunRecord, Tenant};
use cairn::progress::ProgressSnapshot;
use cairn::runner::Host;
use cairn::store::prelude::*;
use cairn::store::{Lineage, RunFilter};

use super::client::Client;
use super::follow::{self, Started};
use super::from_view::{entry_from_view, record_from_view};
use super::progress::{Reporter, Style};

/// A run: its record (for text) and its view (what `--json` prints, the API's object).
#[derive(Debug, Clone)]
pub struct Run {
    /// The record, as the store has it (rebuilt from the view for a server's run).
    pub record: RunRecord,
    /// `views::run_json` of it.
    pub view: Value,
}

impl Run {
    fn local(record: RunRecord, store: &dyn Store) -> Run {
        Run { view: cairn::views::run_json(&record, store), record }
    }

    /// A run the API answered with.
    pub fn from_view(view: Value) -> Result<Run> {
        let record =
            record_from_view(&view).with_context(|| format!("the server sent a run the CLI cannot read: {view}"))?;
        Ok(Run { record, view })
    }
}

/// The project's store and host, opened by this process.
pub struct Local {
    manifest: Manifest,
    store: OnceLock<Arc<dyn Store>>,
}

impl Local {
    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The tenant commands act in.
    pub fn tenant(&self) -> Tenant {
        self.manifest.tenant.clone().unwrap_or_default()
    }

    /// The project's secrets, sealed in its store.
    pub fn vault(&self) -> Result<cairn::access::vault::Vault> {
        Ok(cairn::access::vault::Vault::open(&self.manifest.state_dir(), self.store()?.clone())?)
    }

    /// The store, opened on first use.
    pub fn store(&self) -> Result<&Arc<dyn Store>> {
        if let Some(store) = self.store.get() {
            return Ok(store);
        }
        let store = cairn::runner::open_store(&self.manifest)?;
        Ok(self.store.get_or_init(|| store))
    }
}

/// Where commands go.
pub enum Backend {
    /// No server: this process opens the store (and a host, to run).
    Local(Local),
    /// A server: every command is a request.
    Remote(Client),
}

impl Backend {
    /// The server `server` (`--server`/`CAIRN_SERVER`) names, else the
    /// project's live server, else the project itself.
    pub fn open(manifest: Result<Manifest>, server: Option<&str>, tenant: Option<Tenant>) -> Result<Backend> {
        let state_dir = manifest.as_ref().ok().map(Manifest::state_dir);
        match Client::find(server.filter(|url| !url.trim().is_empty()), state_dir.as_deref(), tenant)? {
            Some(client) => Ok(Backend::Remote(client)),
            None => Ok(Backend::Local(Local { manifest: manifest?, store: OnceLock::new() })),
        }
    }

    /// The tenant commands act in, as people read it.
    pub fn tenant_name(&self) -> String {
        match self {
            Backend::Local(local) => local.tenant().to_string(),
            Backend::Remote(client) => match client.tenant() {
                Some(tenant) => tenant.to_string(),
                None => "the token's tenant".to_owned(),
            },
        }
    }

    /// Runs, newest first, as `filter` says.
    pub fn list_runs(&self, filter: RunFilter) -> Result<Vec<Run>> {
        let client = match self {
            Backend::Local(local) => {
                let store = local.store()?;
                let runs = store.list_runs(&local.tenant(), &filter)?;
                return Ok(runs.into_iter().map(|run| Run::local(run, store.as_ref())).collect());
            }
            Backend::Remote(client) => client,
        };
        let mut query: Vec<(&str, String)> = Vec::new();
        query.extend(filter.status.map(|s| ("status", s.as_str().to_owned())));
        query.extend(filter.task.map(|t| ("task", t)));
        match filter.lineage {
            Lineage::ChildrenOf(parent) => query.push(("parent", parent)),
            Lineage::Any => query.push(("children", "true".into())),
            Lineage::TopLevel => {}
        }
        // The API answers pages of at most 1000; a larger --limit takes several.
        let limit = filter.limit.unwrap_or(usize::MAX);
        let mut before = filter.before;
        let mut runs = Vec::new();
        while runs.len() < limit {
            let mut page_query = query.clone();
            page_query.push(("limit", (limit - runs.len()).min(1000).to_string()));
            page_query.extend(before.take().map(|id| ("before", id)));
            let page = client.get(&["runs"], &page_query)?;
            for view in page["runs"].as_array().into_iter().flatten() {
                runs.push(Run::from_view(view.clone())?);
            }
            match page["next"].as_str() {
                Some(next) => before = Some(next.to_owned()),
                None => break,
            }
        }
        Ok(runs)
    }

    /// One run.
    pub fn run(&self, id: &str) -> Result<Run> {
        match self {
            Backend::Local(local) => {
                let store = local.store()?;
                Ok(Run::local(store.get_run(&local.tenant(), id)?, store.as_ref()))
            }
            Backend::Remote(client) => Run::from_view(client.get(&["runs", id], &[])?),
        }
    }

    /// A run's journal, in recording order.
    pub fn journal(&self, id: &str) -> Result<Vec<JournalEntry>> {
        let client = match self {
            Backend::Local(local) => {
                let store = local.store()?;
                store.get_run(&local.tenant(), id)?;
                return Ok(store.journal_of(id)?);
            }
            Backend::Remote(client) => client,
        };
        let mut entries = Vec::new();
        let mut after = None;
        loop {
            let mut query = vec![("limit", "5000".to_owned())];
            query.extend(after.map(|seq: u64| ("after", seq.to_string())));
            let page = client.get(&["runs", id, "journal"], &query)?;
            for entry in page["entries"].as_array().into_iter().flatten() {
                entries.push(entry_from_view(id, entry)?);
            }
            match page["next"].as_u64() {
                Some(next) => after = Some(next),
                None => return Ok(entries),
            }
        }
    }

    /// What each attempt of a run wrote to stdout and stderr.
    pub fn logs(&self, id: &str) -> Result<Vec<(u32, AttemptLog)>> {
        match self {
            Backend::Local(local) => {
                let store = local.store()?;
                store.get_run(&local.tenant(), id)?;
                Ok(store.logs_of(id)?)
            }
            Backend::Remote(client) => {
                let logs = client.get(&["runs", id, "logs"], &[])?;
                #[derive(Deserialize)]
                struct Attempt {
                    attempt: u32,
                    #[serde(flatten)]
                    log: AttemptLog,
                }
                let attempts: Vec<Attempt> = serde_json::from_value(logs["attempts"].clone())
                    .with_context(|| format!("the server sent logs the CLI cannot read: {logs}"))?;
                Ok(attempts.into_iter().map(|a| (a.attempt, a.log)).collect())
            }
        }
    }

    /// A run's report.
    pub fn report(&self, id: &str) -> Result<Report> {
        match self {
            Backend::Local(local) => {
                let store = local.store()?;
                store.get_run(&local.tenant(), id)?;
                match store.get_report(id)? {
                    Some(report) => Ok(report),
                    None => bail!("run {id} made no report (its task never called the report interface)"),
                }
            }
            Backend::Remote(client) => {
                let report = client.get(&["runs", id, "report"], &[])?;
                let mut tabs = std::collections::BTreeMap::new();
                for tab in report["tabs"].as_array().into_iter().flatten() {
                    let text = |field: &str| tab[field].as_str().unwrap_or_default().to_owned();
                    tabs.insert(text("name"), text("html"));
                }
                Ok(Report { tabs })
            }
        }
    }

    /// The dead-letter queue, newest first.
    pub fn dead_letters(&self) -> Result<Vec<DeadLetter>> {
        match self {
            Backend::Local(local) => Ok(local.store()?.dlq_list(&local.tenant())?),
            Backend::Remote(client) => {
                let answer = client.get(&["dlq"], &[])?;
                serde_json::from_value(answer["letters"].clone())
                    .with_context(|| format!("the server sent dead letters the CLI cannot read: {answer}"))
            }
        }
    }

    /// One dead letter, if the run is in the queue.
    pub fn dead_letter(&self, id: &str) -> Result<Option<DeadLetter>> {
        match self {
            Backend::Local(local) => Ok(local.store()?.dlq_get(&local.tenant(), id)?),
            Backend::Remote(client) => match client.get(&["dlq", id], &[]) {
                Ok(letter) => Ok(Some(serde_json::from_value(letter)?)),
                Err(e) if e.is_not_found() => Ok(None),
                Err(e) => Err(e.into()),
            },
        }
    }

    /// Takes one run (or every run) out of the dead-letter queue; returns how many.
    pub fn remove_dead_letters(&self, id: Option<&str>) -> Result<usize> {
        match self {
            Backend::Local(local) => {
                let store = local.store()?;
                let targets: Vec<String> = match id {
                    Some(id) => vec![id.to_owned()],
                    None => store.dlq_list(&local.tenant())?.into_iter().map(|l| l.run_id).collect(),
                };
                let runtime = super::runtime()?;
                let mut removed = 0;
                for id in targets {
                    removed += usize::from(runtime.block_on(store.dlq_remove(&local.tenant(), &id))?);
                }
                Ok(removed)
            }
            Backend::Remote(client) => {
                let segments: &[&str] = match &id {
                    Some(id) => &["dlq", id],
                    None => &["dlq"],
                };
                match client.call(Method::DELETE, segments, &[], None) {
                    Ok(answer) => Ok(answer["removed"].as_u64().unwrap_or_default() as usize),
                    Err(e) if e.is_not_found() => Ok(0),
                    Err(e) => Err(e.into()),
                }
            }
        }
    }

    /// What `cairn status --json` prints.
    pub fn status(&self) -> Result<Value> {
        match self {
            Backend::Local(local) => super::status::local(local),
            Backend::Remote(client) => Ok(client.get(&["status"], &[])?),
        }
    }

    /// Drops cached results (of one task, or all); returns how many.
    pub fn clear_cache(&self, task: Option<&str>) -> Result<u64> {
        match self {
            Backend::Local(local) => {
                if let Some(name) = task {
                    local.manifest.task(name).map_err(anyhow::Error::msg)?;
                }
                let store = local.store()?;
                Ok(super::runtime()?.block_on(store.cache_clear(&local.tenant(), task))? as u64)
            }
            Backend::Remote(client) => {
                Ok(client.post(&["cache", "clear"], json!({"task": task}))?["removed"].as_u64().unwrap_or_default())
            }
        }
    }

    /// Deletes finished runs older than `age` (`older_than` as the user wrote it).
    pub fn gc(&self, older_than: &str, age: std::time::Duration, dry_run: bool) -> Result<GcReport> {
        match self {
            Backend::Local(local) => {
                let store = local.store()?;
                let dirs = cairn::sandbox::RunDirs::open(&local.manifest.state_dir().join("runs"))?;
                let tenant = local.tenant();
                let blobs = cairn::blobs::local::LocalBlobs::open(&local.manifest.blobs_dir())?;
                let collect = cairn::gc::collect(store.as_ref(), &dirs, &blobs, &tenant, age, dry_run);
                Ok(super::runtime()?.block_on(collect)?)
            }
            Backend::Remote(client) => {
                let answer = client.post(&["gc"], json!({"older_than": older_than, "dry_run": dry_run}))?;
                let removed = serde_json::from_value(answer["removed"].clone()).unwrap_or_default();
                let failed = serde_json::from_value(answer["failed"].clone()).unwrap_or_default();
                let blobs = cairn::gc::BlobReport {
                    removed: answer["blobs"]["removed"].as_u64().unwrap_or_default() as usize,
                    bytes: answer["blobs"]["bytes"].as_u64().unwrap_or_default(),
                    kept: answer["blobs"]["kept"].as_u64().unwrap_or_default() as usize,
                };
                Ok(GcReport { removed, kept: answer["kept"].as_u64().unwrap_or_default() as usize, failed, blobs })
            }
        }
    }

    /// Stores a secret.
    pub fn put_secret(&self, key: &str, value: &str) -> Result<()> {
        match self {
            Backend::Local(local) => {
                let vault = local.vault()?;
                Ok(super::runtime()?.block_on(vault.put(&local.tenant(), key, value))?)
            }
            Backend::Remote(client) => {
                client.call(Method::PUT, &["secrets", key], &[], Some(json!({"value": value})))?;
                Ok(())
            }
        }
    }

    /// Secret keys (never values).
    pub fn secrets(&self) -> Result<Vec<String>> {
        match self {
            Backend::Local(local) => Ok(local.store()?.list_secrets(&local.tenant())?),
            Backend::Remote(client) => {
                let answer = client.get(&["secrets"], &[])?;
                Ok(serde_json::from_value(answer["keys"].clone())?)
            }
        }
    }

    /// Deletes a secret; whether there was one.
    pub fn delete_secret(&self, key: &str) -> Result<bool> {
        match self {
            Backend::Local(local) => {
                let store = local.store()?;
                Ok(super::runtime()?.block_on(store.delete_secret(&local.tenant(), key))?)
            }
            Backend::Remote(client) => match client.call(Method::DELETE, &["secrets", key], &[], None) {
                Ok(_) => Ok(true),
                Err(e) if e.is_not_found() => Ok(false),
                Err(e) => Err(e.into()),
            },
        }
    }

    /// Runs `task` on `input` to its end, showing progress in `style`.
    pub fn start_run(
        &self,
        task: &str,
        input: &str,
        replay: Option<String>,
        style: Style,
        show: &dyn Fn(&Run, &ProgressSnapshot) -> Result<ExitCode>,
    ) -> Result<ExitCode> {
        let client = match self {
            Backend::Local(local) => return run_here(local, task, input, replay, style, show),
            Backend::Remote(client) => client,
        };
        let input: Value = serde_json::from_str(input).with_context(|| {
            format!("the input is not JSON, and the server at {} takes JSON inputs only", client.url())
        })?;
        let (run, children) = follow::follow(client, style, || {
            let view = client.post(&["runs"], json!({"task": task, "input": input, "replay": replay}))?;
            Started::of(&view, false)
        })?;
        show(&run, &children)
    }

    /// Follows a run to its end (a server's run), or shows it if it has ended.
    pub fn follow(&self, id: &str, style: Style) -> Result<(Run, ProgressSnapshot)> {
        match self {
            Backend::Local(_) => {
                let run = self.run(id)?;
                if !run.record.status.is_finished() {
                    bail!(
                        "run {id} is {} and no cairn server runs this project, so there is nothing to follow; see it with `cairn runs show {id}`, or, if the host running it is gone, `cairn runs resume {id}`",
                        run.record.status.as_str()
                    );
                }
                Ok((run, ProgressSnapshot::default()))
            }
            Backend::Remote(client) => follow::follow(client, style, || {
                // Attaching late: what the run and its children did so far counts too.
                let filter = RunFilter { lineage: Lineage::ChildrenOf(id.to_owned()), ..RunFilter::default() };
                let mut seen = self.list_runs(filter)?;
                seen.push(self.run(id)?);
                Ok(Started { run_id: id.to_owned(), ignore_finished_at: None, seen })
            }),
        }
    }

    /// Cancels a run under way on the server (and its children) and waits for it to end.
    pub fn cancel(&self, id: &str) -> Result<Run> {
        let client = match self {
            Backend::Local(local) => {
                let run = self.run(id)?;
                if run.record.status.is_finished() {
                    bail!("run {id} already {}; only an unfinished run can be cancelled", run.record.status.as_str());
                }
                // Through the store: its holder (a worker, wherever it runs) stops it
                // when it hears; a run nobody holds is ended here.
                let host = Host::open(local.manifest.clone())?;
                super::runtime()?.block_on(host.cancel(host.tenant(), id))?;
                let waited = std::time::Instant::now();
                loop {
                    let run = self.run(id)?;
                    if run.record.status.is_finished() {
                        return Ok(run);
                    }
                    if waited.elapsed() > host.lease() * 2 {
                        let holder = run.record.lease.map_or_else(|| "nobody".to_owned(), |l| l.owner);
                        bail!(
                            "run {id} is asked to cancel, but its holder ({holder}) has not ended it yet; see `cairn runs show {id}`"
                        );
                    }
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
            }
            Backend::Remote(client) => client,
        };
        let (run, _) = follow::follow(client, Style::Off, || {
            client.post(&["runs", id, "cancel"], json!({}))?;
            Ok(Started { run_id: id.to_owned(), ignore_finished_at: None, seen: Vec::new() })
        })?;
        Ok(run)
    }

    /// Resumes one unfinished run (or, here, every one a crashed host left behind).
    pub fn resume(&self, id: Option<&str>, force: bool) -> Result<Vec<Run>> {
        let (client, id) = match (self, id) {
            (Backend::Local(local), id) => {
                let host = Host::open(local.manifest.clone())?;
                let runtime = super::runtime()?;
                let resumed = match id {
                    Some(id) => vec![runtime.block_on(host.resume(host.tenant(), id, force))?],
                    None => runtime.block_on(host.recover())?,
                };
                runtime.block_on(host.wait_for_children());
                return Ok(resumed.into_iter().map(|run| Run::local(run, host.store().as_ref())).collect());
            }
            // A server resumes those itself, when it starts.
            (Backend::Remote(_), None) => return Ok(Vec::new()),
            (Backend::Remote(client), Some(id)) => (client, id),
        };
        let (run, _) = follow::follow(client, Style::Off, || {
            let view = client.post(&["runs", id, "resume"], json!({"force": force}))?;
            Started::of(&view, false)
        })?;
        Ok(vec![run])
    }

    /// Retries a dead-lettered run and waits for it to end.
    pub fn retry_dead(&self, id: &str, stub_output: Option<String>) -> Result<Run> {
        let client = match self {
            Backend::Local(local) => {
                let host = Host::open(local.manifest.clone())?;
                let run = super::runtime()?.block_on(host.retry_dead(host.tenant(), id, stub_output))?;
                return Ok(Run::local(run, host.store().as_ref()));
            }
            Backend::Remote(client) => client,
        };
        let (run, _) = follow::follow(client, Style::Off, || {
            let view = client.post(&["dlq", id, "retry"], json!({"stub_output": stub_output}))?;
            // The answer is the run as it was, finished: only a later end counts.
            Started::of(&view, true)
        })?;
        Ok(run)
    }

    /// Loads a cassette into the store.
    pub fn import(&self, file: &Path) -> Result<RunRecord> {
        match self {
            Backend::Local(local) => {
                let store = local.store()?;
                Ok(super::runtime()?.block_on(cairn::cassette::import(store.as_ref(), &local.tenant(), file))?)
            }
            Backend::Remote(client) => {
                let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
                let cassette: Value = serde_json::from_str(&text).with_context(|| {
                    format!("{} is not a cassette (JSON written by `cairn runs export`)", file.display())
                })?;
                Ok(Run::from_view(client.post(&["runs", "import"], cassette)?)?.record)
            }
        }
    }
}

/// `cairn run` without a server: a host in this process. The run is shown
/// (`show`) as soon as it ends (and its children, when nothing was resumed);
/// runs a crashed host left behind are resumed beside it and finished after
/// it is shown, or its error told.
fn run_here(
    local: &Local,
    task: &str,
    input: &str,
    replay: Option<String>,
    style: Style,
    show: &dyn Fn(&Run, &ProgressSnapshot) -> Result<ExitCode>,
) -> Result<ExitCode> {
    // On the store this process already opened, if it did (to read a replayed run's input).
    let host = match local.store.get() {
        Some(store) => Host::with_store(local.manifest.clone(), store.clone())?,
        None => Host::open(local.manifest.clone())?,
    };
    let options = cairn::runner::RunOptions { replay, tenant: None };
    let runtime = super::runtime()?;
    let reporter = Reporter::start(host.progress().clone(), style);
    // A host that starts first finishes what a crashed host left behind, beside the
    // run asked for, which never waits for them (however big a tree they are).
    let recovering = {
        let host = host.clone();
        runtime.spawn(async move { host.recover().await })
    };
    let record = runtime.block_on(async {
        let record = host.run_with(task, input, &options).await;
        // Children still running (a parent that ended without waiting for them);
        // with resumed runs under way, they are waited for after the run is shown.
        if recovering.is_finished() {
            let left = host.child_runs().running();
            if left > 0 {
                eprintln!("waiting for {left} child run(s) still running to finish");
                host.wait_for_children().await;
            }
        }
        record
    });
    reporter.finish();
    // Shown (or its error told) first; the resumed runs and any children are
    // finished after, whatever became of it.
    let shown = record.map_err(anyhow::Error::from).and_then(|record| {
        let run = Run::local(record, host.store().as_ref());
        show(&run, &host.progress().snapshot())
    });
    if !recovering.is_finished() {
        eprintln!("finishing the interrupted runs resumed at start-up (Ctrl-C leaves them for the next start)");
    }
    match runtime.block_on(recovering) {
        Ok(Ok(resumed)) => {
            for run in resumed {
                eprintln!("resumed interrupted run {} of {}: {}", run.id, run.task, run.status.as_str());
            }
        }
        Ok(Err(e)) => eprintln!("cannot resume the interrupted runs: {e}"),
        Err(e) => eprintln!("resuming the interrupted runs stopped: {e}"),
    }
    let left = host.child_runs().running();
    if left > 0 {
        eprintln!("waiting for {left} child run(s) still running to finish");
        runtime.block_on(host.wait_for_children());
    }
    host.save_pool_status(true);
    shown
}
