/**
 * The Sluice step SDK for JavaScript.
 *
 * A step is a plain function that takes a {@link Ctx}; {@link step} turns it
 * into the component's `run` export, which the step's entry module must
 * export under that name:
 *
 * ```js
 * import { step } from './sluice_step.js';
 *
 * export const run = step((ctx) => {
 *   const line = ctx.param('line', '');
 *   const src = ctx.input('in');
 *   const out = ctx.output('out', 'text/plain');
 *   for (const chunk of src.chunks()) out.write(chunk);
 *   out.write(line + '\n');
 *   const artifact = out.finish();
 *   ctx.metric('bytes', artifact.size);
 *   console.log(`wrote ${artifact.size} bytes`);
 * });
 * ```
 *
 * The engine stages this file as `sluice_step.js` next to the step's own
 * modules, so it is always the engine's version; import it by that relative
 * path (other modules of the step directory are imported the same way; npm
 * packages are not resolved). ComponentizeJS evaluates every module's top
 * level once, at build time, and snapshots the result into the component:
 * keep work inside the step function. At top level `Math.random()` fails
 * the build and `Date.now()` is the build machine's clock, baked in.
 *
 * Inputs are {@link Input} readers over the artifacts wired in the pipeline
 * spec (chunked host reads, `seek`, `readAll`, `text`); outputs are
 * {@link Output} writers sealed by `finish()`. Outputs still open when the
 * function returns are finished for it; every declared output must be
 * written. `ctx.gpu.submit(spec)` runs a job on a native worker and
 * `ctx.publish(name, artifact)` makes one of its outputs a step output.
 *
 * A thrown exception ends the step as a failure of class `step`: its stack
 * goes to the step's log (stderr) and `"<ErrorName>: <message>"` is the
 * message; outputs still open are not finished. A refused host call (no
 * such input, a quota, ...) throws a {@link StepError} whose message is
 * `"<kind>: <text>"`, e.g. `"not-found: step … has no input named …"`. The sandbox
 * has no host files, network or environment; `console.log` writes to the
 * step's stdout and `console.error` to its stderr; `Math.random()` and
 * `Date.now()` / `performance.now()` read the engine's seeded random and
 * virtual clocks (wasi:random, wasi:clocks), so a step replays identically.
 *
 * @module sluice_step
 */

import * as artifacts from 'sluice:step/artifacts@0.1.0';
import * as params from 'sluice:step/params@0.1.0';
import * as metrics from 'sluice:step/metrics@0.1.0';
import * as gpu from 'sluice:step/gpu@0.1.0';

/** What one host read asks for (the host caps a chunk at 1 MiB). */
const CHUNK = 1 << 20;

/** The symbol the generated bindings use to drop a resource handle. */
const DISPOSE = Symbol.dispose || Symbol.for('dispose');

const ENCODER = new TextEncoder();

/**
 * An artifact as the step sees it.
 *
 * @typedef {object} Artifact
 * @property {string} name The logical name: an input name, or an output name.
 * @property {string} digest `"sha256:"` and 64 lowercase hex digits.
 * @property {number} size The size in bytes.
 * @property {string} mediaType The media type recorded with it, e.g. `text/csv`.
 */

/**
 * A refused host call (no such input, output or param, a quota, ...) or a
 * misuse the SDK itself detects. The message is `"<kind>: <text>"` for host
 * errors, where kind is `not-found`, `denied`, `quota`, `invalid` or `io`.
 */
export class StepError extends Error {
  /**
   * @param {string} message What went wrong, naming the offending entity.
   * @param {string} [kind] The WIT `error` case, when the host refused.
   */
  constructor(message, kind) {
    super(message);
    this.name = 'StepError';
    /** @type {string | undefined} The WIT `error` case, when the host refused. */
    this.kind = kind;
  }
}

/**
 * Calls a host function, turning the WIT `error` variant it throws (a
 * ComponentError whose `payload` is `{tag, val}`) into a {@link StepError}.
 *
 * @template T
 * @param {() => T} call The host call.
 * @returns {T} Its result.
 */
function host(call) {
  try {
    return call();
  } catch (e) {
    const p = e && e.payload;
    if (p && typeof p === 'object' && typeof p.tag === 'string') {
      throw new StepError(`${p.tag}: ${p.val}`, p.tag);
    }
    throw e;
  }
}

/**
 * Drops a host resource handle now rather than at garbage collection.
 *
 * @param {object | null} resource A reader, writer or job handle.
 */
