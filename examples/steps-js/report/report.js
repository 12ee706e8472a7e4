/**
 * A Markdown report of the tabular pipeline, in JavaScript.
 *
 * Inputs, all JSON documents of the pipeline's other steps:
 * - `evaluation`: evaluate's scores (`rows`, `accuracy`, `macro_f1`,
 *   `classes`, `per_class`, `confusion_matrix`);
 * - `statistics`: stats' statistics of the training set (`rows`, `label`,
 *   `columns` with the label column's `top` value counts);
 * - `anomalies`: validate's anomalies of the evaluation set (an array of
 *   `column`, `kind`, `count`, `detail`, `examples`, `rows`);
 * - `profile`: the Python `profile` step's profile of the raw source
 *   (`rows`, `missing_cells`, `columns`, `label`, `classes`).
 *
 * Output `report` (`text/markdown`): a summary, the inputs' digests, the
 * data profile (count, missing values and range per column), the class
 * balance (source rows, training rows, evaluation rows per class), the
 * evaluation metrics with the per-class scores and the confusion matrix,
 * and the anomalies. Metric `accuracy`: the evaluation's, as is.
 *
 * The report is a pure function of the inputs: no clock, no random, and
 * every fraction written with a fixed number of decimals (`toFixed`:
 * metrics 4, profile values and percentages 2), so the same inputs give
 * the same bytes and a rerun is a cache hit. Param `title` (default
 * "Tabular pipeline report") is the heading. An input that is not the
 * JSON expected fails the step naming the input and the field.
 */

import { step } from './sluice_step.js';

/** Largest input read, in bytes: these are summaries, not data. */
const INPUT_BYTES_MAX = 16 << 20;
/** Decimals of metrics (accuracy, F1, ...). */
const METRIC_DECIMALS = 4;
/** Decimals of profile values and percentages. */
const VALUE_DECIMALS = 2;

/**
 * `x` with `digits` decimals; `—` for a missing or non-finite number.
 *
 * @param {unknown} x The number.
 * @param {number} digits Decimals.
 * @returns {string} The text.
 */
function fixed(x, digits) {
  if (typeof x !== 'number' || !Number.isFinite(x)) return '—';
  const s = x.toFixed(digits);
  // A tiny negative number rounds to `-0.00`: write it as zero.
  return /^-0\.?0*$/.test(s) ? s.slice(1) : s;
}

/**
 * `part` as a percentage of `whole`, e.g. `0.58%`.
 *
 * @param {number} part The part.
 * @param {number} whole The whole (0 gives `—`).
 * @returns {string} The text.
 */
function percent(part, whole) {
  return whole > 0 ? `${fixed((100 * part) / whole, VALUE_DECIMALS)}%` : '—';
}

/**
 * Text safe in a Markdown table cell.
 *
 * @param {unknown} value The value.
 * @returns {string} The text, `|` escaped and on one line.
 */
function cell(value) {
  return String(value).replace(/\\/g, '\\\\').replace(/\|/g, '\\|').replace(/[\r\n]+/g, ' ');
}

/**
 * `text` as inline code (longer fences when it contains backticks).
 *
 * @param {unknown} text The text.
 * @returns {string} The code span.
 */
function code(text) {
  const s = cell(text);
  const fence = s.includes('`') ? '``' : '`';
  return `${fence}${fence.length > 1 ? ' ' : ''}${s}${fence.length > 1 ? ' ' : ''}${fence}`;
}

/**
 * A Markdown table.
 *
 * @param {string[]} head Column headings.
 * @param {string[][]} rows Cells, already formatted.
 * @param {string} [align] One of `l`/`r` per column (default all `l`).
 * @returns {string} The table, each line ending in a newline.
 */
function table(head, rows, align) {
  const rule = head.map((_, i) => ((align ?? '')[i] === 'r' ? '---:' : '---'));
  return [head, rule, ...rows].map((r) => `| ${r.join(' | ')} |\n`).join('');
}

/**
 * Input `name` parsed as JSON.
 *
 * @param {import('./sluice_step.js').Ctx} ctx The step context.
 * @param {string} name The input name.
 * @returns {unknown} The document.
 */
