//! The dependency rules between the crate's modules, checked on the source.
//!
//! - `model` imports nothing of the crate, and no engine, store or I/O crate.
//! - `policy` imports only `model` of the crate, and no engine, store or I/O.
//! - `store` knows nothing of engines, WIT, LLMs, journals or policies.
//! - `imports` (the guest-facing adapters) never reach into `runner`.
//! - `config` sits at the bottom beside `model`.
//!
//! A rule names the module's files (its `mod.rs` or `NAME.rs` and
//! everything under `NAME/`), and the paths they may not mention. Paths are
//! found in `use` items and in expressions alike (`crate::store::X`,
//! `use crate::{store, llm}`), so a rule cannot be dodged by writing the
//! path in full.

use std::path::{Path, PathBuf};

/// A rule: files of `module` may not mention any of `forbidden`.
struct Rule {
    module: &'static str,
    forbidden: &'static [&'static str],
    why: &'static str,
}

/// Modules of the crate, as `crate::NAME`.
const CRATE_MODULES: &[&str] = &[
    "breakers", "builder", "capture", "cassette", "clock", "config", "engine", "gc", "imports", "journal", "llm",
    "manifest", "model", "policy", "pool", "progress", "runner", "sandbox", "services", "store",
];

/// I/O and engine crates a pure module may not use.
const IO: &[&str] = &["std::fs", "std::net", "std::process", "tokio", "reqwest", "redb", "wasmtime", "cap_std"];

const RULES: &[Rule] = &[
    Rule { module: "model", forbidden: &["crate::*"], why: "the model sits at the bottom and imports nothing" },
    Rule { module: "model", forbidden: IO, why: "the model is data, with no I/O" },
    Rule { module: "config", forbidden: &["crate::*"], why: "the config grammar sits at the bottom" },
    Rule {
        module: "policy",
        forbidden: &[
            "crate::store",
            "crate::engine",
            "crate::runner",
            "crate::imports",
            "crate::journal",
            "crate::llm",
            "crate::clock",
            "crate::breakers",
        ],
        why: "policies are pure maths and state machines",
    },
    Rule { module: "policy", forbidden: IO, why: "policies do no I/O" },
    Rule {
        module: "store",
        forbidden: &[
            "crate::llm",
            "crate::engine",
            "crate::imports",
            "crate::policy",
            "crate::journal",
            "crate::runner",
            "crate::services",
            "crate::manifest",
            "wasmtime",
        ],
        why: "the store knows nothing of engines, WIT, LLMs or policies",
    },
    Rule { module: "imports", forbidden: &["crate::runner"], why: "adapters go through services, never the runner" },
    Rule {
        module: "services",
        forbidden: &["crate::runner", "crate::imports"],
        why: "services sit below the adapters",
    },
];

/// The `.rs` files of `module` under `src`.
fn files_of(src: &Path, module: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let single = src.join(format!("{module}.rs"));
    if single.is_file() {
        files.push(single);
    }
    let mut dirs = vec![src.join(module)];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries {
            let path = entry.expect("a readable source entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The source without comments and string literals, so prose that names a
/// module is not taken for a use of it.
fn code_of(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut last = ' ';
                for c in chars.by_ref() {
                    if last == '*' && c == '/' {
                        break;
                    }
                    last = c;
                }
            }
            '"' => {
                let mut escaped = false;
                for c in chars.by_ref() {
                    if !escaped && c == '"' {
                        break;
                    }
                    escaped = !escaped && c == '\\';
                }
                out.push_str("\"\"");
            }
            _ => out.push(c),
        }
    }
    out
}

