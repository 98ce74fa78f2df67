/**
 * `File` and `Dir`: files that pass between tasks by reference, never
 * through JSON.
 *
 * A task writes a file in its directory and returns (or gives a child)
 * `File.fromPath('out/report.csv')`; the host stores it in its blob store and
 * puts `{"$file": "sha256:…", "name": "report.csv", "size": 123}` in its
 * place. A task that receives such a reference (`v.file()` in its input
 * schema, or `File.from(value)`) finds the file read-only at `file.path`
 * (`in/<16 hex digits>/report.csv`):
 *
 * ```js
 * import { File, exportTask, files, tasks, v } from 'cairn-sdk';
 *
 * function summarise({ table }) {
 *   return { lines: table.readText().split('\n').length };
 * }
 * export const run = exportTask(summarise, { input: v.object({ table: v.file() }) });
 * ```
 */

import { files } from './files.js';

class Ref {
  /** @param {string} target `sha256:…` once stored, else a path in the task's directory */
  constructor(target, { name, size, count } = {}) {
    this.target = target;
    this.givenName = name;
    this.bytes = size;
    this.count = count;
  }

  /** A reference to `path` in the task's own directory, stored by the host when it leaves the task. */
  static fromPath(path, name) {
    return new this(path, { name });
  }

  /** The reference in `value` (an object as the host writes it); throws a TypeError otherwise. */
  static from(value) {
    if (value instanceof this) return value;
    const key = this.KEY;
    if (value === null || typeof value !== 'object' || typeof value[key] !== 'string') {
      throw new TypeError(`expected a reference, an object with a string under ${JSON.stringify(key)}`);
    }
    return new this(value[key], { name: value.name, size: value.size, count: value.files });
  }

  /** Its content address, once stored; else null. */
  get digest() {
    return this.target.startsWith('sha256:') ? this.target : null;
  }

  /** The name it is staged under (for a stored one without a name, the first 16 hex digits of its digest, as the host stages it). */
  get name() {
    if (this.givenName !== undefined && this.givenName !== null) return this.givenName;
    if (this.target.startsWith('sha256:')) return this.target.slice('sha256:'.length, 'sha256:'.length + 16);
    return this.target.split('/').pop();
  }

  /** Its bytes (of all its files, for a directory), once stored. */
  get size() {
    return this.bytes ?? null;
  }

  /** Where it is in the task's directory: under `in/` if it was given to the task, its own path if it wrote it. */
  get path() {
    const digest = this.digest;
    return digest === null ? this.target : `in/${digest.slice('sha256:'.length, 'sha256:'.length + 16)}/${this.name}`;
  }

  /** The reference as JSON (`JSON.stringify` uses it). */
  toJSON() {
    const out = { [this.constructor.KEY]: this.target };
    if (this.givenName !== undefined) out.name = this.givenName;
    if (this.bytes !== undefined) out.size = this.bytes;
    if (this.count !== undefined) out.files = this.count;
    return out;
  }
}

/** A file passed by reference: `{"$file": "sha256:…", name, size}`. */
export class File extends Ref {
  static KEY = '$file';

  /** Its bytes, as a Uint8Array. */
  readBytes() {
    return files.readBytes(this.path);
  }

  /** Its text (UTF-8). */
  readText() {
    return files.readText(this.path);
  }
}

/** A directory passed by reference: `{"$dir": "sha256:…", name, size, files}`. */
export class Dir extends Ref {
  static KEY = '$dir';

  /** How many files it holds, once stored; else null. */
  get fileCount() {
    return this.count ?? null;
  }

  /** The names in it (or in `sub`, a folder inside it), as `files.list` gives them. */
  list(sub = '.') {
    return files.list(sub === '.' || sub === '' ? this.path : `${this.path}/${sub}`);
  }
}