function readJson(ctx, name) {
  const meta = ctx.inputs().find((a) => a.name === name);
  if (meta && meta.size > INPUT_BYTES_MAX) {
    throw new Error(`input \`${name}\` is ${meta.size} bytes; a report reads at most ${INPUT_BYTES_MAX}`);
  }
  const text = ctx.text(name);
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new Error(`input \`${name}\` is not JSON: ${e.message}`);
  }
}

/**
 * Checks a field of an input document.
 *
 * @param {string} input The input name (for the message).
 * @param {object} doc The document.
 * @param {string} key The field.
 * @param {'number' | 'integer' | 'string' | 'array' | 'object'} kind What it must be.
 * @returns {any} The value.
 */
function field(input, doc, key, kind) {
  const value = doc === null || typeof doc !== 'object' ? undefined : doc[key];
  const ok = {
    number: () => typeof value === 'number' && Number.isFinite(value),
    integer: () => Number.isSafeInteger(value) && value >= 0,
    string: () => typeof value === 'string',
    array: () => Array.isArray(value),
    object: () => value !== null && typeof value === 'object' && !Array.isArray(value),
  }[kind]();
  if (!ok) {
    throw new Error(`input \`${input}\`: \`${key}\` is ${JSON.stringify(value) ?? 'absent'}, expected ${kind === 'integer' ? 'a count' : `a ${kind}`}`);
  }
  return value;
}

/**
 * The label column's value counts in the statistics, if exact.
 *
 * @param {object} statistics Stats' document.
 * @returns {Map<string, number>} Training rows per class (empty if unknown).
 */
function trainingCounts(statistics) {
  const counts = new Map();
  const label = statistics.label;
  const column = (statistics.columns ?? []).find((c) => c && c.name === label);
  if (column && Array.isArray(column.top) && column.top_exact === true) {
    for (const t of column.top) counts.set(String(t.value), t.count);
  }
  return counts;
}

/**
 * The report's sections.
 *
 * @param {string} title The heading.
 * @param {object} docs The four parsed inputs.
 * @param {import('./sluice_step.js').Artifact[]} inputs The inputs' artifacts.
 * @returns {string} The Markdown.
 */
