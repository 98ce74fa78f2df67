//! A task author's commands: `cairn init`, `cairn new`, `cairn build` and
//! `cairn test` (replaying recorded runs offline).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};

use cairn::authoring::Lang;
use cairn::authoring::scaffold::{self, Written};
use cairn::authoring::toolkit::Toolkit;
use cairn::manifest::{Manifest, TaskSpec};
use cairn::model::RunStatus;
use cairn::runner::{Host, RunOptions};

use super::backend::Backend;

/// `cairn init`.
#[derive(clap::Args)]
pub struct InitArgs {
    /// The project's folder (made if need be); default: this one.
    #[arg(default_value = ".")]
    dir: PathBuf,
}

/// `cairn new`.
#[derive(clap::Args)]
pub struct NewArgs {
    /// The task's name: lowercase letters, digits and dashes, e.g. `report-writer`.
    name: String,
    /// Its language: rust, python or js.
    #[arg(long)]
    lang: Lang,
}

/// `cairn test`.
#[derive(clap::Args)]
pub struct TestArgs {
    /// Replay only this task's cassettes.
    pub task: Option<String>,
    /// Instead of testing, save run RUN as a cassette of its task
    /// (`<cassettes>/RUN.json`), for later `cairn test`s to replay.
    #[arg(long, value_name = "RUN", conflicts_with = "task")]
    pub add: Option<String>,
}

pub fn init(args: &InitArgs) -> Result<ExitCode> {
    let written = scaffold::init(&args.dir)?;
    show(&written);
    let here = if args.dir == Path::new(".") { String::new() } else { format!("cd {} && ", args.dir.display()) };
    eprintln!("next: {here}cairn new NAME --lang rust|python|js");
    Ok(ExitCode::SUCCESS)
}

pub fn new(manifest: Option<PathBuf>, args: &NewArgs) -> Result<ExitCode> {
    let path = match manifest {
        Some(path) => path,
        None => Manifest::discover(&std::env::current_dir()?)
            .context("no cairn.toml here or above; make one with `cairn init`")?,
    };
    let kit = Toolkit::locate()?;
    let written = scaffold::new_task(&path, &args.name, args.lang, &kit)?;
    show(&written);
    for warning in &written.warnings {
        eprintln!("warning: `cairn build` will need this: {warning}");
    }
    eprintln!("next: cairn build {0} && cairn run {0} --input '{{\"name\": \"Ada\"}}'", args.name);
    Ok(ExitCode::SUCCESS)
}

fn show(written: &Written) {
    for path in &written.created {
        eprintln!("created {}", path.display());
    }
    for path in &written.changed {
        eprintln!("changed {}", path.display());
    }
}

