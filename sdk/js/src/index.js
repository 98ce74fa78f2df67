/**
 * Write Cairn tasks in JavaScript (componentize-js guests of the `cairn:task` world).
 *
 * A task is a function from JSON input to JSON output, exported once per module:
 *
 * ```js
 * import { callLlm, exportTask, trace } from 'cairn-sdk';
 *
 * const greet = trace('greet', (name) => callLlm(`Greet ${name}.`, 'You are kind.'));
 *
 * export const run = exportTask(({ name }) => ({ greeting: greet(name) }));
 * ```
 *
 * Build it with `node <sdk>/build.js app.js -o app.wasm`, which bundles the
 * module with this SDK and runs componentize-js.
 */

import * as witLlm from 'cairn:task/llm@0.1.3';
import * as witHttp from 'cairn:task/http@0.1.3';
import * as witReport from 'cairn:task/report@0.1.3';
import * as witSecrets from 'cairn:task/secrets@0.1.3';
import * as witTasks from 'cairn:task/tasks@0.1.3';
import * as witTrace from 'cairn:task/trace@0.1.3';

import { InvalidInput, InvalidOutput, TaskError, toTaskError } from './errors.js';
import { ValidationError, isSchema, toJsonSchema, validate } from './validation.js';

export { InvalidInput, InvalidOutput, TaskError, kebabCase, toTaskError } from './errors.js';
export { ValidationError, isSchema, toJsonSchema, v, validate } from './validation.js';
export { FileError, files } from './files.js';
export { Dir, File } from './refs.js';

// ---------------------------------------------------------------- the export

/** What `describe` answers: set by {@link exportTask} as the module loads. */
let taskInterface = '{}';

/**
 * The component's `describe` export (the build adds it): the task's
 * interface, the JSON Schemas of the `input` and `output` schemas given to
 * {@link exportTask}, so the host checks a run's input before any attempt.
 * @returns {string}
 */
export function describeTask() {
  return taskInterface;
}

/**
 * The component's `run` export, running `fn` once per attempt. Export it as
 * `export const run = exportTask(fn);`.
 *
 * `fn` gets the parsed JSON input (or, with `options.input`, the input
 * validated by that schema, an invalid input being a non-retryable
 * `invalid-input` error) and returns the output as a JSON-serialisable value.
 * Whatever it throws becomes a task error as described in `errors.js`.
 *
 * @param {(input: any) => any} fn the task
 * @param {{input?: object, output?: object | ((output: any) => any)}} [options]
 *   `input`: a schema made with `v`; `output`: a schema (or a function that
 *   returns the output or throws a `ValidationError`) the output must fit,
 *   else the attempt fails with `invalid-output`, not retried
 * @returns {(input: string) => string}
 */
export function exportTask(fn, { input: inputSchema, output: outputSchema } = {}) {
  taskInterface = JSON.stringify({
    input: isSchema(inputSchema) ? toJsonSchema(inputSchema) : true,
    output: isSchema(outputSchema) ? toJsonSchema(outputSchema) : true,
  });
  const finish = (result) => {
    if (outputSchema) {
      try {
        result = isSchema(outputSchema) ? validate(outputSchema, result, "the task's output") : outputSchema(result);
      } catch (e) {
        // The journal hands a retry the same answers, so the same output: not retried.
        if (e instanceof ValidationError) throw new TaskError('invalid-output', e.message, { retryable: false });
        throw e;
      }
    }
    const output = JSON.stringify(result);
    if (output === undefined) {
      throw new TaskError('invalid-output', 'the task returned undefined, which is not JSON', { retryable: false });
    }
    return output;
  };
  // componentize-js turns a thrown value into the export's error: it must be a task-error record.
  const fail = (thrown) => {
    throw toTaskError(thrown);
  };
  return function run(input) {
    try {
      let data;
      try {
        data = JSON.parse(input);
      } catch (e) {
        throw new InvalidInput(`the input is not JSON: ${e.message}`);
      }
      if (inputSchema) {
        try {
          data = validate(inputSchema, data, "the task's input");
        } catch (e) {
          if (e instanceof ValidationError) throw new InvalidInput(e.message);
          throw e;
        }
      }
      const result = fn(data);
      // An async task (one that awaits `fetch`, say): the host waits for its promise.
      if (result && typeof result.then === 'function') return result.then(finish, fail);
      return finish(result);
    } catch (thrown) {
      return fail(thrown);
    }
  };
}

