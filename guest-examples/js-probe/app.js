/**
 * js-probe: a JavaScript test and benchmark fixture with one behaviour per input `mode`:
 *
 * - `echo`: returns its input (parsed and serialised again by the SDK);
 * - `throw`: throws a `TypeError` (or, with `"custom": true`, a non-retryable
 *   `QuotaExhausted`) with `message`;
 * - `traced-llm`: a traced step that asks the LLM `question` (printing
 *   `step body ran: <question>` each time its body runs), then fails on
 *   attempt 1 when `fail_on_first_attempt` is set;
 * - `context`: the current run's context (`tasks.current()`), as `env` sees it;
 * - `call`: runs `task` on `input` as a child (`tasks.callJson`) and returns
 *   `{output}`; the child's error becomes this run's error;
 * - `http`: sends `requests` (`{url, method?, body?, headers?, secret_header?:
 *   [name, SECRET]}`) through the SDK's `http` (or, with `"fetch": true`,
 *   the global `fetch`, from an async task) and returns `{results: [{status,
 *   body} or {error: "http-KIND: ..."}]}`; with `fail_after` it then fails on
 *   attempt 1;
 * - `files`: the SDK's file API, the same steps as in the Rust and Python
 *   probes (`filesTour`), returning what each step saw;
 * - `csv-write` and `csv-summary`: as in the Python probe (a CSV table given
 *   to a child by reference, and summarised there).
 */

import {
  File,
  FileError,
  HttpError,
  InvalidInput,
  TaskError,
  ValidationError,
  callLlm,
  env,
  exportTask,
  files,
  http,
  tasks,
  trace,
} from 'cairn-sdk';

/** A custom error that tells the host not to retry. */
class QuotaExhausted extends Error {
  constructor(message) {
    super(message);
    this.name = 'QuotaExhausted';
    this.retryable = false;
  }
}

/** The traced step: says so on stdout each time its body runs, then asks the LLM. */
const ask = trace('ask', (question) => {
  console.log(`step body ran: ${question}`);
  return callLlm(question, 'You are a probe.');
});

/** Dispatches on `mode`. */
function probe(input) {
  switch (input.mode) {
    case 'echo':
      return input;
    case 'throw': {
      const message = input.message ?? 'js-probe: thrown on purpose';
      throw input.custom ? new QuotaExhausted(message) : new TypeError(message);
    }
    case 'traced-llm': {
      const answer = ask(input.question ?? 'question 1');
      if (input.fail_on_first_attempt && env.attempt() === 1) {
        throw new TaskError('flaky', 'js-probe: failing on purpose on attempt 1');
      }
      return { answer, attempt: env.attempt() };
    }
    case 'context':
      return { ...tasks.current(), env: { runId: env.runId(), attempt: env.attempt(), taskName: env.taskName() } };
    case 'call':
      return { output: tasks.callJson(input.task, input.input ?? {}) };
    case 'http':
      return input.fetch ? outboundFetch(input) : outbound(input);
    case 'files':
      return filesTour();
    case 'csv-write': {
      const rows = input.rows ?? 3;
      let text = 'n,square\n';
      for (let i = 0; i < rows; i++) text += `${i},${i * i}\n`;
      files.writeText('out/table.csv', text);
      const table = File.fromPath('out/table.csv');
      return { table, summary: tasks.callJson(input.child, { mode: 'csv-summary', table }) };
    }
    case 'csv-summary': {
      const table = File.from(input.table);
      const lines = table.readText().split('\n').filter((line) => line !== '');
      return { rows: lines.length - 1, columns: lines[0].split(','), by: 'javascript', table };
    }
    default:
      throw new InvalidInput(`unknown mode ${JSON.stringify(input.mode)}`);
  }
}

/** The `files` mode: write, read, list, stat, remove, and three refusals. */
function filesTour() {
  files.writeText('out/notes/a.txt', 'h\u00e9llo');
  files.writeBytes('out/b.bin', new Uint8Array([0, 1, 2, 255]));
  const seen = {
    text: files.readText('out/notes/a.txt'),
    bytes: [...files.readBytes('out/b.bin')],
    listed: files.list('out'),
    exists: [files.exists('out/b.bin'), files.exists('nope')],
    size: files.size('out/notes/a.txt'),
  };
  files.remove('out/b.bin');
  files.mkdir('x/y');
  seen.after = [files.exists('out/b.bin'), files.list('x')];
  seen.errors = {};
  for (const [name, path] of [['missing', 'missing.txt'], ['climb', '../outside.txt'], ['absolute', '/etc/passwd']]) {
    try {
      files.readText(path);
      seen.errors[name] = 'read';
    } catch (e) {
      if (!(e instanceof FileError)) throw e;
      seen.errors[name] = `${e.kind} ${e.retryable ? 'True' : 'False'} ${e.message.startsWith(`${path}: `) ? 'True' : 'False'}`;
    }
  }
  return seen;
}

/** The headers of one request spec, with its secret placeholder. */
function headersOf(spec) {
  const headers = { ...(spec.headers ?? {}) };
  if (spec.secret_header) headers[spec.secret_header[0]] = `Bearer ${http.secret(spec.secret_header[1])}`;
  return headers;
}

function failAfter(input) {
  if (input.fail_after && env.attempt() === 1) {
    throw new TaskError('flaky', `js-probe: failing on purpose after ${input.requests.length} request(s)`);
  }
}

/** The `http` mode through the SDK's synchronous `http`. */
function outbound(input) {
  const results = (input.requests ?? []).map((spec) => {
    try {
      const answer = http.request(spec.url, { method: spec.method, headers: headersOf(spec), body: spec.body });
      return { status: answer.status, body: answer.text() };
    } catch (e) {
      if (e instanceof HttpError) return { error: `${e.kind}: ${e.message}` };
      throw e;
    }
  });
  failAfter(input);
  return { results };
}

/** The `http` mode through the global `fetch` (wasi:http), from an async task. */
async function outboundFetch(input) {
  const results = [];
  for (const spec of input.requests ?? []) {
    try {
      const response = await fetch(spec.url, { method: spec.method ?? 'GET', headers: headersOf(spec), body: spec.body });
      results.push({ status: response.status, body: await response.text() });
    } catch (e) {
      results.push({ error: `http-failed: ${e.message}` });
    }
  }
  failAfter(input);
  return { results };
}

/** Every output but one that says `"misshapen": true`, which the output check refuses. */
function checkOutput(output) {
  if (output && output.misshapen === true) {
    throw new ValidationError("the task's output", [['misshapen', 'must not be true']]);
  }
  return output;
}

export const run = exportTask(probe, { output: checkOutput });
