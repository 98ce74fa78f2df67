//! Files passed by reference (`cairn_sdk::File`), for the blob tests:
//!
//! - `blob-write`: writes `mib` MiB (default 1) of a known pattern to `path`
//!   (default `out/data.bin`) in 1 MiB pieces; without `child`, returns
//!   `{"file": File::from_path(path), "checksum"}`; with `child` (a task
//!   name), gives the file to that task in `blob-read` mode, then reads the
//!   file the child hands back, and returns the three checksums and the
//!   reference;
//! - `blob-read`: reads `file` (a reference it was given) in 1 MiB pieces
//!   and returns `{"checksum", "size", "path", "file"}`, the same reference
//!   passed back; with `tamper`, first tries to write into it, and reports how
//!   that failed;
//! - `blob-forge`: puts `digest`, a blob it was not given, in its output
//!   (or, with `child`, in a child's input, reporting the refusal);
//! - `blob-dir`: without `dir`, writes `out/tree/{a.txt, sub/b.txt}` and
//!   returns `{"dir": Dir::from_path("out/tree")}`; with `dir` (a reference
//!   it was given), returns the names and texts it finds in it.

use std::io::{Read, Write};

use cairn_sdk::{Dir, File, TaskError, files, tasks};
use serde_json::{Value, json};

const MIB: usize = 1 << 20;

/// 64-bit FNV-1a, continued over `bytes`.
fn fnv(mut hash: u64, bytes: &[u8]) -> u64 {
    for byte in bytes {
        hash = (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

fn io(what: &str, e: std::io::Error) -> TaskError {
    TaskError::new("io", format!("probe: {what}: {e}"))
}

/// Reads `path` in 1 MiB pieces: its checksum and size.
fn checksum(path: &str) -> Result<(u64, u64), TaskError> {
    let mut file = std::fs::File::open(path).map_err(|e| io(path, e))?;
    let mut buffer = vec![0u8; MIB];
    let (mut hash, mut size) = (FNV_START, 0u64);
    loop {
        let n = file.read(&mut buffer).map_err(|e| io(path, e))?;
        if n == 0 {
            return Ok((hash, size));
        }
        hash = fnv(hash, &buffer[..n]);
        size += n as u64;
    }
}

pub fn write(args: &Value) -> Result<Value, TaskError> {
    let mib = args.get("mib").and_then(Value::as_u64).unwrap_or(1);
    let path = args.get("path").and_then(Value::as_str).unwrap_or("out/data.bin");
    if let Some((parent, _)) = path.rsplit_once('/') {
        std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
    }
    let mut file = std::fs::File::create(path).map_err(|e| io(path, e))?;
    let mut piece = vec![0u8; MIB];
    let mut hash = FNV_START;
    for i in 0..mib {
        for (j, byte) in piece.iter_mut().enumerate() {
            *byte = (j as u64 ^ i.wrapping_mul(0x9e37)) as u8;
        }
        hash = fnv(hash, &piece);
        file.write_all(&piece).map_err(|e| io(path, e))?;
    }
    drop(file);
    let reference = File::from_path(path);
    let Some(child) = args.get("child").and_then(Value::as_str) else {
        return Ok(json!({ "file": reference, "checksum": hash.to_string() }));
    };
    let seen: Value = tasks::call_json(child, &json!({ "mode": "blob-read", "file": reference }))?;
    let back: File = serde_json::from_value(seen["file"].clone())
        .map_err(|e| TaskError::new("probe", format!("the child's output has no file: {e}")))?;
    let (again, size) = checksum(&back.path())?;
    Ok(json!({
        "wrote": hash.to_string(),
        "child_saw": seen["checksum"],
        "back": again.to_string(),
        "size": size,
        "file": back,
        "staged_at": back.path(),
    }))
}

pub fn read(args: &Value) -> Result<Value, TaskError> {
    let file: File = serde_json::from_value(args.get("file").cloned().unwrap_or(Value::Null))
        .map_err(|e| TaskError::invalid_input(format!("probe: `file` is not a file reference: {e}")))?;
    let path = file.path();
    let tamper = args.get("tamper").and_then(Value::as_bool).unwrap_or(false).then(|| {
        let write = std::fs::OpenOptions::new().write(true).open(&path).map(|_| "opened for writing".to_owned());
        let remove = std::fs::remove_file(&path).map(|()| "removed".to_owned());
        let outside = std::fs::read_dir("in/..").map(|_| "listed in/..".to_owned());
        json!({
            "write": write.unwrap_or_else(|e| format!("{:?}", e.kind())),
            "remove": remove.unwrap_or_else(|e| format!("{:?}", e.kind())),
            "climb": outside.unwrap_or_else(|e| format!("{:?}", e.kind())),
        })
    });
    let (hash, size) = checksum(&path)?;
    // What is staged for this run: on a warm instance, nothing of an earlier run's.
    let staged = files::list("in")?;
    Ok(
        json!({ "checksum": hash.to_string(), "size": size, "path": path, "file": file, "tamper": tamper, "staged": staged }),
    )
}

pub fn forge(args: &Value) -> Result<Value, TaskError> {
    let digest = args.get("digest").and_then(Value::as_str).unwrap_or_default();
    let forged = json!({ "$file": digest, "name": "stolen.bin" });
    match args.get("child").and_then(Value::as_str) {
        None => Ok(json!({ "file": forged })),
        Some(child) => match tasks::call(child, &json!({ "mode": "blob-read", "file": forged })) {
            Ok(output) => Ok(json!({ "child": output })),
            Err(e) => Ok(json!({ "refused": { "kind": e.kind, "message": e.message } })),
        },
    }
}

pub fn dir(args: &Value) -> Result<Value, TaskError> {
    let Some(given) = args.get("dir").cloned() else {
        files::write_text("out/tree/a.txt", "alpha")?;
        files::write_text("out/tree/sub/b.txt", "beta")?;
        return Ok(json!({ "dir": Dir::from_path("out/tree") }));
    };
    let dir: Dir = serde_json::from_value(given)
        .map_err(|e| TaskError::invalid_input(format!("probe: `dir` is not a directory reference: {e}")))?;
    let root = dir.path();
    Ok(json!({
        "top": dir.list(".")?,
        "sub": dir.list("sub")?,
        "a": files::read_text(&format!("{root}/a.txt"))?,
        "b": files::read_text(&format!("{root}/sub/b.txt"))?,
        "count": dir.file_count(),
    }))
}
