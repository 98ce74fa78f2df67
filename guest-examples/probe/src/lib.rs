//! `probe`: a test fixture with one behaviour per input `mode`. It implements
//! the raw `run(string)` export (no typed input), so `echo` returns its input
//! byte for byte and stays cheap.
//!
//! Modes: `echo`, `llm-calls`, `llm-json`, `fs`, `trap`, `loop`, `alloc`, `big-output`,
//! `error`, `secret`, `use-secret`, `leak-secret`, `trace`, `traced-llm`, `stdout`, and for
//! warm instances and child tasks: `counter`, `sleep`, `fanout` and `call`
//! (see each function); attacks on the host's own resources in [`hostile`];
//! outbound HTTP (`http`) in [`outbound`]; files passed by reference
//! (`blob-write`, `blob-read`, `blob-forge`) in [`blobs`].

mod blobs;
mod escape;
mod hostile;
mod outbound;

use std::sync::atomic::{AtomicU64, Ordering};

use cairn_sdk::bindings::Guest;
use cairn_sdk::{TaskError, tasks, traced};
use serde::Deserialize;
use serde_json::{Value, json};

struct Probe;

impl Guest for Probe {
    /// Says nothing of its input: each mode reads its own arguments.
    fn describe() -> String {
        "{}".to_owned()
    }

    fn run(input: String) -> Result<String, TaskError> {
        #[derive(Deserialize)]
        struct Mode<'a> {
            #[serde(borrow)]
            mode: std::borrow::Cow<'a, str>,
        }
        let mode = serde_json::from_str::<Mode>(&input)
            .map_err(|e| TaskError::invalid_input(format!("expected {{\"mode\": ...}}: {e}")))?;
        if mode.mode == "echo" {
            return Ok(input);
        }
        let args: Value = serde_json::from_str(&input).map_err(|e| TaskError::invalid_input(e.to_string()))?;
        let out = match &*mode.mode {
            "llm-calls" => llm_calls(&args)?,
            "llm-json" => llm_json(&args)?,
            "fs" => fs(&args)?,
            "files" => files_tour()?,
            "blob-write" => blobs::write(&args)?,
            "blob-read" => blobs::read(&args)?,
            "blob-forge" => blobs::forge(&args)?,
            "blob-dir" => blobs::dir(&args)?,
            "trap" => panic!("probe: trap requested"),
            "loop" => spin(),
            "alloc" => alloc(&args)?,
            "big-output" => big_output(&args)?,
            "error" => return Err(error(&args)?),
            "secret" => secret(&args)?,
            "use-secret" => use_secret(&args)?,
            "leak-secret" => leak_secret(&args)?,
            "trace" => trace(&args)?,
            "traced-llm" => traced_llm(&args)?,
            "stdout" => stdout(&args),
            "counter" => counter(),
            "sleep" => sleep(&args)?,
            "fanout" => fanout(&args)?,
            "call" => call(&args)?,
            "bomb" => hostile::bomb(&args, &input)?,
            "flood" => hostile::flood(&args)?,
            "handles" => hostile::handles(&args)?,
            "disk" => hostile::disk(&args)?,
            "escape" => escape::escape(&args),
            "http" => outbound::requests(&args)?,
            "http-flood" => outbound::flood(&args)?,
            other => return Err(TaskError::invalid_input(format!("unknown mode {other:?}"))),
        };
        Ok(out.to_string())
    }
}

cairn_sdk::bindings::export!(Probe);

pub(crate) fn u64_arg(args: &Value, key: &str) -> Result<Option<u64>, TaskError> {
    match args.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| TaskError::invalid_input(format!("`{key}` must be a non-negative integer"))),
    }
}

fn str_arg<'a>(args: &'a Value, key: &str) -> Result<&'a str, TaskError> {
    args.get(key).and_then(Value::as_str).ok_or_else(|| TaskError::invalid_input(format!("`{key}` must be a string")))
}

/// `calls` LLM calls with prompts "question 1", "question 2", ...; on attempt 1
/// with `fail_after` = K, fails with a retryable `flaky` error after K calls.
fn llm_calls(args: &Value) -> Result<Value, TaskError> {
    let calls = u64_arg(args, "calls")?.unwrap_or(1);
    let fail_after = u64_arg(args, "fail_after")?;
    let first_attempt = cairn_sdk::env::attempt() == 1;
    let flaky =
        |done: u64| TaskError::new("flaky", format!("probe: failing on purpose after {done} call(s) on attempt 1"));
    let mut answers = Vec::new();
    for i in 1..=calls {
        if first_attempt && fail_after == Some(i - 1) {
            return Err(flaky(i - 1));
        }
        answers.push(cairn_sdk::call_llm(&format!("question {i}"), "You are a probe.", false)?);
    }
    if first_attempt && fail_after == Some(calls) {
        return Err(flaky(calls));
    }
    Ok(json!({ "answers": answers }))
}