function render(title, { evaluation, statistics, anomalies, profile }, inputs) {
  const rows = field('profile', profile, 'rows', 'integer');
  const missingCells = field('profile', profile, 'missing_cells', 'integer');
  const columns = field('profile', profile, 'columns', 'array');
  const label = field('profile', profile, 'label', 'string');
  const classes = field('profile', profile, 'classes', 'object');
  const trainRows = field('statistics', statistics, 'rows', 'integer');
  const evalRows = field('evaluation', evaluation, 'rows', 'integer');
  const accuracy = field('evaluation', evaluation, 'accuracy', 'number');
  const macroF1 = field('evaluation', evaluation, 'macro_f1', 'number');
  const perClass = field('evaluation', evaluation, 'per_class', 'array');
  const evalClasses = field('evaluation', evaluation, 'classes', 'array');
  const matrix = field('evaluation', evaluation, 'confusion_matrix', 'array');
  if (!Array.isArray(anomalies)) throw new Error('input `anomalies`: expected a JSON array');

  let md = `# ${title}\n\n`;

  md += '## Summary\n\n';
  md += table(
    ['Measure', 'Value'],
    [
      ['Source rows', String(rows)],
      ['Source columns', String(columns.length)],
      ['Missing cells', `${missingCells} (${percent(missingCells, rows * columns.length)})`],
      ['Label', `${code(label)}, ${Object.keys(classes).length} classes`],
      ['Training rows', String(trainRows)],
      ['Evaluation rows', String(evalRows)],
      ['Accuracy', fixed(accuracy, METRIC_DECIMALS)],
      ['Macro F1', fixed(macroF1, METRIC_DECIMALS)],
      ['Anomalies', String(anomalies.length)],
    ],
  );
  md += '\nInputs:\n\n';
  md += table(
    ['Input', 'Digest', 'Bytes'],
    inputs.map((a) => [code(a.name), code(a.digest), String(a.size)]),
    'llr',
  );

  md += '\n## Data profile\n\n';
  md += `The raw source, ${rows} rows; missing is an empty field or \`NA\`.\n\n`;
  md += table(
    ['Column', 'Type', 'Count', 'Missing', 'Min', 'Max', 'Mean', 'Distinct'],
    columns.map((c) => [
      code(c.name),
      cell(c.type),
      String(c.count),
      `${c.missing} (${percent(c.missing, rows)})`,
      fixed(c.min, VALUE_DECIMALS),
      fixed(c.max, VALUE_DECIMALS),
      fixed(c.mean, VALUE_DECIMALS),
      c.type === 'string' ? `${c.distinct}${c.distinct_exact ? '' : '+'}` : '—',
    ]),
    'llrrrrrr',
  );

  md += '\n### Class balance\n\n';
  const train = trainingCounts(statistics);
  const support = new Map(perClass.map((p) => [String(p.class), p.support]));
  const labelled = Object.values(classes).reduce((a, b) => a + b, 0);
  const names = [...new Set([...Object.keys(classes), ...train.keys(), ...support.keys()])].sort();
  md += table(
    ['Class', 'Source rows', 'Share', 'Training rows', 'Evaluation rows'],
    names.map((name) => [
      code(name),
      String(classes[name] ?? 0),
      percent(classes[name] ?? 0, labelled),
      train.has(name) ? String(train.get(name)) : '—',
      support.has(name) ? String(support.get(name)) : '—',
    ]),
    'lrrrr',
  );
  if (profile.label_missing > 0) md += `\n${profile.label_missing} source rows have no label.\n`;

  md += '\n## Evaluation\n\n';
  md += table(
    ['Metric', 'Value'],
    [
      ['Rows', String(evalRows)],
      ['Accuracy', fixed(accuracy, METRIC_DECIMALS)],
      ['Macro F1', fixed(macroF1, METRIC_DECIMALS)],
    ],
    'lr',
  );
  md += '\n';
  md += table(
    ['Class', 'Precision', 'Recall', 'F1', 'Support'],
    perClass.map((p) => [
      code(p.class),
      fixed(p.precision, METRIC_DECIMALS),
      fixed(p.recall, METRIC_DECIMALS),
      fixed(p.f1, METRIC_DECIMALS),
      String(p.support),
    ]),
    'lrrrr',
  );
  md += '\nConfusion matrix (rows: true class, columns: predicted):\n\n';
  md += table(
    ['', ...evalClasses.map(code)],
    matrix.map((r, i) => [code(evalClasses[i]), ...r.map(String)]),
    'l' + 'r'.repeat(evalClasses.length),
  );

  md += '\n## Anomalies\n\n';
  if (anomalies.length === 0) {
    md += 'None: the evaluation data looks like the training data.\n';
  } else {
    for (const a of anomalies) {
      const examples = (a.examples ?? []).map((v) => (typeof v === 'string' ? JSON.stringify(v) : String(v)));
      const where = (a.rows ?? []).map(String);
      md += `- ${code(a.column)} ${cell(a.kind)}, ${a.count} row${a.count === 1 ? '' : 's'}: ${cell(a.detail)}`;
      if (examples.length > 0) md += `; values ${cell(examples.join(', '))}`;
      if (where.length > 0) md += `; evaluation rows (from 0) ${where.join(', ')}`;
      md += '\n';
    }
  }
  return md;
}

export const run = step((ctx) => {
  const title = ctx.param('title', 'Tabular pipeline report');
  const docs = {};
  for (const name of ['evaluation', 'statistics', 'anomalies', 'profile']) {
    docs[name] = readJson(ctx, name);
  }
  const report = render(title, docs, ctx.inputs());
  const out = ctx.output('report', 'text/markdown');
  out.write(report);
  const { size } = out.finish();
  ctx.metric('accuracy', docs.evaluation.accuracy);
  console.log(`report: ${size} bytes, accuracy ${fixed(docs.evaluation.accuracy, METRIC_DECIMALS)}`);
});
