//! Secret values kept out of everything a run leaves behind. While a run is
//! driven, the values it could read (its environment's secrets, its
//! providers' API keys) are registered under its id; every text the run
//! stores (journal records, logs, reports, errors, outputs) and every event
//! it sends passes through [`Scrubbers`] first, which writes each value as
//! `[secret:NAME]`, including when the guest printed it itself.
//!
//! A value is caught as written, JSON-escaped (as it stands inside a stored
//! JSON string) and Debug-escaped, and at the end of a text cut short (a
//! summary, a capped log) by its first [`MIN_SCRUBBED`] bytes or more; a
//! guest that encodes a value otherwise (base64, say) is not caught. Values
//! shorter than [`MIN_SCRUBBED`] bytes are left, as replacing them would
//! garble everything else.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use zeroize::Zeroizing;

use crate::model::{AttemptLog, Failure, Fence, JournalEntry, ReplayKey, Report};
use crate::store::{JournalStore, OutputStore, StoreError};

/// Values shorter than this are not scrubbed.
pub const MIN_SCRUBBED: usize = 4;

/// The secret values of one run, each with its name.
#[derive(Default)]
pub struct Scrubber {
    /// (value, `[secret:NAME]`), longest value first, so that a value that
    /// contains another is replaced whole.
    values: Vec<(Zeroizing<String>, String)>,
}

impl Scrubber {
    /// A scrubber of `secrets` (name, value).
    pub fn new(secrets: impl IntoIterator<Item = (String, Zeroizing<String>)>) -> Scrubber {
        let mut values: Vec<(Zeroizing<String>, String)> = Vec::new();
        for (name, value) in secrets.into_iter().filter(|(_, value)| value.len() >= MIN_SCRUBBED) {
            let shown = format!("[secret:{name}]");
            let json = Zeroizing::new(serde_json::to_string(value.as_str()).unwrap_or_default());
            let escaped = Zeroizing::new(json.get(1..json.len().saturating_sub(1)).unwrap_or_default().to_owned());
            let debug = Zeroizing::new(value.escape_debug().to_string());
            for form in [escaped, debug] {
                if *form != *value && !form.is_empty() {
                    values.push((form, shown.clone()));
                }
            }
            values.push((value, shown));
        }
        values.sort_by_key(|(value, _)| std::cmp::Reverse(value.len()));
        values.dedup_by(|a, b| a.0 == b.0);
        Scrubber { values }
    }

    /// Whether it has nothing to scrub.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// `text` with every value written as its name, and a value's start
    /// that ends a text cut short written as its name too.
    pub fn scrub<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut text = Cow::Borrowed(text);
        for (value, name) in &self.values {
            if text.contains(value.as_str()) {
                text = Cow::Owned(text.replace(value.as_str(), name));
            }
        }
        for (value, name) in &self.values {
            if let Some(cut) = cut_tail(&text, value) {
                let mut kept = text[..cut].to_owned();
                kept.push_str(name);
                text = Cow::Owned(kept);
            }
        }
        text
    }

    /// A captured log, scrubbed: a log cut at its cap ends with the host's
    /// note, and the text before the note is what was cut.
    pub fn scrub_log(&self, log: &str) -> String {
        match log.rfind("\n[cairn: ").filter(|_| log.ends_with("]\n")) {
            Some(note) => format!("{}{}", self.scrub(&log[..note]), &log[note..]),
            None => self.scrub(log).into_owned(),
        }
    }

    /// Scrubs `text` in place.
    pub fn scrub_in_place(&self, text: &mut String) {
        if let Cow::Owned(clean) = self.scrub(text) {
            *text = clean;
        }
    }

    /// Scrubs a failure's message.
    pub fn scrub_failure(&self, failure: &mut Failure) {
        self.scrub_in_place(&mut failure.message);
    }
}

/// Where `text` ends with the first [`MIN_SCRUBBED`] or more bytes of
/// `value` (but not all of it): the byte offset that start begins at.
fn cut_tail(text: &str, value: &str) -> Option<usize> {
    let longest = value.len().saturating_sub(1).min(text.len());
    (MIN_SCRUBBED..=longest).rev().find_map(|n| {
        let start = text.len() - n;
        (text.is_char_boundary(start) && value.is_char_boundary(n) && text[start..] == value[..n]).then_some(start)
    })
}

