//! A throwaway project: a temp dir with a cairn.toml, its own redb store and
//! run directories, and helpers to run tasks in-process or through the CLI.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cairn::manifest::Manifest;
use cairn::runner::Host;
use cairn::store::RunRecord;

use super::guests::{cairn_bin, components};

/// A temp project directory with a manifest.
pub struct Project {
    /// Keeps the directory alive.
    pub dir: tempfile::TempDir,
    /// The manifest file.
    pub manifest: PathBuf,
}

impl Project {
    /// Writes `manifest` (with `{probe}` and `{refiner}` replaced by the built
    /// components' paths) into a fresh temp dir.
    pub fn new(manifest: &str) -> Project {
        let built = components();
        let text = manifest
            .replace("{probe}", &built.probe.display().to_string())
            .replace("{refiner}", &built.refiner.display().to_string());
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("cairn.toml");
        std::fs::write(&path, text).expect("write manifest");
        Project { dir, manifest: path }
    }

    /// The project's directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// An in-process host over this project.
    pub fn host(&self) -> Host {
        let manifest = Manifest::load(&self.manifest).expect("valid manifest");
        Host::open(manifest).expect("host opens")
    }

    /// Runs a task in-process to completion.
    pub async fn run(&self, task: &str, input: &str) -> RunRecord {
        self.host().run(task, input).await.expect("the host keeps working")
    }

    /// Runs the `cairn` binary with `--manifest` and `args`.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(cairn_bin()).arg("--manifest").arg(&self.manifest).args(args).output().expect("cairn starts")
    }
}

/// The output of a successful run, parsed.
pub fn output_json(run: &RunRecord) -> serde_json::Value {
    assert_eq!(run.status, cairn::store::RunStatus::Succeeded, "run failed: {:?}", run.error);
    serde_json::from_str(run.output.as_deref().expect("an output")).expect("output is JSON")
}