function drop(resource) {
  if (resource && typeof resource[DISPOSE] === 'function') resource[DISPOSE]();
}

/**
 * The SDK's view of a WIT artifact record (`size` as a number).
 *
 * @param {{name: string, digest: string, size: bigint, mediaType: string}} a The record.
 * @returns {Artifact} The artifact.
 */
function toArtifact(a) {
  return { name: a.name, digest: a.digest, size: Number(a.size), mediaType: a.mediaType };
}

/**
 * The WIT artifact record of an SDK artifact.
 *
 * @param {Artifact} a The artifact.
 * @returns {{name: string, digest: string, size: bigint, mediaType: string}} The record.
 */
function fromArtifact(a) {
  return { name: a.name, digest: a.digest, size: BigInt(a.size), mediaType: a.mediaType };
}

/**
 * Concatenates byte chunks.
 *
 * @param {Uint8Array[]} parts The chunks.
 * @param {number} total Their summed length.
 * @returns {Uint8Array} One array.
 */
function concat(parts, total) {
  if (parts.length === 1) return parts[0];
  const all = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    all.set(p, at);
    at += p.length;
  }
  return all;
}

/** A wired input artifact, read in chunks from the host; seekable. */
export class Input {
  /**
   * Use {@link Ctx#input}.
   *
   * @param {string} name The input name.
   * @param {object} reader The host `reader` resource.
   * @param {number} size The artifact's size in bytes.
   */
  constructor(name, reader, size) {
    /** @type {string} The input name. */
    this.name = name;
    /** @type {number} The artifact's size in bytes. */
    this.size = size;
    /** @type {number} The read position, bytes from the start. */
    this.position = 0;
    this._reader = reader;
  }

  /**
   * Reads up to `max` bytes from the current position (at most 1 MiB per
   * call). An empty array means the end of the artifact.
   *
   * @param {number} [max=1048576] The most bytes to return.
   * @returns {Uint8Array} The bytes read.
   */
  read(max = CHUNK) {
    const want = Math.min(Math.max(0, Math.floor(max)), CHUNK);
    if (want === 0) return new Uint8Array(0);
    const chunk = host(() => this._open().read(BigInt(want)));
    this.position += chunk.length;
    return chunk;
  }

  /**
   * Reads from the current position to the end.
   *
   * @returns {Uint8Array} The remaining bytes.
   */
  readAll() {
    const parts = [];
    let total = 0;
    for (const chunk of this.chunks()) {
      parts.push(chunk);
      total += chunk.length;
    }
    return concat(parts, total);
  }

  /**
   * Decodes the rest of the input as text.
   *
   * @param {string} [encoding='utf-8'] A TextDecoder encoding label.
   * @returns {string} The text.
   */
  text(encoding = 'utf-8') {
    return new TextDecoder(encoding).decode(this.readAll());
  }

  /**
   * Iterates over the rest of the input in chunks of at most `size` bytes.
   *
   * @param {number} [size=65536] The most bytes per chunk (capped at 1 MiB).
   * @yields {Uint8Array} The next non-empty chunk.
   */
  *chunks(size = 1 << 16) {
    for (;;) {
      const chunk = this.read(size);
      if (chunk.length === 0) return;
      yield chunk;
    }
  }

  /**
   * Moves the read position to `offset` bytes from the start; `size` is
   * the end. Past the size is a {@link StepError} (`invalid`).
   *
   * @param {number} offset The new position.
   * @returns {number} The new position.
   */
  seek(offset) {
    if (!Number.isInteger(offset) || offset < 0) {
      throw new StepError(`input \`${this.name}\`: cannot seek to ${offset}`);
    }
    host(() => this._open().seek(BigInt(offset)));
    this.position = offset;
    return offset;
  }

  /** Releases the host reader; later reads fail. */
  close() {
    drop(this._reader);
    this._reader = null;
  }

  /** @returns {object} The host reader, if not closed. */
  _open() {
    if (this._reader === null) throw new StepError(`input \`${this.name}\` is closed`);
    return this._reader;
  }
}

/** A declared output, written through to the host; sealed by `finish()`. */
export class Output {
  /**
   * Use {@link Ctx#output}.
   *
   * @param {string} name The output name.
   * @param {object} writer The host `writer` resource.
   */
  constructor(name, writer) {
    /** @type {string} The output name. */
    this.name = name;
    /** @type {number} Bytes written so far. */
    this.written = 0;
    /** @type {Artifact | null} The sealed artifact, once finished. */
    this.artifact = null;
    this._writer = writer;
  }

