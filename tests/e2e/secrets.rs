//! Secrets sealed at rest and scrubbed from everything a run leaves: a guest
//! that prints its secret, puts it in a prompt, a traced step, a report and
//! its error (or its output) leaves no copy of the value in any output of the
//! CLI or the API, any file under `.cairn/`, or any PostgreSQL table.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::project::{Project, files_under, occurrences, printed};
use crate::support::serve::Served;

/// Long and odd enough that finding it anywhere can only be a leak.
const VALUE: &str = "lk-7d2a91c4-sealed-and-scrubbed";

fn manifest(store: Option<&str>) -> String {
    let store = store.map(|url| format!("store = \"{url}\"")).unwrap_or_default();
    format!(
        r#"
        {store}

        [environments.secretive]
        secrets = ["leak-key"]

        [tasks.probe]
        component = "{{probe}}"
        environment = "secretive"
        retries = 2
        "#
    )
}

/// Every row of every table of the database at `url`, as text.
fn every_table(url: &str) -> String {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let config = cairn::store::postgres::testing::config(url);
        let (client, connection) = config.connect(tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        let tables = client
            .query("SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public'", &[])
            .await
            .unwrap();
        let mut dump = String::new();
        for table in &tables {
            let name: String = table.get(0);
            for row in client.query(&format!("SELECT t::text FROM {name} t"), &[]).await.unwrap() {
                dump.push_str(&row.get::<_, String>(0));
                dump.push('\n');
            }
        }
        assert!(dump.contains("leak-key"), "the dump has the secret's row: {dump}");
        dump
    })
}

