//! The `escape` mode: every way out of the run's directory a hostile guest
//! might try, through std (the WASI adapter) and through `wasi:filesystem`
//! directly. Each attempt answers `"ok:..."` if it got out (read, wrote,
//! listed or learned something of the host's) and `"err:..."` if it was
//! refused; the host side checks that all were refused and that nothing
//! outside the run's directory changed.

use std::io::Write;

use serde_json::{Map, Value, json};

use crate::symlink;

/// `{"attempts": {name: "ok:..." | "err:...", ...}}`. `other` (optional) is
/// another run's id, whose `work/secret.txt` the guest tries to read.
pub fn escape(args: &Value) -> Value {
    let mut out = Map::new();
    let mut attempt = |name: &str, result: String| {
        out.insert(name.to_owned(), Value::String(result));
    };
    std::fs::write("note.txt", "mine").ok();
    std::fs::create_dir_all("a/b").ok();

    // Reads out by path.
    for (name, path) in [
        ("read_dotdot", "../outside.txt"),
        ("read_dotdot_twice", "../../outside.txt"),
        ("read_dot_dotdot", "./../outside.txt"),
        ("read_nested_dotdot", "a/b/../../../outside.txt"),
        ("read_absolute", "/etc/passwd"),
        ("read_double_slash", "//etc/passwd"),
        ("read_proc_environ", "/proc/self/environ"),
        ("read_proc_root", "/proc/self/root/etc/passwd"),
        ("read_dev", "/dev/zero"),
    ] {
        attempt(name, read(path));
    }
    if let Some(other) = args.get("other").and_then(Value::as_str) {
        attempt("read_other_run", read(&format!("../../{other}/work/secret.txt")));
        attempt("list_other_run", list(&format!("../../{other}/work")));
    }

    // Links made by the guest, followed.
    attempt("symlink_dotdot", through_link("../../outside.txt", "l_dotdot"));
    attempt("symlink_absolute", through_link("/etc/passwd", "l_abs"));
    let chained = symlink("l_dotdot", "l_chain").map_or_else(|e| format!("err:{e}"), |()| read("l_chain"));
    attempt("symlink_chain", chained);
    let dir_link = symlink("../..", "l_up").map_or_else(|e| format!("err:{e}"), |()| read("l_up/outside.txt"));
    attempt("symlink_dir_up", dir_link);
    let write_link = symlink("../../pwned-by-link.txt", "l_write")
        .map_or_else(|e| format!("err:{e}"), |()| write("l_write", "pwned"));
    attempt("write_through_symlink", write_link);

    // Listing and looking around.
    attempt("list_parent", list(".."));
    // `/` is the run's directory itself to a WASI guest: only a host name counts.
    attempt("list_root", host_names(list("/")));
    attempt("list_parent_of_root", host_names(list("/..")));
    attempt("metadata_absolute", std::fs::metadata("/etc/passwd").map_or_else(err, |m| format!("ok:{}", m.len())));
    let real = std::fs::canonicalize("..").map_or_else(err, |p| format!("ok:{}", p.display()));
    attempt("canonicalize_parent", host_names(real));

    // Writes, renames and links out.
    attempt("write_dotdot", write("../pwned.txt", "pwned"));
    attempt("write_absolute", write("/tmp/cairn-pwned.txt", "pwned"));
    attempt("truncate_outside", truncate("../outside.txt"));
    attempt("mkdir_dotdot", std::fs::create_dir("../pwned-dir").map_or_else(err, ok));
    attempt("rename_out", std::fs::rename("note.txt", "../moved.txt").map_or_else(err, ok));
    attempt("rename_in", std::fs::rename("../outside.txt", "stolen.txt").map_or_else(err, ok));
    attempt("hard_link_in", std::fs::hard_link("../outside.txt", "hl_in.txt").map_or_else(err, ok));
    attempt("hard_link_out", std::fs::hard_link("note.txt", "../hl_out.txt").map_or_else(err, ok));
    attempt("remove_outside", std::fs::remove_file("../outside.txt").map_or_else(err, ok));
    attempt("remove_parent_tree", std::fs::remove_dir_all("..").map_or_else(err, ok));

    // `wasi:filesystem` directly, past the adapter's own checks.
    attempt("wasi_open_dotdot", wasi_open("../outside.txt"));
    attempt("wasi_open_absolute", wasi_open("/etc/passwd"));
    attempt("wasi_open_nested_dotdot", wasi_open("a/../../outside.txt"));
    attempt("wasi_open_through_link", wasi_open("l_dotdot"));
    attempt("wasi_preopens", preopens());

    // The host's environment and network.
    let foreign: Vec<String> = std::env::vars().map(|(k, _)| k).filter(|k| !k.starts_with("CAIRN_")).collect();
    attempt(
        "environment",
        if foreign.is_empty() { "err:only CAIRN_ variables".into() } else { format!("ok:{foreign:?}") },
    );
    attempt("tcp_connect", std::net::TcpStream::connect("127.0.0.1:22").map_or_else(err, |_| "ok:connected".into()));
    attempt("udp_bind", std::net::UdpSocket::bind("0.0.0.0:0").map_or_else(err, |_| "ok:bound".into()));

    json!({ "attempts": out })
}

