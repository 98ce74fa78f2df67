//! What a guest's journaled outbound HTTP request costs, and how that grows:
//!
//! 1. One GET to a local server: sent from the host itself with reqwest (the
//!    floor), through a guest's `cairn:task/http` live (checked, sent,
//!    journaled durably), answered from the run's own journal on a retry,
//!    and answered from a cassette in a replay (which copies each answer into
//!    the new run's journal, durably). Each as µs per request in runs of 100
//!    requests (the retry: 1,000, timed by its attempt record's milliseconds),
//!    after an echo run's cost is taken off.
//! 2. Growth: µs per request, live and replayed, for runs of 10, 100 and
//!    1,000 requests (every request is one more journal entry to key and load).
//!
//! Run with `./x bench` (or `cargo bench -p cairn --bench outbound`).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Instant;

use cairn::manifest::Manifest;
use cairn::runner::{Host, RunOptions};
use serde_json::json;

#[path = "support/measure.rs"]
mod measure;
#[path = "support/probe.rs"]
mod probe;
use measure::{Plan, Series, us_per};
use probe::scratch_project;

/// A keep-alive HTTP/1.1 server that answers every request with a small JSON body.
fn serve() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut stream = stream;
                stream.set_nodelay(true).unwrap();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    loop {
                        let mut header = String::new();
                        if reader.read_line(&mut header).unwrap_or(0) == 0 || header.trim().is_empty() {
                            break;
                        }
                    }
                    // One write, so no delayed ACK holds the body back.
                    let body = r#"{"ok":true}"#;
                    let answer = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len());
                    if stream.write_all(answer.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

fn input(port: u16, requests: usize) -> String {
    let list: Vec<_> = (0..requests).map(|i| json!({"url": format!("http://127.0.0.1:{port}/item/{i}")})).collect();
    json!({"mode": "http", "requests": list}).to_string()
}

/// µs per request of a retry that answers `requests` from the run's own journal.
fn retried(runtime: &tokio::runtime::Runtime, host: &Arc<Host>, plan: Plan, port: u16, requests: usize) -> Series {
    let mut text: serde_json::Value = serde_json::from_str(&input(port, requests)).unwrap();
    text["fail_after"] = json!(true);
    let text = text.to_string();
    let mut series = Series::new();
    for round in plan.rounds() {
        let run = runtime.block_on(host.run("retried", &text)).unwrap();
        assert!(run.error.is_none(), "{:?}", run.error);
        let second = &run.attempts[1];
        assert_eq!((second.http_live, second.http_replayed), (0, requests as u32));
        let took = second.finished_at_ms.saturating_sub(second.started_at_ms) as f64 * 1000.0;
        series.add(round, took / requests as f64);
    }
    series
}

/// µs of one run of `input` (live, or replaying `replay`).
fn timed(runtime: &tokio::runtime::Runtime, host: &Arc<Host>, input: &str, replay: Option<&str>) -> (f64, String) {
    let options = RunOptions { replay: replay.map(str::to_owned), ..RunOptions::default() };
    let started = Instant::now();
    let run = runtime.block_on(host.run_with("probe", input, &options)).unwrap();
    let took = us_per(started.elapsed(), 1);
    assert!(run.error.is_none(), "{:?}", run.error);
    assert!(!run.output.unwrap_or_default().contains("error"), "a request failed");
    (took, run.id)
}

/// µs per request of live runs and of their replays, `requests` to a run, less an echo run.
fn per_request(
    runtime: &tokio::runtime::Runtime,
    host: &Arc<Host>,
    plan: Plan,
    port: u16,
    requests: usize,
) -> (Series, Series) {
    let (mut live, mut replayed) = (Series::new(), Series::new());
    let text = input(port, requests);
    for round in plan.rounds() {
        let (echo, _) = timed(runtime, host, r#"{"mode": "echo"}"#, None);
        let (sent, id) = timed(runtime, host, &text, None);
        let (again, _) = timed(runtime, host, &text, Some(&id));
        live.add(round, (sent - echo).max(0.0) / requests as f64);
        replayed.add(round, (again - echo).max(0.0) / requests as f64);
    }
    (live, replayed)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let plan = Plan::new(1, 7);
    println!("outbound: {}", plan.describe());
    let port = serve();
    let (_scratch, manifest) = scratch_project(&format!(
        "[environments.web]\nallowed_outbound_hosts = [\"http://127.0.0.1:{port}\"]\n\
         [tasks.probe]\ncomponent = {{probe}}\nenvironment = \"web\"\n\
         [tasks.retried]\ncomponent = {{probe}}\nenvironment = \"web\"\nretries = 1\n"
    ));
    let host = runtime.block_on(async { Host::open(Manifest::load(&manifest).unwrap()).unwrap() });

    println!("1. one GET to a local server, µs per request (runs of 100, an echo run's cost taken off)");
    let client = reqwest::Client::new();
    let mut direct = Series::new();
    for round in plan.rounds() {
        let started = Instant::now();
        runtime.block_on(async {
            for i in 0..100 {
                let url = format!("http://127.0.0.1:{port}/item/{i}");
                client.get(url).send().await.unwrap().bytes().await.unwrap();
            }
        });
        direct.add(round, us_per(started.elapsed(), 100));
    }
    let (live, replayed) = per_request(&runtime, &host, plan, port, 100);
    let again = retried(&runtime, &host, plan, port, 1_000);
    println!("   reqwest from the host          {}", direct.show_us());
    println!("   guest, live, journaled         {}  = {}", live.show_us(), live.ratio(&direct));
    println!("   guest, retry (own journal)     {}  = {}", again.show_us(), again.ratio(&direct));
    println!("   guest, cassette replay         {}  = {}", replayed.show_us(), replayed.ratio(&direct));

    println!("2. growth: µs per request as a run makes more of them");
    let mut base: Option<(Series, Series)> = None;
    for requests in [10usize, 100, 1_000] {
        let (live, replayed) = per_request(&runtime, &host, Plan::new(1, 5), port, requests);
        match &base {
            None => println!("   {requests:>5} requests: live {}, replayed {}", live.show_us(), replayed.show_us()),
            Some((l, r)) => println!(
                "   {requests:>5} requests: live {} = {}, replayed {} = {}",
                live.show_us(),
                live.ratio(l),
                replayed.show_us(),
                replayed.ratio(r)
            ),
        }
        base.get_or_insert((live, replayed));
    }
}
