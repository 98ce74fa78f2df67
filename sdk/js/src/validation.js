/**
 * Small schema validation for JSON data, for a model's JSON answers and task inputs:
 *
 * ```js
 * const Critique = v.object({
 *   score: v.int({ ge: 1, le: 10 }),
 *   strengths: v.array(v.string()),
 * });
 * const critique = validate(Critique, JSON.parse(text)); // throws ValidationError
 * ```
 *
 * Keys an object schema does not declare are dropped.
 */

import { Dir, File } from './refs.js';

/** Data that does not fit a schema: `problems` lists `[location, explanation]` pairs. */
export class ValidationError extends Error {
  /**
   * @param {string} title what was validated
   * @param {Array<[string, string]>} problems where and why it does not fit
   */
  constructor(title, problems) {
    const count = problems.length;
    const lines = problems.map(([loc, why]) => `  ${loc || '(root)'}: ${why}`);
    super([`${count} validation error${count === 1 ? '' : 's'} for ${title}`, ...lines].join('\n'));
    this.name = 'ValidationError';
    this.problems = problems;
  }
}

const SCHEMA = Symbol('cairn.schema');

/** Whether `value` is a schema made by `v`. */
export function isSchema(value) {
  return Boolean(value && value[SCHEMA]);
}

/** A schema: its `name` for messages, its `check`, and the JSON Schema (2020-12) it stands for. */
function schema(name, check, json = true) {
  return { [SCHEMA]: true, name, check, json };
}

/** The JSON Schema a `v` schema stands for (what `describe` tells the host). */
export function toJsonSchema(schemaToUse) {
  return schemaToUse?.json ?? true;
}

/** `json` with the bounds in `options` that are set, under their JSON Schema names. */
function withBounds(json, options, names) {
  const out = { ...json };
  for (const [option, word] of Object.entries(names)) {
    if (options[option] !== undefined) out[word] = options[option];
  }
  return out;
}

const NUMBER_BOUNDS = { ge: 'minimum', le: 'maximum', gt: 'exclusiveMinimum', lt: 'exclusiveMaximum' };

function jsonType(value) {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'list';
  if (typeof value === 'object') return 'object';
  return typeof value;
}

function short(value) {
  let text;
  try {
    text = JSON.stringify(value) ?? String(value);
  } catch {
    text = String(value);
  }
  return text.length <= 60 ? text : `${text.slice(0, 57)}...`;
}

function wrong(loc, expected, value, problems) {
  const got = value === null || value === undefined ? 'null' : `${jsonType(value)} ${short(value)}`;
  problems.push([loc, `expected ${expected}, got ${got}`]);
  return value;
}

function bounds(value, { ge, gt, le, lt } = {}, loc, problems) {
  if (ge !== undefined && !(value >= ge)) problems.push([loc, `must be greater than or equal to ${ge}, got ${value}`]);
  if (gt !== undefined && !(value > gt)) problems.push([loc, `must be greater than ${gt}, got ${value}`]);
  if (le !== undefined && !(value <= le)) problems.push([loc, `must be less than or equal to ${le}, got ${value}`]);
  if (lt !== undefined && !(value < lt)) problems.push([loc, `must be less than ${lt}, got ${value}`]);
}

function lengths(value, { minLength, maxLength } = {}, loc, problems) {
  if (minLength !== undefined && value.length < minLength) {
    problems.push([loc, `must have at least ${minLength} characters or items, got ${value.length}`]);
  }
  if (maxLength !== undefined && value.length > maxLength) {
    problems.push([loc, `must have at most ${maxLength} characters or items, got ${value.length}`]);
  }
}

function reference(type, name) {
  const json = { type: 'object', required: [type.KEY], properties: { [type.KEY]: { type: 'string' } } };
  return schema(
    name,
    (value, loc, problems) => {
      try {
        return type.from(value);
      } catch {
        return wrong(loc, name, value, problems);
      }
    },
    json,
  );
}

/** `v.object`'s check: declared keys only, defaults for missing optional ones. */
function objectCheck(shape, value, loc, problems) {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    return wrong(loc, 'an object', value, problems);
  }
  const out = {};
  for (const [key, field] of Object.entries(shape)) {
    const where = loc ? `${loc}.${key}` : key;
    if (Object.hasOwn(value, key) && value[key] !== undefined) {
      out[key] = field.check(value[key], where, problems);
    } else if (field.optional) {
      if (field.fallback !== undefined) out[key] = structuredClone(field.fallback);
    } else {
      problems.push([where, 'field required']);
    }
  }
  return out;
}

