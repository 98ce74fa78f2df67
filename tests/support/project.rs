//! A throwaway project: a temp dir with a cairn.toml, its own redb store and
//! run directories, and helpers to run tasks in-process or through the CLI.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cairn::manifest::Manifest;
use cairn::model::RunRecord;
use cairn::runner::Host;

use super::guests::{cairn_bin, components};
use super::llm_server::{LlmServer, Script};

/// The API key the HTTP projects store as a secret and the server expects.
pub const API_KEY: &str = "sk-test-0123456789";

/// A manifest's task table for the report refiner.
pub const REFINER: &str = r#"
[tasks.report-refiner]
component = "{refiner}"
"#;
/// A refiner input that runs the whole loop on [`refiner_script`].
pub const TOPIC: &str = r#"{"topic": "The printing press", "max_rounds": 3}"#;
/// Distinct LLM calls of an uninterrupted refiner run on [`refiner_script`].
pub const REFINER_CALLS: usize = 5;

/// Server rules that make the report refiner converge in two rounds: the
/// draft scores 4, the revision (marked `[REVISED]`) scores 8.
pub fn refiner_script() -> Script {
    Script::new()
        .expect_api_key(API_KEY)
        .rule(
            Some("critic"),
            Some("[REVISED]"),
            r#"{"score": 8, "strengths": ["clear"], "improvements": [], "summary": "ready"}"#,
        )
        .rule(
            Some("critic"),
            None,
            r#"{"score": 4, "strengths": ["topical"], "improvements": ["add dates"], "summary": "thin"}"#,
        )
        .reply_when_system("executive summary", "Printing spread knowledge fast.")
        .reply_when_system("revis", "[REVISED]\n\n# The printing press\n\nNow with dates: 1440.")
        .rule(None, None, "# The printing press\n\nA first draft.")
}

/// The seed's fan-out: `batch-driver` in environment `driver`, which
/// depends on `llm`, where `report-refiner` runs under `reuse`.
pub fn driver_and_refiner(reuse: &str) -> String {
    format!(
        r#"
        [environments.llm]
        reuse = {reuse}

        [environments.driver]
        depends_on = ["llm"]

        [tasks.report-refiner]
        component = "{{refiner}}"
        environment = "llm"

        [tasks.batch-driver]
        component = "{{batch_driver}}"
        environment = "driver"
        "#
    )
}

/// A temp project directory with a manifest.
pub struct Project {
    /// Keeps the directory alive.
    pub dir: tempfile::TempDir,
    /// The manifest file.
    pub manifest: PathBuf,
}

impl Project {
    /// Writes `manifest` (with `{probe}`, `{refiner}`, `{batch_driver}`, `{py_probe}` and `{js_probe}` replaced by the built
    /// components' paths) into a fresh temp dir.
    pub fn new(manifest: &str) -> Project {
        let built = components();
        let text = manifest
            .replace("{probe}", &built.probe.display().to_string())
            .replace("{refiner}", &built.refiner.display().to_string())
            .replace("{batch_driver}", &built.batch_driver.display().to_string())
            .replace("{py_probe}", &built.py_probe.display().to_string())
            .replace("{js_probe}", &built.js_probe.display().to_string());
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("cairn.toml");
        std::fs::write(&path, text).expect("write manifest");
        Project { dir, manifest: path }
    }

    /// A project whose default provider is the local HTTP `server`, with the
    /// API key stored as a secret; `tasks` is appended to the manifest.
    pub fn http(server: &LlmServer, tasks: &str) -> Project {
        Project::http_on(server, None, tasks)
    }

    /// [`Project::http`] with its runs in the PostgreSQL database at `store`
    /// (the manifest's `store` key; the password comes from the environment).
    pub fn http_on(server: &LlmServer, store: Option<&str>, tasks: &str) -> Project {
        let store = store.map(|url| format!("store = \"{url}\"")).unwrap_or_default();
        let project = Project::new(&format!(
            r#"
            {store}

            [llm]
            default = "local"

            [llm.providers.local]
            kind = "openai-compatible"
            base_url = "{}"
            model = "test-model"
            api_key_secret = "local-key"
            timeout = "5s"
            max_retries = 2
            {tasks}
            "#,
            server.base_url()
        ));
        let created = project.cli(&["secret", "create", "local-key", API_KEY]);
        assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
        project
    }

    /// Opens the project's store (the host must not be running).
    pub fn store(&self) -> cairn::store::redb::RedbStore {
        cairn::store::redb::RedbStore::open(&self.path().join(".cairn/cairn.redb")).expect("store opens")
    }

    /// Runs the CLI and parses its stdout as one JSON document.
    pub fn cli_json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.cli(args);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "cairn {args:?} printed no JSON ({e}):\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    /// The project's directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// An in-process host over this project.
    pub fn host(&self) -> std::sync::Arc<Host> {
        let manifest = Manifest::load(&self.manifest).expect("valid manifest");
        Host::open(manifest).expect("host opens")
    }

    /// An in-process host whose policies run on `clock` (no real sleeping).
    pub fn host_with_clock(&self, clock: std::sync::Arc<dyn cairn::clock::Clock>) -> std::sync::Arc<Host> {
        let manifest = Manifest::load(&self.manifest).expect("valid manifest");
        let store = cairn::runner::open_store(&manifest).expect("store opens");
        Host::with_clock(manifest, store, clock).expect("host opens")
    }

    /// Runs a task in-process to completion.
    pub async fn run(&self, task: &str, input: &str) -> RunRecord {
        self.host().run(task, input).await.expect("the host keeps working")
    }

    /// Runs the CLI, asserts that it exited 0, and returns its stdout and stderr.
    pub fn cli_ok(&self, args: &[&str]) -> (String, String) {
        let out = self.cli(args);
        let (stdout, stderr) =
            (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
        assert!(out.status.success(), "cairn {args:?} exited with {}:\n{stdout}\n{stderr}", out.status);
        (stdout, stderr)
    }

    /// Runs the `cairn` binary with `--manifest` and `args`.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(cairn_bin()).arg("--manifest").arg(&self.manifest).args(args).output().expect("cairn starts")
    }
}

/// The output of a successful run, parsed.
pub fn output_json(run: &RunRecord) -> serde_json::Value {
    assert_eq!(run.status, cairn::model::RunStatus::Succeeded, "run failed: {:?}", run.error);
    serde_json::from_str(run.output.as_deref().expect("an output")).expect("output is JSON")
}

/// What a finished `cairn` process printed: its stdout, then its stderr.
pub fn printed(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// How often `needle` occurs in `haystack`.
pub fn occurrences(haystack: &[u8], needle: &str) -> usize {
    haystack.windows(needle.len()).filter(|w| *w == needle.as_bytes()).count()
}

/// Every file under `dir` (links are not followed) with its bytes.
pub fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let kind = std::fs::symlink_metadata(&path).unwrap().file_type();
        if kind.is_dir() {
            files.extend(files_under(&path));
        } else if kind.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            files.push((path, bytes));
        }
    }
    files
}
