//! The guest's filesystem is its run directory and nothing else.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::support::project::{Project, output_json};

/// The work directory of the one run under `runs`, once the host has made it.
async fn only_work_dir(runs: &Path) -> PathBuf {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let made: Vec<PathBuf> = std::fs::read_dir(runs)
            .unwrap()
            .map(|entry| entry.unwrap().path().join("work"))
            .filter(|work| work.is_dir())
            .collect();
        match made.as_slice() {
            [work] => return work.clone(),
            [] if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(20)).await,
            _ => panic!("expected one run directory under {}, found {made:?}", runs.display()),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn guest_reads_and_writes_its_run_dir_and_cannot_escape_it() {
    // The run's directory is kept after it succeeds, to look at what it wrote.
    let project = Project::new(
        r#"
        retention = { keep_dirs = true }

        [tasks.fs]
        component = "{probe}"
        "#,
    );
    // A file next to the run directories that the guest must not reach.
    let runs = project.path().join(".cairn/runs");
    std::fs::create_dir_all(&runs).unwrap();
    let outside = runs.join("outside.txt");
    std::fs::write(&outside, "host secret").unwrap();

    // The guest makes its own link out (`escape` -> ../../outside.txt), then
    // waits for a link the host side puts into its directory (`planted`, an
    // absolute link to the same file), and reads through both.
    let host = project.host();
    let plant = async {
        let work = only_work_dir(&runs).await;
        let target = std::fs::canonicalize(&outside).unwrap();
        std::os::unix::fs::symlink(target, work.join("planted")).expect("the host side can make the planted link");
        work
    };
    let (run, work) = tokio::join!(host.run("fs", r#"{"mode": "fs", "planted": "planted"}"#), plant);
    let run = run.expect("the host keeps working");
    assert_eq!(work, runs.join(&run.id).join("work"));
    let out = output_json(&run);
    assert_eq!(out["wrote"], true, "{out}");
    assert_eq!(out["read_back"], "hello", "{out}");

    // Both links exist and lead to the secret for anyone who follows them, so
    // a refusal below is the sandbox's doing and not a broken link.
    let result = |probe: &str| out[probe].as_str().unwrap_or_else(|| panic!("{probe} has a result: {out}")).to_owned();
    let escape = result("symlink_dotdot");
    assert!(
        !escape.starts_with("err:symlink:"),
        "the guest must be able to make its link, so the read is tried: {escape}"
    );
    assert_eq!(std::fs::read_link(work.join("escape")).unwrap(), Path::new("../../outside.txt"));
    for link in ["escape", "planted"] {
        assert_eq!(std::fs::read_to_string(work.join(link)).unwrap(), "host secret", "{link} leads out when followed");
    }
    assert_ne!(out["planted"], "missing", "the guest saw the planted link: {out}");

    // Every way out is refused, and nothing of the host's files comes back.
    // (`symlink_abs` may already fail to make its absolute link; `planted`
    // covers reading through one for sure.)
    for probe in ["dotdot", "absolute", "symlink_dotdot", "symlink_abs", "planted"] {
        let result = result(probe);
        assert!(result.starts_with("err:"), "{probe} must fail, got {result:?}");
        assert!(!result.contains("host secret") && !result.contains("root:"), "{probe} leaked: {result}");
    }
    let note = work.join("note.txt");
    assert_eq!(std::fs::read_to_string(note).unwrap(), "hello", "the file lands in the run's own directory");
}

/// Every file under `dir` with its bytes (links as their targets), leaving
/// out the host's own state and the directories of runs not in `keep`.
fn snapshot(dir: &Path, runs_kept: &[&str]) -> Vec<(PathBuf, String)> {
    let mut seen = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        for entry in std::fs::read_dir(&at).unwrap() {
            let path = entry.unwrap().path();
            let relative = path.strip_prefix(dir).unwrap();
            let text = relative.to_string_lossy();
            let host_state = [".cairn/cairn.redb", ".cairn/artifacts", ".cairn/instances", ".cairn/master.key"]
                .iter()
                .any(|own| text.starts_with(own));
            let other_run = text.starts_with(".cairn/runs/")
                && relative.components().count() > 2
                && !runs_kept.iter().any(|kept| text.starts_with(&format!(".cairn/runs/{kept}")));
            if host_state || other_run {
                continue;
            }
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let content = if meta.is_dir() {
                stack.push(path.clone());
                "dir".to_owned()
            } else if meta.file_type().is_symlink() {
                format!("link to {}", std::fs::read_link(&path).unwrap().display())
            } else {
                String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned()
            };
            seen.push((relative.to_path_buf(), content));
        }
    }
    seen.sort();
    seen
}

#[tokio::test(flavor = "multi_thread")]
async fn every_way_out_of_the_run_directory_is_refused_and_nothing_outside_changes() {
    let project = Project::new(
        r#"
        retention = { keep_dirs = true }

        [tasks.escape]
        component = "{probe}"
        "#,
    );
    let host = project.host();
    // Beside the run directories: a file of the host's and another run's secret.
    let runs = project.path().join(".cairn/runs");
    std::fs::create_dir_all(runs.join("other-run/work")).unwrap();
    std::fs::write(runs.join("outside.txt"), "host secret").unwrap();
    std::fs::write(runs.join("other-run/work/secret.txt"), "other run's secret").unwrap();
    std::fs::write(project.path().join("outside.txt"), "project secret").unwrap();
    let before = snapshot(project.path(), &["other-run", "outside.txt"]);

    let run = host.run("escape", r#"{"mode": "escape", "other": "other-run"}"#).await.unwrap();
    let out = output_json(&run);
    let attempts = out["attempts"].as_object().unwrap();
    assert!(attempts.len() >= 30, "{} attempts: {out}", attempts.len());
    for (name, result) in attempts {
        let result = result.as_str().unwrap();
        assert!(result.starts_with("err:"), "{name} got out: {result}");
        assert!(!result.contains("secret") && !result.contains("root:"), "{name} leaked: {result}");
    }
    // Nothing outside the run's own directory changed; nothing was written elsewhere.
    assert_eq!(snapshot(project.path(), &["other-run", "outside.txt"]), before);
    assert!(!Path::new("/tmp/cairn-pwned.txt").exists());
    let mut beside: Vec<_> = std::fs::read_dir(runs.join(&run.id)).unwrap().map(|e| e.unwrap().file_name()).collect();
    beside.sort();
    assert_eq!(beside, ["in", "work"], "nothing beside the guest's directory and its staged files in its run's");
    assert_eq!(std::fs::read_dir(runs.join(&run.id).join("in")).unwrap().count(), 0, "nothing was staged");
    let own = runs.join(&run.id).join("work");
    assert_eq!(std::fs::read_to_string(own.join("note.txt")).unwrap(), "mine", "the guest wrote in its own directory");
}
