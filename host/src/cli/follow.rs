//! Following a run on the server: its events and its children's drive the
//! same progress line `cairn run` shows for a run in this process, and the
//! run is done when its `run-finished` arrives. Ctrl-C detaches: the run
//! goes on in the server.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;
use tokio::signal::unix::{Signal, SignalKind, signal};

use cairn::progress::{Progress, ProgressSnapshot};

use super::backend::Run;
use super::client::{Client, EventStream, SseEvent};
use super::progress::{Reporter, Style};

/// How often the run is looked at besides its events (an event lost to a
/// lagging stream must not leave the CLI waiting).
const LOOK_EVERY: Duration = Duration::from_secs(2);

/// Ctrl-C while following: the run goes on without this process.
#[derive(Debug, thiserror::Error)]
#[error(
    "detached from run {run_id}: it goes on in the cairn server at {url}; follow it with `cairn runs follow {run_id}`, cancel it with `cairn runs cancel {run_id}`"
)]
pub struct Detached {
    /// The run.
    pub run_id: String,
    /// The server.
    pub url: String,
}

/// The run a request started (or the one to attach to).
pub struct Started {
    /// Its id.
    pub run_id: String,
    /// An end already over when following began (a dead letter's, when it is
    /// retried): the run is done only when it ends again.
    pub ignore_finished_at: Option<u64>,
    /// Runs already known: the run itself and its children so far, when
    /// attaching to a run under way.
    pub seen: Vec<Run>,
}

impl Started {
    /// The run an API answer shows; `again` when that run has ended before and will end again.
    pub fn of(view: &Value, again: bool) -> Result<Started> {
        let run_id = view["run_id"].as_str().with_context(|| format!("the server's answer names no run: {view}"))?;
        let ignore_finished_at = if again { view["timings"]["finished_at_ms"].as_u64() } else { None };
        Ok(Started { run_id: run_id.to_owned(), ignore_finished_at, seen: Vec::new() })
    }
}

/// Subscribes to the server's events, calls `start` (which submits, resumes
/// or names the run), then follows the run to its end with progress in
/// `style`. Returns the finished run and what its children did.
pub fn follow(
    client: &Client,
    style: Style,
    start: impl FnOnce() -> Result<Started>,
) -> Result<(Run, ProgressSnapshot)> {
    // Listening from here on: a Ctrl-C during the submission detaches right after it.
    let mut interrupt =
        client.block_on(async { signal(SignalKind::interrupt()) }).context("cannot listen for Ctrl-C")?;
    let stream = client.block_on(client.events())?;
    let started = start()?;
    let mut children = Children::new(&started.run_id);
    for run in &started.seen {
        children.seed(run);
    }
    let reporter = Reporter::start(children.progress.clone(), style);
    let outcome = client.block_on(watch(client, stream, &started, &mut children, &mut interrupt));
    reporter.finish();
    match outcome? {
        Some(run) => Ok((run, children.progress.snapshot())),
        None => Err(Detached { run_id: started.run_id, url: client.url().to_owned() }.into()),
    }
}

/// Reads events until the run has ended (`Some`) or Ctrl-C (`None`).
async fn watch(
    client: &Client,
    mut stream: EventStream,
    started: &Started,
    children: &mut Children,
    interrupt: &mut Signal,
) -> Result<Option<Run>> {
    let mut look = tokio::time::interval(LOOK_EVERY);
    loop {
        let look_now = tokio::select! {
            _ = interrupt.recv() => return Ok(None),
            _ = look.tick() => true,
            event = stream.next() => match event {
                // A listener that fell behind may have missed the end.
                Ok(Some(event)) => event.kind == "lagged" || children.apply(&event),
                Ok(None) | Err(_) => match ended(client, started).await? {
                    Some(run) => return Ok(Some(run)),
                    None => bail!(
                        "the cairn server at {} stopped sending events before run {id} finished (is it stopping? a stopped run resumes when a server starts again); see the run with `cairn runs show {id}`",
                        client.url(),
                        id = started.run_id
                    ),
                },
            },
        };
        if look_now && let Some(run) = ended(client, started).await? {
            return Ok(Some(run));
        }
    }
}

/// The run, if it has ended (and not only in the end `started` ignores).
async fn ended(client: &Client, started: &Started) -> Result<Option<Run>> {
    let view = client.request(reqwest::Method::GET, &["runs", &started.run_id], &[], None).await?;
    let run = Run::from_view(view)?;
    let over = run.record.status.is_finished() && run.record.finished_at_ms != started.ignore_finished_at;
    Ok(over.then_some(run))
}

/// What a child run is doing, as far as its events tell.
#[derive(Debug, Default)]
struct Child {
    retrying: bool,
    done: bool,
}

/// The followed run's children (and theirs), counted into a [`Progress`]
/// the way a host in this process counts its own.
struct Children {
    root: String,
    known: HashMap<String, Child>,
    progress: Arc<Progress>,
}

