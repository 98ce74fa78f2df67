//! Files between tasks, by reference: a task writes a file and returns (or
//! gives a child) a `File`; the host stores it in the blob store and the
//! receiver finds it read-only under `in/`. Real guests, a real blob
//! directory, the real `cairn` binary where memory is measured.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use cairn::model::RunStatus;

use crate::support::guests::cairn_bin;
use crate::support::project::{Project, output_json, printed};

const PROBE: &str = r#"
[environments.default]
resources = { max_disk = "3GiB", timeout = "10m" }

[tasks.probe]
component = "{probe}"
"#;

/// Runs `cairn run probe INPUT --json` and samples its peak resident memory
/// (VmHWM, which only grows) until it exits: (run view, peak bytes).
fn run_measured(project: &Project, input: &str) -> (Value, u64) {
    let mut child = Command::new(cairn_bin())
        .arg("--manifest")
        .arg(&project.manifest)
        .args(["run", "probe", "--json", "--quiet", "--input", input])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = format!("/proc/{}/status", child.id());
    let mut peak = 0u64;
    while child.try_wait().unwrap().is_none() {
        if let Ok(text) = std::fs::read_to_string(&status)
            && let Some(kib) = text.lines().find_map(|l| l.strip_prefix("VmHWM:"))
        {
            peak = peak.max(kib.trim().trim_end_matches("kB").trim().parse::<u64>().unwrap_or(0) * 1024);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", printed(&out));
    (serde_json::from_slice(&out.stdout).unwrap(), peak)
}

#[test]
fn a_gib_file_goes_to_a_child_and_back_with_host_memory_flat() {
    let project = Project::new(PROBE);
    // The same trip with 16 MiB, for the baseline in this run.
    let (small, small_peak) = run_measured(&project, r#"{"mode": "blob-write", "mib": 16, "child": "probe"}"#);
    let (big, big_peak) = run_measured(&project, r#"{"mode": "blob-write", "mib": 1024, "child": "probe"}"#);
    for (run, mib) in [(&small, 16u64), (&big, 1024)] {
        let out = &run["output"];
        assert_eq!(out["size"], mib << 20, "{out}");
        assert_eq!(out["child_saw"], out["wrote"], "the child read the bytes the parent wrote: {out}");
        assert_eq!(out["back"], out["wrote"], "the parent read the same bytes back: {out}");
        assert!(out["file"]["$file"].as_str().unwrap().starts_with("sha256:"), "{out}");
        assert!(out["staged_at"].as_str().unwrap().starts_with("in/"), "{out}");
    }
    // 1008 MiB more passed through the host; its peak memory barely moved.
    let grew = big_peak.saturating_sub(small_peak);
    assert!(
        grew < 64 << 20,
        "peak memory grew by {} MiB for 1008 MiB more data (16 MiB: {} MiB, 1 GiB: {} MiB)",
        grew >> 20,
        small_peak >> 20,
        big_peak >> 20
    );
    eprintln!("peak memory: {} MiB with 16 MiB, {} MiB with 1 GiB", small_peak >> 20, big_peak >> 20);
    // Stored once: the child passed the parent's file back, it did not copy it.
    let listed = project.cli_json(&["blobs", "ls", "--json"]);
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_guest_reaches_only_the_blobs_it_was_given_and_cannot_change_them() {
    let project = Project::new(PROBE);
    let host = project.host();
    let written = host.run("probe", r#"{"mode": "blob-write", "mib": 1}"#).await.unwrap();
    let file = output_json(&written)["file"].clone();
    let digest = file["$file"].as_str().unwrap().to_owned();

    // Given the file, a run reads it, and cannot write, remove or climb out of in/.
    let input = json!({"mode": "blob-read", "tamper": true, "file": file}).to_string();
    let read = output_json(&host.run("probe", &input).await.unwrap());
    assert_eq!(read["size"], 1 << 20);
    for (attempt, how) in read["tamper"].as_object().unwrap() {
        assert_eq!(how, "PermissionDenied", "{attempt}: {read}");
    }
    assert_eq!(read["staged"], json!([format!("{}/", &digest["sha256:".len()..][..16])]), "{read}");

    // Not given it, a run cannot put it in its output, nor in a child's input.
    let forged = host.run("probe", &json!({"mode": "blob-forge", "digest": digest}).to_string()).await.unwrap();
    assert_eq!(forged.status, RunStatus::Failed);
    let error = forged.error.unwrap();
    assert_eq!(error.kind, "invalid-output", "{error:?}");
    assert!(error.message.contains("which this run was not given"), "{error:?}");
    let input = json!({"mode": "blob-forge", "digest": digest, "child": "probe"}).to_string();
    let refused = output_json(&host.run("probe", &input).await.unwrap());
    assert_eq!(refused["refused"]["kind"], "invalid-input", "{refused}");

    // Another tenant's run given the reference finds no such blob in its own store.
    let other = cairn::runner::RunOptions::of(&cairn::model::Tenant::new("other", "prod").unwrap());
    let input = json!({"mode": "blob-read", "file": file}).to_string();
    let theirs = host.run_with("probe", &input, &other).await.unwrap();
    assert_eq!(theirs.status, RunStatus::Failed);
    let error = theirs.error.unwrap();
    assert_eq!(error.kind, "invalid-input", "{error:?}");
    assert!(error.message.contains("no blob"), "{error:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn directories_pass_whole_and_warm_instances_keep_no_earlier_files() {
    let project = Project::new(
        r#"
        [environments.warm]
        reuse = { replicas = 1 }

        [tasks.probe]
        component = "{probe}"
        environment = "warm"
        "#,
    );
    let host = project.host();
    let tree = output_json(&host.run("probe", r#"{"mode": "blob-dir"}"#).await.unwrap())["dir"].clone();
    assert_eq!((tree["files"].as_u64(), tree["size"].as_u64()), (Some(2), Some(9)), "{tree}");
    let seen = output_json(&host.run("probe", &json!({"mode": "blob-dir", "dir": tree}).to_string()).await.unwrap());
    assert_eq!(seen, json!({"top": ["a.txt", "sub/"], "sub": ["b.txt"], "a": "alpha", "b": "beta", "count": 2}));

    // Two files through the same warm instance: each run sees only its own.
    let mut staged = Vec::new();
    for mib in [1, 2] {
        let file = output_json(
            &host.run("probe", &json!({"mode": "blob-write", "mib": mib}).to_string()).await.unwrap(),
        )["file"]
            .clone();
        let read =
            output_json(&host.run("probe", &json!({"mode": "blob-read", "file": file}).to_string()).await.unwrap());
        assert_eq!(read["staged"].as_array().unwrap().len(), 1, "{read}");
        staged.push(read["staged"][0].clone());
    }
    assert_ne!(staged[0], staged[1]);
}

#[tokio::test(flavor = "multi_thread")]
async fn files_past_a_runs_or_a_tenants_limit_fail_with_blob_limit() {
    let project = Project::new(
        r#"
        tenant = "small/prod"

        [tenants."small/prod"]
        blob_storage = "3MiB"

        [environments.default]
        resources = { max_blobs = "2MiB" }

        [tasks.probe]
        component = "{probe}"
        "#,
    );
    let host = project.host();
    let over = host.run("probe", r#"{"mode": "blob-write", "mib": 3}"#).await.unwrap();
    let error = over.error.expect("refused");
    assert_eq!((error.kind.as_str(), error.retryable), ("blob-limit", false), "{error:?}");
    assert!(error.message.contains("resources.max_blobs"), "{error:?}");
    assert_eq!(over.attempts.len(), 1, "not retried");

    // 2 MiB fits the run's limit; a second 2 MiB file passes the tenant's 3 MiB.
    assert_eq!(host.run("probe", r#"{"mode": "blob-write", "mib": 2}"#).await.unwrap().status, RunStatus::Succeeded);
    let second = host.run("probe", r#"{"mode": "blob-write", "mib": 2, "path": "out/other.bin"}"#).await.unwrap();
    let other = second.error.expect("refused");
    assert_eq!(other.kind, "blob-limit", "{other:?}");
    assert!(other.message.contains("`blob_storage` quota"), "{other:?}");
}

#[test]
fn cairn_blobs_stores_lists_gets_and_gc_collects_what_no_run_refers_to() {
    let project = Project::new(PROBE);
    let data = project.path().join("table.csv");
    std::fs::write(&data, "a,b\n1,2\n").unwrap();
    let (printed_ref, _) = project.cli_ok(&["blobs", "put", data.to_str().unwrap(), "--name", "t.csv"]);
    let reference: Value = serde_json::from_str(printed_ref.trim()).unwrap();
    assert_eq!((reference["name"].as_str(), reference["size"].as_u64()), (Some("t.csv"), Some(8)));
    let digest = reference["$file"].as_str().unwrap().to_owned();
    let back = project.path().join("back.csv");
    project.cli_ok(&["blobs", "get", &digest, "-o", back.to_str().unwrap()]);
    assert_eq!(std::fs::read(&back).unwrap(), b"a,b\n1,2\n");

    // A run given it refers to it; a second blob nobody refers to.
    let input = json!({"mode": "blob-read", "file": reference}).to_string();
    project.cli_ok(&["run", "probe", "--input", &input]);
    std::fs::write(&data, "unreferred").unwrap();
    project.cli_ok(&["blobs", "put", data.to_str().unwrap()]);
    // Both were stored just now: within the grace period, gc keeps them.
    let (_, said) = project.cli_ok(&["gc", "--older-than", "30d"]);
    assert!(said.contains("removed 0 blob(s)"), "{said}");
    age_blobs(project.path());
    let (_, said) = project.cli_ok(&["gc", "--older-than", "30d"]);
    assert!(said.contains("removed 1 blob(s)"), "{said}");
    let listed = project.cli_json(&["blobs", "ls", "--json"]);
    assert_eq!(listed[0]["digest"], digest.as_str(), "the referred one stays: {listed}");
    // Once its run is gone, so is it.
    let (_, said) = project.cli_ok(&["gc", "--older-than", "0s"]);
    assert!(said.contains("removed 1 blob(s)"), "{said}");
    assert_eq!(project.cli_json(&["blobs", "ls", "--json"]), json!([]));
    let bad = project.cli(&["blobs", "get", "sha256:nope", "-o", "-"]);
    assert!(printed(&bad).contains("is not a blob digest"), "{}", printed(&bad));
}

/// Makes every blob of the project look stored two hours ago.
fn age_blobs(project: &std::path::Path) {
    let old = std::time::SystemTime::now() - Duration::from_secs(7200);
    let mut stack = vec![project.join(".cairn/blobs/default")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            if entry.file_type().unwrap().is_dir() {
                stack.push(entry.path());
            } else {
                std::fs::File::open(entry.path()).unwrap().set_modified(old).unwrap();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn python_and_javascript_tasks_hand_each_other_files() {
    let built = crate::support::guests::components();
    let examples = crate::support::guests::repo_root().join("guest-examples/components");
    let project = Project::new(&format!(
        "[llm.providers.mock]\nkind = \"mock\"\n[[llm.providers.mock.rules]]\nsystem_contains = \"data analyst\"\nreply = \"totals, summarised\"\n\n\
         [tasks.py]\ncomponent = {:?}\n[tasks.js]\ncomponent = {:?}\n\
         [tasks.py-table-report]\ncomponent = {:?}\n[tasks.js-table-summary]\ncomponent = {:?}\n",
        built.py_probe.display().to_string(),
        built.js_probe.display().to_string(),
        examples.join("py-table-report.wasm").display().to_string(),
        examples.join("js-table-summary.wasm").display().to_string(),
    ));
    let host = project.host();
    for (writer, reader, by) in [("py", "js", "javascript"), ("js", "py", "python")] {
        let input = json!({"mode": "csv-write", "rows": 4, "child": reader}).to_string();
        let out = output_json(&host.run(writer, &input).await.unwrap());
        assert_eq!(out["summary"]["rows"], 4, "{writer} -> {reader}: {out}");
        assert_eq!(out["summary"]["columns"], json!(["n", "square"]));
        assert_eq!(out["summary"]["by"], by);
        assert_eq!(out["summary"]["table"], out["table"], "the child passed back the very file it was given");
        assert!(out["table"]["$file"].as_str().unwrap().starts_with("sha256:"), "{out}");
    }
    // The example: a Python task writes a CSV, a JavaScript child summarises it.
    let run = host.run("py-table-report", r#"{"topics": ["Tides", "Glaciers", "Comets"]}"#).await.unwrap();
    let out = output_json(&run);
    assert_eq!(
        out["summary"],
        json!({"rows": 3, "totals": {"words": 3, "letters": 19, "vowels": 7}, "summary": "totals, summarised"})
    );
    let digest = out["table"]["$file"].as_str().unwrap();
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(
        &mut host
            .blobs()
            .open(&cairn::model::Tenant::default(), &cairn::model::files::Digest::parse(digest).unwrap())
            .unwrap(),
        &mut bytes,
    )
    .unwrap();
    assert_eq!(
        String::from_utf8(bytes).unwrap(),
        "topic,words,letters,vowels\nTides,1,5,2\nGlaciers,1,8,3\nComets,1,6,2\n"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn replays_and_cache_hits_hand_back_the_same_references() {
    let project = Project::new(
        r#"
        [tasks.probe]
        component = "{probe}"
        cache = "auto"
        "#,
    );
    let host = project.host();
    let input = r#"{"mode": "blob-write", "mib": 1}"#;
    let first = host.run("probe", input).await.unwrap();
    let file = output_json(&first)["file"].clone();
    // A cache hit: the stored output, the same reference, the file still there.
    let cached = host.run("probe", input).await.unwrap();
    assert_eq!(cached.cached_from.as_deref(), Some(first.id.as_str()));
    assert_eq!(output_json(&cached)["file"], file);
    // A replay of the run: the guest writes the same bytes, so the same reference.
    let options = cairn::runner::RunOptions { replay: Some(first.id.clone()), tenant: None };
    let replayed = host.run_with("probe", input, &options).await.unwrap();
    assert_eq!(output_json(&replayed)["file"], file);
    // And the file behind it reads back in a later run.
    let read = output_json(&host.run("probe", &json!({"mode": "blob-read", "file": file}).to_string()).await.unwrap());
    assert_eq!(read["size"], 1 << 20);
}