/** Schema builders. Each returns a schema for {@link validate}. */
export const v = {
  /** A string; options `minLength`, `maxLength`. */
  string: (options = {}) =>
    schema(
      'a string',
      (value, loc, problems) => {
        if (typeof value !== 'string') return wrong(loc, 'a string', value, problems);
        lengths(value, options, loc, problems);
        return value;
      },
      withBounds({ type: 'string' }, options, { minLength: 'minLength', maxLength: 'maxLength' }),
    ),
  /** An integer (not `9.5`); options `ge`, `gt`, `le`, `lt`. */
  int: (options = {}) =>
    schema(
      'an integer',
      (value, loc, problems) => {
        if (!Number.isInteger(value)) return wrong(loc, 'an integer', value, problems);
        bounds(value, options, loc, problems);
        return value;
      },
      withBounds({ type: 'integer' }, options, NUMBER_BOUNDS),
    ),
  /** A finite number; options `ge`, `gt`, `le`, `lt`. */
  number: (options = {}) =>
    schema(
      'a number',
      (value, loc, problems) => {
        if (typeof value !== 'number' || !Number.isFinite(value)) return wrong(loc, 'a number', value, problems);
        bounds(value, options, loc, problems);
        return value;
      },
      withBounds({ type: 'number' }, options, NUMBER_BOUNDS),
    ),
  /** `true` or `false`. */
  boolean: () =>
    schema(
      'a boolean',
      (value, loc, problems) => (typeof value === 'boolean' ? value : wrong(loc, 'a boolean', value, problems)),
      { type: 'boolean' },
    ),
  /** A file reference (`{"$file": …}`), given to the task as a {@link File}. */
  file: () => reference(File, 'a file reference'),
  /** A directory reference (`{"$dir": …}`), given to the task as a {@link Dir}. */
  dir: () => reference(Dir, 'a directory reference'),
  /** Any JSON value, unchecked. */
  any: () => schema('any value', (value) => value),
  /** One of the given values (compared with `===`). */
  literal: (...values) =>
    schema(
      `one of ${values.map(short).join(', ')}`,
      (value, loc, problems) => {
        if (!values.includes(value)) problems.push([loc, `expected one of ${values.map(short).join(', ')}, got ${short(value)}`]);
        return value;
      },
      { enum: values },
    ),
  /** A list whose items fit `item`; options `minLength`, `maxLength`. */
  array: (item, options = {}) =>
    schema(
      `a list of ${item.name}`,
      (value, loc, problems) => {
        if (!Array.isArray(value)) return wrong(loc, 'a list', value, problems);
        lengths(value, options, loc, problems);
        return value.map((entry, i) => item.check(entry, `${loc}[${i}]`, problems));
      },
      withBounds({ type: 'array', items: toJsonSchema(item) }, options, { minLength: 'minItems', maxLength: 'maxItems' }),
    ),
  /** An object with the given fields (a map of name to schema); other keys are dropped. */
  object: (shape) =>
    schema('an object', (value, loc, problems) => objectCheck(shape, value, loc, problems), {
      type: 'object',
      properties: Object.fromEntries(Object.entries(shape).map(([key, field]) => [key, toJsonSchema(field)])),
      required: Object.entries(shape)
        .filter(([, field]) => !field.optional)
        .map(([key]) => key),
    }),
  /** A field that may be missing (then `fallback`, if given, is used); `null` also fits. */
  optional: (inner, fallback = undefined) => ({
    ...schema(
      `${inner.name} or null`,
      (value, loc, problems) => (value === null ? fallback ?? null : inner.check(value, loc, problems)),
      { anyOf: [toJsonSchema(inner), { type: 'null' }] },
    ),
    optional: true,
    fallback,
  }),
  /** `inner`, then `check(value)`, which returns a problem text to reject the value. */
  refine: (inner, check) =>
    schema(
      inner.name,
      (value, loc, problems) => {
        const before = problems.length;
        const result = inner.check(value, loc, problems);
        if (problems.length === before) {
          const problem = check(result);
          if (problem) problems.push([loc, problem]);
        }
        return result;
      },
      toJsonSchema(inner),
    ),
};

/**
 * `value` checked against `schema`; returns the checked value (objects keep
 * only declared keys) or throws a {@link ValidationError}.
 */
export function validate(schemaToUse, value, title = 'the value') {
  const problems = [];
  const result = schemaToUse.check(value, '', problems);
  if (problems.length) throw new ValidationError(title, problems);
  return result;
}
