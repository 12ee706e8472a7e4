/**
 * Copies input `in` to output `out`, then appends the `line` param.
 *
 * For the failure tests: `fail = "true"` throws; `mode = "spin"` loops
 * forever; `mode = "hoard"` allocates until memory runs out.
 */

import { step } from './sluice_step.js';

export const run = step((ctx) => {
  if (ctx.param('fail', false)) {
    throw new Error('asked to fail');
  }
  const mode = ctx.param('mode', 'append');
  if (mode === 'spin') {
    for (;;) {
      // Burns fuel until the engine stops the step.
    }
  }
  if (mode === 'hoard') {
    const hoard = [];
    for (;;) {
      hoard.push(new Uint8Array(1 << 20).fill(1));
    }
  }
  const line = ctx.param('line', '');
  const src = ctx.input('in');
  const out = ctx.output('out', 'text/plain');
  for (const chunk of src.chunks(65536)) {
    out.write(chunk);
  }
  out.write(line + '\n');
  const { size } = out.finish();
  ctx.metric('bytes_copied', size);
  // The engine's seeded random and virtual clock: the same every replay.
  ctx.tag('random', Math.random());
  ctx.tag('time', Date.now());
  console.log(`js-append wrote ${size} bytes`);
});
