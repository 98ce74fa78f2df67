//! The dependency rules between the crate's modules, checked on the source.
//!
//! Each rule names a module (its `NAME.rs` or `NAME/` and everything under
//! it), the modules of this crate it may use besides itself, and outside
//! crates or std paths it may not use. Every path in a file counts: `use`
//! trees, types, expressions, `super::…` and `self::…` (resolved against the
//! file's module and any inline `mod` it sits in), so a rule cannot be
//! dodged by writing a path out in full. Files are parsed with `syn`, so
//! comments and strings never count.

use std::path::{Path, PathBuf};

use syn::visit::Visit;

/// What a module may use.
struct Rule {
    module: &'static str,
    /// Modules of this crate it may use besides itself; `None`: any but `denied`.
    allowed: Option<&'static [&'static str]>,
    /// Modules of this crate it may not use (when `allowed` is `None`).
    denied: &'static [&'static str],
    /// Outside paths it may not use (crates, std modules, std items), in lists.
    external: &'static [&'static [&'static str]],
    why: &'static str,
}

/// I/O, threads, the environment, randomness and the engine: what pure code never touches.
const IMPURE: &[&str] = &[
    "std::fs",
    "std::net",
    "std::process",
    "std::thread",
    "std::env",
    "tokio",
    "reqwest",
    "redb",
    "wasmtime",
    "wasmtime_wasi",
    "cap_std",
    "uuid",
    "getrandom",
];

const RULES: &[Rule] = &[
    Rule {
        module: "model",
        allowed: Some(&[]),
        denied: &[],
        external: &[IMPURE],
        why: "the model sits at the bottom, imports nothing of the crate, and does no I/O",
    },
    Rule {
        module: "config",
        allowed: Some(&[]),
        denied: &[],
        external: &[IMPURE],
        why: "the config grammar sits at the bottom and does no I/O",
    },
    Rule {
        module: "policy",
        allowed: Some(&["model"]),
        denied: &[],
        external: &[IMPURE, &["std::time::SystemTime", "std::time::Instant"]],
        why: "policies are pure maths and state machines: time and chance come in as arguments",
    },
    Rule {
        module: "store",
        allowed: Some(&["model"]),
        denied: &[],
        external: &[&["wasmtime", "wasmtime_wasi", "reqwest"]],
        why: "the store knows nothing of engines, WIT, LLMs, journals or policies",
    },
    Rule {
        module: "journal",
        allowed: Some(&["model", "store"]),
        denied: &[],
        external: &[&["wasmtime", "wasmtime_wasi"]],
        why: "the journal is replay keys over the store",
    },
    Rule {
        module: "access",
        allowed: Some(&["model", "store", "config"]),
        denied: &[],
        external: &[&["wasmtime", "wasmtime_wasi", "reqwest", "axum"]],
        why: "tokens and sealing are rules over the store, for the CLI and the server alike",
    },
    Rule {
        module: "events",
        allowed: Some(&["model", "store"]),
        denied: &[],
        external: &[&["wasmtime", "wasmtime_wasi", "reqwest"]],
        why: "events are a stream of model facts; they know nothing of engines or runners",
    },
    Rule {
        module: "services",
        allowed: Some(&["model", "store", "access", "journal", "llm", "progress", "sandbox", "blobs"]),
        denied: &[],
        external: &[],
        why: "services sit below the adapters and the runner",
    },
    Rule {
        module: "imports",
        allowed: Some(&[
            "model", "store", "journal", "llm", "services", "manifest", "progress", "events", "access", "sandbox",
            "blobs",
        ]),
        denied: &[],
        external: &[],
        why: "adapters are thin over services and never reach into the runner",
    },
    Rule {
        module: "blobs",
        allowed: Some(&["model"]),
        denied: &[],
        external: &[&["wasmtime", "wasmtime_wasi", "reqwest", "redb"]],
        why: "the blob store keeps files by digest; it knows nothing of runs, engines or WIT",
    },
    Rule {
        module: "authoring",
        allowed: Some(&["manifest", "config"]),
        denied: &[],
        external: &[&["wasmtime", "wasmtime_wasi", "redb", "reqwest"]],
        why: "authoring writes an author's files and finds the kit; it runs and stores nothing",
    },
    Rule {
        module: "manifest",
        allowed: None,
        denied: &["runner", "imports", "services", "engine", "store", "journal", "pool", "breakers"],
        external: &[&["wasmtime", "wasmtime_wasi", "redb"]],
        why: "the manifest is configuration: it says what to run, it runs nothing",
    },
];