fn err(e: std::io::Error) -> String {
    format!("err:{e}")
}

fn ok<T>(_: T) -> String {
    "ok:done".into()
}

fn read(path: &str) -> String {
    match std::fs::read(path) {
        Ok(bytes) => format!("ok:{}", String::from_utf8_lossy(&bytes[..bytes.len().min(256)])),
        Err(e) => err(e),
    }
}

fn write(path: &str, text: &str) -> String {
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_or_else(err, ok)
}

fn truncate(path: &str) -> String {
    std::fs::OpenOptions::new().write(true).truncate(true).open(path).map_or_else(err, ok)
}

fn list(path: &str) -> String {
    match std::fs::read_dir(path) {
        Ok(entries) => {
            let names: Vec<String> = entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
            format!("ok:{names:?}")
        }
        Err(e) => err(e),
    }
}

/// `result`, unless it is an `ok` that names nothing of the host's (the
/// guest saw only its own directory under another name).
fn host_names(result: String) -> String {
    let host = ["etc", "usr", "outside.txt", "runs", ".cairn", "proc"];
    match result.strip_prefix("ok:") {
        Some(seen) if !host.iter().any(|name| seen.contains(name)) => {
            format!("err:sees only its own directory: {seen}")
        }
        _ => result,
    }
}

fn through_link(target: &str, link: &str) -> String {
    match symlink(target, link) {
        Ok(()) => read(link),
        Err(e) => format!("err:symlink: {e}"),
    }
}

fn wasi_open(path: &str) -> String {
    use wasi::filesystem::types::{DescriptorFlags, OpenFlags, PathFlags};
    let Some((dir, _)) = wasi::filesystem::preopens::get_directories().into_iter().next() else {
        return "err:no preopen".into();
    };
    match dir.open_at(PathFlags::SYMLINK_FOLLOW, path, OpenFlags::empty(), DescriptorFlags::READ) {
        Ok(file) => match file.read(256, 0) {
            Ok((bytes, _)) => format!("ok:{}", String::from_utf8_lossy(&bytes)),
            Err(code) => format!("err:opened but unreadable: {code:?}"),
        },
        Err(code) => format!("err:{code:?}"),
    }
}

/// `ok` if anything but the run's own directory (`.`) is preopened.
fn preopens() -> String {
    let names: Vec<String> = wasi::filesystem::preopens::get_directories().into_iter().map(|(_, name)| name).collect();
    // The run's directory, and the read-only folder of the files it was given.
    if names == [".", "in"] {
        "err:only the run's directory and its staged files".into()
    } else {
        format!("ok:{names:?}")
    }
}
