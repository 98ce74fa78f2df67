//! The command line as a user drives it.

use serde_json::{Value, json};

use crate::support::project::{Project, files_under, occurrences};

/// Runs the CLI, asserts that it exited 0, and returns its stdout and stderr.
fn cli_ok(project: &Project, args: &[&str]) -> (String, String) {
    project.cli_ok(args)
}

#[test]
fn run_json_secrets_and_runs_listing() {
    // Values long and odd enough that finding one anywhere can only be a leak.
    const TOKEN: &str = "tok-5c1e7a9f-never-shown";
    const OTHER: &str = "oth-93b2d4e8-never-shown";
    let project = Project::new(
        r#"
        [environments.secretive]
        secrets = ["token", { key = "other", as_env_var = "OTHER_TOKEN" }]

        [tasks.probe]
        component = "{probe}"
        environment = "secretive"
        retries = 1
        "#,
    );
    cli_ok(&project, &["secret", "create", "token", TOKEN]);
    cli_ok(&project, &["secret", "create", "other", OTHER]);
    let (listed, _) = cli_ok(&project, &["secret", "list"]);
    assert!(listed.contains("token") && listed.contains("other"), "list shows the keys: {listed}");
    assert!(!listed.contains(TOKEN) && !listed.contains(OTHER), "list shows keys only: {listed}");
    // The store holds each value as a secret; nothing below may add a copy.
    let store_file = project.path().join(".cairn/cairn.redb");
    let stored = std::fs::read(&store_file).unwrap();
    let stored_before = [occurrences(&stored, TOKEN), occurrences(&stored, OTHER)];

    // The guest reads both secrets (one through the API, one from its
    // environment) and leaves a trace everywhere a run can: stdout and stderr,
    // an LLM call and a traced step in the journal, a report tab, an error on
    // attempt 1, and an output.
    let input = r#"{"mode": "use-secret", "key": "token", "env": "OTHER_TOKEN", "fail_first": true}"#;
    let (run_out, run_err) = cli_ok(&project, &["-vv", "run", "probe", "--input", input, "--json"]);
    let json: Value = serde_json::from_str(&run_out).unwrap();
    assert_eq!(json["status"], "succeeded", "{json}");
    for field in ["run_id", "attempts", "timings", "llm"] {
        assert!(!json[field].is_null(), "--json has {field}: {json}");
    }
    let run_id = json["run_id"].as_str().unwrap().to_owned();
    // The guest did read the right values: their lengths and hashes, never the values.
    let fnv = |text: &str| {
        let hash =
            text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
        format!("{hash:016x}")
    };
    let output = &json["output"];
    assert_eq!((output["length"].as_u64(), output["fnv"].as_str()), (Some(24), Some(&*fnv(TOKEN))), "{output}");
    assert_eq!((output["env_length"].as_u64(), output["env_fnv"].as_str()), (Some(24), Some(&*fnv(OTHER))), "{output}");
    assert_eq!(output["attempt"], 2, "{output}");
    assert!(!output["answer"].as_str().unwrap_or_default().is_empty(), "{output}");
    assert_eq!(json["attempts"][0]["error"]["kind"], "flaky", "attempt 1 failed on purpose: {json}");

    // Everything the run left, each non-empty, so the search below has something to search.
    let (show, _) = cli_ok(&project, &["runs", "show", &run_id]);
    assert!(show.contains("succeeded") && show.contains("flaky: probe: failing on purpose"), "{show}");
    assert!(show.contains("SEQ  KIND   NAME") && show.contains("SUMMARY"), "the journal's columns are named: {show}");
    let (show_json, _) = cli_ok(&project, &["runs", "show", &run_id, "--json"]);
    let (journal, _) = cli_ok(&project, &["runs", "journal", &run_id, "--json"]);
    let entries: Value = serde_json::from_str(&journal).unwrap();
    let kinds: Vec<&str> = entries.as_array().unwrap().iter().filter_map(|e| e["key"]["kind"].as_str()).collect();
    assert_eq!(kinds, ["llm", "trace"], "the LLM call and the traced step: {journal}");
    let (logs, _) = cli_ok(&project, &["runs", "logs", &run_id]);
    for line in ["attempt 1 stdout", "probe: read secret token (24 bytes)", "attempt 2 stderr", "probe: using secret"] {
        assert!(logs.contains(line), "logs have {line:?}: {logs}");
    }
    let html = project.path().join("report.html");
    cli_ok(&project, &["report", &run_id, "-o", html.to_str().unwrap()]);
    let report = std::fs::read_to_string(&html).unwrap();
    assert!(report.contains("probe used secret token (24 bytes)"), "{report}");
    let cassette = project.path().join("run.cassette");
    cli_ok(&project, &["runs", "export", &run_id, "-o", cassette.to_str().unwrap()]);
    let cassette = std::fs::read_to_string(&cassette).unwrap();
    assert!(cassette.contains(&run_id), "{cassette}");
    let (list, _) = cli_ok(&project, &["runs", "list"]);
    assert!(list.contains(&run_id), "{list}");
    let (status, _) = cli_ok(&project, &["status"]);
    assert!(status.contains("probe"), "{status}");

    // ... and in none of it either value.
    let seen = [
        ("run --json stdout", &run_out),
        ("run stderr (-vv)", &run_err),
        ("runs show", &show),
        ("runs show --json", &show_json),
        ("runs journal --json", &journal),
        ("runs logs", &logs),
        ("report", &report),
        ("runs export", &cassette),
        ("runs list", &list),
        ("status", &status),
    ];
    for (what, text) in seen {
        assert!(!text.is_empty(), "{what} printed something");
        for value in [TOKEN, OTHER] {
            assert!(!text.contains(value), "{what} leaked the secret {value}:\n{text}");
        }
    }
    // Nor in the files the host keeps: no new copy in the store, none elsewhere.
    let stored = std::fs::read(&store_file).unwrap();
    let stored_after = [occurrences(&stored, TOKEN), occurrences(&stored, OTHER)];
    assert!(
        stored_after[0] <= stored_before[0] && stored_after[1] <= stored_before[1],
        "the run copied a secret into {}: {stored_before:?} occurrences before, {stored_after:?} after",
        store_file.display()
    );
    for (path, bytes) in files_under(&project.path().join(".cairn")) {
        if path != store_file {
            for value in [TOKEN, OTHER] {
                assert_eq!(occurrences(&bytes, value), 0, "{} holds the secret {value}", path.display());
            }
        }
    }

    // The probe's plain `secret` mode hands a value back; a key the environment
    // does not declare is refused.
    let out = project.cli_json(&["run", "probe", "--input", r#"{"mode":"secret","key":"undeclared"}"#, "--json"]);
    assert_eq!((&out["output"]["found"], &out["output"]["error"]), (&json!(false), &json!("not-declared")), "{out}");

    // An unknown run is an error that names it, and the command fails.
    let unknown = project.cli(&["runs", "show", "no-such-run"]);
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert!(!unknown.status.success(), "showing an unknown run fails: {stderr}");
    assert!(stderr.contains("no run with id no-such-run;"), "{stderr}");
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
    // What the task wrote is framed, sandboxed, under a policy with no script.
    assert!(page.contains("Content-Security-Policy\" content=\"default-src 'none'"), "{page}");
    assert!(page.contains("<iframe sandbox=\"\"") && !page.contains("<script"), "{page}");
    let logs = project.cli(&["runs", "logs", run_id]);
    assert!(String::from_utf8_lossy(&logs.stdout).contains("attempt 1 stdout"));
    let none = project.cli_json(&["run", "report-refiner", "--json", "--input", "not json"]);
    let missing = project.cli(&["report", none["run_id"].as_str().unwrap()]);
    assert!(String::from_utf8_lossy(&missing.stderr).contains("made no report"));
}

/// Whether `text` holds a byte or character a terminal would act on.
fn has_terminal_controls(text: &str) -> bool {
    text.chars().any(|c| (c.is_control() && c != '\n') || matches!(c, '\u{202a}'..='\u{202e}'))
}

#[test]
fn what_a_guest_writes_is_printed_escaped_and_its_report_framed() {
    let project = Project::new(
        r#"
        [tasks.probe]
        component = "{probe}"
        retries = 0
        "#,
    );
    // An error kind and message, an output and a log line that try to clear the
    // screen, retitle the terminal, overwrite a line and print a fake one.
    let evil = "\u{1b}[2J\u{1b}]0;owned\u{7}\rrun 0 succeeded\nfake line\u{202e}\u{9b}31m";
    let failing = json!({"mode": "error", "kind": format!("kind{evil}"), "message": format!("message{evil}")});
    let failed = project.cli(&["run", "probe", "--input", &failing.to_string()]);
    let echoed = json!({"mode": "echo", "note": evil}).to_string();
    let (out, err) = cli_ok(&project, &["run", "probe", "--input", &echoed]);
    let printed = json!({"mode": "stdout", "text": evil}).to_string();
    let run = project.cli_json(&["run", "probe", "--json", "--input", &printed]);
    let run_id = run["run_id"].as_str().unwrap();
    let failed = format!("{}{}", String::from_utf8_lossy(&failed.stdout), String::from_utf8_lossy(&failed.stderr));
    let mut seen = vec![("run (failed)".to_owned(), failed), ("run (echo)".to_owned(), format!("{out}{err}"))];
    // `runs list --json` is a JSON document per line, each holding the guest's text as it was.
    let (listed, _) = cli_ok(&project, &["runs", "list", "--json"]);
    let runs: Vec<Value> = listed.lines().map(|line| serde_json::from_str(line).expect("a JSON line")).collect();
    assert!(runs.iter().any(|r| r.to_string().contains("kind\\u001b[2J")), "{listed}");
    let ids: Vec<String> = runs.iter().filter_map(|r| r["run_id"].as_str().map(str::to_owned)).collect();
    for args in
        [vec!["runs", "list"], vec!["dlq", "list"], vec!["runs", "logs", run_id], vec!["runs", "list", "--json"]]
    {
        let (out, err) = cli_ok(&project, &args);
        seen.push((format!("cairn {args:?}"), format!("{out}{err}")));
    }
    for id in &ids {
        let (out, err) = cli_ok(&project, &["runs", "show", id]);
        seen.push((format!("runs show {id}"), format!("{out}{err}")));
    }
    for (what, text) in &seen {
        assert!(!has_terminal_controls(text), "{what} printed raw control characters: {text:?}");
        // A field is one line; only an output's long text and a log keep their lines.
        let multiline = what == "run (echo)" || what.contains("logs");
        assert!(multiline || !text.contains("\nfake line"), "{what} let the guest print a line of its own: {text}");
    }
    let failed_text = &seen[0].1;
    assert!(failed_text.contains("kind\\u001b[2J"), "escaped, not dropped: {failed_text}");
    assert_eq!(ids.len(), 3, "{ids:?}");
}

#[test]
fn a_json_answer_of_the_wrong_shape_says_how_to_give_the_mock_the_right_one() {
    let manifest = |rules: &str| {
        format!(
            r#"
            [llm.providers.mock]
            kind = "mock"
            {rules}

            [tasks.probe]
            component = "{{probe}}"
            "#
        )
    };
    let project = Project::new(&manifest(""));
    let out = project.cli(&["run", "probe", "--json", "--input", r#"{"mode": "llm-json"}"#]);
    let view: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(view["error"]["kind"], "invalid-output", "{view}");
    let message = view["error"]["message"].as_str().unwrap();
    assert!(message.contains("missing field `colours`"), "{message}");
    assert!(message.contains("the last answer began") && message.contains("[[llm.providers.mock.rules]]"), "{message}");
    // The rule the hint asks for gives the task its answer.
    let rule = r#"
            [[llm.providers.mock.rules]]
            prompt_contains = "List three colours"
            json = true
            reply = '{"colours": ["red", "green", "blue"]}'"#;
    let project = Project::new(&manifest(rule));
    let out = project.cli(&["run", "probe", "--json", "--input", r#"{"mode": "llm-json"}"#]);
    let view: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(view["output"]["colours"], json!(["red", "green", "blue"]), "{view}");
}
