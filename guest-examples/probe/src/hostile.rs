//! Modes that attack the host's own resources from inside the sandbox, as a
//! hostile tenant would: `bomb` (a task that submits itself), `flood` (the
//! report, journal and groups), `handles` (descriptors and resource-table
//! entries, through `wasi:filesystem` directly, past the WASI adapter's own
//! cap) and `disk` (bytes, files, sparse files and deep trees in the run's
//! directory).

use cairn_sdk::{TaskError, tasks, traced};
use serde_json::{Value, json};

use crate::u64_arg;

/// Grows what the host keeps of the run: appends `report_bytes` bytes to the
/// report `times` times (default 1), records `traces` traced steps of
/// `trace_bytes` bytes each, then opens `groups` groups one inside the other,
/// each named with `name_bytes` bytes (default 8). `{"done": true}`.
pub fn flood(args: &Value) -> Result<Value, TaskError> {
    let chunk = "x".repeat(usize::try_from(u64_arg(args, "report_bytes")?.unwrap_or(0)).unwrap_or(0));
    for _ in 0..u64_arg(args, "times")?.unwrap_or(1) {
        if !chunk.is_empty() {
            cairn_sdk::report::append("flood", &chunk);
        }
    }
    let value = "t".repeat(usize::try_from(u64_arg(args, "trace_bytes")?.unwrap_or(0)).unwrap_or(0));
    for i in 0..u64_arg(args, "traces")?.unwrap_or(0) {
        traced(&format!("flood-{i}"), &json!(i), || Ok::<_, TaskError>(value.clone()))?;
    }
    let name = "g".repeat(usize::try_from(u64_arg(args, "name_bytes")?.unwrap_or(8)).unwrap_or(8));
    let groups: Vec<tasks::Group> =
        (0..u64_arg(args, "groups")?.unwrap_or(0)).map(|_| tasks::Group::new(&name)).collect();
    Ok(json!({ "done": true, "groups": groups.len() }))
}

/// A fork bomb: submits this same input to task `task` (default `probe`)
/// `width` times (default 2) and waits for them all; the first failure (a
/// submission refused, or a child's) becomes this run's error. `{"descendants":
/// n}`, counted from the children's answers. With `levels`, a tree that many
/// levels deep whose leaves sleep `leaf_ms` (every parent waits on its children).
pub fn bomb(args: &Value, input: &str) -> Result<Value, TaskError> {
    let task = args.get("task").and_then(Value::as_str).unwrap_or("probe");
    let width = u64_arg(args, "width")?.unwrap_or(2);
    let mut again: Value = serde_json::from_str(input).map_err(|e| TaskError::invalid_input(e.to_string()))?;
    if let Some(levels) = u64_arg(args, "levels")? {
        if levels == 0 {
            std::thread::sleep(std::time::Duration::from_millis(u64_arg(args, "leaf_ms")?.unwrap_or(0)));
            return Ok(json!({ "descendants": 0 }));
        }
        again["levels"] = json!(levels - 1);
    }
    let children = (0..width).map(|_| tasks::submit(task, &again)).collect::<Result<Vec<_>, _>>()?;
    let mut descendants = 0;
    for child in &children {
        let answer: Value = serde_json::from_str(&child.get()?).unwrap_or_default();
        descendants += 1 + answer["descendants"].as_u64().unwrap_or(0);
    }
    Ok(json!({ "descendants": descendants }))
}

