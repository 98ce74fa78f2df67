/**
 * Files in the task's own directory, over `wasi:filesystem` (the directories
 * the host preopens: the run's directory as `.`, and files handed to the run
 * read-only under `in/`). The same small API as the Rust and Python SDKs:
 *
 * ```js
 * import { files } from 'cairn-sdk';
 *
 * files.writeText('out/report.csv', 'a,b\n1,2\n');   // folders are made as needed
 * files.readText('out/report.csv');                  // 'a,b\n1,2\n'
 * files.list('out');                                 // ['report.csv']
 * ```
 *
 * Paths are relative to the task's directory, with `/` between parts; an
 * absolute path or one that climbs out with `..` is refused. Failures throw a
 * {@link FileError} (kind `file-error`, not retried: the same call would fail
 * again), naming the path and the reason (`no-entry`, `exist`, `read-only`…).
 */

import { getDirectories } from 'wasi:filesystem/preopens@0.2.12';

import { TaskError } from './errors.js';

/** A failed file operation: kind `file-error`, not retryable. */
export class FileError extends TaskError {
  /**
   * @param {string} path the path the task gave
   * @param {string} reason the filesystem's error code (e.g. `no-entry`) or a sentence
   */
  constructor(path, reason) {
    super('file-error', `${path}: ${describe(reason)}`, { retryable: false });
    this.name = 'FileError';
    this.path = path;
    this.reason = reason;
  }
}

const REASONS = {
  'no-entry': 'no such file or directory',
  exist: 'it exists already',
  'not-directory': 'a part of the path is not a directory',
  'is-directory': 'it is a directory',
  'read-only': 'it is read-only (files handed to the task under in/ cannot be changed)',
  'not-permitted': 'not permitted (outside the task\'s directories?)',
  access: 'access denied',
  'insufficient-space': 'no space left (the environment\'s disk limit?)',
  quota: 'the disk quota is used up',
  'not-empty': 'the directory is not empty',
};

function describe(reason) {
  return REASONS[reason] ?? reason;
}

/** The preopened directories, longest name first, found once. */
let preopens;
function roots() {
  if (!preopens) {
    preopens = getDirectories()
      .map(([descriptor, name]) => [descriptor, name.replace(/^\.\/?/, '').replace(/\/+$/, '')])
      .sort((a, b) => b[1].length - a[1].length);
  }
  return preopens;
}

/** The preopen that holds `path`, and the path inside it. */
function resolve(path) {
  if (typeof path !== 'string' || path === '') throw new FileError(String(path), 'the path must be a non-empty string');
  const parts = path.split('/').filter((p) => p !== '' && p !== '.');
  if (path.startsWith('/') || parts.includes('..')) {
    throw new FileError(path, "paths are relative to the task's directory and may not climb out of it with '..'");
  }
  const inner = parts.join('/');
  for (const [descriptor, name] of roots()) {
    if (name === '') return [descriptor, inner || '.'];
    if (inner === name) return [descriptor, '.'];
    if (inner.startsWith(`${name}/`)) return [descriptor, inner.slice(name.length + 1)];
  }
  throw new FileError(path, 'the host gave this task no directory');
}

/** Runs `op` on the descriptor and inner path of `path`, turning errors into FileErrors. */
function on(path, op) {
  const [root, inner] = resolve(path);
  try {
    return op(root, inner);
  } catch (e) {
    if (e instanceof FileError) throw e;
    throw new FileError(path, e?.payload ?? e?.message ?? String(e));
  }
}

/** Opens, runs `use` on the open descriptor, and closes it whatever happens. */
function withFile(root, inner, openFlags, flags, use) {
  const file = root.openAt({}, inner, openFlags, flags);
  try {
    return use(file);
  } finally {
    file[Symbol.dispose]();
  }
}

/** Makes every folder above `inner` (like `mkdir -p` of its parent). */
function makeParents(root, inner) {
  const parts = inner.split('/');
  for (let i = 1; i < parts.length; i++) makeFolder(root, parts.slice(0, i).join('/'));
}

function makeFolder(root, inner) {
  try {
    root.createDirectoryAt(inner);
  } catch (e) {
    if (e?.payload !== 'exist') throw e;
  }
}

const CHUNK = 1 << 20;

export const files = {
  /** The file's bytes, as a Uint8Array. */
  readBytes(path) {
    return on(path, (root, inner) =>
      withFile(root, inner, {}, { read: true }, (file) => {
        const chunks = [];
        let offset = 0n;
        for (;;) {
          const [bytes, end] = file.read(BigInt(CHUNK), offset);
          chunks.push(bytes);
          offset += BigInt(bytes.length);
          if (end || bytes.length === 0) break;
        }
        const all = new Uint8Array(Number(offset));
        let at = 0;
        for (const chunk of chunks) {
          all.set(chunk, at);
          at += chunk.length;
        }
        return all;
      }),
    );
  },

  /** The file's text, decoded as UTF-8. */
  readText(path) {
    return new TextDecoder().decode(files.readBytes(path));
  },

  /** Writes `bytes` (a Uint8Array) as the whole file, making its folders as needed. */
  writeBytes(path, bytes) {
    on(path, (root, inner) => {
      makeParents(root, inner);
      withFile(root, inner, { create: true, truncate: true }, { write: true }, (file) => {
        let offset = 0;
        while (offset < bytes.length) {
          const written = file.write(bytes.subarray(offset, offset + CHUNK), BigInt(offset));
          offset += Number(written);
        }
      });
    });
  },

  /** Writes `text` as UTF-8 as the whole file, making its folders as needed. */
  writeText(path, text) {
    files.writeBytes(path, new TextEncoder().encode(String(text)));
  },

  /** Whether `path` exists (a file or a folder). */
  exists(path) {
    const [root, inner] = resolve(path);
    try {
      root.statAt({}, inner);
      return true;
    } catch (e) {
      if (e?.payload === 'no-entry') return false;
      throw new FileError(path, e?.payload ?? String(e));
    }
  },

  /** The size of a file, in bytes. */
  size(path) {
    return on(path, (root, inner) => Number(root.statAt({}, inner).size));
  },

  /** The names in folder `path` (default: the task's directory), sorted; folders end with `/`. */
  list(path = '.') {
    return on(path, (root, inner) =>
      withFile(root, inner, { directory: true }, { read: true }, (dir) => {
        const stream = dir.readDirectory();
        const names = [];
        try {
          for (let entry = stream.readDirectoryEntry(); entry; entry = stream.readDirectoryEntry()) {
            names.push(entry.type === 'directory' ? `${entry.name}/` : entry.name);
          }
        } finally {
          stream[Symbol.dispose]();
        }
        return names.sort();
      }),
    );
  },

  /** Makes folder `path` and any above it; nothing happens if it exists. */
  mkdir(path) {
    on(path, (root, inner) => {
      makeParents(root, inner);
      makeFolder(root, inner);
    });
  },

  /** Removes a file, or an empty folder. */
  remove(path) {
    on(path, (root, inner) => {
      if (root.statAt({}, inner).type === 'directory') root.removeDirectoryAt(inner);
      else root.unlinkFileAt(inner);
    });
  },
};