/// The module path of a file under `src`: `imports/llm.rs` is `imports::llm`,
/// `store/redb/mod.rs` is `store::redb`.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(src).expect("a file under src");
    let mut parts: Vec<String> = relative.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let last = parts.pop().unwrap_or_default();
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" {
        parts.push(stem.to_owned());
    }
    parts
}

/// Collects every path of a file as `crate::…` (for this crate) or as written.
struct Paths {
    /// The module the visitor is in: the file's, then inline `mod`s.
    module: Vec<String>,
    found: Vec<String>,
}

impl Paths {
    /// `segments` written in `self.module`, made absolute where it is relative to this crate.
    fn push(&mut self, segments: Vec<String>) {
        let Some(first) = segments.first() else { return };
        let absolute = match first.as_str() {
            "crate" => segments,
            "self" => {
                ["crate".to_owned()].into_iter().chain(self.module.clone()).chain(segments[1..].to_vec()).collect()
            }
            "super" => {
                let ups = segments.iter().take_while(|s| *s == "super").count();
                let keep = self.module.len().saturating_sub(ups);
                ["crate".to_owned()]
                    .into_iter()
                    .chain(self.module[..keep].to_vec())
                    .chain(segments[ups..].to_vec())
                    .collect()
            }
            _ => segments,
        };
        self.found.push(absolute.join("::"));
    }

    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree);
                prefix.pop();
            }
            syn::UseTree::Name(n) => self.push(prefix.iter().cloned().chain([n.ident.to_string()]).collect()),
            syn::UseTree::Rename(r) => self.push(prefix.iter().cloned().chain([r.ident.to_string()]).collect()),
            syn::UseTree::Glob(_) => self.push(prefix.iter().cloned().chain(["*".to_owned()]).collect()),
            syn::UseTree::Group(g) => {
                for tree in &g.items {
                    self.use_tree(prefix, tree);
                }
            }
        }
    }
}

impl<'ast> Visit<'ast> for Paths {
    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        self.use_tree(&mut Vec::new(), &item.tree);
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        self.push(path.segments.iter().map(|s| s.ident.to_string()).collect());
        syn::visit::visit_path(self, path);
    }

    fn visit_item_mod(&mut self, item: &'ast syn::ItemMod) {
        self.module.push(item.ident.to_string());
        syn::visit::visit_item_mod(self, item);
        self.module.pop();
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        // A macro's own path counts; so do paths in its tokens, read as best we can.
        self.visit_path(&mac.path);
        let tokens = mac.tokens.to_string().replace(' ', "");
        for word in tokens.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')) {
            if word.contains("::") && !word.starts_with(':') {
                self.push(word.split("::").filter(|s| !s.is_empty()).map(str::to_owned).collect());
            }
        }
    }
}

/// Whether `path` is `prefix` or under it.
fn under(path: &str, prefix: &str) -> bool {
    path == prefix || path.starts_with(&format!("{prefix}::"))
}

/// The violations of `rule` by the source `text` of a file whose module is `module`.
fn violations_in(rule: &Rule, module: &[String], text: &str) -> Vec<String> {
    let file = match syn::parse_file(text) {
        Ok(file) => file,
        Err(e) => return vec![format!("cannot parse: {e}")],
    };
    let mut paths = Paths { module: module.to_vec(), found: Vec::new() };
    paths.visit_file(&file);
    let mut broken = Vec::new();
    for path in paths.found {
        if let Some(rest) = path.strip_prefix("crate::") {
            let target = rest.split("::").next().unwrap_or_default();
            let own = target == rule.module;
            let allowed = match rule.allowed {
                Some(allowed) => own || allowed.contains(&target),
                None => !rule.denied.contains(&target),
            };
            if !allowed {
                broken.push(format!("uses `{path}`: {}", rule.why));
            }
        } else if let Some(forbidden) = rule.external.iter().flat_map(|list| list.iter()).find(|f| under(&path, f)) {
            broken.push(format!("uses `{path}` (`{forbidden}`): {}", rule.why));
        }
    }
    broken.sort();
    broken.dedup();
    broken
}

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