/// Every path the code mentions, written out: `use crate::{a, b::C}` gives
/// `crate::a` and `crate::b::C`.
fn paths_in(code: &str) -> Vec<String> {
    let mut paths = Vec::new();
    let bytes: Vec<char> = code.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        let starts_word = i == 0 || !(bytes[i - 1].is_alphanumeric() || bytes[i - 1] == '_' || bytes[i - 1] == ':');
        if starts_word && (bytes[i].is_alphabetic() || bytes[i] == '_') {
            let mut j = i;
            let mut path = String::new();
            while j < bytes.len() && (bytes[j].is_alphanumeric() || bytes[j] == '_' || bytes[j] == ':') {
                path.push(bytes[j]);
                j += 1;
            }
            if path.ends_with("::") && j < bytes.len() && bytes[j] == '{' {
                // A group: expand each top-level member.
                let mut depth = 0;
                let mut member = String::new();
                let mut k = j + 1;
                while k < bytes.len() {
                    match bytes[k] {
                        '{' => depth += 1,
                        '}' if depth == 0 => break,
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            paths.push(format!("{path}{}", member.trim()));
                            member.clear();
                            k += 1;
                            continue;
                        }
                        _ => {}
                    }
                    member.push(bytes[k]);
                    k += 1;
                }
                if !member.trim().is_empty() {
                    paths.push(format!("{path}{}", member.trim()));
                }
            } else if path.contains("::") {
                paths.push(path);
            }
            i = j.max(i + 1);
        } else {
            i += 1;
        }
    }
    paths
}

/// Whether `path` falls under `forbidden` (`crate::*` is any crate module).
fn forbids(forbidden: &str, path: &str, own: &str) -> bool {
    if forbidden == "crate::*" {
        return CRATE_MODULES
            .iter()
            .filter(|m| **m != own)
            .any(|m| path == format!("crate::{m}") || path.starts_with(&format!("crate::{m}::")));
    }
    path == forbidden || path.starts_with(&format!("{forbidden}::"))
}

/// The violations in `text`, a file of `module`.
fn violations_in(module: &str, text: &str) -> Vec<String> {
    let code = code_of(text);
    let paths = paths_in(&code);
    let mut found = Vec::new();
    for rule in RULES.iter().filter(|r| r.module == module) {
        for path in &paths {
            if let Some(forbidden) = rule.forbidden.iter().find(|f| forbids(f, path, module)) {
                found.push(format!("uses `{path}` (forbidden: `{forbidden}`: {})", rule.why));
            }
        }
        // `super::super::…` leaves the module: as good as `crate::…`.
        if code.contains("super::super") && rule.forbidden.contains(&"crate::*") {
            found.push(format!("leaves the module with `super::super` ({})", rule.why));
        }
    }
    found
}

#[test]
fn the_dependency_rules_hold() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut broken = Vec::new();
    for module in RULES.iter().map(|r| r.module).collect::<std::collections::BTreeSet<_>>() {
        let files = files_of(&src, module);
        assert!(!files.is_empty(), "module {module} has no files under {}", src.display());
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for violation in violations_in(module, &text) {
                broken.push(format!("{}: {violation}", file.strip_prefix(&src).unwrap_or(&file).display()));
            }
        }
    }
    assert!(broken.is_empty(), "the layering rules are broken:\n{}", broken.join("\n"));
}

#[test]
fn the_checker_sees_every_way_of_writing_a_path() {
    assert_eq!(violations_in("model", "use crate::store::Store;").len(), 1);
    assert_eq!(violations_in("model", "use crate::{journal, llm::Usage};").len(), 2);
    assert_eq!(violations_in("model", "fn f() { crate::runner::go(); }").len(), 1);
    assert_eq!(violations_in("model", "use super::super::engine;").len(), 1);
    assert_eq!(violations_in("model", "fn f() { std::fs::read(\"x\"); }").len(), 1);
    assert_eq!(violations_in("model", "use crate::model::Usage;").len(), 0, "its own paths are fine");
    assert_eq!(violations_in("policy", "use crate::model::Failure;").len(), 0);
    assert_eq!(violations_in("policy", "use crate::store::RunStore;").len(), 1);
    assert_eq!(violations_in("policy", "use tokio::fs;").len(), 1);
    assert_eq!(violations_in("store", "use wasmtime::Engine;").len(), 1);
    assert_eq!(violations_in("store", "use crate::policy::breaker::Breaker;").len(), 1);
    assert_eq!(violations_in("imports", "use crate::runner::host_failure;").len(), 1);
    assert_eq!(violations_in("imports", "use crate::services::llm::LlmCalls;").len(), 0);
    // Prose is not code.
    assert_eq!(
        violations_in("model", "// see crate::store::Store\n/// crate::runner\nconst A: &str = \"crate::llm\";").len(),
        0
    );
}