/// Asks for `{"colours": [...]}` with `call_llm_json` (prompt "List three
/// colours", `attempts` asks, default 2) and returns the colours.
fn llm_json(args: &Value) -> Result<Value, TaskError> {
    #[derive(Deserialize)]
    struct Colours {
        colours: Vec<String>,
    }
    let attempts = u64_arg(args, "attempts")?.unwrap_or(2) as u32;
    let answer: Colours =
        cairn_sdk::call_llm_json("List three colours", "You are a probe.", |_: &Colours| Ok(()), attempts)?;
    Ok(json!({ "colours": answer.colours }))
}

/// Tries to leave the sandbox in several ways; each result is "ok:<content>" or
/// "err:<message>" (`err:symlink: ...` when the link itself could not be made).
///
/// `symlink_dotdot` makes link `escape` -> `../../outside.txt`, which from the
/// run's `work` directory names the file `outside.txt` beside the run
/// directories, and reads through it; `symlink_abs` tries the same with an
/// absolute link to `/etc/passwd`. With `"planted": NAME`, the guest then waits
/// (up to a minute) for the host side to put a link NAME into its directory and
/// reads through it (`planted`; "missing" if it never came).
/// The SDK's file API, the same steps as in the Python and JavaScript probes:
/// write, read, list, stat, remove, and three refusals.
fn files_tour() -> Result<Value, TaskError> {
    use cairn_sdk::files;
    files::write_text("out/notes/a.txt", "h\u{e9}llo")?;
    files::write_bytes("out/b.bin", [0u8, 1, 2, 255])?;
    let mut seen = json!({
        "text": files::read_text("out/notes/a.txt")?,
        "bytes": files::read_bytes("out/b.bin")?,
        "listed": files::list("out")?,
        "exists": [files::exists("out/b.bin")?, files::exists("nope")?],
        "size": files::size("out/notes/a.txt")?,
    });
    files::remove("out/b.bin")?;
    files::mkdir("x/y")?;
    seen["after"] = json!([files::exists("out/b.bin")?, files::list("x")?]);
    let mut errors = serde_json::Map::new();
    for (case, path) in [("missing", "missing.txt"), ("climb", "../outside.txt"), ("absolute", "/etc/passwd")] {
        let seen = match files::read_text(path) {
            Ok(_) => "read".to_owned(),
            Err(e) => {
                let e = TaskError::from(e);
                let titled = |b: bool| if b { "True" } else { "False" };
                format!("{} {} {}", e.kind, titled(e.retryable), titled(e.message.starts_with(&format!("{path}: "))))
            }
        };
        errors.insert(case.to_owned(), seen.into());
    }
    seen["errors"] = errors.into();
    Ok(seen)
}

fn fs(args: &Value) -> Result<Value, TaskError> {
    let wrote = std::fs::write("./note.txt", "hello").is_ok();
    let read_back = std::fs::read_to_string("./note.txt").unwrap_or_default();
    let dotdot = read("../outside.txt");
    let absolute = read("/etc/passwd");
    let symlink_dotdot = match symlink("../../outside.txt", "escape") {
        Ok(()) => read("escape"),
        Err(e) => format!("err:symlink: {e}"),
    };
    let symlink_abs = match symlink("/etc/passwd", "abs") {
        Ok(()) => read("abs"),
        Err(e) => format!("err:symlink: {e}"),
    };
    let planted = match args.get("planted") {
        None | Some(Value::Null) => Value::Null,
        Some(_) => {
            let name = str_arg(args, "planted")?;
            let mut waited = 0;
            while std::fs::symlink_metadata(name).is_err() && waited < 600 {
                std::thread::sleep(std::time::Duration::from_millis(100));
                waited += 1;
            }
            if std::fs::symlink_metadata(name).is_ok() { Value::String(read(name)) } else { "missing".into() }
        }
    };
    Ok(json!({
        "wrote": wrote,
        "read_back": read_back,
        "dotdot": dotdot,
        "absolute": absolute,
        "symlink_dotdot": symlink_dotdot,
        "symlink_abs": symlink_abs,
        "planted": planted,
    }))
}

