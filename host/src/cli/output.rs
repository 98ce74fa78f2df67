//! How runs are shown: for people (text) and for scripts (JSON).

use std::process::ExitCode;

use serde_json::Value;

use cairn::model::{Report, RunRecord, RunStatus};
use cairn::progress::ProgressSnapshot;
pub use cairn::views::duration_ms;

use super::backend::Run;

/// Prints a finished run as `cairn run` does (`json`: its view, pretty) and
/// returns the exit code its status calls for.
pub fn print_finished(run: &Run, children: &ProgressSnapshot, json: bool) -> anyhow::Result<ExitCode> {
    if json {
        println!("{}", serde_json::to_string_pretty(&run.view)?);
    } else {
        print_run_for_people(&run.record);
        print_children_summary(children);
    }
    Ok(exit_code(&run.record))
}

/// 0 for a run that succeeded, 1 for one that did not.
pub fn exit_code(run: &RunRecord) -> ExitCode {
    if run.status == RunStatus::Succeeded { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

/// Prints a finished run: its output on stdout, a summary line on stderr.
pub fn print_run_for_people(run: &RunRecord) {
    let live: u32 = run.attempts.iter().map(|a| a.llm_live).sum();
    let replayed: u32 = run.attempts.iter().map(|a| a.llm_replayed).sum();
    let took = duration_ms(run).map(|ms| format!("{:.2}s", ms as f64 / 1000.0)).unwrap_or_default();
    match run.status {
        RunStatus::Succeeded => {
            if let Some(output) = &run.output {
                print_output(output);
            }
            eprintln!(
                "run {} of {} succeeded in {took} after {} attempt(s); LLM calls: {live} live, {replayed} replayed; tokens: {} in, {} out",
                run.id,
                run.task,
                run.attempts.len(),
                run.usage.prompt_tokens,
                run.usage.completion_tokens
            );
        }
        _ => {
            for attempt in &run.attempts {
                if let Some(error) = &attempt.error {
                    eprintln!("attempt {} failed: {error}", attempt.number);
                }
            }
            let error = run.error.as_ref().map(|e| e.to_string()).unwrap_or_else(|| "unknown error".into());
            let ended = if run.status == RunStatus::Cancelled { "was cancelled" } else { "failed" };
            eprintln!("run {} of {} {ended} in {took}: {error}", run.id, run.task);
        }
    }
}

/// After a run with children: how they ended and what they spent.
pub fn print_children_summary(children: &ProgressSnapshot) {
    if children.children > 0 {
        eprintln!(
            "children: {} succeeded, {} failed; with the children, LLM calls: {} live; tokens: {}",
            children.succeeded, children.failed, children.llm_calls, children.tokens
        );
    }
}

/// An object's short fields print as `key: value` lines, then its long
/// strings (a report, a summary) as sections; anything else is pretty JSON.
fn print_output(output: &str) {
    let fields = match serde_json::from_str::<Value>(output) {
        Ok(Value::Object(fields)) => fields,
        Ok(other) => return println!("{}", serde_json::to_string_pretty(&other).unwrap_or_default()),
        Err(_) => return println!("{output}"),
    };
    let is_section = |value: &Value| matches!(value, Value::String(text) if text.contains('\n') || text.len() > 80);
    for (key, value) in fields.iter().filter(|(_, value)| !is_section(value)) {
        match value {
            Value::String(text) => println!("{key}: {text}"),
            other => println!("{key}: {}", serde_json::to_string(other).unwrap_or_default()),
        }
    }
    for (key, value) in fields.iter().filter(|(_, value)| is_section(value)) {
        if let Value::String(text) = value {
            println!("\n=== {key} ===\n\n{}", text.trim_end());
        }
    }
}

/// A self-contained HTML page of a run's report, one section per tab.
pub fn report_html(run_id: &str, report: &Report) -> String {
    let mut html = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>cairn run {run_id}</title>\n<style>body{{font-family:sans-serif;max-width:60rem;margin:2rem auto}}section{{border-top:1px solid #ccc;padding-top:1rem}}</style></head><body>\n<h1>Run {run_id}</h1>\n"
    );
    for (tab, content) in &report.tabs {
        html.push_str(&format!("<section id=\"tab-{tab}\"><h2>{tab}</h2>\n{content}\n</section>\n", tab = escape(tab)));
    }
    html.push_str("</body></html>\n");
    html
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}
