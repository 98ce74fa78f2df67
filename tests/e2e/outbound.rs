//! Outbound HTTP from guests (`wasi:http`): journaled like an LLM call, so a
//! retried run sends a completed request once and a cassette replays it
//! offline; refused unless the environment (and the operator) allow the
//! destination; private addresses reachable only when named; secrets go
//! into headers as placeholders and nowhere else.

use std::process::Command;

use serde_json::{Value, json};

use crate::support::guests::cairn_bin;
use crate::support::project::{Project, files_under, occurrences, printed};
use crate::support::web_server::WebServer;

/// Long and odd enough that finding it anywhere can only be a leak.
const VALUE: &str = "wk-93f1c07e-only-on-the-wire";

fn project(server: &WebServer, extra: &str) -> Project {
    let port = server.port();
    // A port nothing listens on, allowed: where a bound secret may not go.
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    Project::new(&format!(
        r#"
        # other = {other}
        [environments.web]
        secrets = ["web-key", {{ key = "bound-key", hosts = ["http://127.0.0.1:{port}"] }}]
        allowed_outbound_hosts = ["http://127.0.0.1:{port}", "http://localhost:{port}", "http://127.0.0.1:{other}"]
        resources = {{ max_http_response = "1MiB", http_timeout = "1s" }}

        [environments.wild]
        allowed_outbound_hosts = ["*://*:*"]

        [tasks.probe]
        component = "{{probe}}"
        environment = "web"
        retries = 2

        [tasks.wild]
        component = "{{probe}}"
        environment = "wild"

        [tasks.py]
        component = "{{py_probe}}"
        environment = "web"
        retries = 2

        [tasks.js]
        component = "{{js_probe}}"
        environment = "web"
        retries = 2
        {extra}
        "#
    ))
}

fn run_json(project: &Project, task: &str, input: &Value) -> (Value, String) {
    let out = project.cli(&["run", task, "--input", &input.to_string(), "--json"]);
    let view: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", printed(&out)));
    (view, printed(&out))
}

#[test]
fn an_allowed_request_is_journaled_sent_once_across_retries_and_replayed_offline() {
    journaled_once_and_replayed(false);
}

#[test]
fn a_wasi_http_request_is_journaled_sent_once_across_retries_and_replayed_offline() {
    journaled_once_and_replayed(true);
}

