/**
 * Task errors, and how any thrown value becomes the `task-error` the host sees.
 *
 * The host's retry policies match on an error's `kind` and stop at once when
 * it is not `retryable`. A task chooses both by throwing a {@link TaskError}
 * (or a subclass); anything else thrown by the task is mapped by
 * {@link toTaskError}:
 *
 * - `kind` is the error type's name in kebab-case (`TypeError` -> `type-error`;
 *   the name is `error.name` when it was set, else the class name; a thrown
 *   non-Error value gives `error`);
 * - `message` is `"<TypeName>: <message>"`;
 * - `retryable` is `true` unless the thrown value has `retryable === false`.
 *
 * Its stack goes to stderr, which the host keeps in the run's log.
 */

/** `"HTTPTimeoutError"` -> `"http-timeout-error"`: the kind derived from a type name. */
export function kebabCase(name) {
  const spaced = String(name)
    .replace(/([a-z0-9])([A-Z])/g, '$1-$2')
    .replace(/([A-Z])([A-Z][a-z])/g, '$1-$2');
  const kind = spaced.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-+|-+$/g, '');
  return kind || 'error';
}

/**
 * A failure with an explicit `kind` (short, kebab-case: what retry policies
 * match on), a human-readable `message` and whether a retry may help.
 */
export class TaskError extends Error {
  /**
   * @param {string} kind what retry policies match on
   * @param {string} message what went wrong and, where it helps, how to fix it
   * @param {{retryable?: boolean}} [options] `retryable` defaults to true
   */
  constructor(kind, message, { retryable = true } = {}) {
    super(message);
    this.name = 'TaskError';
    this.kind = kind;
    this.retryable = retryable;
  }
}

/** Kind `invalid-input`, not retryable: the input will not get better by retrying. */
export class InvalidInput extends TaskError {
  /** @param {string} message what is wrong with the input */
  constructor(message) {
    super('invalid-input', message, { retryable: false });
    this.name = 'InvalidInput';
  }
}

/** Kind `invalid-output`, retryable: e.g. a model's answer that failed validation. */
export class InvalidOutput extends TaskError {
  /** @param {string} message what is wrong with the output */
  constructor(message, { retryable = true } = {}) {
    super('invalid-output', message, { retryable });
    this.name = 'InvalidOutput';
  }
}

/** The name a thrown value's kind is derived from. */
function typeNameOf(thrown) {
  if (thrown instanceof Error) {
    if (thrown.name && thrown.name !== 'Error') return thrown.name;
    return thrown.constructor?.name || 'Error';
  }
  return 'Error';
}

/**
 * The `task-error` record (`{kind, message, retryable}`) for a value the task threw.
 * @param {unknown} thrown
 * @returns {{kind: string, message: string, retryable: boolean}}
 */
export function toTaskError(thrown) {
  if (thrown instanceof TaskError) {
    return { kind: String(thrown.kind), message: String(thrown.message), retryable: thrown.retryable !== false };
  }
  const typeName = typeNameOf(thrown);
  const text = thrown instanceof Error ? thrown.message : String(thrown);
  if (thrown instanceof Error && thrown.stack) console.error(`${typeName}: ${text}\n${thrown.stack}`);
  return {
    kind: kebabCase(typeName),
    message: text ? `${typeName}: ${text}` : typeName,
    retryable: !(thrown !== null && typeof thrown === 'object' && thrown.retryable === false),
  };
}