/// The scrubbers of the runs being driven, by run id.
#[derive(Default)]
pub struct Scrubbers(Mutex<HashMap<String, Arc<Scrubber>>>);

impl Scrubbers {
    /// Registers `scrubber` for `run_id` until the returned guard drops.
    pub fn register(self: &Arc<Self>, run_id: &str, scrubber: Scrubber) -> Registered {
        let scrubber = Arc::new(scrubber);
        if !scrubber.is_empty() {
            self.0.lock().unwrap_or_else(|e| e.into_inner()).insert(run_id.to_owned(), scrubber.clone());
        }
        Registered { scrubbers: self.clone(), run_id: run_id.to_owned(), scrubber }
    }

    /// The scrubber of `run_id`, if it has values.
    pub fn of(&self, run_id: &str) -> Option<Arc<Scrubber>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).get(run_id).cloned()
    }

    /// An attempt's outcome (its output, or its failure's message) of
    /// `run_id`, scrubbed.
    pub fn scrub_outcome(&self, run_id: &str, outcome: Result<String, Failure>) -> Result<String, Failure> {
        let Some(scrubber) = self.of(run_id) else { return outcome };
        match outcome {
            Ok(mut output) => {
                scrubber.scrub_in_place(&mut output);
                Ok(output)
            }
            Err(mut failure) => {
                scrubber.scrub_failure(&mut failure);
                Err(failure)
            }
        }
    }

    fn entry(&self, entry: &JournalEntry) -> Option<JournalEntry> {
        let scrubber = self.of(&entry.key.run_id)?;
        let mut clean = entry.clone();
        scrubber.scrub_in_place(&mut clean.output);
        scrubber.scrub_in_place(&mut clean.summary);
        Some(clean)
    }
}

/// A run's registration; dropping it forgets the run's values.
pub struct Registered {
    scrubbers: Arc<Scrubbers>,
    run_id: String,
    scrubber: Arc<Scrubber>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut registered = self.scrubbers.0.lock().unwrap_or_else(|e| e.into_inner());
        // Only its own: a later drive of the same run may have registered since.
        if registered.get(&self.run_id).is_some_and(|s| Arc::ptr_eq(s, &self.scrubber)) {
            registered.remove(&self.run_id);
        }
    }
}

/// A journal store whose records are scrubbed before they are stored (the
/// caller keeps its own copy: a guest gets the answer as it came).
pub struct ScrubbedJournal {
    inner: Arc<dyn JournalStore>,
    scrubbers: Arc<Scrubbers>,
}

impl ScrubbedJournal {
    /// `inner`, behind `scrubbers`.
    pub fn new(inner: Arc<dyn JournalStore>, scrubbers: Arc<Scrubbers>) -> Self {
        ScrubbedJournal { inner, scrubbers }
    }
}

#[async_trait::async_trait]
impl JournalStore for ScrubbedJournal {
    async fn journal_put(&self, entry: &JournalEntry, fence: Option<&Fence>) -> Result<(), StoreError> {
        match self.scrubbers.entry(entry) {
            Some(clean) => self.inner.journal_put(&clean, fence).await,
            None => self.inner.journal_put(entry, fence).await,
        }
    }

    async fn journal_put_all(&self, entries: &[JournalEntry]) -> Result<(), StoreError> {
        let clean: Vec<JournalEntry> =
            entries.iter().map(|e| self.scrubbers.entry(e).unwrap_or_else(|| e.clone())).collect();
        self.inner.journal_put_all(&clean).await
    }

    fn journal_get(&self, key: &ReplayKey) -> Result<Option<JournalEntry>, StoreError> {
        self.inner.journal_get(key)
    }

    fn journal_of(&self, run_id: &str) -> Result<Vec<JournalEntry>, StoreError> {
        self.inner.journal_of(run_id)
    }
}

/// An output store whose logs and reports are scrubbed before they are stored.
pub struct ScrubbedOutputs {
    inner: Arc<dyn OutputStore>,
    scrubbers: Arc<Scrubbers>,
}

