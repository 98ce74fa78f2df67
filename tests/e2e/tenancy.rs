//! Tenants kept apart: one tenant's tokens see and touch nothing of
//! another's, through the API and the CLI; roles bound what a token may do.

use std::process::{Command, Output};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::guests::cairn_bin;
use crate::support::project::{Project, printed};
use crate::support::serve::Served;

/// B's secret: finding it in anything A is answered is a leak.
const B_SECRET: &str = "bee-secret-value-0451";

const MANIFEST: &str = r#"
    [llm]
    default = "priced"

    [llm.providers.priced]
    kind = "mock"
    latency = "1ms"
    price = { input = 1.0, output = 2.0 }

    [environments.secretive]
    secrets = ["b-key"]

    [tasks.probe]
    component = "{probe}"
    environment = "secretive"
    cache = "auto"
"#;

/// `cairn --project P --domain D ARGS` on the project, with the server and token given.
fn cli_as(project: &Project, tenant: &str, token: Option<(&str, &str)>, args: &[&str]) -> Output {
    let (p, d) = tenant.split_once('/').unwrap();
    let mut command = Command::new(cairn_bin());
    command.arg("--manifest").arg(&project.manifest).args(["--project", p, "--domain", d]).args(args);
    if let Some((url, token)) = token {
        command.env("CAIRN_SERVER", url).env("CAIRN_TOKEN", token);
    }
    command.output().expect("cairn starts")
}

/// A token made with the CLI (no server): `(token, id)`.
fn token(project: &Project, tenant: &str, role: &str) -> (String, String) {
    let out = cli_as(project, tenant, None, &["tokens", "create", "--role", role, "--json"]);
    assert!(out.status.success(), "{}", printed(&out));
    let made: Value = serde_json::from_slice(&out.stdout).unwrap();
    (made["token"].as_str().unwrap().to_owned(), made["id"].as_str().unwrap().to_owned())
}

/// A run made with the CLI (no server); its id.
fn run(project: &Project, tenant: &str, input: &str) -> String {
    let out = cli_as(project, tenant, None, &["run", "probe", "--input", input, "--json"]);
    let view: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", printed(&out)));
    view["run_id"].as_str().unwrap().to_owned()
}

struct Api<'a> {
    served: &'a Served,
    http: reqwest::Client,
}

impl Api<'_> {
    /// One request: status and body text.
    async fn call(
        &self,
        token: &str,
        tenant: Option<&str>,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, String) {
        let mut request = self.http.request(method, format!("{}{path}", self.served.url)).bearer_auth(token);
        if let Some(tenant) = tenant {
            request = request.header("x-cairn-tenant", tenant);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("the server answers");
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_default())
    }

    /// What an event stream sends within `window` (its first bytes, at least).
    async fn events(&self, path: &str, window: Duration) -> (u16, String) {
        let mut response = self.http.get(format!("{}{path}", self.served.url)).send().await.unwrap();
        let status = response.status().as_u16();
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + window;
        while let Ok(Ok(Some(chunk))) = tokio::time::timeout_at(deadline, response.chunk()).await {
            seen.extend_from_slice(&chunk);
        }
        (status, String::from_utf8_lossy(&seen).into_owned())
    }
}