  /**
   * Appends bytes; a string is written as UTF-8.
   *
   * @param {Uint8Array | ArrayBufferView | ArrayBuffer | string} data The bytes.
   * @returns {number} How many bytes were written.
   */
  write(data) {
    let bytes;
    if (typeof data === 'string') bytes = ENCODER.encode(data);
    else if (data instanceof Uint8Array) bytes = data;
    else if (ArrayBuffer.isView(data)) bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    else if (data instanceof ArrayBuffer) bytes = new Uint8Array(data);
    else throw new TypeError(`output \`${this.name}\`: cannot write ${typeof data}; pass a Uint8Array or a string`);
    if (this.artifact !== null) throw new StepError(`output \`${this.name}\` is already finished`);
    // One host call per MiB: the bindings copy each call's bytes into a
    // fresh buffer of linear memory, so this bounds that copy.
    for (let at = 0; at < bytes.length; at += CHUNK) {
      const part = bytes.subarray(at, Math.min(at + CHUNK, bytes.length));
      host(() => this._writer.write(part));
      this.written += part.length;
    }
    return bytes.length;
  }

  /**
   * Seals the output into the store (again: the same artifact).
   *
   * @returns {Artifact} The sealed artifact.
   */
  finish() {
    if (this.artifact === null) {
      this.artifact = toArtifact(host(() => this._writer.finish()));
      drop(this._writer);
      this._writer = null;
    }
    return this.artifact;
  }
}

/** A submitted GPU job; see {@link Gpu#submit}. */
export class Job {
  /**
   * Use {@link Gpu#submit}.
   *
   * @param {object} job The host `job` resource.
   */
  constructor(job) {
    this._job = job;
  }

  /** @returns {string} The job's id, unique within the run. */
  id() {
    return this._job.id();
  }

  /**
   * The current state, without blocking: `queued`, `running`,
   * `succeeded`, `failed`, `cancelled` or `timed-out`.
   *
   * @returns {string} The state.
   */
  state() {
    return this._job.state();
  }

  /**
   * Blocks until the job ends.
   *
   * @returns {JobResult} Its outcome.
   */
  wait() {
    return new JobResult(this._job.wait());
  }

  /** Asks the worker to stop the job. */
  cancel() {
    this._job.cancel();
  }
}

/** The outcome of a GPU job. */
export class JobResult {
  /**
   * Use {@link Job#wait}.
   *
   * @param {object} r The WIT `job-result` record.
   */
  constructor(r) {
    /** @type {string} The final state, e.g. `succeeded`. */
    this.state = r.state;
    /** @type {Artifact[]} Output artifacts, verified, in the store. */
    this.outputs = r.outputs.map(toArtifact);
    /** @type {object} Metrics the worker reported. */
    this.metrics = JSON.parse(r.metricsJson || '{}');
    /** @type {object | undefined} GPU telemetry (`utilMean`, `fbUsedMaxBytes`, ...), if any. */
    this.usage = r.usage;
    /** @type {number} Wall time of the job, milliseconds. */
    this.wallMs = Number(r.wallMs);
    /** @type {string | undefined} Why the job did not succeed, if it did not. */
    this.message = r.message;
  }

  /**
   * The job output named `name`.
   *
   * @param {string} name The output name.
   * @returns {Artifact | undefined} The artifact, if the job produced one.
   */
  output(name) {
    return this.outputs.find((a) => a.name === name);
  }

  /**
   * This result if the job succeeded; otherwise throws a {@link StepError}
   * naming its state and message.
   *
   * @returns {JobResult} This result.
   */
  succeeded() {
    if (this.state !== 'succeeded') {
      throw new StepError(`gpu job ${this.state}: ${this.message ?? 'no message'}`);
    }
    return this;
  }
}

/**
 * What a step asks a worker to do.
 *
 * @typedef {object} JobSpec
 * @property {string} worker The worker kind, e.g. `torch` or `cpu`.
 * @property {string} op The operation, e.g. `train-mlp`.
 * @property {object | string} [params={}] Operation params (an object, or JSON text).
 * @property {Array<Artifact | [string, string]>} [inputs=[]] Input artifacts, or (name, digest) pairs.
 * @property {number} [gpus=0] GPUs requested.
 * @property {number} [minFreeMemoryMib=0] Only schedule on a GPU with this much free memory.
 * @property {number} [timeoutMs] A deadline for the job, milliseconds.
 * @property {number | bigint} [seed=0] Seed for the worker's random number generators.
 * @property {boolean} [deterministic=true] Ask the worker for deterministic kernels.
 */

