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