#[test]
fn a_tenants_tokens_see_and_touch_nothing_of_another_tenant() {
    let project = Project::new(MANIFEST);
    let (a, b) = ("ay/prod", "bee/prod");
    // B's things, made without a server: a secret, a run (cached), a dead letter.
    let out = cli_as(&project, b, None, &["secret", "create", "b-key", B_SECRET]);
    assert!(out.status.success(), "{}", printed(&out));
    let b_run = run(&project, b, r#"{"mode": "llm-calls", "calls": 2}"#);
    let b_dead = run(&project, b, r#"{"mode": "error", "kind": "boom", "message": "b's failure"}"#);
    let (a_admin, a_admin_id) = token(&project, a, "admin");
    let (a_viewer, _) = token(&project, a, "viewer");
    let (a_submitter, _) = token(&project, a, "submitter");
    let (b_viewer, b_viewer_id) = token(&project, b, "viewer");
    let (revoked, revoked_id) = token(&project, a, "admin");
    let out = cli_as(&project, a, None, &["tokens", "revoke", &revoked_id]);
    assert!(out.status.success(), "{}", printed(&out));
    let listed = printed(&cli_as(&project, a, None, &["tokens", "list"]));
    assert!(listed.contains(&a_admin_id) && !listed.contains(&b_viewer_id) && !listed.contains(&a_admin), "{listed}");

    let served = Served::start(&project, &[]);
    let api =
        Api { served: &served, http: reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap() };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        // The positive control: B's own token sees its run.
        let (status, body) = api.call(&b_viewer, None, Method::GET, &format!("/api/v1/runs/{b_run}"), None).await;
        assert_eq!(status, 200, "{body}");

        // A's admin token on B's things: each refused, 404 (its tenant has no such thing) or 403.
        let mut answers = Vec::new();
        let refused: Vec<(Method, String, Option<Value>, u16)> = vec![
            (Method::GET, format!("/api/v1/runs/{b_run}"), None, 404),
            (Method::GET, format!("/api/v1/runs/{b_run}/journal"), None, 404),
            (Method::GET, format!("/api/v1/runs/{b_run}/logs"), None, 404),
            (Method::GET, format!("/api/v1/runs/{b_run}/report"), None, 404),
            (Method::GET, format!("/api/v1/runs/{b_run}/events"), None, 404),
            (Method::POST, format!("/api/v1/runs/{b_run}/cancel"), None, 404),
            (Method::POST, format!("/api/v1/runs/{b_run}/resume"), Some(json!({"force": true})), 404),
            (Method::GET, format!("/api/v1/runs/{b_dead}"), None, 404),
            (Method::GET, format!("/api/v1/dlq/{b_dead}"), None, 404),
            (Method::POST, format!("/api/v1/dlq/{b_dead}/retry"), Some(json!({})), 404),
            (Method::DELETE, format!("/api/v1/dlq/{b_dead}"), None, 404),
            (Method::DELETE, "/api/v1/secrets/b-key".to_owned(), None, 404),
            (Method::DELETE, format!("/api/v1/tokens/{b_viewer_id}"), None, 404),
            (Method::GET, "/metrics".to_owned(), None, 403),
            (Method::PUT, "/api/v1/quota".to_owned(), Some(json!({"key": "cost_per_day", "value": "1000"})), 403),
        ];
        for (method, path, body, expected) in refused {
            let (status, answer) = api.call(&a_admin, None, method.clone(), &path, body).await;
            assert_eq!(status, expected, "{method} {path} by A's admin: {answer}");
            answers.push((format!("{method} {path}"), answer));
        }
        // Naming B's tenant with A's token: 403, whatever the route.
        for (method, path) in [
            (Method::GET, "/api/v1/runs".to_owned()),
            (Method::GET, format!("/api/v1/runs/{b_run}")),
            (Method::GET, "/api/v1/secrets".to_owned()),
            (Method::GET, "/api/v1/usage".to_owned()),
            (Method::POST, "/api/v1/cache/clear".to_owned()),
        ] {
            let (status, answer) = api.call(&a_admin, Some(b), method.clone(), &path, Some(json!({}))).await;
            assert_eq!(status, 403, "{method} {path} as {b} with A's token: {answer}");
            answers.push((format!("{method} {path} as B"), answer));
        }
        let (status, answer) =
            api.events(&format!("/api/v1/events?token={a_admin}&tenant=bee%2Fprod"), Duration::ZERO).await;
        assert_eq!(status, 403, "{answer}");
        // Listings in A's tenant hold nothing of B's.
        for path in [
            "/api/v1/runs?children=true",
            "/api/v1/dlq",
            "/api/v1/secrets",
            "/api/v1/tokens",
            "/api/v1/status",
            "/api/v1/tasks",
            "/api/v1/usage?by=task",
            "/api/v1/quota",
            "/api/v1/pools",
            "/api/v1/breakers",
        ] {
            let (status, answer) = api.call(&a_admin, None, Method::GET, path, None).await;
            assert_eq!(status, 200, "{path}: {answer}");
            answers.push((path.to_owned(), answer));
        }
        let (_, usage) = api.call(&a_admin, None, Method::GET, "/api/v1/usage", None).await;
        assert_eq!(serde_json::from_str::<Value>(&usage).unwrap()["total"]["calls"], 0, "{usage}");
        // A's cache clear leaves B's cache: B's same run is still answered from it.
        let (status, answer) = api.call(&a_admin, None, Method::POST, "/api/v1/cache/clear", Some(json!({}))).await;
        assert_eq!(status, 200, "{answer}");

        // A's event stream, while B runs: none of B's events.
        let (b_submitter, _) = token(&project, b, "submitter");
        let a_events = format!("/api/v1/events?token={a_admin}");
        let listen = api.events(&a_events, Duration::from_millis(1500));
        let submit = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let body = json!({"task": "probe", "input": {"mode": "llm-calls", "calls": 1, "fresh": 1}, "wait": true});
            api.call(&b_submitter, None, Method::POST, "/api/v1/runs", Some(body)).await
        };
        let ((status, stream), (submitted, run)) = tokio::join!(listen, submit);
        assert_eq!((status, submitted), (200, 200), "{run}");
        let b_live = serde_json::from_str::<Value>(&run).unwrap()["run_id"].as_str().unwrap().to_owned();
        assert!(stream.contains("hello") && !stream.contains(&b_live), "A's stream showed B's run: {stream}");

        // Roles: what a token may do in its own tenant.
        let submit = json!({"task": "probe", "input": {"mode": "echo"}});
        let role_checks = [
            (&a_viewer, Method::POST, "/api/v1/runs", Some(submit.clone()), 403),
            (&a_viewer, Method::POST, "/api/v1/cache/clear", Some(json!({})), 403),
            (&a_submitter, Method::DELETE, "/api/v1/dlq", None, 403),
            (&a_submitter, Method::GET, "/api/v1/secrets", None, 403),
            (&a_submitter, Method::POST, "/api/v1/tokens", Some(json!({"role": "admin"})), 403),
            (&a_submitter, Method::POST, "/api/v1/gc", Some(json!({"older_than": "30d"})), 403),
            (&a_submitter, Method::POST, "/api/v1/runs", Some(submit.clone()), 202),
            (&a_viewer, Method::GET, "/api/v1/runs", None, 200),
            (&revoked, Method::GET, "/api/v1/runs", None, 401),
            (&"cairn_0000_nope".to_owned(), Method::GET, "/api/v1/runs", None, 401),
        ];
        for (token, method, path, body, expected) in role_checks {
            let (status, answer) = api.call(token, None, method.clone(), path, body).await;
            assert_eq!(status, expected, "{method} {path}: {answer}");
            answers.push((format!("{method} {path} by role"), answer));
        }
        // An admin makes a token of its own tenant only, shown once.
        let (status, made) =
            api.call(&a_admin, Some(a), Method::POST, "/api/v1/tokens", Some(json!({"role": "viewer"}))).await;
        assert_eq!(status, 201, "{made}");
        let made: Value = serde_json::from_str(&made).unwrap();
        assert_eq!(made["tenant"], a);
        let (_, listed) = api.call(&a_admin, None, Method::GET, "/api/v1/tokens", None).await;
        assert!(!listed.contains(made["token"].as_str().unwrap()) && !listed.contains("secret_sha256"), "{listed}");

        // Nothing of B's in anything A was answered (but the id A asked about, echoed).
        for (what, answer) in &answers {
            for b_thing in [b_run.as_str(), b_dead.as_str(), B_SECRET, "b-key", b_viewer_id.as_str(), "b's failure"] {
                if what.contains(b_thing) {
                    continue;
                }
                assert!(!answer.contains(b_thing), "{what} answered A with B's {b_thing:?}: {answer}");
            }
        }
    });

    // The CLI through the server with A's token: B's runs are not there; naming B is refused.
    let server = Some((served.url.as_str(), a_admin.as_str()));
    for args in [
        vec!["runs", "show", &b_run],
        vec!["runs", "journal", &b_run],
        vec!["runs", "logs", &b_run],
        vec!["report", &b_run],
        vec!["dlq", "show", &b_dead],
        vec!["runs", "cancel", &b_run],
    ] {
        let out = cli_as(&project, a, server, &args);
        assert!(!out.status.success(), "cairn {args:?} as A succeeded: {}", printed(&out));
        assert!(!printed(&out).contains(B_SECRET), "{}", printed(&out));
    }
    let out = cli_as(&project, b, server, &["runs", "list"]);
    assert!(!out.status.success() && printed(&out).contains("cannot act in bee/prod"), "{}", printed(&out));
    let listed = printed(&cli_as(&project, a, server, &["runs", "list", "--children"]));
    assert!(!listed.contains(&b_run) && !listed.contains(&b_dead), "{listed}");
    let secrets = printed(&cli_as(&project, a, server, &["secret", "list"]));
    assert!(!secrets.contains("b-key"), "{secrets}");
    drop(served);

    // And without a server, acting as A: B's runs are not there either.
    let out = cli_as(&project, a, None, &["runs", "show", &b_run]);
    assert!(!out.status.success() && printed(&out).contains("no run with id"), "{}", printed(&out));
    // B's cache survived A's clear: B's first run is answered from it.
    let again =
        cli_as(&project, b, None, &["run", "probe", "--input", r#"{"mode": "llm-calls", "calls": 2}"#, "--json"]);
    let again: Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(again["cached_from"], b_run.as_str(), "{again}");
}