fn a_leaking_guest_leaves_no_copy(store: Option<String>) {
    let project = Project::new(&manifest(store.as_deref()));
    let (out, err) = project.cli_ok(&["secret", "create", "leak-key", VALUE]);
    let mut seen: Vec<(String, String)> = vec![("secret create".into(), format!("{out}{err}"))];
    // Failing with the value in its error (not retryable: into the dead-letter queue) ...
    let failed =
        project.cli(&["-vv", "run", "probe", "--input", r#"{"mode": "leak-secret", "key": "leak-key"}"#, "--json"]);
    assert_eq!(failed.status.code(), Some(1), "{}", printed(&failed));
    let failed_view: Value = serde_json::from_slice(&failed.stdout).unwrap();
    let failed_id = failed_view["run_id"].as_str().unwrap().to_owned();
    assert_eq!(failed_view["error"]["kind"], "leaky", "{failed_view}");
    // The guest had the value: where it put it, its name stands.
    let message = failed_view["error"]["message"].as_str().unwrap();
    assert!(message.contains("[secret:leak-key]"), "{message}");
    seen.push(("failed run".into(), printed(&failed)));
    // ... and succeeding with it in its output.
    let input = r#"{"mode": "leak-secret", "key": "leak-key", "succeed": true}"#;
    let (succeeded, err) = project.cli_ok(&["-vv", "run", "probe", "--input", input, "--json"]);
    let view: Value = serde_json::from_str(&succeeded).unwrap();
    assert_eq!(view["output"]["leaked"], "[secret:leak-key]", "{view}");
    assert_eq!(view["output"]["step"], "traced [secret:leak-key]", "{view}");
    let ok_id = view["run_id"].as_str().unwrap().to_owned();
    seen.push(("succeeded run".into(), format!("{succeeded}{err}")));
    for id in [&failed_id, &ok_id] {
        for args in [
            vec!["runs", "show", id],
            vec!["runs", "show", id, "--json"],
            vec!["runs", "journal", id, "--json"],
            vec!["runs", "logs", id],
            vec!["report", id],
        ] {
            let (out, err) = project.cli_ok(&args);
            seen.push((format!("cairn {args:?}"), format!("{out}{err}")));
        }
    }
    let (logs, _) = project.cli_ok(&["runs", "logs", &ok_id]);
    assert!(logs.contains("leak: [secret:leak-key]"), "{logs}");
    let (report, _) = project.cli_ok(&["report", &ok_id]);
    assert!(report.contains("the secret is [secret:leak-key]"), "{report}");
    for args in [vec!["dlq", "list"], vec!["dlq", "show", &failed_id], vec!["status", "--json"], vec!["secret", "list"]]
    {
        let (out, err) = project.cli_ok(&args);
        seen.push((format!("cairn {args:?}"), format!("{out}{err}")));
    }

    // The API and a run's event stream, through a server.
    let served = Served::start(&project, &[]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        for id in [&failed_id, &ok_id] {
            for path in ["", "/journal", "/logs", "/report"] {
                let (status, body) = served.get(&format!("/api/v1/runs/{id}{path}")).await;
                assert_eq!(status, 200, "{path}: {body}");
                seen.push((format!("GET runs/{id}{path}"), body.to_string()));
            }
        }
        let (_, letter) = served.get(&format!("/api/v1/dlq/{failed_id}")).await;
        seen.push(("GET dlq".into(), letter.to_string()));
        let mut stream = served.request(Method::GET, "/api/v1/events").send().await.unwrap();
        let body = json!({"task": "probe", "input": {"mode": "leak-secret", "key": "leak-key", "succeed": true, "again": 1}, "wait": true});
        let (status, run) = served.post("/api/v1/runs", body).await;
        assert_eq!(status, 200, "{run}");
        seen.push(("POST runs (wait)".into(), run.to_string()));
        let mut events = Vec::new();
        while let Ok(Ok(Some(chunk))) = tokio::time::timeout(Duration::from_millis(500), stream.chunk()).await {
            events.extend_from_slice(&chunk);
        }
        let events = String::from_utf8_lossy(&events).into_owned();
        assert!(events.contains("run-finished") && events.contains("[secret:leak-key]"), "{events}");
        seen.push(("events".into(), events));
    });
    drop(served);

    for (what, text) in &seen {
        assert!(!text.is_empty(), "{what} printed something");
        assert_eq!(occurrences(text.as_bytes(), VALUE), 0, "{what} leaked the secret:\n{text}");
    }
    // Every file the host keeps: the store, its log, the run directories, the master key.
    let files = files_under(&project.path().join(".cairn"));
    assert!(files.iter().any(|(path, _)| path.ends_with("master.key")), "the master key file is made");
    for (path, bytes) in &files {
        assert_eq!(occurrences(bytes, VALUE), 0, "{} holds the secret", path.display());
    }
    if let Some(url) = &store {
        assert_eq!(occurrences(every_table(url).as_bytes(), VALUE), 0, "a PostgreSQL table holds the secret");
    }
}

#[test]
fn a_leaked_secret_is_scrubbed_from_everything_on_redb() {
    a_leaking_guest_leaves_no_copy(None);
}

#[test]
fn a_leaked_secret_is_scrubbed_from_everything_on_postgresql() {
    a_leaking_guest_leaves_no_copy(Some(cairn::store::postgres::testing::fresh_database()));
}

#[test]
fn a_stored_secret_opens_only_with_its_master_key_and_survives_a_rotation() {
    let project = Project::new(&manifest(None));
    project.cli_ok(&["secret", "create", "leak-key", VALUE]);
    let run = |project: &Project| {
        let out = project.cli(&["run", "probe", "--input", r#"{"mode": "secret", "key": "leak-key"}"#, "--json"]);
        serde_json::from_slice::<Value>(&out.stdout).unwrap_or_else(|_| panic!("{}", printed(&out)))
    };
    // Read back whole (its length; the value itself is scrubbed from the output).
    assert_eq!(run(&project)["output"]["length"], VALUE.len(), "the guest reads the value");
    let key_file = project.path().join(".cairn/master.key");
    let old_key = std::fs::read_to_string(&key_file).unwrap();
    let (_, err) = project.cli_ok(&["secret", "rotate-master"]);
    assert!(err.contains("moved 1 secret"), "{err}");
    assert_ne!(std::fs::read_to_string(&key_file).unwrap(), old_key, "a new key replaced the old");
    assert_eq!(run(&project)["output"]["length"], VALUE.len(), "the value opens under the new key");
    // With another key the value does not open, and the error says which key it needs.
    std::fs::write(&key_file, "00".repeat(32)).unwrap();
    let view = run(&project);
    let message = view["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("sealed under master key") && !message.contains(VALUE), "{view}");
}
