"""py-probe: a Python test and benchmark fixture with one behaviour per input ``mode``.

- ``echo``: returns its input (parsed and serialised again by the SDK);
- ``raise``: raises ``exception`` (a built-in name such as ``ValueError``, or
  ``QuotaExhausted``, a custom exception that says it is not retryable) with
  ``message``;
- ``traced-llm``: a traced step that asks the LLM ``question`` and counts its
  own executions in a file of the run's directory (and prints
  ``step body ran: <question>`` each time), then fails on attempt 1
  when ``fail_on_first_attempt`` is set, to show that a retry does not run the
  step again;
- ``context``: the current run's context (``tasks.current()``), as the ``env``
  functions see it;
- ``call``: runs ``task`` on ``input`` as a child (``tasks.call_json``) and
  returns ``{"output": ...}``; the child's error becomes this run's error;
- ``http``: sends ``requests`` (``{"url", "method"?, "body"?, "headers"?,
  "secret_header"?: [name, SECRET]}``) through ``cairn_sdk.http`` and returns
  ``{"results": [{"status", "body"} or {"error": "http-KIND: ..."}]}``; with
  ``fail_after`` it then fails on attempt 1;
- ``files``: the SDK's file API, the same steps as in the Rust and JavaScript
  probes (``files_tour``), returning what each step saw;
- ``csv-write``: writes ``rows`` rows of a CSV table and gives it, as a
  ``File``, to task ``child`` in ``csv-summary`` mode; returns the table and
  the child's summary;
- ``csv-summary``: reads ``table`` (a ``File`` it was given) and returns its
  row and column counts, with the table passed back.
"""

import builtins
from typing import Any

from cairn_sdk import File, FileError, InvalidInput, TaskError, call_llm, env, export_task, files, http, tasks, trace

STEP_COUNTER = "./traced-step.count"
"""File in the run's directory that counts how often the traced step's body ran."""


class QuotaExhausted(Exception):
    """A custom exception that tells the host not to retry."""

    retryable = False


class Flaky(TaskError):
    """The failure ``traced-llm`` injects on attempt 1."""

    def __init__(self) -> None:
        super().__init__("flaky", "py-probe: failing on purpose on attempt 1")


def probe(mode: str, **args: Any) -> Any:
    """Dispatches on ``mode``; the other input keys are the mode's arguments."""
    if mode == "echo":
        return {"mode": mode, **args}
    if mode == "raise":
        raise exception_named(args.get("exception", "ValueError"))(args.get("message", "py-probe: raised on purpose"))
    if mode == "traced-llm":
        return traced_llm(args.get("question", "question 1"), bool(args.get("fail_on_first_attempt", False)))
    if mode == "context":
        run = tasks.current()
        return {
            "run_id": run.run_id,
            "task": run.task,
            "attempt": run.attempt,
            "parent": run.parent,
            "env": {"run_id": env.run_id(), "attempt": env.attempt(), "task_name": env.task_name()},
        }
    if mode == "call":
        return {"output": tasks.call_json(args["task"], args.get("input", {}))}
    if mode == "http":
        return outbound(args.get("requests", []), bool(args.get("fail_after", False)))
    if mode == "files":
        return files_tour()
    if mode == "csv-write":
        return csv_write(int(args.get("rows", 3)), args["child"])
    if mode == "csv-summary":
        return csv_summary(File.from_json(args["table"]))
    raise InvalidInput(f"unknown mode {mode!r}")


def csv_write(rows: int, child: str) -> dict:
    """The ``csv-write`` mode."""
    files.write_text("out/table.csv", "n,square\n" + "".join(f"{i},{i * i}\n" for i in range(rows)))
    table = File.from_path("out/table.csv")
    return {"table": table, "summary": tasks.call_json(child, {"mode": "csv-summary", "table": table})}


def csv_summary(table: File) -> dict:
    """The ``csv-summary`` mode."""
    lines = table.read_text().splitlines()
    return {"rows": len(lines) - 1, "columns": lines[0].split(","), "by": "python", "table": table}


def files_tour() -> dict:
    """The ``files`` mode: write, read, list, stat, remove, and three refusals."""
    files.write_text("out/notes/a.txt", "h\u00e9llo")
    files.write_bytes("out/b.bin", bytes([0, 1, 2, 255]))
    seen = {
        "text": files.read_text("out/notes/a.txt"),
        "bytes": list(files.read_bytes("out/b.bin")),
        "listed": files.list("out"),
        "exists": [files.exists("out/b.bin"), files.exists("nope")],
        "size": files.size("out/notes/a.txt"),
    }
    files.remove("out/b.bin")
    files.mkdir("x/y")
    seen["after"] = [files.exists("out/b.bin"), files.list("x")]
    errors = {}
    for case, path in [("missing", "missing.txt"), ("climb", "../outside.txt"), ("absolute", "/etc/passwd")]:
        try:
            files.read_text(path)
            errors[case] = "read"
        except FileError as e:
            errors[case] = f"{e.kind} {e.retryable} {e.message.startswith(path + ': ')}"
    seen["errors"] = errors
    return seen


def outbound(requests: list[dict], fail_after: bool) -> dict:
    """The ``http`` mode."""
    results = []
    for spec in requests:
        headers = dict(spec.get("headers", {}))
        if "secret_header" in spec:
            name, key = spec["secret_header"]
            headers[name] = f"Bearer {http.secret(key)}"
        try:
            answer = http.request(spec.get("method", "GET"), spec["url"], headers=headers, body=spec.get("body"))
            results.append({"status": answer.status, "body": answer.text})
        except http.HttpError as e:
            results.append({"error": f"{e.kind}: {e.message}"})
    if fail_after and env.attempt() == 1:
        raise TaskError("flaky", f"py-probe: failing on purpose after {len(requests)} request(s)")
    return {"results": results}


def exception_named(name: str) -> type[BaseException]:
    """The exception class ``name``: ``QuotaExhausted`` or a built-in exception."""
    if name == "QuotaExhausted":
        return QuotaExhausted
    found = getattr(builtins, name, None)
    if not (isinstance(found, type) and issubclass(found, BaseException)):
        raise InvalidInput(f"{name!r} is not a built-in exception")
    return found


@trace
def ask(question: str) -> str:
    """The traced step: bumps the counter file and says so on stdout, then asks the LLM."""
    with open(STEP_COUNTER, "a") as counter:
        counter.write("x")
    print(f"step body ran: {question}")
    return call_llm(question, "You are a probe.")


def traced_llm(question: str, fail_on_first_attempt: bool) -> dict:
    """Runs the traced step, then fails on attempt 1 if asked to."""
    answer = ask(question)
    if fail_on_first_attempt and env.attempt() == 1:
        raise Flaky()
    with open(STEP_COUNTER) as counter:
        executions = len(counter.read())
    return {"answer": answer, "step_executions": executions, "attempt": env.attempt()}


WitWorld = export_task(probe)
