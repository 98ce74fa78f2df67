//! How runs are shown: for people (text) and for scripts (JSON).

use std::process::ExitCode;

use serde_json::Value;

use cairn::model::{Report, RunRecord, RunStatus};
use cairn::progress::ProgressSnapshot;
pub use cairn::views::duration_ms;

use super::backend::Run;
use super::safe;

/// Prints a finished run as `cairn run` does (`json`: its view, pretty) and
/// returns the exit code its status calls for.
pub fn print_finished(run: &Run, children: &ProgressSnapshot, json: bool) -> anyhow::Result<ExitCode> {
    if json {
        super::safe::print_json(&run.view)?;
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
            let last = run.attempts.len().saturating_sub(1);
            for (i, attempt) in run.attempts.iter().enumerate() {
                // The last attempt's error is the run's, printed once below.
                if let Some(error) = &attempt.error
                    && (i != last || run.error.as_ref() != Some(error))
                {
                    eprintln!("attempt {} failed: {}", attempt.number, safe::line(&error.to_string()));
                }
            }
            let error = run.error.as_ref().map(|e| e.to_string()).unwrap_or_else(|| "unknown error".into());
            let ended = if run.status == RunStatus::Cancelled { "was cancelled" } else { "failed" };
            eprintln!("run {} of {} {ended} in {took}: {}", run.id, run.task, safe::line(&error));
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
        // A JSON value always serialises.
        Ok(other) => return drop(safe::print_json(&other)),
        Err(_) => return println!("{}", safe::text(output)),
    };
    let is_section = |value: &Value| matches!(value, Value::String(text) if text.contains('\n') || text.len() > 80);
    for (key, value) in fields.iter().filter(|(_, value)| !is_section(value)) {
        match value {
            Value::String(text) => println!("{}: {}", safe::line(key), safe::line(text)),
            other => println!("{}: {}", safe::line(key), safe::line(&serde_json::to_string(other).unwrap_or_default())),
        }
    }
    for (key, value) in fields.iter().filter(|(_, value)| is_section(value)) {
        if let Value::String(text) = value {
            println!("\n=== {} ===\n\n{}", safe::line(key), safe::text(text.trim_end()));
        }
    }
}

/// What a report page may load and run: nothing but its own inline styles
/// and inline images (no script, no request anywhere, so a report cannot
/// phone home). A tab's frame inherits it.
const REPORT_CSP: &str =
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'";

/// A self-contained HTML page of a run's report, one section per tab. Each
/// tab is HTML its task wrote, so it is shown in a sandboxed frame (no
/// script, no access to the page) under a Content-Security-Policy that
/// allows no script and no request.
pub fn report_html(run_id: &str, report: &Report) -> String {
    let run_id = escape(run_id);
    let mut html = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\">\n<meta http-equiv=\"Content-Security-Policy\" content=\"{REPORT_CSP}\">\n<title>cairn run {run_id}</title>\n<style>body{{font-family:sans-serif;max-width:60rem;margin:2rem auto}}section{{border-top:1px solid #ccc;padding-top:1rem}}iframe{{width:100%;height:70vh;border:1px solid #ddd}}</style></head><body>\n<h1>Run {run_id}</h1>\n"
    );
    for (tab, content) in &report.tabs {
        let page = format!(
            "<!doctype html><meta charset=\"utf-8\"><meta http-equiv=\"Content-Security-Policy\" content=\"{REPORT_CSP}\">{content}"
        );
        html.push_str(&format!(
            "<section id=\"tab-{tab}\"><h2>{tab}</h2>\n<iframe sandbox=\"\" referrerpolicy=\"no-referrer\" title=\"report tab {tab}\" srcdoc=\"{page}\"></iframe>\n</section>\n",
            tab = escape(tab),
            page = escape(&page)
        ));
    }
    html.push_str("</body></html>\n");
    html
}

/// `text` as HTML text or an attribute value: markup characters as entities,
/// and the characters a terminal would act on (the page may be printed) as
/// numeric references (a browser shows most as the same text; C1 controls
/// it shows as their windows-1252 look-alikes).
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\n' | '\t' => out.push(c),
            c if safe::is_unsafe(c) => out.push_str(&format!("&#x{:x};", c as u32)),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_is_framed_sandboxed_and_allowed_no_script() {
        let mut report = Report::default();
        let hostile =
            "<script>alert(1)</script><img src=x onerror=\"fetch('//evil')\">\"'></iframe><script>x()</script>";
        report.tabs.insert("main\"><script>".into(), hostile.into());
        let page = report_html("run-<1>", &report);
        assert!(page.contains("<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none';"));
        assert!(page.contains("<iframe sandbox=\"\""));
        // Nothing the task wrote is markup of the page itself: all of it sits
        // escaped in the frame's srcdoc.
        assert_eq!(page.matches("<script").count(), 0, "{page}");
        assert_eq!(page.matches("<iframe").count(), 1, "{page}");
        assert_eq!(page.matches("</iframe>").count(), 1, "{page}");
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(page.contains("Run run-&lt;1&gt;"));
        // Printed to a terminal, the page moves no cursor: controls are character references.
        report.tabs.insert("t".into(), "\u{1b}[2J\u{202e}".into());
        let page = report_html("r", &report);
        assert!(!page.chars().any(|c| safe::is_unsafe(c) && c != '\n'), "{page:?}");
        assert!(page.contains("&#x1b;[2J"), "a character reference, which the frame shows as the same text");
    }
}
