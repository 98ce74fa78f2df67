//! `batch-driver`: the seed's driver environment, fanning `report-refiner` out
//! over a list of topics.
//!
//! In the seed, `driver_env` is a standard (not reused) environment that
//! `depends_on` the LLM worker environment: its task makes no LLM calls, it
//! only coordinates. Here the driver submits one child run of
//! `report-refiner` (or `task`) per topic with input `{"topic": t}`; each child
//! runs in its own task's environment with that task's retries, fallbacks,
//! cache and pool, so the children run concurrently up to the pool's bound.
//! Submissions are journaled, so a retried or resumed driver gets its children
//! back instead of starting them again.
//!
//! Input: `{"topics": ["..", ..], "task": "report-refiner", "batch_size": N}`
//! (`task` and `batch_size` optional). Without `batch_size` every child is
//! submitted inside one group, `refine`, and then awaited. With it the topics
//! go in batches of N, each inside its own group (`batch-1`, `batch-2`, ...):
//! the whole batch is submitted, awaited, then the next batch starts.
//!
//! Output: `{"reports": [..], "succeeded": n, "failed": m}`, one report per
//! topic in input order: `{"topic", "run_id", "ok": true, "output": <child's
//! JSON output>}` or `{"topic", "run_id", "ok": false, "error": {"kind",
//! "message"}}`. A failed child does not fail the driver unless every child
//! failed: then the driver fails with kind `all-children-failed`, not
//! retryable (each child already had its own retries). The run's report gets a
//! table of topic, child run and status.

use cairn_sdk::tasks::{self, Group, Pending};
use cairn_sdk::{Task, TaskError, report};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The driver's input.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// One child run per topic.
    pub topics: Vec<String>,
    /// The child task's manifest name.
    #[serde(default = "default_task")]
    pub task: String,
    /// Topics per batch; all topics in one group when absent.
    #[serde(default)]
    pub batch_size: Option<usize>,
}

fn default_task() -> String {
    "report-refiner".into()
}

/// The driver's output.
#[derive(Debug, Serialize)]
pub struct Output {
    /// One entry per topic, in input order.
    pub reports: Vec<ChildReport>,
    /// Children that returned an output.
    pub succeeded: usize,
    /// Children that failed once their retries and fallbacks were spent.
    pub failed: usize,
}

/// What became of one topic's child run.
#[derive(Debug, Serialize)]
pub struct ChildReport {
    /// The topic.
    pub topic: String,
    /// The child run's id.
    pub run_id: String,
    /// Whether the child succeeded.
    pub ok: bool,
    /// The child's output, when it succeeded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    /// The child's final error, when it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ChildError>,
}

/// A failed child's final error.
#[derive(Debug, Serialize)]
pub struct ChildError {
    /// The error's kind.
    pub kind: String,
    /// The error's message.
    pub message: String,
}

/// The driver.
pub struct BatchDriver;

impl Task for BatchDriver {
    type Input = Input;
    type Output = Output;

    fn run(input: Input) -> Result<Output, TaskError> {
        if input.topics.is_empty() {
            return Err(TaskError::invalid_input("`topics` is empty: give at least one topic"));
        }
        let batches: Vec<(String, &[String])> = match input.batch_size {
            None => vec![("refine".to_string(), &input.topics[..])],
            Some(0) => return Err(TaskError::invalid_input("`batch_size` must be at least 1")),
            Some(n) => input.topics.chunks(n).enumerate().map(|(i, b)| (format!("batch-{}", i + 1), b)).collect(),
        };
        let mut reports = Vec::with_capacity(input.topics.len());
        for (group, topics) in batches {
            reports.extend(run_batch(&input.task, &group, topics)?);
        }
        let succeeded = reports.iter().filter(|r| r.ok).count();
        let failed = reports.len() - succeeded;
        report::log(&status_table(&input.task, &reports));
        if succeeded == 0 {
            let first = reports.iter().find_map(|r| r.error.as_ref());
            let cause = first.map(|e| format!("; the first failed with {}: {}", e.kind, e.message)).unwrap_or_default();
            return Err(TaskError::new(
                "all-children-failed",
                format!("all {failed} child run(s) of `{}` failed{cause}", input.task),
            )
            .retryable(false));
        }
        Ok(Output { reports, succeeded, failed })
    }
}

cairn_sdk::export_task!(BatchDriver);

/// Submits one child per topic inside group `group`, then waits for all of them.
fn run_batch(task: &str, group: &str, topics: &[String]) -> Result<Vec<ChildReport>, TaskError> {
    let _group = Group::new(group);
    let children: Vec<Pending> =
        topics.iter().map(|topic| tasks::submit(task, &json!({ "topic": topic }))).collect::<Result<_, _>>()?;
    println!("{group}: submitted {} child run(s) of {task}", children.len());
    Ok(topics.iter().zip(&children).map(|(topic, child)| collect(topic, child)).collect())
}

/// Waits for one child and reports its outcome.
fn collect(topic: &str, child: &Pending) -> ChildReport {
    let (output, error) = match child.get() {
        Ok(text) => (Some(serde_json::from_str(&text).unwrap_or(Value::String(text))), None),
        Err(e) => {
            eprintln!("child {} ({topic}) failed: {}: {}", child.run_id(), e.kind, e.message);
            (None, Some(ChildError { kind: e.kind, message: e.message }))
        }
    };
    ChildReport { topic: topic.to_string(), run_id: child.run_id().to_string(), ok: error.is_none(), output, error }
}

/// An HTML table of topic, child run and status.
fn status_table(task: &str, reports: &[ChildReport]) -> String {
    let esc = report::escape;
    let mut html =
        format!("<h2>Child runs of {}</h2>\n<table>\n<tr><th>topic</th><th>run</th><th>status</th></tr>\n", esc(task));
    for r in reports {
        let status = match &r.error {
            None => "ok".to_string(),
            Some(e) => format!("failed: {}", e.kind),
        };
        html.push_str(&format!(
            "<tr><td>{}</td><td><code>{}</code></td><td>{}</td></tr>\n",
            esc(&r.topic),
            esc(&r.run_id),
            esc(&status)
        ));
    }
    html.push_str("</table>\n");
    html
}