// ---------------------------------------------------------------- LLM

const LLM_ERRORS = {
  'rate-limited': ['llm-rate-limited', (ms) => `the LLM provider is rate limiting${ms == null ? '' : `; it asks to wait ${ms} ms`}`, true],
  timeout: ['llm-timeout', () => 'the LLM provider did not answer in time', true],
  unavailable: ['llm-unavailable', (m) => `the LLM provider is unavailable: ${m}`, true],
  'invalid-request': ['llm-invalid-request', (m) => `the LLM request is invalid: ${m}`, false],
  'invalid-response': ['llm-invalid-response', (m) => `the LLM's answer could not be used: ${m}`, true],
  'budget-exceeded': ['llm-budget-exceeded', () => 'the LLM token budget is used up', false],
  'circuit-open': ['llm-circuit-open', () => "the LLM provider's circuit breaker is open", true],
};

/**
 * A failed LLM call, as a task error of kind `llm-<case>` (`llm-invalid-request`
 * and `llm-budget-exceeded` are not retryable). `error` is the host's raw
 * `llm-error` (`{tag, val}`); `retryAfterMs` is set for `llm-rate-limited`.
 */
export class LlmError extends TaskError {
  /** @param {{tag: string, val?: any}} error the host's `llm-error` */
  constructor(error) {
    const [kind, describe, retryable] = LLM_ERRORS[error?.tag] ?? ['llm-error', () => `the LLM call failed: ${JSON.stringify(error)}`, true];
    super(kind, describe(error?.val), { retryable });
    this.name = 'LlmError';
    this.error = error;
    this.retryAfterMs = error?.tag === 'rate-limited' ? (error.val ?? null) : null;
  }
}

/** Runs a host call whose `Err` arrives as an exception with `.payload`, rethrowing it as `wrap(payload)`. */
function hostCall(call, wrap) {
  try {
    return call();
  } catch (e) {
    if (e && typeof e === 'object' && 'payload' in e) throw wrap(e.payload);
    throw e;
  }
}

/**
 * Sends `prompt` with system prompt `system` and returns the answer's text.
 * With `jsonMode` the provider is asked for one JSON document. Throws {@link LlmError}.
 * @returns {string}
 */
export function callLlm(prompt, system, jsonMode = false) {
  return hostCall(() => witLlm.callLlm(prompt, system, jsonMode), (p) => new LlmError(p));
}

/**
 * Sends a chat conversation (`[{role: 'system' | 'user' | 'assistant', content}]`,
 * oldest first) and returns `{content, model, usage: {promptTokens, completionTokens}}`.
 * Throws {@link LlmError}.
 */
export function complete(messages, { model, jsonMode = false, maxTokens, temperature } = {}) {
  const request = {
    model,
    messages: messages.map(({ role, content }) => {
      if (!['system', 'user', 'assistant'].includes(role)) {
        throw new TypeError(`unknown message role ${JSON.stringify(role)}; use system, user or assistant`);
      }
      return { role, content };
    }),
    responseFormat: jsonMode ? 'json' : 'text',
    maxTokens,
    temperature,
  };
  return hostCall(() => witLlm.complete(request), (p) => new LlmError(p));
}

/**
 * Asks for JSON and returns it checked by `schema`: a schema made with `v`, or
 * a function that takes the parsed JSON and returns the value to use (throwing
 * to reject it). When the answer does not parse or is rejected, asks again (up
 * to `attempts` asks in all), adding to the prompt why the previous answer was
 * rejected. When every ask fails, throws {@link InvalidOutput} (retryable);
 * other LLM errors are thrown at once as {@link LlmError}.
 */