fn read(path: &str) -> String {
    match std::fs::read(path) {
        Ok(bytes) => format!("ok:{}", String::from_utf8_lossy(&bytes[..bytes.len().min(4096)])),
        Err(e) => format!("err:{e}"),
    }
}

/// Creates symlink `link` -> `target` (replacing an old one) through wasi-libc,
/// since `std::os::wasi::fs::symlink_path` is still unstable.
#[cfg(target_os = "wasi")]
pub(crate) fn symlink(target: &str, link: &str) -> std::io::Result<()> {
    use std::ffi::{CString, c_char, c_int};
    unsafe extern "C" {
        fn symlink(target: *const c_char, link: *const c_char) -> c_int;
    }
    let _ = std::fs::remove_file(link);
    let target = CString::new(target)?;
    let link = CString::new(link)?;
    // SAFETY: both arguments are valid NUL-terminated strings that outlive the call.
    if unsafe { symlink(target.as_ptr(), link.as_ptr()) } == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

#[cfg(not(target_os = "wasi"))]
fn symlink(_target: &str, _link: &str) -> std::io::Result<()> {
    Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "symlinks are only tried on WASI"))
}

/// Never returns; the host's timeout must stop it.
fn spin() -> ! {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

/// Allocates `mb` MiB and writes every byte of it.
fn alloc(args: &Value) -> Result<Value, TaskError> {
    let mb = u64_arg(args, "mb")?.unwrap_or(1);
    let bytes = usize::try_from(mb.saturating_mul(1 << 20))
        .map_err(|_| TaskError::invalid_input("`mb` is too large for a 32-bit guest"))?;
    let block = std::hint::black_box(vec![1u8; bytes]);
    let touched: u64 = block.iter().step_by(4096).map(|&b| u64::from(b)).sum();
    Ok(json!({ "mb": mb, "pages_touched": touched }))
}

/// Returns a JSON string whose content is `bytes` bytes long ("xxx…").
fn big_output(args: &Value) -> Result<Value, TaskError> {
    let bytes = u64_arg(args, "bytes")?.unwrap_or(0);
    let bytes = usize::try_from(bytes).map_err(|_| TaskError::invalid_input("`bytes` is too large"))?;
    Ok(Value::String("x".repeat(bytes)))
}

/// The task error described by the input.
fn error(args: &Value) -> Result<TaskError, TaskError> {
    let kind = str_arg(args, "kind")?;
    let message = match u64_arg(args, "message_bytes")? {
        Some(n) => "m".repeat(usize::try_from(n).unwrap_or(0)),
        None => args.get("message").and_then(Value::as_str).unwrap_or("probe: error requested").to_owned(),
    };
    let retryable = args.get("retryable").and_then(Value::as_bool).unwrap_or(false);
    Ok(TaskError::new(kind, message).retryable(retryable))
}

/// Reads secret `key` and returns it (tests check that the host delivers it).
fn secret(args: &Value) -> Result<Value, TaskError> {
    let key = str_arg(args, "key")?;
    Ok(match cairn_sdk::secrets::get(key) {
        Ok(value) => json!({ "found": true, "length": value.len(), "value": value }),
        Err(e) => {
            let kind = match e {
                cairn_sdk::SecretError::NotDeclared(_) => "not-declared",
                cairn_sdk::SecretError::NotFound(_) => "not-found",
            };
            json!({ "found": false, "error": kind, "message": TaskError::from(e).message })
        }
    })
}

/// Reads secret `key` and leaves its value everywhere a run can, the way a
/// careless task would: stdout and stderr, an LLM prompt, a traced step's
/// output, a report tab, and then its error (a `leaky` error, not retryable),
/// or with `succeed` its output. The host must scrub every copy.
fn leak_secret(args: &Value) -> Result<Value, TaskError> {
    let key = str_arg(args, "key")?;
    let value = cairn_sdk::secrets::get(key)?;
    println!("leak: {value}");
    eprintln!("leak: {value}");
    let answer = cairn_sdk::call_llm(&format!("Write about {value}"), "You are a probe.", false)?;
    let step: String = traced("leak", &json!({ "key": key }), || Ok::<_, TaskError>(format!("traced {value}")))?;
    cairn_sdk::report::replace("leak", &format!("<p>the secret is {value}</p>"));
    if args.get("succeed").and_then(Value::as_bool).unwrap_or(false) {
        return Ok(json!({ "leaked": value, "step": step, "answer": answer }));
    }
    Err(TaskError::new("leaky", format!("probe: failing with the secret {value} in the message")).retryable(false))
}

/// Uses secret `key` the way a task would, and with `env` also the secret the
/// environment exposes as that variable, without ever showing either value: a
/// line on stdout and one on stderr, an LLM call, a traced step, a report tab,
/// and with `fail_first` a retryable `flaky` error on attempt 1. Returns only
/// each value's length and FNV-1a hash, so a test can tell that the right value
/// was read while it looks for the value itself everywhere the run left a trace.
fn use_secret(args: &Value) -> Result<Value, TaskError> {
    let key = str_arg(args, "key")?;
    let value = cairn_sdk::secrets::get(key)?;
    let from_env = match args.get("env").and_then(Value::as_str) {
        Some(name) => Some(
            std::env::var(name).map_err(|e| TaskError::invalid_input(format!("environment variable {name}: {e}")))?,
        ),
        None => None,
    };
    println!("probe: read secret {key} ({} bytes)", value.len());
    eprintln!("probe: using secret {key} in an LLM call and a traced step");
    let answer = cairn_sdk::call_llm("Say one thing about tides.", "You are a probe.", false)?;
    let step: u64 = traced("use-secret", &json!({ "key": key }), || Ok::<_, TaskError>(fnv1a(&value)))?;
    cairn_sdk::report::replace(
        "secret",
        &format!("<p>probe used secret {} ({} bytes)</p>", cairn_sdk::report::escape(key), value.len()),
    );
    let attempt = cairn_sdk::env::attempt();
    if args.get("fail_first").and_then(Value::as_bool).unwrap_or(false) && attempt == 1 {
        return Err(TaskError::new("flaky", format!("probe: failing on purpose after using secret {key}")));
    }
    Ok(json!({
        "key": key,
        "length": value.len(),
        "fnv": format!("{:016x}", fnv1a(&value)),
        "env_length": from_env.as_ref().map(String::len),
        "env_fnv": from_env.as_deref().map(|v| format!("{:016x}", fnv1a(v))),
        "step_fnv": format!("{step:016x}"),
        "answer": answer,
        "attempt": attempt,
    }))
}

/// 64-bit FNV-1a of `text`.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3))
}