/** Host-mediated GPU work: `ctx.gpu`. */
export class Gpu {
  /**
   * Submits a job. Without a gpu grant in the spec this throws a
   * {@link StepError} (`denied`); beyond the grant's jobs, `quota`.
   *
   * @param {JobSpec} spec The job.
   * @returns {Job} The submitted job.
   */
  submit(spec) {
    const wit = {
      worker: spec.worker,
      op: spec.op,
      paramsJson: typeof spec.params === 'string' ? spec.params : JSON.stringify(spec.params ?? {}),
      inputs: (spec.inputs ?? []).map((i) => (Array.isArray(i) ? [i[0], i[1]] : [i.name, i.digest])),
      gpus: spec.gpus ?? 0,
      minFreeMemoryMib: BigInt(spec.minFreeMemoryMib ?? 0),
      timeoutMs: spec.timeoutMs === undefined || spec.timeoutMs === null ? undefined : BigInt(spec.timeoutMs),
      seed: BigInt(spec.seed ?? 0),
      deterministic: spec.deterministic ?? true,
    };
    return new Job(host(() => gpu.submit(wit)));
  }

  /**
   * The GPUs the engine can see, one line each (name, uuid, memory).
   *
   * @returns {string[]} Empty when there is none.
   */
  devices() {
    return gpu.devices();
  }
}

/** What a step sees: its params, inputs, outputs, metrics and GPU jobs. */
export class Ctx {
  /** Use {@link step}; the SDK makes one per run. */
  constructor() {
    /** @type {Map<string, string>} */
    this._params = new Map(params.all());
    /** @type {Map<string, Artifact>} */
    this._inputs = new Map(artifacts.inputs().map((a) => [a.name, toArtifact(a)]));
    /** @type {string[]} */
    this._outputs = artifacts.outputs();
    /** @type {Input[]} */
    this._readers = [];
    /** @type {Output[]} */
    this._writers = [];
    /** Host-mediated GPU work. @type {Gpu} */
    this.gpu = new Gpu();
  }

  // Params ------------------------------------------------------------

  /**
   * The param `name`. A missing param is `defaultValue`, or an error naming
   * it when there is none. The value is converted to the type of the
   * default: a number (`"1e-3"` → 0.001, non-numbers are an error), a
   * boolean (`"true"` / `"false"`), a bigint; otherwise the string.
   *
   * @template T
   * @param {string} name The param name.
   * @param {T} [defaultValue] What a missing param is.
   * @returns {T | string} The value.
   */
  param(name, defaultValue) {
    if (!this._params.has(name)) {
      if (defaultValue === undefined) {
        const known = [...this._params.keys()].sort().join(', ') || 'none';
        throw new StepError(`missing param \`${name}\`; params: ${known}`);
      }
      return defaultValue;
    }
    const raw = this._params.get(name);
    switch (typeof defaultValue) {
      case 'number': {
        const n = raw.trim() === '' ? NaN : Number(raw);
        if (Number.isNaN(n)) throw new StepError(`param \`${name}\` = ${JSON.stringify(raw)} is not a number`);
        return n;
      }
      case 'boolean':
        if (raw === 'true' || raw === 'false') return raw === 'true';
        throw new StepError(`param \`${name}\` = ${JSON.stringify(raw)} is not true or false`);
      case 'bigint':
        try {
          return BigInt(raw);
        } catch {
          throw new StepError(`param \`${name}\` = ${JSON.stringify(raw)} is not an integer`);
        }
      default:
        return raw;
    }
  }

  /**
   * Every param, as the strings the spec resolved.
   *
   * @returns {Record<string, string>} Params by name.
   */
  params() {
    return Object.fromEntries(this._params);
  }

  // Artifacts ---------------------------------------------------------

  /**
   * The wired inputs, sorted by name.
   *
   * @returns {Artifact[]} The inputs.
   */
  inputs() {
    return [...this._inputs.values()];
  }

  /**
   * The declared output names, sorted.
   *
   * @returns {string[]} The names.
   */
  outputs() {
    return [...this._outputs];
  }

  /**
   * Opens input `name` (a fresh reader at offset 0 each call).
   *
   * @param {string} name The input name wired in the spec.
   * @returns {Input} The reader.
   */
  input(name) {
    const reader = host(() => artifacts.open(name));
    const meta = this._inputs.get(name);
    const input = new Input(name, reader, meta ? meta.size : 0);
    this._readers.push(input);
    return input;
  }