export function callLlmJson(prompt, system, schema, attempts = 3) {
  const check = isSchema(schema) ? (value) => validate(schema, value, 'the answer') : schema;
  const asks = Math.max(1, attempts);
  let problem = '';
  let last = '';
  for (let ask = 1; ask <= asks; ask++) {
    const text =
      ask === 1
        ? prompt
        : `${prompt}\n\nYour previous answer was rejected: ${problem}\nAnswer again with a single JSON document of the requested shape.`;
    let answer;
    try {
      answer = callLlm(text, system, true);
    } catch (e) {
      if (e instanceof LlmError && e.error?.tag === 'invalid-response') {
        problem = String(e.error.val);
        continue;
      }
      throw e;
    }
    last = answer.slice(0, 600);
    let parsed;
    try {
      parsed = JSON.parse(answer);
    } catch (e) {
      problem = `it is not JSON of the expected shape (${e.message})`;
      // Journaled, but not to be replayed: a retry asks again.
      witLlm.reject(problem);
      continue;
    }
    try {
      return check(parsed);
    } catch (e) {
      problem = e instanceof ValidationError ? e.problems.map(([loc, why]) => (loc ? `${loc}: ${why}` : why)).join('; ') : String(e?.message ?? e);
      witLlm.reject(problem);
    }
  }
  // The answer itself tells an author what came back (the mock's default says how to change it).
  const said = last ? `; the last answer began: ${last}` : '';
  throw new InvalidOutput(`the model gave no valid JSON answer in ${asks} attempt(s); last problem: ${problem}${said}`);
}

// ---------------------------------------------------------------- trace

/** `value` as compact JSON with object keys sorted, the form trace inputs are keyed by. */
export function canonicalJson(value) {
  return JSON.stringify(value, (_key, v) =>
    v && typeof v === 'object' && !Array.isArray(v)
      ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, v[k]]))
      : v,
  );
}

/**
 * Runs step `name` once per run: a retried or resumed run gets the recorded
 * output back instead of running `step` again. `input` (JSON-serialisable)
 * and `name` identify the step; the n-th call with the same name and input in
 * a run matches the n-th record. Errors are not recorded.
 * @template T
 * @param {string} name
 * @param {unknown} input
 * @param {() => T} step
 * @returns {T}
 */
export function traced(name, input, step) {
  let key;
  try {
    key = canonicalJson(input ?? null);
  } catch (e) {
    console.error(`cairn-sdk: step ${JSON.stringify(name)} runs untraced: its input is not JSON (${e.message})`);
    return step();
  }
  const recorded = witTrace.recall(name, key);
  if (recorded !== undefined && recorded !== null) return JSON.parse(recorded);
  const output = step();
  const json = output === undefined ? undefined : JSON.stringify(output);
  if (json === undefined) {
    console.error(`cairn-sdk: step ${JSON.stringify(name)}: result not recorded, it is not JSON`);
  } else {
    witTrace.record(name, key, json);
  }
  return output;
}

/**
 * `fn` made a durable step (the JavaScript form of Python's `@trace`): its
 * arguments, as a JSON array, are the step's input. Use `trace('name', fn)`, or
 * `trace(fn)` for a named function.
 */
export function trace(nameOrFn, fn) {
  const step = typeof nameOrFn === 'function' ? nameOrFn : fn;
  const name = typeof nameOrFn === 'string' ? nameOrFn : step?.name;
  if (typeof step !== 'function' || !name) throw new TypeError('trace needs a named function, or a name and a function');
  return (...args) => traced(name, args, () => step(...args));
}

// ---------------------------------------------------------------- secrets, report

/** A secret that cannot be read, not retryable: kind `secret-not-declared` or `secret-not-found`. */
export class SecretError extends TaskError {
  /**
   * @param {{tag: string, val: string}} error the host's `secret-error`, whose
   *   message names the key and says how to fix it
   * @param {string} key the secret asked for
   */
  constructor(error, key) {
    super(error?.tag === 'not-declared' ? 'secret-not-declared' : 'secret-not-found', String(error?.val ?? error), {
      retryable: false,
    });
    this.name = 'SecretError';
    this.key = key;
  }
}

/** Secrets the task's environment declares; values never enter the journal, logs or reports. */
export const secrets = {
  /** The value of secret `key`; throws {@link SecretError}. */
  get: (key) => hostCall(() => witSecrets.get(key), (p) => new SecretError(p, key)),
};

// ---------------------------------------------------------------- outbound HTTP

const HTTP_RETRYABLE = { denied: false, prohibited: false, 'too-large': false, timeout: true, failed: true };