/// A traced step that prints a line and asks the LLM `question`, counting its
/// own executions in a file of the run's directory; then, with
/// `fail_on_first_attempt`, fails on attempt 1 (retryable), to show that a
/// retry does not run the step again: `{"answer", "step_executions", "attempt"}`.
/// The same mode as in the Python and JavaScript probes. With `ask_after`, it
/// then asks the same question outside the step (`"after"`), and with
/// `fail_after_asking` fails on attempt 1 after that.
fn traced_llm(args: &Value) -> Result<Value, TaskError> {
    const COUNTER: &str = "./traced-step.count";
    let question = args.get("question").and_then(Value::as_str).unwrap_or("question 1");
    let answer: String = traced("ask", question, || {
        let mut runs = std::fs::read_to_string(COUNTER).unwrap_or_default();
        runs.push('x');
        std::fs::write(COUNTER, runs)
            .map_err(|e| TaskError::new("io", format!("probe: cannot write {COUNTER}: {e}")))?;
        println!("step body ran: {question}");
        Ok::<_, TaskError>(cairn_sdk::call_llm(question, "You are a probe.", false)?)
    })?;
    let attempt = cairn_sdk::env::attempt();
    if args.get("fail_on_first_attempt").and_then(Value::as_bool).unwrap_or(false) && attempt == 1 {
        return Err(TaskError::new("flaky", "probe: failing on purpose on attempt 1"));
    }
    let executions = std::fs::read_to_string(COUNTER).unwrap_or_default().len();
    let mut out = json!({ "answer": answer, "step_executions": executions, "attempt": attempt });
    if args.get("ask_after").and_then(Value::as_bool).unwrap_or(false) {
        // The same question again, outside the step.
        out["after"] = json!(cairn_sdk::call_llm(question, "You are a probe.", false)?);
        if args.get("fail_after_asking").and_then(Value::as_bool).unwrap_or(false) && attempt == 1 {
            return Err(TaskError::new("flaky", "probe: failing on purpose after asking again"));
        }
    }
    Ok(out)
}