impl Children {
    fn new(root: &str) -> Children {
        Children { root: root.to_owned(), known: HashMap::new(), progress: Arc::default() }
    }

    fn ours(&self, run: &str) -> bool {
        run == self.root || self.known.contains_key(run)
    }

    /// A run known before following began (attaching to one under way).
    fn seed(&mut self, run: &Run) {
        let llm = &run.view["llm"];
        for call in 0..llm["calls_live"].as_u64().unwrap_or_default() {
            let tokens = llm["prompt_tokens"].as_u64().unwrap_or_default()
                + llm["completion_tokens"].as_u64().unwrap_or_default();
            self.progress.llm_call(if call == 0 { tokens } else { 0 });
        }
        if run.record.id != self.root {
            self.started(&run.record.id);
            if run.record.status.is_finished() {
                self.finished(&run.record.id, run.record.status.as_str());
            }
        }
    }

    fn started(&mut self, run: &str) {
        if !self.known.contains_key(run) {
            self.known.insert(run.to_owned(), Child::default());
            self.progress.child_submitted();
            self.progress.child_running(true);
        }
    }

    fn finished(&mut self, run: &str, status: &str) {
        let Some(child) = self.known.get_mut(run).filter(|child| !child.done) else { return };
        child.done = true;
        if std::mem::take(&mut child.retrying) {
            self.progress.child_retrying(false);
        }
        self.progress.child_running(false);
        self.progress.child_finished(status == "succeeded");
    }

    fn retrying(&mut self, run: &str, retrying: bool) {
        let Some(child) = self.known.get_mut(run).filter(|child| !child.done) else { return };
        if child.retrying != retrying {
            child.retrying = retrying;
            self.progress.child_retrying(retrying);
        }
    }

    /// Counts one event; whether it ended the followed run.
    fn apply(&mut self, event: &SseEvent) -> bool {
        let data = &event.data;
        let Some(run) = data["run_id"].as_str() else { return false };
        match event.kind.as_str() {
            "run-started" if data["parent"].as_str().is_some_and(|parent| self.ours(parent)) => self.started(run),
            _ if !self.ours(run) => {}
            "run-finished" if run == self.root => return true,
            "run-finished" => self.finished(run, data["status"].as_str().unwrap_or_default()),
            "attempt-started" => self.retrying(run, false),
            "attempt-ended" => self.retrying(run, data["error"]["retryable"].as_bool() == Some(true)),
            "call" if data["kind"] == "llm" => {
                let tokens = data["prompt_tokens"].as_u64().unwrap_or_default()
                    + data["completion_tokens"].as_u64().unwrap_or_default();
                self.progress.llm_call(tokens);
            }
            _ => {}
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn event(kind: &str, data: Value) -> SseEvent {
        SseEvent { kind: kind.into(), data }
    }

    #[test]
    fn events_of_the_run_and_its_children_count_as_a_host_counts_them() {
        let mut children = Children::new("root");
        let events = [
            event("run-started", json!({"run_id": "root", "parent": null})),
            event("run-started", json!({"run_id": "other", "parent": null})),
            event("run-started", json!({"run_id": "a", "parent": "root"})),
            event("run-started", json!({"run_id": "b", "parent": "root"})),
            event("run-started", json!({"run_id": "a1", "parent": "a"})),
            event("call", json!({"run_id": "a", "kind": "llm", "prompt_tokens": 10, "completion_tokens": 5})),
            event("call", json!({"run_id": "a", "kind": "trace", "prompt_tokens": 0, "completion_tokens": 0})),
            event("call", json!({"run_id": "other", "kind": "llm", "prompt_tokens": 99, "completion_tokens": 1})),
            event(
                "attempt-ended",
                json!({"run_id": "b", "error": {"kind": "flaky", "message": "", "retryable": true}}),
            ),
            event("run-finished", json!({"run_id": "a1", "status": "succeeded"})),
            event("run-finished", json!({"run_id": "a1", "status": "succeeded"})),
            event("run-finished", json!({"run_id": "other", "status": "failed"})),
        ];
        assert!(events.iter().all(|e| !children.apply(e)), "the followed run has not ended");
        let now = children.progress.snapshot();
        assert_eq!(
            (now.children, now.running, now.retrying, now.succeeded, now.failed, now.llm_calls, now.tokens),
            (3, 2, 1, 1, 0, 1, 15),
            "{now:?}"
        );
        children.apply(&event("attempt-started", json!({"run_id": "b"})));
        children.apply(&event("run-finished", json!({"run_id": "b", "status": "failed"})));
        let now = children.progress.snapshot();
        assert_eq!((now.running, now.retrying, now.failed), (1, 0, 1), "{now:?}");
        assert!(children.apply(&event("run-finished", json!({"run_id": "root", "status": "succeeded"}))));
    }
}