impl ScrubbedOutputs {
    /// `inner`, behind `scrubbers`.
    pub fn new(inner: Arc<dyn OutputStore>, scrubbers: Arc<Scrubbers>) -> Self {
        ScrubbedOutputs { inner, scrubbers }
    }
}

#[async_trait::async_trait]
impl OutputStore for ScrubbedOutputs {
    async fn put_log(&self, run_id: &str, attempt: u32, log: &AttemptLog) -> Result<(), StoreError> {
        let Some(scrubber) = self.scrubbers.of(run_id) else { return self.inner.put_log(run_id, attempt, log).await };
        let clean = AttemptLog { stdout: scrubber.scrub_log(&log.stdout), stderr: scrubber.scrub_log(&log.stderr) };
        self.inner.put_log(run_id, attempt, &clean).await
    }

    fn logs_of(&self, run_id: &str) -> Result<Vec<(u32, AttemptLog)>, StoreError> {
        self.inner.logs_of(run_id)
    }

    async fn put_report(&self, run_id: &str, report: &Report) -> Result<(), StoreError> {
        let Some(scrubber) = self.scrubbers.of(run_id) else { return self.inner.put_report(run_id, report).await };
        let clean = Report {
            tabs: report
                .tabs
                .iter()
                .map(|(tab, html)| (scrubber.scrub(tab).into_owned(), scrubber.scrub(html).into_owned()))
                .collect(),
        };
        self.inner.put_report(run_id, &clean).await
    }

    fn get_report(&self, run_id: &str) -> Result<Option<Report>, StoreError> {
        self.inner.get_report(run_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::FailureKind;

    fn secret(name: &str, value: &str) -> (String, Zeroizing<String>) {
        (name.to_owned(), Zeroizing::new(value.to_owned()))
    }

    #[test]
    fn values_are_written_as_their_names_longest_first() {
        let scrubber = Scrubber::new([secret("short", "abcd"), secret("long", "abcdef"), secret("tiny", "ab")]);
        assert_eq!(scrubber.scrub("x abcdef y abcd z ab"), "x [secret:long] y [secret:short] z ab");
        assert!(matches!(scrubber.scrub("nothing here"), Cow::Borrowed(_)));
        assert!(Scrubber::new([secret("tiny", "ab")]).is_empty());
    }

    #[test]
    fn escaped_and_cut_values_are_caught_too() {
        let scrubber = Scrubber::new([secret("pem", "line one\nline \"two\"")]);
        let stored = serde_json::to_string("key: line one\nline \"two\"").unwrap();
        assert_eq!(scrubber.scrub(&stored), "\"key: [secret:pem]\"");
        assert_eq!(scrubber.scrub(&format!("{:?}", "line one\nline \"two\"")), "\"[secret:pem]\"");
        // A summary cut inside the value.
        assert_eq!(scrubber.scrub("model: Write about line o"), "model: Write about [secret:pem]");
        assert_eq!(scrubber.scrub("ends with lin"), "ends with lin", "under four bytes is not a value's start");
        let capped = "printed line one\nli\n[cairn: 9 more bytes dropped; the log keeps 20 bytes]\n";
        assert!(scrubber.scrub_log(capped).starts_with("printed [secret:pem]"), "{}", scrubber.scrub_log(capped));
    }

    #[test]
    fn a_registration_lasts_as_long_as_its_guard() {
        let scrubbers = Arc::new(Scrubbers::default());
        {
            let _held = scrubbers.register("run-1", Scrubber::new([secret("k", "s3cr3t")]));
            assert_eq!(scrubbers.scrub_outcome("run-1", Ok("is s3cr3t".into())), Ok("is [secret:k]".to_owned()));
            assert_eq!(scrubbers.scrub_outcome("run-2", Ok("is s3cr3t".into())), Ok("is s3cr3t".to_owned()));
            let failed = scrubbers.scrub_outcome("run-1", Err(Failure::new(FailureKind::Trap, "is s3cr3t", false)));
            assert_eq!(failed.unwrap_err().message, "is [secret:k]");
        }
        assert_eq!(scrubbers.scrub_outcome("run-1", Ok("is s3cr3t".into())), Ok("is s3cr3t".to_owned()));
    }
}