/// A traced step named `name` (traced input: the request's `input`, or null)
/// whose body bumps a counter file, so a test can tell a replay from a live run.
fn trace(args: &Value) -> Result<Value, TaskError> {
    let name = str_arg(args, "name")?;
    let input = args.get("input").cloned().unwrap_or(Value::Null);
    let path = format!("./trace-{}.count", name.replace(|c: char| !c.is_ascii_alphanumeric(), "_"));
    let counter = |p: &str| std::fs::read_to_string(p).ok().and_then(|s| s.trim().parse::<u64>().ok()).unwrap_or(0);
    let value: u64 = traced(name, &input, || {
        let n = counter(&path) + 1;
        std::fs::write(&path, n.to_string())
            .map_err(|e| TaskError::new("io", format!("probe: cannot write {path}: {e}")))?;
        Ok::<_, TaskError>(n)
    })?;
    Ok(json!({ "name": name, "value": value, "file_counter": counter(&path) }))
}

/// Prints one line to stdout and one to stderr.
fn stdout(args: &Value) -> Value {
    let text = args.get("text").and_then(Value::as_str).unwrap_or("hello from probe");
    println!("stdout: {text}");
    eprintln!("stderr: {text}");
    json!({ "printed": true })
}

/// Runs of this instance so far: a global survives from run to run on a reused
/// (warm) instance and starts at 0 on a fresh one.
static RUNS: AtomicU64 = AtomicU64::new(0);

/// Counts this run in [`RUNS`]: `{"count": n, "run_id": ..., "attempt": ...}`.
fn counter() -> Value {
    let count = RUNS.fetch_add(1, Ordering::Relaxed) + 1;
    let run = tasks::current();
    json!({ "count": count, "run_id": run.run_id, "attempt": run.attempt })
}

/// Sleeps `ms` milliseconds (default 0) in the guest: `{"slept": ms}`.
fn sleep(args: &Value) -> Result<Value, TaskError> {
    let ms = u64_arg(args, "ms")?.unwrap_or(0);
    std::thread::sleep(std::time::Duration::from_millis(ms));
    Ok(json!({ "slept": ms }))
}

/// Submits `count` children of `task` (default `probe`), then waits for all of
/// them, inside group `group` if given: `{"children": N, "failed": k,
/// "outputs_bytes": total length of the successful outputs}`.
///
/// Child `i` (from 0) gets `child` with a field `"i": null` replaced by `i`, or
/// `{"mode": "echo", "i": i}` when `child` is absent.
fn fanout(args: &Value) -> Result<Value, TaskError> {
    let task = args.get("task").and_then(Value::as_str).unwrap_or("probe");
    let count = u64_arg(args, "count")?.unwrap_or(1);
    let group = match args.get("group") {
        None | Some(Value::Null) => None,
        Some(_) => Some(str_arg(args, "group")?),
    };
    let input = |i: u64| match args.get("child") {
        None | Some(Value::Null) => json!({ "mode": "echo", "i": i }),
        Some(child) => {
            let mut child = child.clone();
            if let Some(slot) = child.get_mut("i").filter(|v| v.is_null()) {
                *slot = json!(i);
            }
            child
        }
    };
    let _group = group.map(tasks::Group::new);
    let children = (0..count).map(|i| tasks::submit(task, &input(i))).collect::<Result<Vec<_>, _>>()?;
    if args.get("fail_after_submitting") == Some(&Value::Bool(true)) && cairn_sdk::env::attempt() == 1 {
        return Err(TaskError::new("flaky", "probe: failing on purpose right after submitting, on attempt 1"));
    }
    let (mut failed, mut outputs_bytes, mut first_error) = (0u64, 0u64, None);
    for child in &children {
        match child.get() {
            Ok(output) => outputs_bytes += output.len() as u64,
            Err(error) => {
                failed += 1;
                first_error.get_or_insert(json!({ "kind": error.kind, "message": error.message }));
            }
        }
    }
    if args.get("fail_on_first_attempt") == Some(&Value::Bool(true)) && cairn_sdk::env::attempt() == 1 {
        return Err(TaskError::new("flaky", "probe: failing on purpose after the children finished, on attempt 1"));
    }
    let ids: Vec<&str> = children.iter().map(|c| c.run_id()).collect();
    Ok(
        json!({ "children": count, "failed": failed, "outputs_bytes": outputs_bytes, "first_error": first_error, "run_ids": ids }),
    )
}

/// One child run of `task` on `input` (default `{}`): `{"output": <its output
/// as JSON>}`; the child's final error becomes this run's error.
fn call(args: &Value) -> Result<Value, TaskError> {
    let task = str_arg(args, "task")?;
    let input = args.get("input").cloned().unwrap_or_else(|| json!({}));
    let output: Value = tasks::call_json(task, &input)?;
    Ok(json!({ "output": output }))
}