/// Opens the file `held` `files` times through `wasi:filesystem` (each a
/// host descriptor; with `"streams": true` each kept by a stream over it,
/// its descriptor dropped) and subscribes `pollables` clock pollables,
/// holding them all; then sleeps `hold_ms`. `{"opened": n, "pollables": n}`, or the first
/// refusal the guest sees as `{"refused": "...", "opened": n}`.
pub fn handles(args: &Value) -> Result<Value, TaskError> {
    use wasi::filesystem::types::{DescriptorFlags, OpenFlags, PathFlags};
    let files = u64_arg(args, "files")?.unwrap_or(0);
    let (dir, _) = wasi::filesystem::preopens::get_directories()
        .into_iter()
        .next()
        .ok_or_else(|| TaskError::new("no-preopen", "probe: no directory is preopened"))?;
    // With `streams`, each file is held by a stream over it and its descriptor dropped.
    let streams = args.get("streams") == Some(&Value::Bool(true));
    let (mut opened, mut held_streams) = (Vec::new(), Vec::new());
    for _ in 0..files {
        match dir.open_at(PathFlags::empty(), "held", OpenFlags::CREATE, DescriptorFlags::READ) {
            Ok(file) if streams => match file.read_via_stream(0) {
                Ok(stream) => held_streams.push(stream),
                Err(code) => return Ok(json!({ "refused": format!("{code:?}"), "opened": held_streams.len() })),
            },
            Ok(file) => opened.push(file),
            Err(code) => {
                let count = opened.len() + held_streams.len();
                return Ok(json!({ "refused": format!("{code:?}"), "opened": count }));
            }
        }
    }
    let opened = [opened.len(), held_streams.len()];
    let pollables: Vec<_> = (0..u64_arg(args, "pollables")?.unwrap_or(0))
        .map(|_| wasi::clocks::monotonic_clock::subscribe_duration(1_000_000_000))
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(u64_arg(args, "hold_ms")?.unwrap_or(0)));
    Ok(json!({ "opened": opened[0] + opened[1], "pollables": pollables.len() }))
}

/// Fills the run's directory: `files` empty files, one file of `bytes`
/// bytes written 1 MiB at a time, `unlinked` bytes into a file removed
/// first (held open), a `sparse` file of that length (no data written), and
/// `depth` directories one inside the other. `{"done": true}`,
/// or the first error as `{"error": "..."}`.
pub fn disk(args: &Value) -> Result<Value, TaskError> {
    let failed = |what: &str, e: std::io::Error| Ok(json!({ "error": format!("{what}: {e}") }));
    if let Some(files) = u64_arg(args, "files")? {
        std::fs::create_dir_all("many").map_err(|e| TaskError::new("io", e.to_string()))?;
        for i in 0..files {
            if let Err(e) = std::fs::write(format!("many/{i}"), b"") {
                return failed("files", e);
            }
        }
    }
    if let Some(bytes) = u64_arg(args, "bytes")? {
        let mut file = std::fs::File::create("big").map_err(|e| TaskError::new("io", e.to_string()))?;
        if let Err(e) = fill(&mut file, bytes) {
            return failed("bytes", e);
        }
    }
    if let Some(bytes) = u64_arg(args, "unlinked")? {
        // Written to a file whose name is gone: no directory listing shows it.
        let mut file = std::fs::File::create("hidden").map_err(|e| TaskError::new("io", e.to_string()))?;
        if let Err(e) = std::fs::remove_file("hidden").and_then(|()| fill(&mut file, bytes)) {
            return failed("unlinked", e);
        }
    }
    if let Some(sparse) = u64_arg(args, "sparse")? {
        let file = std::fs::File::create("sparse").map_err(|e| TaskError::new("io", e.to_string()))?;
        if let Err(e) = file.set_len(sparse) {
            return failed("sparse", e);
        }
    }
    if let Some(depth) = u64_arg(args, "depth")? {
        let mut path = std::path::PathBuf::from("deep");
        std::fs::create_dir_all(&path).map_err(|e| TaskError::new("io", e.to_string()))?;
        for _ in 0..depth {
            path.push("d");
            if let Err(e) = std::fs::create_dir(&path) {
                return failed("depth", e);
            }
        }
    }
    std::thread::sleep(std::time::Duration::from_millis(u64_arg(args, "hold_ms")?.unwrap_or(0)));
    Ok(json!({ "done": true }))
}

/// Writes `bytes` bytes to `file`, 1 MiB at a time.
fn fill(file: &mut std::fs::File, bytes: u64) -> std::io::Result<()> {
    use std::io::Write;
    let chunk = vec![7u8; 1 << 20];
    let mut written = 0u64;
    while written < bytes {
        let n = chunk.len().min(usize::try_from(bytes - written).unwrap_or(chunk.len()));
        file.write_all(&chunk[..n])?;
        written += n as u64;
    }
    Ok(())
}