  /**
   * Input `name` decoded as text.
   *
   * @param {string} name The input name.
   * @param {string} [encoding='utf-8'] A TextDecoder encoding label.
   * @returns {string} The text.
   */
  text(name, encoding = 'utf-8') {
    const input = this.input(name);
    try {
      return input.text(encoding);
    } finally {
      input.close();
    }
  }

  /**
   * Starts writing declared output `name`.
   *
   * @param {string} name The output name declared in the spec.
   * @param {string} [mediaType='application/octet-stream'] Its media type.
   * @returns {Output} The writer.
   */
  output(name, mediaType = 'application/octet-stream') {
    const output = new Output(name, host(() => artifacts.create(name, mediaType)));
    this._writers.push(output);
    return output;
  }

  /**
   * Declares output `name` to be `artifact`, an output of a gpu job of this
   * step that succeeded; no bytes cross the boundary.
   *
   * @param {string} name The output name declared in the spec.
   * @param {Artifact} artifact A job output.
   * @returns {Artifact} The published output under its new name.
   */
  publish(name, artifact) {
    return toArtifact(host(() => artifacts.publish(name, fromArtifact(artifact))));
  }

  // Metrics -----------------------------------------------------------

  /**
   * Records a scalar; with `step`, one point of a series (e.g. loss per
   * epoch), without, the final value.
   *
   * @param {string} name The metric name.
   * @param {number} value The value.
   * @param {number | bigint} [step] The series index.
   */
  metric(name, value, step) {
    metrics.scalar(name, Number(value), step === undefined || step === null ? undefined : BigInt(step));
  }

  /**
   * Attaches a string tag to the step's result.
   *
   * @param {string} key The tag name.
   * @param {string} value Its value (converted with `String`).
   */
  tag(key, value) {
    metrics.tag(key, String(value));
  }

  /**
   * Ends the run: drops every reader; after success, finishes (and drops)
   * outputs left open. After a failure writers are left alone: dropping
   * one would finish it, and a failed step records no outputs.
   *
   * @param {boolean} ok Whether the step function returned normally.
   */
  _close(ok) {
    for (const input of this._readers) input.close();
    for (const output of this._writers) {
      if (output.artifact === null && ok) output.finish();
    }
  }
}

/**
 * The `"<ErrorName>: <message>"` of a thrown value.
 *
 * @param {unknown} e What was thrown.
 * @returns {string} The message.
 */
function describe(e) {
  if (e instanceof Error) {
    // A subclass that sets no `name` still reads as its class name.
    const name = e.name && e.name !== 'Error' ? e.name : e.constructor?.name || 'Error';
    return `${name}: ${e.message}`;
  }
  return `Error: ${String(e)}`;
}

/**
 * Prints what was thrown, with its stack, to stderr (the step's log).
 *
 * @param {unknown} e What was thrown.
 */
function report(e) {
  const head = describe(e);
  // Frames of the generated bindings (`initializer.js`, named by a build-time
  // temporary path) are not the step's; leave them out.
  const stack =
    e instanceof Error && typeof e.stack === 'string'
      ? e.stack
          .split('\n')
          .filter((frame) => frame.trim() !== '' && !/initializer\.js:\d+/.test(frame))
          .join('\n')
      : '';
  console.error(stack ? `${head}\n${stack}` : head);
}

let entry = null;

/**
 * Makes `fn(ctx)` the step's entry point and returns the `run` export the
 * `step` world needs; export it from the entry module as `run`:
 * `export const run = step((ctx) => { ... });`. `fn` may be async. One
 * per component.
 *
 * @param {(ctx: Ctx) => (void | Promise<void>)} fn The step function.
 * @returns {() => Promise<{tag: 'ok'} | {tag: 'err', val: string}>} The `run` export.
 */
export function step(fn) {
  if (typeof fn !== 'function') throw new TypeError('step(fn): fn must be a function taking a Ctx');
  if (entry !== null && entry !== fn) {
    throw new Error(`two step functions: ${entry.name || 'anonymous'} and ${fn.name || 'anonymous'}`);
  }
  entry = fn;
  return async function run() {
    let ctx = null;
    try {
      ctx = new Ctx();
      await fn(ctx);
      ctx._close(true);
      return { tag: 'ok', val: undefined };
    } catch (e) {
      try {
        if (ctx !== null) ctx._close(false);
      } catch {
        // The step already failed; its own error is the one to report.
      }
      report(e);
      return { tag: 'err', val: describe(e) };
    }
  };
}