/**
 * A request that got no response, as a task error of kind `http-<case>`:
 * `http-denied` (not in `allowed_outbound_hosts`), `http-prohibited` (a name
 * resolving to a private address) and `http-too-large` are not retryable;
 * `http-timeout` and `http-failed` are.
 */
export class HttpError extends TaskError {
  /** @param {{tag: string, val: string}} error the host's `http-error` */
  constructor(error) {
    super(`http-${error?.tag ?? 'failed'}`, String(error?.val ?? error), { retryable: HTTP_RETRYABLE[error?.tag] ?? true });
    this.name = 'HttpError';
  }
}

/** Wraps the host's response: `status`, `headers` (`[name, value]` pairs), `body` (bytes). */
function httpResponse({ status, headers, body }) {
  return {
    status,
    headers,
    body,
    /** The first value of header `name` (any case). */
    header: (name) => headers.find(([n]) => n.toLowerCase() === name.toLowerCase())?.[1],
    /** The body as text. */
    text: () => new TextDecoder().decode(body),
    /** The body parsed as JSON. */
    json: () => JSON.parse(new TextDecoder().decode(body)),
  };
}

/**
 * Outbound HTTP through the host (`cairn:task/http`), journaled like an LLM
 * call: a request that got its response is answered from the run's journal
 * on a retry or resume, never sent twice (429 and 5xx responses are not
 * journaled). The environment must list the destination in
 * `allowed_outbound_hosts`. Synchronous; the global `fetch` (wasi:http) takes
 * the same path from an async task.
 */
export const http = {
  /**
   * Sends a request and returns the whole response; throws {@link HttpError}.
   * @param {string} url an absolute http(s) URL
   * @param {{method?: string, headers?: Record<string, string>, body?: string | Uint8Array, json?: any}} [init]
   */
  request(url, { method = 'GET', headers = {}, body, json } = {}) {
    const pairs = Object.entries(headers).map(([n, v]) => [n, String(v)]);
    if (json !== undefined) {
      body = JSON.stringify(json);
      pairs.push(['content-type', 'application/json']);
    }
    const bytes = typeof body === 'string' ? new TextEncoder().encode(body) : (body ?? new Uint8Array());
    const answer = hostCall(
      () => witHttp.send({ method: method.toUpperCase(), url, headers: pairs, body: bytes }),
      (p) => new HttpError(p),
    );
    return httpResponse(answer);
  },
  /** `GET url`. */
  get: (url, init = {}) => http.request(url, { ...init, method: 'GET' }),
  /** `POST url`. */
  post: (url, init = {}) => http.request(url, { ...init, method: 'POST' }),
  /** The placeholder the host replaces with secret `name`'s value in a header (declared secrets only). */
  secret: (name) => `{{secret:${name}}}`,
};

const HTML_ESCAPES = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