/// `cairn build [TASK]`.
pub fn build(manifest: &Manifest, task: Option<&str>) -> Result<ExitCode> {
    if let Some(name) = task {
        manifest.task(name).map_err(anyhow::Error::msg)?;
    }
    let built = cairn::builder::build_all(manifest, task)?;
    if built.is_empty() {
        eprintln!("nothing to build: no task in {} has a `build` entry", manifest.path.display());
    }
    // Precompile now, so the first `cairn run` does not pay for compilation.
    let engine = cairn::engine::CairnEngine::new(manifest.state_dir().join("artifacts"))?;
    for b in built {
        let loaded = engine.load(&b.component)?;
        eprintln!(
            "built {}: {} ({} KiB{}) in {:.1}s{}",
            b.task,
            b.component.display(),
            b.size.div_ceil(1024),
            if b.componentized { ", componentized from a core module" } else { "" },
            b.took.as_secs_f64(),
            if loaded.from_cache { "" } else { ", precompiled" }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `cairn test --add RUN`: saves a run of the project as a cassette of its task.
pub fn add(backend: &Backend, manifest: Option<&Manifest>, run: &str) -> Result<ExitCode> {
    let manifest =
        manifest.context("`cairn test --add` saves into the project's folders: run it where its cairn.toml is")?;
    let record = backend.run(run)?.record;
    let task = manifest.task(&record.task).map_err(anyhow::Error::msg)?;
    let folder = cassettes_of(manifest, task)?;
    if record.status != RunStatus::Succeeded {
        bail!(
            "run {run} did not succeed ({}): record a run whose output you want the task to keep giving",
            record.status.as_str()
        );
    }
    std::fs::create_dir_all(&folder).with_context(|| format!("cannot make {}", folder.display()))?;
    let path = folder.join(format!("{run}.json"));
    let cassette = cairn::cassette::Cassette::of(record, backend.journal(run)?);
    cassette.save(&path)?;
    eprintln!(
        "saved run {run} ({} journal entries) as {}; `cairn test` replays it",
        cassette.journal.len(),
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn cassettes_of(manifest: &Manifest, task: &TaskSpec) -> Result<PathBuf> {
    task.cassettes.clone().with_context(|| {
        format!(
            "task {0:?} has no cassette folder: add `cassettes = \"cassettes/{0}\"` to [tasks.{0}] in {1}",
            task.name,
            manifest.path.display()
        )
    })
}

/// `cairn test [TASK]`: replays every cassette of every task (or of TASK)
/// in a scratch store, offline, and compares each output with the recorded one.
pub fn test(manifest: &Manifest, task: Option<&str>) -> Result<ExitCode> {
    let tasks: Vec<&TaskSpec> = match task {
        Some(name) => vec![manifest.task(name).map_err(anyhow::Error::msg)?],
        None => manifest.tasks.values().filter(|t| t.cassettes.is_some()).collect(),
    };
    let mut cases = Vec::new();
    for task in tasks {
        let folder = cassettes_of(manifest, task)?;
        let Ok(entries) = std::fs::read_dir(&folder) else { continue };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        cases.extend(files.into_iter().map(|file| (task.name.clone(), file)));
    }
    if cases.is_empty() {
        bail!(
            "no cassettes to replay{}: record one with `cairn run TASK --input JSON`, then `cairn test --add RUN`",
            task.map(|t| format!(" for task {t:?}")).unwrap_or_default()
        );
    }
    // A scratch state folder: the project's store and run folders are not
    // touched; its compiled components are shared, so nothing compiles twice.
    let scratch = tempfile::Builder::new().prefix("cairn-test-").tempdir()?;
    let artifacts = manifest.state_dir().join("artifacts");
    std::fs::create_dir_all(&artifacts).with_context(|| format!("cannot make {}", artifacts.display()))?;
    std::os::unix::fs::symlink(&artifacts, scratch.path().join("artifacts"))?;
    let mut scratch_manifest = manifest.clone().with_state_dir(scratch.path().to_path_buf());
    // The project's blobs: a cassette's input may refer to them (content-addressed,
    // so what a replay stores there is what the recorded run stored).
    scratch_manifest.blobs_dir = Some(manifest.blobs_dir());
    scratch_manifest.set_store("redb").map_err(anyhow::Error::msg)?;
    let tenant = scratch_manifest.tenant.clone().unwrap_or_default();
    let host = Host::open(scratch_manifest)?;
    let failed = super::runtime()?.block_on(async {
        let mut failed = 0;
        for (task, file) in &cases {
            let shown = file.strip_prefix(&manifest.dir).unwrap_or(file).display();
            match replay(&host, &tenant, task, file).await {
                Ok(note) => eprintln!("ok    {task}  {shown}  {note}"),
                Err(why) => {
                    failed += 1;
                    eprintln!("FAIL  {task}  {shown}\n      {why:#}");
                }
            }
        }
        failed
    });
    eprintln!("{} cassette(s): {} passed, {failed} failed", cases.len(), cases.len() - failed);
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Replays one cassette of `task`; says what was replayed, or why it failed.
async fn replay(host: &Host, tenant: &cairn::model::Tenant, task: &str, file: &Path) -> Result<String> {
    let recorded = cairn::cassette::import(host.store().as_ref(), tenant, file).await?;
    if recorded.task != task {
        bail!("it is a run of task {:?}, not of {task:?}; move it to that task's cassette folder", recorded.task);
    }
    let options = RunOptions { replay: Some(recorded.id.clone()), tenant: None };
    let run = host.run_with(task, &recorded.input, &options).await?;
    if run.status != RunStatus::Succeeded {
        let error = run.error.map(|e| format!("{}: {}", e.kind, e.message)).unwrap_or_default();
        bail!("the replay {}: {error}", run.status.as_str());
    }
    let same = match (&run.output, &recorded.output) {
        (Some(now), Some(then)) => cairn::journal::canonical_input(now) == cairn::journal::canonical_input(then),
        (now, then) => now == then,
    };
    if !same {
        let cut = |text: &Option<String>| cairn::model::cut_with_note(text.clone().unwrap_or_default(), 400);
        bail!(
            "the output differs from the recorded one\n      recorded: {}\n      now:      {}",
            cut(&recorded.output),
            cut(&run.output)
        );
    }
    let replayed: u32 = run.attempts.iter().map(|a| a.llm_replayed + a.trace_replayed).sum();
    Ok(format!("({replayed} recorded answer(s) replayed)"))
}
