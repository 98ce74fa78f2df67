//! Serve benchmark: what going through `cairn serve` costs, against running
//! in-process, measured in the same run (medians of timed rounds after
//! warm-up, with their spread; ratios of medians).
//!
//! 1. a probe run submitted over HTTP and awaited (`"wait": true`) vs the
//!    same run in-process (`Host::run`): latency;
//! 2. 1,000 runs submitted at once and all awaited: runs/s through the API
//!    (concurrent POSTs, then the task's counts polled) vs in-process
//!    (`Host::submit` ×1,000, then waiting for the background to empty);
//! 3. a second refiner run (mock LLM) through the server, whose pool is warm,
//!    vs a fresh `cairn run` process doing the same;
//! 4. with N runs in the store (default 1,000 and 100,000; `-- N…`): a
//!    `/metrics` scrape, and what the dashboard's run page reads (the run,
//!    its journal, its children).
//!
//! Run with `cargo bench -p cairn --bench serve` after `./x setup`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn::manifest::Manifest;
use cairn::model::{RunRecord, RunStatus, Tenant};
use cairn::runner::{Host, RunOptions};
use cairn::store::prelude::*;
use cairn::store::redb::RedbStore;
use serde_json::{Value, json};

#[path = "support/measure.rs"]
mod measure;
use measure::{Plan, Series, per_second, repeat_async, us_per};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// A project of the probe and the refiner (pooled), on the mock LLM.
fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let components = repo().join("guest-examples/components");
    let manifest = format!(
        r#"
[llm]
default = "mock"
[llm.providers.mock]
kind = "mock"
latency = "5ms"

[environments.llm]
reuse = {{ replicas = 1, concurrency = 4 }}

[tasks.probe]
component = "{}"

[tasks.report-refiner]
component = "{}"
environment = "llm"
"#,
        components.join("probe.wasm").display(),
        components.join("report-refiner.wasm").display()
    );
    std::fs::write(dir.path().join("cairn.toml"), manifest).unwrap();
    dir
}

/// A `cairn serve` child on `dir`, with its URL and token.
struct Server {
    child: Child,
    url: String,
    token: String,
    http: reqwest::Client,
}