/** The run's HTML report, organised in named tabs (`cairn report RUN`). */
export const report = {
  /** Appends `html` to the default tab, `main`. */
  log: (html) => witReport.log(html),
  /** Replaces the whole content of tab `tab` with `html`. */
  replace: (tab, html) => witReport.replace(tab, html),
  /** Appends `html` to tab `tab`, creating the tab if needed. */
  append: (tab, html) => witReport.append(tab, html),
  /** Stores the report as it stands, so it can be read while the run goes on. */
  flush: () => witReport.flush(),
  /** `text` escaped for use inside HTML. */
  escape: (text) => String(text).replace(/[&<>"']/g, (c) => HTML_ESCAPES[c]),
};

// ---------------------------------------------------------------- child tasks

/**
 * A child run's final error (or a failed submission), with the child's `kind`,
 * `message` and `retryable`: left uncaught, it fails the parent the same way.
 * `task` is the child's task, `runId` its run id when known.
 */
export class ChildError extends TaskError {
  /**
   * @param {{kind: string, message: string, retryable: boolean}} error the host's `task-error`
   * @param {string} task the child's task
   * @param {string | null} [runId] the child's run id
   */
  constructor(error, task, runId = null) {
    super(String(error?.kind ?? 'child-error'), String(error?.message ?? JSON.stringify(error)), {
      retryable: error?.retryable !== false,
    });
    this.name = 'ChildError';
    this.task = task;
    this.runId = runId;
  }
}

/** The symbol componentize-js gives a resource's release method. */
const DISPOSE = Symbol.dispose || Symbol.for('dispose');

/** `input` as a JSON document: a string is taken as JSON already, anything else is serialised. */
function toJson(input) {
  if (typeof input === 'string') return input;
  const json = JSON.stringify(input ?? null);
  if (json === undefined) throw new TypeError('the child input is not JSON-serialisable');
  return json;
}

/** A submitted child run (from {@link tasks}.submit). Dropping it does not cancel the child. */
export class Pending {
  /** @param {object} handle the host's `pending` resource @param {string} task */
  constructor(handle, task) {
    this.handle = handle;
    /** The child's task name, as submitted. */
    this.task = task;
    /** The child run's id (see `cairn runs show`). */
    this.runId = handle.runId();
  }

  /**
   * Waits for the child to finish and returns its output (a JSON document);
   * throws {@link ChildError} with its final error once its retries and
   * fallbacks are spent. May be called more than once.
   * @returns {string}
   */
  get() {
    return hostCall(() => this.handle.get(), (p) => new ChildError(p, this.task, this.runId));
  }

  /** {@link Pending#get}, parsed from JSON. */
  getJson() {
    return JSON.parse(this.get());
  }
}

/**
 * A named group of children (Flyte's `group`), open until {@link Group#close}:
 * children submitted meanwhile belong to it, groups opened inside nest under it.
 * Prefer {@link tasks}.group(name, fn), which closes it for you.
 */
export class Group {
  /** Opens the group `name` (recorded in the run's journal). @param {string} name */
  constructor(name) {
    this.handle = new witTasks.Group(name);
    /** The group's full name: outer groups first, joined by `/`. */
    this.name = this.handle.name();
  }

  /** Closes the group; later submissions no longer belong to it. Idempotent. */
  close() {
    const handle = this.handle;
    this.handle = null;
    handle?.[DISPOSE]?.();
  }
}

/**
 * Child tasks, fan-out and the current run. A child is a run of its own, with
 * its task's retries, fallbacks, cache and pool; submissions are journaled in
 * the parent, so a retried or resumed parent gets the same children back.
 */
export const tasks = {
  /**
   * The current run: `{runId, task, attempt, parent}` (`parent`: the submitting
   * run's id, or null). It changes from run to run on a reused instance.
   */
  current() {
    const { runId, task, attempt, parent } = witTasks.current();
    return { runId, task, attempt, parent: parent ?? null };
  },

  /**
   * Starts task `task` (a name from the manifest) on `input` (a JSON string, or a
   * value to serialise) and returns a {@link Pending} at once; children run
   * concurrently. Throws {@link ChildError} when the task is unknown or the
   * host cannot record the submission.
   * @returns {Pending}
   */
  submit(task, input) {
    const json = toJson(input);
    return new Pending(hostCall(() => witTasks.submit(task, json), (p) => new ChildError(p, task)), task);
  },

  /** Runs `task` on `input` as a child and waits: its output (a JSON document), or throws {@link ChildError}. */
  call(task, input) {
    const json = toJson(input);
    return hostCall(() => witTasks.call(task, json), (p) => new ChildError(p, task));
  },

  /** {@link tasks}.call, parsed from JSON. */
  callJson(task, input) {
    return JSON.parse(tasks.call(task, input));
  },

  /**
   * Runs `fn(fullName)` inside the group `name` and returns its result; the
   * group is closed afterwards, also when `fn` throws.
   * @template T
   * @param {string} name
   * @param {(fullName: string) => T} fn
   * @returns {T}
   */
  group(name, fn) {
    const group = new Group(name);
    try {
      return fn(group.name);
    } finally {
      group.close();
    }
  },
};

/**
 * Where the task runs, read from the host ({@link tasks}.current) on every call.
 * The `CAIRN_*` environment variables are fixed when an instance starts, so on
 * a reused (warm) instance they describe an earlier run: use these instead.
 */
export const env = {
  /** The current run's id. */
  runId: () => tasks.current().runId,
  /** The current attempt number, 1 for the first attempt. */
  attempt: () => tasks.current().attempt,
  /** The manifest name of the task being run. */
  taskName: () => tasks.current().task,
  /** The run that submitted this one, for a child run; null for a top-level run. */
  parentRunId: () => tasks.current().parent,
};
