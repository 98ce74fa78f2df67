//! Live progress of `cairn run` for a run with children: on a terminal, one
//! line redrawn in place; otherwise a plain line whenever the counts change,
//! at most once a second. Nothing is shown until the first child starts.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cairn::progress::{Progress, ProgressSnapshot};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// A line redrawn in place (stderr is a terminal).
    Live,
    /// Plain lines, for logs and pipes.
    Lines,
    /// Nothing (`--quiet` or `--json`).
    Off,
}

impl Style {
    /// The style for stderr as it is: live on a terminal, lines otherwise.
    pub fn detect(quiet: bool) -> Style {
        match (quiet, std::io::stderr().is_terminal()) {
            (true, _) => Style::Off,
            (false, true) => Style::Live,
            (false, false) => Style::Lines,
        }
    }
}

/// One progress line.
pub fn describe(s: &ProgressSnapshot) -> String {
    let tokens = if s.tokens >= 10_000 { format!("{:.1}k", s.tokens as f64 / 1000.0) } else { s.tokens.to_string() };
    format!(
        "children {}/{} done · {} running · {} failed · {} retrying · LLM {} calls · {tokens} tokens",
        s.done(),
        s.children,
        s.running,
        s.failed,
        s.retrying,
        s.llm_calls
    )
}

/// Shows progress on a thread of its own until [`Reporter::finish`].
pub struct Reporter {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Reporter {
    /// Starts showing `progress` in `style`.
    pub fn start(progress: Arc<Progress>, style: Style) -> Reporter {
        let stop = Arc::new(AtomicBool::new(false));
        if style == Style::Off {
            return Reporter { stop, thread: None };
        }
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("cairn-progress".into())
            .spawn(move || show(&progress, style, &stopping))
            .ok();
        Reporter { stop, thread }
    }

    /// Stops, leaving a final line if children ran.
    pub fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn show(progress: &Progress, style: Style, stop: &AtomicBool) {
    let tick = if style == Style::Live { Duration::from_millis(100) } else { Duration::from_millis(250) };
    let mut shown = ProgressSnapshot::default();
    let mut last_line = Instant::now() - Duration::from_secs(1);
    let mut stderr = std::io::stderr();
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        let now = progress.snapshot();
        if now.children > 0 && now != shown {
            match style {
                Style::Live => {
                    let _ = write!(stderr, "\r\x1b[2K{}", describe(&now));
                    let _ = stderr.flush();
                    shown = now;
                }
                Style::Lines if stopping || last_line.elapsed() >= Duration::from_secs(1) => {
                    let _ = writeln!(stderr, "{}", describe(&now));
                    shown = now;
                    last_line = Instant::now();
                }
                _ => {}
            }
        }
        if stopping {
            if style == Style::Live && shown.children > 0 {
                let _ = writeln!(stderr);
            }
            return;
        }
        std::thread::sleep(tick);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_says_what_the_children_are_doing() {
        let snapshot = ProgressSnapshot {
            children: 10,
            running: 4,
            peak_running: 4,
            retrying: 1,
            succeeded: 5,
            failed: 1,
            llm_calls: 36,
            tokens: 12_345,
        };
        assert_eq!(
            describe(&snapshot),
            "children 6/10 done · 4 running · 1 failed · 1 retrying · LLM 36 calls · 12.3k tokens"
        );
    }
}
