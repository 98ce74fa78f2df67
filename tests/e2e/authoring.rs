//! A new author's first hour, as they would live it: from an empty folder
//! outside the repository, `cairn init`, `cairn new NAME --lang L`, `cairn
//! build`, `cairn run` on the embedded mock, then a recorded run kept as a
//! cassette that `cairn test` replays offline, and fails once the task
//! changes. For Rust, Python and JavaScript, with the `cairn` binary alone
//! finding its SDKs.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use crate::support::guests::{cairn_bin, components};

/// Runs `cairn ARGS` in `dir` with none of the caller's Cairn settings.
fn cairn(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(cairn_bin());
    command.args(args).current_dir(dir);
    for var in ["CAIRN_MANIFEST", "CAIRN_STORE", "CAIRN_SERVER", "CAIRN_HOME", "CAIRN_PYTHON", "CAIRN_PROJECT"] {
        command.env_remove(var);
    }
    command.envs(env.iter().copied());
    command.output().expect("cannot start cairn")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let out = cairn(dir, args, &[]);
    assert!(out.status.success(), "cairn {args:?} failed:\n{}", text(&out));
    text(&out)
}

/// Edits `file` under `dir`, which must contain `from`.
fn edit(dir: &Path, file: &str, from: &str, to: &str) {
    let path = dir.join(file);
    let source = std::fs::read_to_string(&path).unwrap();
    assert!(source.contains(from), "{file} has no {from:?}:\n{source}");
    std::fs::write(&path, source.replace(from, to)).unwrap();
}

#[test]
fn a_new_author_goes_from_an_empty_folder_to_a_tested_task_in_each_language() {
    // The kit's own builds (the venv, the JS packages) are ready once the examples built.
    components();
    // (language, its source file, how to rename the traced step in it)
    let languages = [
        ("python", "hello/app.py", "@trace\n", "@trace(\"salute\")\n"),
        ("js", "hello/app.js", "trace('greet'", "trace('salute'"),
        ("rust", "hello/src/lib.rs", "traced(\"greet\"", "traced(\"salute\""),
    ];
    for (lang, source, from, to) in languages {
        let dir = tempfile::Builder::new().prefix("cairn-new-author-").tempdir().unwrap();
        let dir = dir.path();
        ok(dir, &["init"]);
        ok(dir, &["new", "hello", "--lang", lang]);
        assert!(dir.join(source).is_file(), "{lang}: no {source}");

        let built = ok(dir, &["build"]);
        assert!(built.contains("built hello:"), "{lang}: {built}");
        let out = cairn(dir, &["run", "hello", "--input", r#"{"name": "Ada"}"#, "--json"], &[]);
        assert!(out.status.success(), "{lang}: {}", text(&out));
        let run: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            run["output"]["greeting"], "Hello, and welcome aboard!",
            "{lang}: the mock's rule from `cairn init`"
        );
        let run_id = run["run_id"].as_str().unwrap();

        // Its interface, derived from its types: a bad input is refused before any attempt.
        let described: Value =
            serde_json::from_slice(&cairn(dir, &["tasks", "describe", "hello"], &[]).stdout).unwrap();
        assert_eq!(described["input"]["properties"]["name"]["type"], "string", "{lang}: {described}");
        let bad = cairn(dir, &["run", "hello", "--input", r#"{"name": 3}"#, "--json"], &[]);
        let refused: Value = serde_json::from_slice(&bad.stdout).unwrap();
        assert_eq!(refused["error"]["kind"], "invalid-input", "{lang}: {refused}");
        assert!(refused["error"]["message"].as_str().unwrap().contains("name: expected string"), "{lang}: {refused}");
        assert_eq!(refused["attempts"], serde_json::json!([]), "{lang}: no attempt was made");

        // No cassette yet: `cairn test` says how to record one, and fails.
        let none = cairn(dir, &["test"], &[]);
        assert!(!none.status.success() && text(&none).contains("cairn test --add RUN"), "{lang}: {}", text(&none));
        ok(dir, &["test", "--add", run_id]);
        assert!(dir.join(format!("cassettes/hello/{run_id}.json")).is_file());
        let tested = ok(dir, &["test"]);
        assert!(tested.contains("1 passed, 0 failed"), "{lang}: {tested}");

        // A changed task no longer matches its recording: the renamed step is
        // not in the cassette, so its LLM call would be live, which a replay refuses.
        edit(dir, source, from, to);
        ok(dir, &["build"]);
        let changed = cairn(dir, &["test", "hello"], &[]);
        let said = text(&changed);
        assert!(!changed.status.success(), "{lang}: {said}");
        assert!(said.contains("FAIL") && said.contains("replay-miss"), "{lang}: {said}");
    }
}

#[test]
fn a_missing_part_of_the_kit_is_named_with_how_to_get_it() {
    let dir = tempfile::Builder::new().prefix("cairn-new-author-").tempdir().unwrap();
    let dir = dir.path();
    ok(dir, &["init"]);
    let empty = tempfile::tempdir().unwrap();
    let home = empty.path().to_str().unwrap();
    let lost = cairn(dir, &["new", "hello", "--lang", "python"], &[("CAIRN_HOME", home)]);
    assert!(!lost.status.success());
    assert!(text(&lost).contains(&format!("CAIRN_HOME is {home}, which has no wit/world.wit")), "{}", text(&lost));
    assert!(!dir.join("hello").exists(), "nothing is written without the kit");

    ok(dir, &["new", "hello", "--lang", "python"]);
    let python = empty.path().join("python");
    std::fs::write(&python, "").unwrap();
    let out = cairn(dir, &["build"], &[("CAIRN_PYTHON", python.to_str().unwrap())]);
    assert!(!out.status.success());
    let said = text(&out);
    assert!(said.contains("CAIRN_PYTHON is") && said.contains("componentize-py"), "{said}");
    assert!(!said.contains("not found"), "the shell never ran a command with a missing part: {said}");

    let bad = cairn(dir, &["new", "Hello", "--lang", "js"], &[]);
    assert!(text(&bad).contains("lowercase letters"), "{}", text(&bad));
    let lang = cairn(dir, &["new", "hi", "--lang", "cobol"], &[]);
    assert!(text(&lang).contains("use rust, python or js"), "{}", text(&lang));
}
