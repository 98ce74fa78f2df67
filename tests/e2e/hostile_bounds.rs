//! Every attack of the hostile probe, run as an operator would (`cairn run`
//! in a process of its own): each ends with its own kind, the host process's
//! peak memory stays under a stated bound, the store grows by less than a
//! stated bound, and a time limit ends its attempt within 100 ms of itself.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::support::guests::cairn_bin;
use crate::support::project::Project;
use crate::support::web_server::WebServer;

/// The environment the attacks run in: small limits, so each is reached fast.
const LIMITS: &str = r#"memory = "64MiB", timeout = "3s", max_input = "64KiB", max_report = "1MiB",
    max_journal = "1MiB", max_children = 20, max_depth = 6, max_descendants = 60, max_handles = 256, max_open_files = 64,
    max_disk = "16MiB", max_files = 500"#;
const GUEST_MEMORY: u64 = 64 << 20;
const TIMEOUT: Duration = Duration::from_secs(3);

/// The host's peak memory may pass an echo run's by the guest's memory and this much.
const RSS_SLACK: u64 = 96 << 20;
/// The store may grow by this much per attack (a run record, its error, what a limit let through).
const STORE_SLACK: u64 = 4 << 20;

/// What one `cairn run` took.
struct Measured {
    run: Value,
    peak_rss: u64,
    stderr: String,
}

/// Runs `cairn run probe --json --input INPUT`, measuring the process's peak
/// resident memory (`wait4`'s `ru_maxrss`).
#[allow(clippy::zombie_processes, reason = "reaped by wait4, which also reports its peak memory")]
fn run_measured(project: &Project, task: &str, input: &str) -> Measured {
    let mut child = Command::new(cairn_bin())
        .arg("--manifest")
        .arg(&project.manifest)
        .args(["run", task, "--json", "--input", input])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cairn starts");
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let stdout = std::thread::spawn(move || {
        let mut text = String::new();
        out.read_to_string(&mut text).unwrap();
        text
    });
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        err.read_to_string(&mut text).unwrap();
        text
    });
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value; wait4 writes it and the status.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: the pid is this test's own child, not yet reaped; both pointers are valid.
    let reaped = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    assert!(reaped > 0, "wait4: {}", std::io::Error::last_os_error());
    let (stdout, stderr) = (stdout.join().unwrap(), stderr.join().unwrap());
    let run = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("no run printed ({e}):\n{stdout}\n{stderr}"));
    Measured { run, peak_rss: usage.ru_maxrss as u64 * 1024, stderr }
}

fn store_size(project: &Project) -> u64 {
    std::fs::metadata(project.path().join(".cairn/cairn.redb")).map_or(0, |m| m.len())
}

fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let meta = entry.metadata().unwrap();
        total += if meta.is_dir() { dir_size(&entry.path()) } else { meta.len() };
    }
    total
}

