// Builds a Sluice JavaScript step into a WebAssembly component.
//
//   node componentize.mjs <entry.js> <wit-dir> <world> <out.wasm> [<root-dir>]
//
// <entry.js> is an ES module exporting `run` (see guest-sdk/js/sluice_step.js).
// It may import other modules under <root-dir> (default: the entry's own
// directory) by relative path (`./sluice_step.js`, `./lib/util.js`,
// `../sluice_step.js` from an entry in a subdirectory of the root):
// ComponentizeJS evaluates the entry at build time inside the engine, with
// the root mapped as `/`, so those imports are resolved then and snapshotted
// into the component. Nothing outside the root is reachable and there is no
// npm resolution: a step that needs a package must ship it as relative
// modules. Stack traces name modules by their path under the root.
//
// The component imports the `sluice:step` interfaces plus the WASI ones that
// StarlingMonkey needs for stdio (console.log → stdout, console.error →
// stderr), random (Math.random, crypto.getRandomValues) and clocks (Date.now,
// performance.now); the `http` and `fetch-event` features are disabled, so it
// imports no `wasi:http`.
//
// ComponentizeJS is resolved from the node_modules next to this script (run
// `npm ci` in this directory first). Any error exits with status 1 and the
// reason on stderr; <out.wasm> is then left as it was. Builds are not
// reproducible: the same sources give different bytes each time.

import { readFileSync } from 'node:fs';
import { mkdtemp, rename, rm, stat, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { basename, dirname, join, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

/** WASI features of StarlingMonkey a step has no use for (and may not have). */
const DISABLED_FEATURES = ['http', 'fetch-event'];

/** A failure to report as is (no stack). */
class BuildError extends Error {}

/**
 * The syntax errors of `path` with code frames (ComponentizeJS only counts
 * them), from its own parser: oxc-parser, a dependency of componentize-js.
 */
function parseErrors(path) {
  try {
    const here = fileURLToPath(import.meta.resolve('@bytecodealliance/componentize-js'));
    const { parseSync } = createRequire(here)('oxc-parser');
    const { errors } = parseSync(basename(path), readFileSync(path, 'utf8'));
    return errors.map((err) => (err.codeframe || err.message).replace(/^\n+/, '')).join('\n');
  } catch (e) {
    return `(cannot show the syntax errors: ${e.message})`;
  }
}

async function build(argv) {
  if (argv.length !== 4 && argv.length !== 5) {
    throw new BuildError('usage: node componentize.mjs <entry.js> <wit-dir> <world> <out.wasm> [<root-dir>]');
  }
  const [entryArg, witArg, world, outArg, rootArg] = argv;
  const entry = resolve(entryArg);
  const witPath = resolve(witArg);
  const out = resolve(outArg);
  const root = rootArg === undefined ? dirname(entry) : resolve(rootArg);
  if (!entry.startsWith(root + sep)) {
    throw new BuildError(`entry ${entry} is not inside the root ${root}`);
  }
  for (const [what, path] of [['entry', entry], ['WIT', witPath], ['root', root]]) {
    try {
      await stat(path);
    } catch (e) {
      throw new BuildError(`${what} ${path}: ${e.message}`);
    }
  }

  let componentize;
  let version;
  try {
    ({ componentize, version } = await import('@bytecodealliance/componentize-js'));
  } catch (e) {
    throw new BuildError(
      `cannot load @bytecodealliance/componentize-js next to ${fileURLToPath(import.meta.url)} ` +
        `(run \`npm ci\` in that directory): ${e.message}`,
    );
  }

  // ComponentizeJS works in a directory under os.tmpdir() that it does not
  // remove when it fails early (a syntax error, an unknown world): give it
  // a private one and remove that whatever happens.
  const work = await mkdtemp(join(tmpdir(), 'sluice-js-'));
  process.env.TMPDIR = work;
  try {
    // With the working directory at the root (and the entry inside it),
    // ComponentizeJS maps exactly the root as `/` and names modules by their
    // path inside it, so stack traces read `append.js:12:11`, not a host path.
    process.chdir(root);
    let result;
    try {
      result = await componentize({
        sourcePath: entry,
        sourceName: basename(entry),
        witPath,
        worldName: world,
        disableFeatures: DISABLED_FEATURES,
      });
    } catch (e) {
      let text = e instanceof Error ? e.message : String(e);
      if (text.startsWith('failed to parse JS source')) text += `\n${parseErrors(entry)}`;
      throw new BuildError(`ComponentizeJS ${version} failed to build ${entry}:\n${text}`);
    }
    const tmp = `${out}.tmp-${process.pid}`;
    try {
      await writeFile(tmp, result.component);
      await rename(tmp, out);
    } catch (e) {
      await rm(tmp, { force: true });
      throw new BuildError(`${out}: ${e.message}`);
    }
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

try {
  await build(process.argv.slice(2));
} catch (e) {
  process.stderr.write(`componentize: ${e instanceof BuildError ? e.message : e && e.stack ? e.stack : e}\n`);
  process.exitCode = 1;
}