impl Server {
    fn start(dir: &Path) -> Server {
        let info = dir.join(".cairn/serve.json");
        let _ = std::fs::remove_file(&info);
        let child = Command::new(env!("CARGO_BIN_EXE_cairn"))
            .arg("--manifest")
            .arg(dir.join("cairn.toml"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cairn serve starts");
        let started = Instant::now();
        let info: Value = loop {
            if let Some(info) = std::fs::read(&info).ok().and_then(|b| serde_json::from_slice(&b).ok()) {
                break info;
            }
            assert!(started.elapsed() < Duration::from_secs(60), "no serve.json");
            std::thread::sleep(Duration::from_millis(10));
        };
        let token = std::fs::read_to_string(info["token_file"].as_str().unwrap()).unwrap();
        let http = reqwest::Client::builder().pool_max_idle_per_host(1024).build().unwrap();
        Server { child, url: info["url"].as_str().unwrap().to_owned(), token, http }
    }

    async fn get(&self, path: &str) -> Value {
        let response = self.http.get(format!("{}{path}", self.url)).bearer_auth(&self.token).send().await.unwrap();
        assert!(response.status().is_success(), "GET {path}: {}", response.status());
        response.json().await.unwrap_or(Value::Null)
    }

    async fn text(&self, path: &str) -> String {
        self.http
            .get(format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    async fn submit(&self, task: &str, input: Value, wait: bool) -> Value {
        let body = json!({"task": task, "input": input, "wait": wait});
        let response = self
            .http
            .post(format!("{}/api/v1/runs", self.url))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "submit: {}", response.status());
        response.json().await.unwrap()
    }

    async fn succeeded(&self, task: &str) -> u64 {
        let tasks = self.get("/api/v1/tasks").await;
        let found = tasks["tasks"].as_array().unwrap().iter().find(|t| t["name"] == task).cloned();
        found.and_then(|t| t["stats"]["succeeded"].as_u64()).unwrap_or(0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

const ECHO: &str = r#"{"mode": "echo"}"#;

async fn latency(host: &Arc<Host>, server: &Server) {
    let plan = Plan::new(20, 200);
    let (mut local, mut remote) = (Series::new(), Series::new());
    for round in plan.rounds() {
        let started = Instant::now();
        let run = host.run("probe", ECHO).await.unwrap();
        local.add(round, us_per(started.elapsed(), 1));
        assert_eq!(run.status, RunStatus::Succeeded);
        let started = Instant::now();
        let run = server.submit("probe", json!({"mode": "echo"}), true).await;
        remote.add(round, us_per(started.elapsed(), 1));
        assert_eq!(run["status"], "succeeded");
    }
    println!("\n1. a probe run, start to finish ({})", plan.describe());
    println!("   in-process Host::run           {}", local.show_us());
    println!("   over HTTP (POST, wait: true)   {}   {} the in-process run", remote.show_us(), remote.ratio(&local));
}

async fn throughput(host: &Arc<Host>, server: &Arc<Server>, runs: u64) {
    let plan = Plan::new(1, 5);
    let (mut local, mut remote) = (Series::new(), Series::new());
    for round in plan.rounds() {
        let started = Instant::now();
        let mut submits = tokio::task::JoinSet::new();
        for i in 0..runs {
            let host = host.clone();
            submits.spawn(async move {
                host.submit("probe", &json!({"mode": "echo", "i": i}).to_string(), RunOptions::default())
                    .await
                    .unwrap();
            });
        }
        while submits.join_next().await.is_some() {}
        while host.background_runs() > 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        local.add(round, per_second(runs, started.elapsed()));

        let before = server.succeeded("probe").await;
        let started = Instant::now();
        let mut submits = tokio::task::JoinSet::new();
        for i in 0..runs {
            let server = server.clone();
            submits.spawn(async move { server.submit("probe", json!({"mode": "echo", "i": i}), false).await });
        }
        while submits.join_next().await.is_some() {}
        while server.succeeded("probe").await < before + runs {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        remote.add(round, per_second(runs, started.elapsed()));
    }
    println!("\n2. {runs} runs submitted at once, all awaited ({})", plan.describe());
    println!("   in-process (concurrent Host::submit) {} runs/s", local.show(""));
    println!(
        "   over HTTP (concurrent POSTs)         {} runs/s   {} the in-process rate",
        remote.show(""),
        remote.ratio(&local)
    );
}

async fn warm_refiner(dir: &Path, server: &Server) {
    let plan = Plan::new(1, 7);
    let topic = json!({"topic": "Tides", "max_rounds": 2});
    server.submit("report-refiner", topic.clone(), true).await;
    let (mut warm, mut fresh) = (Series::new(), Series::new());
    let fresh_dir = project();
    let input = topic.to_string();
    // The fresh process's component cache is warm too: what differs is the process.
    let run_fresh = || {
        let started = Instant::now();
        let status = Command::new(env!("CARGO_BIN_EXE_cairn"))
            .arg("--manifest")
            .arg(fresh_dir.path().join("cairn.toml"))
            .args(["run", "report-refiner", "--quiet", "--input", &input])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        us_per(started.elapsed(), 1)
    };
    run_fresh();
    for round in plan.rounds() {
        let started = Instant::now();
        let run = server.submit("report-refiner", topic.clone(), true).await;
        warm.add(round, us_per(started.elapsed(), 1));
        assert_eq!(run["status"], "succeeded");
        fresh.add(round, run_fresh());
    }
    let _ = dir;
    println!("\n3. the refiner (mock LLM, 5 ms a call), a second run ({})", plan.describe());
    println!("   a fresh `cairn run` process    {}", fresh.show_us());
    println!("   through the server (warm pool) {}   {} the fresh process", warm.show_us(), warm.ratio(&fresh));
}

/// Fills `dir`'s store with `count` finished runs of the probe (no server running).
async fn fill(dir: &Path, count: usize) {
    let store = Arc::new(RedbStore::open(&dir.join(".cairn/cairn.redb")).unwrap());
    let mut writers = tokio::task::JoinSet::new();
    for chunk in 0..count.div_ceil(1000) {
        let store = store.clone();
        let n = 1000.min(count - chunk * 1000);
        writers.spawn(async move {
            for _ in 0..n {
                let mut run =
                    RunRecord::new(uuid::Uuid::now_v7().to_string(), Tenant::default(), "probe".into(), ECHO.into());
                run.status = RunStatus::Succeeded;
                run.output = Some(ECHO.into());
                store.create_run(&run).await.unwrap();
            }
        });
        if writers.len() >= 64 {
            writers.join_next().await;
        }
    }
    while writers.join_next().await.is_some() {}
}

async fn reads_at(size: usize) -> (Series, Series) {
    let dir = project();
    fill(dir.path(), size).await;
    let server = Server::start(dir.path());
    let run = server.submit("report-refiner", json!({"topic": "Tides", "max_rounds": 2}), true).await;
    let id = run["run_id"].as_str().unwrap().to_owned();
    let plan = Plan::new(5, 40);
    let metrics = repeat_async(plan, async || {
        let started = Instant::now();
        let text = server.text("/metrics").await;
        assert!(text.contains("cairn_runs{"));
        us_per(started.elapsed(), 1)
    })
    .await;
    let page = repeat_async(plan, async || {
        let started = Instant::now();
        server.get(&format!("/api/v1/runs/{id}")).await;
        server.get(&format!("/api/v1/runs/{id}/journal")).await;
        server.get(&format!("/api/v1/runs?parent={id}&limit=200")).await;
        us_per(started.elapsed(), 1)
    })
    .await;
    (metrics, page)
}

fn main() {
    let sizes: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let sizes = if sizes.is_empty() { vec![1_000, 100_000] } else { sizes };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let (local_dir, remote_dir) = (project(), project());
        let host = Host::open(Manifest::load(&local_dir.path().join("cairn.toml")).unwrap()).unwrap();
        let server = Arc::new(Server::start(remote_dir.path()));
        println!("serve: in-process vs through `cairn serve` (release build, this machine, this run)");
        latency(&host, &server).await;
        throughput(&host, &server, 1000).await;
        warm_refiner(remote_dir.path(), &server).await;
        println!("\n4. reads with N runs in the store (a /metrics scrape; the run page's three reads)");
        let mut base: Option<(Series, Series)> = None;
        for size in sizes {
            let (metrics, page) = reads_at(size).await;
            let growth = |now: &Series, then: Option<&Series>| {
                then.map(|t| format!("   {} the first size", now.ratio(t))).unwrap_or_default()
            };
            println!(
                "   {size:>7} runs: /metrics {}{}",
                metrics.show_us(),
                growth(&metrics, base.as_ref().map(|b| &b.0))
            );
            println!("   {size:>7} runs: run page {}{}", page.show_us(), growth(&page, base.as_ref().map(|b| &b.1)));
            base.get_or_insert((metrics, page));
        }
    });
}