#[test]
fn each_attack_ends_with_its_own_kind_within_the_hosts_bounds() {
    let web = WebServer::start();
    let project = Project::new(&format!(
        r#"
        retention = {{ keep_dirs = true }}

        [environments.hostile]
        resources = {{ {LIMITS} }}

        # Outbound HTTP with room in the journal, so that only the host's cap on
        # requests in flight bounds what a flood makes it hold.
        [environments.outbound]
        resources = {{ {roomy} }}
        allowed_outbound_hosts = ["{origin}"]

        [tasks.probe]
        component = "{{probe}}"
        environment = "hostile"

        [tasks.outbound]
        component = "{{probe}}"
        environment = "outbound"
        "#,
        origin = web.origin(),
        roomy = LIMITS.replace(r#"max_journal = "1MiB""#, r#"max_journal = "1GiB""#),
    ));
    let baseline = run_measured(&project, "probe", r#"{"mode": "echo"}"#);
    assert_eq!(baseline.run["status"], "succeeded", "{}", baseline.stderr);
    let rss_bound = baseline.peak_rss + GUEST_MEMORY + RSS_SLACK;
    let big_input = format!(r#"{{"mode": "echo", "pad": "{}"}}"#, "x".repeat(100 << 10));

    // (attack, input, the kind it ends with)
    let attacks: Vec<(&str, String, &str)> = vec![
        ("fork bomb, wide", r#"{"mode": "bomb", "width": 4}"#.into(), "too-many-descendants"),
        ("fork bomb, deep", r#"{"mode": "bomb", "width": 1}"#.into(), "too-deep"),
        ("children", r#"{"mode": "fanout", "count": 30}"#.into(), "too-many-children"),
        ("input", big_input, "input-too-large"),
        ("report", r#"{"mode": "flood", "report_bytes": 524288, "times": 8}"#.into(), "report-too-large"),
        ("groups", r#"{"mode": "flood", "groups": 100000}"#.into(), "group-limit"),
        ("journal", r#"{"mode": "flood", "traces": 20, "trace_bytes": 204800}"#.into(), "journal-too-large"),
        ("error message", r#"{"mode": "error", "kind": "boom", "message_bytes": 10000000}"#.into(), "boom"),
        ("descriptors", r#"{"mode": "handles", "files": 5000}"#.into(), "too-many-open-files"),
        (
            "descriptors behind streams",
            r#"{"mode": "handles", "files": 5000, "streams": true}"#.into(),
            "too-many-open-files",
        ),
        ("pollables", r#"{"mode": "handles", "pollables": 100000}"#.into(), "too-many-handles"),
        ("disk bytes", r#"{"mode": "disk", "bytes": 1073741824}"#.into(), "disk-limit"),
        ("disk files", r#"{"mode": "disk", "files": 100000}"#.into(), "disk-limit"),
        ("removed file held open", r#"{"mode": "disk", "unlinked": 1073741824}"#.into(), "disk-limit"),
        ("sparse file", r#"{"mode": "disk", "sparse": 1099511627776}"#.into(), "disk-limit"),
        ("deep tree", r#"{"mode": "disk", "depth": 1000}"#.into(), "disk-limit"),
        ("memory", r#"{"mode": "alloc", "mb": 512}"#.into(), "out-of-memory"),
        ("spin", r#"{"mode": "loop"}"#.into(), "timeout"),
        // 200 responses of 32 KiB held unread. Without the host's cap of 8 requests
        // in flight per instance, all 200 are held (6.25 MiB, and journaled) and the run
        // succeeds; with it, the guest waits on its own unread responses until its timeout.
        (
            "outbound HTTP, responses held unread",
            format!(r#"{{"mode": "http-flood", "url": "{}/big?bytes=32768", "count": 200}}"#, web.origin()),
            "timeout",
        ),
    ];
    let mut report = Vec::new();
    for (attack, input, kind) in attacks {
        let before = store_size(&project);
        let task = if attack.starts_with("outbound") { "outbound" } else { "probe" };
        let measured = run_measured(&project, task, &input);
        let run = &measured.run;
        let grown = store_size(&project).saturating_sub(before);
        assert_eq!(run["status"], "failed", "{attack}: {run}\n{}", measured.stderr);
        assert_eq!(run["error"]["kind"], kind, "{attack}: {}", run["error"]);
        assert!(
            measured.peak_rss < rss_bound,
            "{attack}: host peak {} MiB, bound {} MiB",
            measured.peak_rss >> 20,
            rss_bound >> 20
        );
        assert!(grown < STORE_SLACK, "{attack}: the store grew by {grown} bytes");
        if attack.starts_with("outbound") {
            assert_eq!(web.hits("/big?bytes=32768"), 8, "{attack}: only the 8 in flight were sent");
        }
        let message = run["error"]["message"].as_str().unwrap();
        assert!(message.len() <= 17 << 10, "{attack}: a {}-byte error message", message.len());
        for attempt in run["attempts"].as_array().unwrap() {
            let took = Duration::from_millis(attempt["duration_ms"].as_u64().unwrap());
            assert!(took <= TIMEOUT + Duration::from_millis(100), "{attack}: an attempt took {took:?}");
        }
        if attack.starts_with("disk bytes") {
            let dir = project.path().join(".cairn/runs").join(run["run_id"].as_str().unwrap());
            // What one measuring interval lets a guest write past the limit.
            let left = dir_size(&dir);
            assert!(left < (16 << 20) + (64 << 20), "{attack}: {left} bytes left");
            eprintln!("{attack}: {} KiB written past the 16 MiB limit", left.saturating_sub(16 << 20) >> 10);
        }
        report.push(format!("{attack}: {kind}, peak {} MiB, store +{} KiB", measured.peak_rss >> 20, grown >> 10));
    }
    eprintln!("echo baseline peak {} MiB\n{}", baseline.peak_rss >> 20, report.join("\n"));
}
