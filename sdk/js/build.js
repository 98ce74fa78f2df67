#!/usr/bin/env node
/**
 * Builds a JavaScript task into a Cairn component:
 *
 *     node build.js ENTRY.js -o OUT.wasm [--wit DIR]
 *
 * Bundles ENTRY with this SDK (imported as `cairn-sdk`) and any npm packages it
 * uses (rolldown), then runs componentize-js on the bundle against the
 * `cairn:task` WIT contract (default: the repository's `wit/`, two levels up)
 * in this SDK's `task-js` world (`task` and `wasi:filesystem`, for `files`),
 * without the incoming-request handler. The work is skipped when OUT is newer
 * than every file of ENTRY's folder, this SDK and the WIT contract.
 */

import { cp, mkdir, mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import { componentize } from '@bytecodealliance/componentize-js';
import { rolldown } from 'rolldown';

const SDK_DIR = dirname(fileURLToPath(import.meta.url));

function usage(message) {
  console.error(`${message}\nusage: node build.js ENTRY.js -o OUT.wasm [--wit DIR]`);
  process.exit(2);
}

function parseArgs(argv) {
  const args = { wit: resolve(SDK_DIR, '../../wit') };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '-o' || arg === '--out') args.out = argv[++i];
    else if (arg === '--wit') args.wit = argv[++i];
    else if (arg.startsWith('-')) usage(`unknown option ${arg}`);
    else if (args.entry) usage(`unexpected argument ${arg}`);
    else args.entry = arg;
  }
  if (!args.entry || !args.out) usage('ENTRY and -o OUT are required');
  return { entry: resolve(args.entry), out: resolve(args.out), wit: resolve(args.wit) };
}

/** The newest modification time under `path` (node_modules excluded), 0 if it does not exist. */
async function newest(path) {
  let info;
  try {
    info = await stat(path);
  } catch {
    return 0;
  }
  if (!info.isDirectory()) return info.mtimeMs;
  let latest = info.mtimeMs;
  for (const entry of await readdir(path)) {
    if (entry !== 'node_modules') latest = Math.max(latest, await newest(join(path, entry)));
  }
  return latest;
}

async function upToDate({ entry, out, wit }) {
  const built = await newest(out);
  if (!built) return false;
  const inputs = [
    dirname(entry),
    join(SDK_DIR, 'src'),
    join(SDK_DIR, 'wit'),
    join(SDK_DIR, 'build.js'),
    join(SDK_DIR, 'package-lock.json'),
    wit,
  ];
  const times = await Promise.all(inputs.map(newest));
  return times.every((time) => time < built);
}

/** The WASI packages the `task-js` world names, as jco (locked in package-lock.json) ships them. */
const WASI_WIT = join(SDK_DIR, 'node_modules/@bytecodealliance/jco/lib/wit/builtin/0.2.12');
const WASI_PACKAGES = ['filesystem', 'io', 'clocks'];

/**
 * The contract JavaScript tasks build against, in `stage`: the `cairn:task`
 * package from `wit` with this SDK's `task-js` world added (`wit/js.wit`),
 * and the WASI packages it imports under `deps/`.
 */
async function stageWit(wit, stage) {
  const dir = join(stage, 'wit');
  await cp(wit, dir, { recursive: true, filter: (path) => !path.includes(`${wit}/deps`) });
  await cp(join(SDK_DIR, 'wit/js.wit'), join(dir, 'js.wit'));
  for (const name of WASI_PACKAGES) {
    await cp(join(WASI_WIT, `wasi-${name}`), join(dir, 'deps', name), { recursive: true });
  }
  return dir;
}

async function build({ entry, out, wit }) {
  const stage = await mkdtemp(join(tmpdir(), 'cairn-js-build-'));
  try {
    // The task's module, and the SDK's `describe` beside its `run`.
    const wrapper = join(stage, 'entry.js');
    await writeFile(
      wrapper,
      `export * from ${JSON.stringify(entry)};\nexport { describeTask as describe } from 'cairn-sdk';\n`,
    );
    const bundle = await rolldown({
      input: wrapper,
      external: [/^(cairn|wasi):/],
      resolve: { alias: { 'cairn-sdk': join(SDK_DIR, 'src/index.js') } },
      logLevel: 'warn',
    });
    const source = join(stage, 'task.js');
    await bundle.write({ file: source, format: 'esm' });
    await bundle.close();

    const { component } = await componentize({
      sourcePath: source,
      witPath: await stageWit(wit, stage),
      worldName: 'task-js',
      // `http` keeps the global `fetch` (over wasi:http); tasks serve no incoming requests.
      disableFeatures: ['fetch-event'],
    });
    await mkdir(dirname(out), { recursive: true });
    await writeFile(`${out}.partial`, component);
    await cp(`${out}.partial`, out);
    await rm(`${out}.partial`);
  } finally {
    await rm(stage, { recursive: true, force: true });
  }
}

const args = parseArgs(process.argv.slice(2));
if (await upToDate(args)) {
  console.error(`${args.out} is up to date`);
} else {
  await build(args);
  console.error(`built ${args.out}`);
}
