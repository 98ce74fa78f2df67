//! The guest's filesystem is its run directory and nothing else.

use crate::support::project::{Project, output_json};

#[tokio::test]
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
    std::fs::create_dir_all(project.path().join(".cairn/runs")).unwrap();
    std::fs::write(project.path().join(".cairn/runs/outside.txt"), "host secret").unwrap();

    let run = project.run("fs", r#"{"mode": "fs"}"#).await;
    let out = output_json(&run);
    assert_eq!(out["wrote"], true, "{out}");
    assert_eq!(out["read_back"], "hello", "{out}");
    for probe in ["dotdot", "absolute", "symlink_dotdot", "symlink_abs"] {
        let result = out[probe].as_str().unwrap_or_default();
        assert!(result.starts_with("err"), "{probe} must fail, got {result:?}");
        assert!(!result.contains("host secret") && !result.contains("root:"), "{probe} leaked: {result}");
    }
    let note = project.path().join(".cairn/runs").join(&run.id).join("work/note.txt");
    assert_eq!(std::fs::read_to_string(note).unwrap(), "hello", "the file lands in the run's own directory");
}