#[test]
fn the_dependency_rules_hold() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut broken = Vec::new();
    for rule in RULES {
        let files = files_of(&src, rule.module);
        assert!(!files.is_empty(), "module {} has no files under {}", rule.module, src.display());
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for violation in violations_in(rule, &module_of(&src, &file), &text) {
                broken.push(format!("{}: {violation}", file.strip_prefix(&src).unwrap_or(&file).display()));
            }
        }
    }
    assert!(broken.is_empty(), "the layering rules are broken:\n{}", broken.join("\n"));
}

#[test]
fn the_checker_sees_every_way_of_writing_a_path() {
    let rule = |name: &str| RULES.iter().find(|r| r.module == name).unwrap();
    let at = |path: &str| path.split("::").map(str::to_owned).collect::<Vec<_>>();
    let count = |module: &str, file_module: &str, text: &str| violations_in(rule(module), &at(file_module), text).len();
    assert_eq!(count("model", "model::run", "use crate::store::Store;"), 1);
    assert_eq!(count("model", "model::run", "use crate::{journal, llm::Usage};"), 2);
    assert_eq!(count("model", "model::run", "fn f() { crate::runner::go(); }"), 1);
    assert_eq!(count("model", "model::run", "fn f(x: crate::engine::Engine) {}"), 1);
    assert_eq!(count("model", "model::run", "use super::super::engine;"), 1, "super out of the crate's modules");
    assert_eq!(count("model", "model", "use super::engine::X;"), 1, "super from a mod.rs");
    assert_eq!(count("model", "model::run", "use super::Usage;"), 0, "a sibling in its own module");
    assert_eq!(count("model", "model::run", "fn f() { std::fs::read(\"x\"); }"), 1);
    assert_eq!(count("model", "model::run", "use crate::model::Usage;"), 0, "its own paths are fine");
    assert_eq!(count("model", "model", "#[cfg(test)] mod tests { use super::*; }"), 0, "inline modules resolve");
    assert_eq!(count("model", "model", "fn f() { let _ = format!(\"{}\", crate::runner::X); }"), 1, "in macros");
    assert_eq!(count("policy", "policy::decide", "use crate::model::Failure;"), 0);
    assert_eq!(count("policy", "policy::decide", "use crate::manifest::TaskSpec;"), 1, "allow-lists, not deny-lists");
    assert_eq!(count("policy", "policy::retry", "fn f() -> f64 { uuid::Uuid::new_v4(); 0.0 }"), 1);
    assert_eq!(count("policy", "policy::retry", "use std::time::SystemTime;"), 1);
    assert_eq!(count("store", "store::redb", "use wasmtime::Engine;"), 1);
    assert_eq!(count("store", "store::redb", "use crate::policy::breaker::Breaker;"), 1);
    assert_eq!(count("store", "store", "use super::llm::Usage;"), 1, "super from store/mod.rs is the crate");
    assert_eq!(count("imports", "imports::llm", "use crate::runner::host_failure;"), 1);
    assert_eq!(count("imports", "imports::llm", "use super::super::runner::X;"), 1);
    assert_eq!(count("imports", "imports::llm", "use crate::services::llm::LlmCalls;"), 0);
    assert_eq!(count("manifest", "manifest::tasks", "use crate::runner::Host;"), 1);
    // Prose and strings are not code.
    let prose = "//! crate::store::Store\n/// crate::runner\nconst A: &str = \"crate::llm\"; const C: char = '\"';";
    assert_eq!(count("model", "model", prose), 0);
}
