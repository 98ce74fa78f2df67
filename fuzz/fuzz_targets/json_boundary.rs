//! The JSON boundary of a run: the input text a run (or a child) is
//! submitted with, and the output text and failure a guest hands back.
//!
//! Input, as `runner::run` and `services::children` treat it: cut with
//! `model::cut_with_note` when larger than `resources.max_input` (the record
//! keeps 256 bytes), parsed as a `serde_json::Value`, then canonicalised
//! (`journal::canonical_input`) into replay and cache keys
//! (`runner::cache::cache_key`).
//!
//! Output, as `runner::attempt`'s private `check_output` treats it (its
//! steps, reproduced here: a size check, a `serde::de::IgnoredAny` parse and
//! an 80-character start for the message), as `views::run_json` shows it (a
//! `Value`, or the text as a string), and a guest's failure as
//! `model::Failure::from_guest` keeps it and `Failure::for_log` prints it.
//!
//! The first byte picks the size limits; the rest is the text (WIT strings
//! and the API's inputs are UTF-8).

#![no_main]

use cairn::journal::{canonical_input, sha256_hex};
use cairn::manifest::CachePolicy;
use cairn::model::{Failure, FailureKind, MAX_GUEST_MESSAGE, RunRecord, Tenant, cut_with_note};
use cairn::runner::cache::cache_key;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Some((&knob, rest)) = data.split_first() else { return };
    let Ok(text) = std::str::from_utf8(rest) else { return };
    let limit = [0, 1, 2, 3, 4, 80, 255, 256, 257, 1 << 20][usize::from(knob) % 10];
    input(text, limit);
    output(text, limit as u64);
    guest_failure(text, usize::from(knob) * 2, knob & 1 == 1);
});

fn input(text: &str, max_input: usize) {
    let mut run = RunRecord::new("r".into(), Tenant::default(), "t".into(), text.to_owned());
    if run.input.len() > max_input {
        // `Host::refuse_large_input`: the record keeps the input's start only.
        run.input = cut_with_note(std::mem::take(&mut run.input), 256);
        let kept = run.input.split(" [… ").next().unwrap_or_default();
        assert!(kept.len() <= 256 && text.starts_with(kept), "{:?}", run.input);
    }
    let parsed = serde_json::from_str::<Value>(text);
    let canonical = canonical_input(text);
    match &parsed {
        Ok(value) => {
            assert_eq!(canonical, value.to_string());
            assert!(serde_json::from_str::<Value>(&canonical).is_ok(), "a canonical input is JSON");
        }
        Err(_) => assert_eq!(canonical, text),
    }
    assert_eq!(sha256_hex(&canonical).len(), 64);
    let auto = cache_key(&CachePolicy::Auto, "task", "digest", None, text).expect("auto caches");
    let version = cache_key(&CachePolicy::Version("1".into()), "task", "digest", None, text).expect("a version caches");
    assert_ne!(auto, version);
    assert_ne!(Some(&auto), cache_key(&CachePolicy::Auto, "task", "digest", Some("shape"), text).as_ref());
    assert_eq!(cache_key(&CachePolicy::Disable, "task", "digest", None, text), None);
    if let Ok(value) = &parsed {
        // The input check (`model::interface`): the text as a schema of itself,
        // and as a document of a schema that refers to itself, never panic.
        let _ = cairn::model::interface::check(value, value);
        let looped = serde_json::json!({"$ref": "#", "items": {"$ref": "#"}, "properties": {"a": {"$ref": "#"}}});
        let _ = cairn::model::interface::check(&looped, value);
        // File references: found or refused, never a panic.
        let _ = cairn::model::files::refs_in(value);
    }
    // `views::run_json`'s reading of a run's input.
    let _shown = parsed.unwrap_or(Value::String(text.into()));
}

fn output(text: &str, max_output: u64) {
    // `runner::attempt::check_output`.
    let checked = if text.len() as u64 > max_output {
        Err(Failure::new(FailureKind::OutputTooLarge, format!("{} bytes", text.len()), false))
    } else if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(text) {
        let start: String = text.chars().take(80).collect();
        Err(Failure::new(FailureKind::InvalidOutput, format!("not JSON ({e}); it starts with {start:?}"), true))
    } else {
        Ok(text.to_owned())
    };
    if let Ok(output) = checked {
        // `views::run_json` shows an output as JSON, or as a string when it does not parse.
        let _shown = serde_json::from_str::<Value>(&output).unwrap_or(Value::String(output.clone()));
    }
}

/// `text` split into a kind and a message at about `split`; `long` repeats
/// the message past what the host keeps.
fn guest_failure(text: &str, split: usize, long: bool) {
    let at = (0..=split.min(text.len())).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
    let (kind, message) = text.split_at(at);
    let message = match message.len() {
        n if long && n > 0 => message.repeat(MAX_GUEST_MESSAGE / n + 1),
        _ => message.to_owned(),
    };
    let failure = Failure::from_guest(kind.to_owned(), message.clone(), true);
    let kept = failure.message.split(" [… ").next().unwrap_or_default();
    assert!(kept.len() <= MAX_GUEST_MESSAGE && message.starts_with(kept));
    let line = failure.for_log();
    assert!(!line.chars().any(char::is_control), "a log line with a control character: {line:?}");
    // A failure is stored as JSON and read back unchanged.
    let json = serde_json::to_string(&failure).expect("a failure encodes");
    assert_eq!(serde_json::from_str::<Failure>(&json).expect("a failure decodes"), failure);
}
