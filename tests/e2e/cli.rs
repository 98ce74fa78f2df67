//! The command line as a user drives it.

use serde_json::Value;

use crate::support::project::Project;

#[test]
fn run_json_secrets_and_runs_listing() {
    let project = Project::new(
        r#"
        [environments.secretive]
        secrets = ["token", { key = "other", as_env_var = "OTHER_TOKEN" }]

        [tasks.probe]
        component = "{probe}"
        environment = "secretive"
        "#,
    );
    let created = project.cli(&["secret", "create", "token", "tok-123"]);
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    assert!(project.cli(&["secret", "create", "other", "o"]).status.success());
    let listed = project.cli(&["secret", "list"]);
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.contains("token") && !listed.contains("tok-123"), "list shows keys only: {listed}");

    let out = project.cli(&["run", "probe", "--input", r#"{"mode":"secret","key":"token"}"#, "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["status"], "succeeded");
    assert_eq!(json["output"]["value"], "tok-123");
    for field in ["run_id", "attempts", "timings", "llm"] {
        assert!(!json[field].is_null(), "--json has {field}: {json}");
    }
    let run_id = json["run_id"].as_str().unwrap().to_owned();

    // A key the environment does not declare is refused.
    let out = project.cli(&["run", "probe", "--input", r#"{"mode":"secret","key":"undeclared"}"#, "--json"]);
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["output"]["found"], false, "{json}");

    let list = project.cli(&["runs", "list"]);
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(list.contains(&run_id), "{list}");
    let show = project.cli(&["runs", "show", &run_id]);
    assert!(String::from_utf8_lossy(&show.stdout).contains("succeeded"));
    // The secret's value appears in no journal or log (the probe itself chose to return it).
    for args in [vec!["runs", "journal", &run_id, "--json"], vec!["runs", "logs", &run_id]] {
        let out = project.cli(&args);
        assert!(!String::from_utf8_lossy(&out.stdout).contains("tok-123"), "{args:?} leaked the secret");
    }
    let unknown = project.cli(&["runs", "show", "no-such-run"]);
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no run with id"));
}

#[test]
fn engine_falls_back_to_on_demand_allocation_when_address_space_is_short() {
    let project = Project::new(
        r#"
        [tasks.probe]
        component = "{probe}"
        "#,
    );
    // 16 GB of virtual address space: too little for the pooling allocator's
    // reservations, enough for on-demand instances.
    let script = format!(
        "ulimit -v 16000000 && exec {} --manifest {} run probe --json --input '{{\"mode\":\"echo\",\"k\":7}}'",
        crate::support::guests::cairn_bin().display(),
        project.manifest.display()
    );
    let out = std::process::Command::new("sh").arg("-c").arg(script).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("falling back to on-demand allocation"), "the fallback is logged: {stderr}");
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["output"]["k"], 7);
}

#[test]
fn report_and_logs_are_kept_per_run() {
    let project = Project::new(
        r#"
        [tasks.report-refiner]
        component = "{refiner}"
        "#,
    );
    let run = project.cli_json(&["run", "report-refiner", "--json", "--input", r#"{"topic": "Tides"}"#]);
    let run_id = run["run_id"].as_str().unwrap();
    let html = project.path().join("report.html");
    let saved = project.cli(&["report", run_id, "-o", html.to_str().unwrap()]);
    assert!(saved.status.success(), "{}", String::from_utf8_lossy(&saved.stderr));
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.starts_with("<!doctype html>") && page.contains(run_id), "{page}");
    assert!(page.contains("<section"), "one section per tab: {page}");
    let logs = project.cli(&["runs", "logs", run_id]);
    assert!(String::from_utf8_lossy(&logs.stdout).contains("attempt 1 stdout"));
    let none = project.cli_json(&["run", "report-refiner", "--json", "--input", "not json"]);
    let missing = project.cli(&["report", none["run_id"].as_str().unwrap()]);
    assert!(String::from_utf8_lossy(&missing.stderr).contains("made no report"));
}