fn journaled_once_and_replayed(wasi: bool) {
    let server = WebServer::start();
    let origin = server.origin();
    let project = project(&server, "");
    project.cli_ok(&["secret", "create", "web-key", VALUE]);
    let input = json!({
        "mode": "http",
        "wasi": wasi,
        "fail_after": true,
        "requests": [
            {"url": format!("{origin}/hello")},
            {"url": format!("{origin}/echo-auth"), "secret_header": ["authorization", "web-key"]},
            {"url": format!("{origin}/post"), "method": "POST", "body": "abc"},
            {"url": format!("{origin}/flaky")},
        ],
    });
    let (view, said) = run_json(&project, "probe", &input);
    assert_eq!(view["status"], "succeeded", "{view}");
    let results = &view["output"]["results"];
    assert_eq!(results[0]["body"], r#"{"hello":"world"}"#, "{view}");
    assert_eq!(results[2]["body"], "got 3 bytes", "{view}");
    // The server got the value; the guest, echoed back, only the placeholder.
    assert_eq!(results[1]["body"], "Bearer {{secret:web-key}}", "{view}");
    let auth: Vec<_> = server
        .received()
        .into_iter()
        .filter(|r| r.path == "/echo-auth")
        .map(|r| r.headers.into_iter().find(|(n, _)| n == "authorization").map(|(_, v)| v))
        .collect();
    assert_eq!(auth, [Some(format!("Bearer {VALUE}"))], "the header reached the allowed server once");
    // Attempt 1 failed after its four requests; attempt 2 replayed the three
    // completed ones and asked again for the one that got a 503.
    assert_eq!(results[3]["status"], 200, "{view}");
    for path in ["/hello", "/echo-auth", "/post"] {
        assert_eq!(server.hits(path), 1, "{path} was sent once over two attempts");
    }
    assert_eq!(server.hits("/flaky"), 2, "a 503 is not journaled");
    let attempts = &view["attempts"];
    assert_eq!(attempts[0]["http_requests_live"], 4, "{view}");
    assert_eq!((&attempts[1]["http_requests_live"], &attempts[1]["http_requests_replayed"]), (&json!(1), &json!(3)));
    let id = view["run_id"].as_str().unwrap().to_owned();

    // The journal holds each completed request, with the placeholder, not the value.
    let (journal, _) = project.cli_ok(&["runs", "journal", &id, "--json"]);
    let entries: Vec<Value> = serde_json::from_str(&journal).unwrap();
    let http: Vec<&Value> = entries.iter().filter(|e| e["key"]["kind"] == "http").collect();
    assert_eq!(http.len(), 4, "hello, echo-auth, post and the second flaky: {journal}");
    assert!(journal.contains("{{secret:web-key}}"), "{journal}");
    let (shown, _) = project.cli_ok(&["runs", "show", &id]);
    assert!(shown.contains("http 1 live / 3 replayed"), "{shown}");

    // A cassette replays every request offline: the server sees nothing new.
    let before = server.received().len();
    let (replayed, replay_printed) = {
        let out = project.cli(&["run", "probe", "--replay", &id, "--input", &input.to_string(), "--json"]);
        (serde_json::from_slice::<Value>(&out.stdout).unwrap_or_else(|_| panic!("{}", printed(&out))), printed(&out))
    };
    assert_eq!(replayed["status"], "succeeded", "{replayed}");
    assert_eq!(replayed["output"], view["output"], "the replay gets the same answers");
    assert_eq!(server.received().len(), before, "the replay sent nothing");
    // A request the cassette lacks ends the replay, through either path, with nothing sent.
    let mut changed = input.clone();
    changed["requests"][0]["url"] = json!(format!("{origin}/hello?changed=1"));
    let out = project.cli(&["run", "probe", "--replay", &id, "--input", &changed.to_string(), "--json"]);
    let missed: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", printed(&out)));
    assert_eq!(missed["error"]["kind"], "replay-miss", "{missed}");
    assert_eq!(server.received().len(), before, "the replay sent nothing");

    // The value appears nowhere the host wrote or printed.
    let mut seen = vec![("run".to_owned(), said), ("replay".to_owned(), replay_printed), ("journal".into(), journal)];
    for args in [vec!["runs", "show", &id], vec!["runs", "show", &id, "--json"], vec!["runs", "logs", &id]] {
        let (out, err) = project.cli_ok(&args);
        seen.push((format!("{args:?}"), format!("{out}{err}")));
    }
    for (what, text) in &seen {
        assert_eq!(occurrences(text.as_bytes(), VALUE), 0, "{what} holds the secret:\n{text}");
    }
    for (path, bytes) in files_under(&project.path().join(".cairn")) {
        assert_eq!(occurrences(&bytes, VALUE), 0, "{} holds the secret", path.display());
    }
}

#[test]
fn destinations_not_allowed_are_refused_before_anything_is_sent() {
    refused_before_sent(false);
}

#[test]
fn wasi_http_destinations_not_allowed_are_refused_before_anything_is_sent() {
    refused_before_sent(true);
}

fn refused_before_sent(wasi: bool) {
    let server = WebServer::start();
    let other = WebServer::start();
    let (origin, port) = (server.origin(), server.port());
    let project = project(&server, "");
    let input = json!({
        "mode": "http",
        "wasi": wasi,
        "follow": true,
        "requests": [
            // Another port of the same address: not listed.
            {"url": format!("{}/hello", other.origin())},
            // A listed name that resolves to 127.0.0.1: refused after resolution.
            {"url": format!("http://localhost:{port}/hello")},
            // A redirect to a destination not listed: the 302 comes back, the follow-up is refused.
            {"url": format!("{origin}/redirect?to={}/hello", other.origin())},
            // Cloud metadata.
            {"url": "http://169.254.169.254/latest/meta-data/"},
            // A relative URL and another scheme.
            {"url": "/hello"},
            {"url": format!("ftp://127.0.0.1:{port}/hello")},
            // Past the response and time limits.
            {"url": format!("{origin}/big?bytes=2000000")},
            {"url": format!("{origin}/slow?ms=3000")},
            // Credentials in the URL (reqwest would send them as a header).
            {"url": format!("http://user:pw@127.0.0.1:{port}/hello")},
        ],
    });
    let (view, _) = run_json(&project, "probe", &input);
    let results = &view["output"]["results"];
    let error = |i: usize| results[i]["error"].as_str().unwrap_or_else(|| panic!("request {i} got an answer: {view}"));
    // The host's own words: its messages through `cairn:task/http`, the
    // probe's names for its error codes through `wasi:http`.
    let (denied, prohibited) = if wasi {
        ("http-denied: the host denied", "http-prohibited: the name resolves to a private address")
    } else {
        ("http-denied: ", "http-prohibited: outbound request to localhost")
    };
    let not_listed = if wasi { denied } else { "allowed_outbound_hosts" };
    assert!(error(0).starts_with(denied) && error(0).contains(not_listed), "{view}");
    assert!(error(1).starts_with(prohibited), "{view}");
    assert!(error(2).contains(not_listed), "the redirect's target is checked like any request: {view}");
    assert!(error(3).contains(not_listed), "{view}");
    if wasi {
        // wasi:http needs a scheme and authority: the client refuses before the host could.
        assert!(error(4).starts_with("http-denied"), "{view}");
        assert!(error(5).starts_with("http-denied: not a URL the host sends"), "{view}");
    } else {
        assert!(error(4).contains("cannot be sent"), "{view}");
        assert!(error(5).contains("only absolute http:// and https:// URLs"), "{view}");
    }
    assert!(error(6).starts_with("http-too-large"), "{view}");
    assert!(error(7).starts_with("http-timeout"), "{view}");
    let credentials = if wasi { denied } else { "credentials in a URL are not sent" };
    assert!(error(8).contains(credentials), "{view}");
    assert!(other.received().is_empty(), "nothing reached the destination not listed");
    let paths: Vec<String> = server.received().into_iter().map(|r| r.path).collect();
    assert_eq!(paths.iter().filter(|p| p.as_str() == "/hello").count(), 0, "localhost's request never left: {paths:?}");
    assert!(paths.iter().any(|p| p.starts_with("/redirect")), "{paths:?}");

    // `*` reaches public names and addresses only: never a private address, in
    // whatever form the URL writes it.
    let forms = ["127.0.0.1", "2130706433", "127.1", "0x7f.0.0.1", "0177.0.0.1", "[::ffff:127.0.0.1]"];
    let requests: Vec<Value> = forms.iter().map(|host| json!({"url": format!("http://{host}:{port}/hello")})).collect();
    let wild = json!({"mode": "http", "wasi": wasi, "requests": requests});
    let (view, _) = run_json(&project, "wild", &wild);
    for (i, host) in forms.iter().enumerate() {
        let message = view["output"]["results"][i]["error"].as_str().unwrap_or_default();
        assert!(message.starts_with("http-denied"), "{host}: {view}");
    }
    assert_eq!(server.hits("/hello"), 0, "no form of 127.0.0.1 got through");
}

#[test]
fn the_operators_list_cuts_every_environments_down() {
    let server = WebServer::start();
    let project = project(&server, "");
    let input = json!({"mode": "http", "requests": [{"url": format!("{}/hello", server.origin())}]});
    let run = |operator: &str| {
        let out = Command::new(cairn_bin())
            .env("CAIRN_OUTBOUND_HOSTS", operator)
            .args(["--manifest", project.manifest.to_str().unwrap(), "run", "probe", "--json", "--input"])
            .arg(input.to_string())
            .output()
            .unwrap();
        serde_json::from_slice::<Value>(&out.stdout).unwrap_or_else(|_| panic!("{}", printed(&out)))
    };
    let view = run("https://api.example.com, http://127.0.0.1:1");
    assert!(view["output"]["results"][0]["error"].as_str().unwrap_or_default().starts_with("http-denied"), "{view}");
    assert_eq!(server.hits("/hello"), 0);
    let view = run(&format!("http://127.0.0.1:{}", server.port()));
    assert_eq!(view["output"]["results"][0]["status"], 200, "{view}");
    // A pattern the operator got wrong stops the host with the reason.
    let out = Command::new(cairn_bin())
        .env("CAIRN_OUTBOUND_HOSTS", "api.example.com")
        .args(["--manifest", project.manifest.to_str().unwrap(), "run", "probe", "--input", "{}"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", printed(&out));
    assert!(printed(&out).contains("CAIRN_OUTBOUND_HOSTS") && printed(&out).contains("no scheme"), "{}", printed(&out));
}

#[test]
fn a_bad_pattern_in_the_manifest_is_an_error_naming_it() {
    let project = Project::new(
        r#"
        [environments.web]
        allowed_outbound_hosts = ["https://api.example.com/v1"]

        [tasks.probe]
        component = "{probe}"
        environment = "web"
        "#,
    );
    let out = project.cli(&["status"]);
    assert!(!out.status.success());
    let said = printed(&out);
    assert!(said.contains("allowed_outbound_hosts") && said.contains("never a path"), "{said}");
}

#[test]
fn the_python_and_javascript_helpers_and_fetch_take_the_same_journaled_path() {
    let server = WebServer::start();
    let origin = server.origin();
    let project = project(&server, "");
    project.cli_ok(&["secret", "create", "web-key", VALUE]);
    for (task, fetch, from) in [("py", false, "py"), ("js", false, "js"), ("js", true, "fetch")] {
        let input = json!({
            "mode": "http",
            "fetch": fetch,
            "fail_after": true,
            "requests": [
                {"url": format!("{origin}/echo-auth?from={from}"), "secret_header": ["authorization", "web-key"]},
                {"url": format!("{origin}/post?from={from}"), "method": "POST", "body": "abcd"},
                {"url": format!("{origin}/flaky?from={from}")},
                {"url": format!("{}/hello", WebServer::start().origin())},
            ],
        });
        let (view, said) = run_json(&project, task, &input);
        assert_eq!(view["status"], "succeeded", "{from}: {view}");
        let results = &view["output"]["results"];
        assert_eq!(results[0]["body"], "Bearer {{secret:web-key}}", "{from}: {view}");
        assert_eq!(results[1]["body"], "got 4 bytes", "{from}: {view}");
        assert_eq!(results[2]["body"], "recovered", "{from}: {view}");
        let denied = results[3]["error"].as_str().unwrap_or_default();
        let kind = if fetch { "http-failed" } else { "http-denied" };
        assert!(denied.starts_with(kind), "{from}: {view}");
        assert_eq!(server.hits(&format!("/echo-auth?from={from}")), 1, "{from}: sent once over two attempts");
        assert_eq!(server.hits(&format!("/post?from={from}")), 1, "{from}: sent once over two attempts");
        assert_eq!(server.hits(&format!("/flaky?from={from}")), 2, "{from}: the 503 is asked again");
        let attempt = &view["attempts"][1];
        assert_eq!(
            (&attempt["http_requests_live"], &attempt["http_requests_replayed"]),
            (&json!(1), &json!(2)),
            "{from}"
        );
        assert_eq!(occurrences(said.as_bytes(), VALUE), 0, "{from}: {said}");
    }
    let auth: Vec<_> = server
        .received()
        .into_iter()
        .filter_map(|r| r.headers.into_iter().find(|(n, _)| n == "authorization").map(|(_, v)| v))
        .collect();
    assert_eq!(auth, vec![format!("Bearer {VALUE}"); 3], "each language's header reached the server once");
    for (path, bytes) in files_under(&project.path().join(".cairn")) {
        assert_eq!(occurrences(&bytes, VALUE), 0, "{} holds the secret", path.display());
    }
}

#[test]
fn a_secret_bound_to_hosts_goes_only_there_and_never_to_the_task() {
    let server = WebServer::start();
    let project = project(&server, "");
    project.cli_ok(&["secret", "create", "bound-key", VALUE]);
    // The task cannot read it.
    let (view, _) = run_json(&project, "probe", &json!({"mode": "secret", "key": "bound-key"}));
    assert_eq!((&view["output"]["found"], &view["output"]["error"]), (&json!(false), &json!("not-declared")), "{view}");
    let message = view["output"]["message"].as_str().unwrap();
    assert!(message.starts_with("secret \"bound-key\" is bound to outbound hosts"), "the host's words, once: {view}");
    // Its placeholder is filled for its host, and refused for another allowed one.
    let manifest = std::fs::read_to_string(&project.manifest).unwrap();
    let other = manifest.split("# other = ").nth(1).and_then(|rest| rest.lines().next()).unwrap().trim().to_owned();
    for wasi in [false, true] {
        let input = json!({"mode": "http", "wasi": wasi, "requests": [
            {"url": format!("{}/echo-auth?wasi={wasi}", server.origin()), "secret_header": ["authorization", "bound-key"]},
            {"url": format!("http://127.0.0.1:{other}/echo-auth"), "secret_header": ["authorization", "bound-key"]},
        ]});
        let (view, said) = run_json(&project, "probe", &input);
        let results = &view["output"]["results"];
        assert_eq!(results[0]["body"], "Bearer {{secret:bound-key}}", "{view}");
        let refused = results[1]["error"].as_str().unwrap_or_default();
        let why = if wasi { "http-failed: " } else { "goes only to" };
        assert!(refused.starts_with("http-failed") && refused.contains(why), "{view}");
        assert_eq!(occurrences(said.as_bytes(), VALUE), 0, "{said}");
    }
    let auth: Vec<_> = server
        .received()
        .into_iter()
        .filter_map(|r| r.headers.into_iter().find(|(n, _)| n == "authorization"))
        .collect();
    assert_eq!(auth, vec![("authorization".to_owned(), format!("Bearer {VALUE}")); 2], "once per path, to its host");
}
