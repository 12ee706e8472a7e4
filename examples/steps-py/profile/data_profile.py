"""A data-quality profile of a raw CSV source, in pure Python.

Input ``csv``: a CSV file with a header row (UTF-8, an optional BOM), e.g.
the tabular pipeline's ``sources.raw``. The rows are streamed one at a time
through a 1 MiB buffer, and what is kept per column is bounded (a few
numbers and at most ``max_distinct`` distinct values), so memory does not
grow with the number of rows. The rows come from ``csv.reader`` over
``ctx.text`` rather than ``ctx.csv``'s dicts: the header is checked even
when no row follows it, and a duplicate column name is an error instead of
one dict key hiding the other.

Output ``profile`` (``application/json``)::

    {"rows": 344, "missing_cells": 19, "ragged_rows": 0,
     "label": "species", "label_missing": 0,
     "classes": {"Adelie": 152, "Chinstrap": 68, "Gentoo": 124},
     "classes_exact": true, "max_distinct": 1000, "missing_values": ["", "NA"],
     "columns": [
       {"name": "species", "type": "string", "count": 344, "missing": 0,
        "distinct": 3, "distinct_exact": true},
       {"name": "bill_length_mm", "type": "number", "count": 342, "missing": 2,
        "min": 32.1, "max": 59.6, "mean": 43.921929824561424}, ...]}

- ``rows``: data rows (the header is not one); ``missing_cells``: the sum
  of the columns' ``missing``.
- Per column, in header order: ``count`` non-missing values, ``missing``
  values (an empty field or ``NA``, exactly; a field absent from a short
  row is missing too). ``type`` is ``number`` when every non-missing value
  is a finite decimal number (``12``, ``-3.5``, ``1e3``; not ``nan``,
  ``inf`` or ``1_000``), with its ``min``, ``max`` and ``mean``;
  ``string`` otherwise, with its ``distinct`` count; ``empty`` when the
  column has no value at all. A distinct count stops at ``max_distinct``
  values: past that ``distinct_exact`` is false (and the step's log says
  so), ``distinct`` the bound.
- ``classes``: rows per value of the label column; rows whose label is
  missing are counted in ``label_missing`` instead. Bounded like distinct
  counts: past ``max_distinct`` classes, ``classes_exact`` is false and
  rows of classes not yet seen are not counted.
- ``ragged_rows``: rows with more or fewer fields than the header (extra
  fields are ignored).

The document is deterministic: keys sorted, numbers written by
``json.dumps`` (``repr``: the shortest text that reads back as the same
double, the same on every platform), the mean a running sum in row order
divided by the count. Metrics: ``rows``, ``missing_cells``.

Params: ``label`` (default ``species``), the label column, which must be in
the header; ``max_distinct`` (default ``1000``), an integer from 1 to
1000000. A bad param, an empty input, a duplicate column name or a label
column missing from the header fails the step with a ``ValueError`` naming
it; so does malformed CSV (e.g. an unclosed quote), naming the line.
"""

import csv
import json
import math
import re
from typing import Dict, List, Optional, Set

from sluice_step import Ctx, step

#: Field values that count as missing.
MISSING_VALUES = ("", "NA")
#: A decimal number: what `float` accepts, less `nan`, `inf`, `_` and spaces.
NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
MAX_DISTINCT_DEFAULT = 1000
MAX_DISTINCT_LIMIT = 1_000_000


class Column:
    """What the profile keeps of one column: bounded, whatever the rows."""

    __slots__ = ("name", "count", "missing", "numeric", "min", "max", "total", "distinct", "distinct_exact")

    def __init__(self, name: str) -> None:
        self.name = name
        self.count = 0
        self.missing = 0
        # Whether every non-missing value so far is a finite number.
        self.numeric = True
        self.min = math.inf
        self.max = -math.inf
        self.total = 0.0
        self.distinct: Set[str] = set()
        self.distinct_exact = True

    def add(self, value: Optional[str], max_distinct: int) -> None:
        """Counts one field (`None`: absent from a short row)."""
        if value is None or value in MISSING_VALUES:
            self.missing += 1
            return
        self.count += 1
        if self.numeric:
            x = float(value) if NUMBER.fullmatch(value) else math.nan
            if math.isfinite(x):
                self.min = min(self.min, x)
                self.max = max(self.max, x)
                self.total += x
            else:
                self.numeric = False
        if self.distinct_exact and value not in self.distinct:
            # Kept for number columns too: a later value may make one a
            # string column.
            if len(self.distinct) >= max_distinct:
                self.distinct_exact = False
                self.distinct.clear()
            else:
                self.distinct.add(value)

    def summary(self, max_distinct: int) -> Dict[str, object]:
        out: Dict[str, object] = {"name": self.name, "count": self.count, "missing": self.missing}
        if self.count == 0:
            out["type"] = "empty"
        elif self.numeric:
            out.update(type="number", min=self.min, max=self.max, mean=self.total / self.count)
        else:
            distinct = len(self.distinct) if self.distinct_exact else max_distinct
            out.update(type="string", distinct=distinct, distinct_exact=self.distinct_exact)
        return out


def max_distinct_param(ctx: Ctx) -> int:
    raw = ctx.params.get("max_distinct")
    if raw is None:
        return MAX_DISTINCT_DEFAULT
    try:
        value = int(raw.strip())
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_DISTINCT_LIMIT:
        raise ValueError(f"param `max_distinct` = {raw!r}: expected an integer from 1 to {MAX_DISTINCT_LIMIT}")
    return value


def header_of(rows, label: str) -> List[str]:
    header = next(rows, None)
    if header is None:
        raise ValueError("input `csv` is empty: expected a header row")
    if header and header[0].startswith("\ufeff"):
        # A byte-order mark (the sandbox's Python has no `utf-8-sig` codec).
        header[0] = header[0][1:]
    seen: Set[str] = set()
    for name in header:
        if name in seen:
            raise ValueError(f"column `{name}` appears twice in the header of input `csv`")
        seen.add(name)
    if label not in seen:
        raise ValueError(
            f"label column `{label}` is not in the header of input `csv`; columns: {', '.join(header)}"
        )
    return header


def profile_rows(rows, label: str, max_distinct: int) -> Dict[str, object]:
    """The profile of CSV `rows` (a `csv.reader`), header first."""
    header = header_of(rows, label)
    columns = [Column(name) for name in header]
    label_at = header.index(label)
    width = len(header)
    n_rows = ragged = label_missing = 0
    classes: Dict[str, int] = {}
    classes_exact = True
    for row in rows:
        n_rows += 1
        if len(row) != width:
            ragged += 1
            row = row[:width] + [None] * (width - len(row))
        for column, value in zip(columns, row):
            column.add(value, max_distinct)
        value = row[label_at]
        if value is None or value in MISSING_VALUES:
            label_missing += 1
        elif value in classes:
            classes[value] += 1
        elif len(classes) < max_distinct:
            classes[value] = 1
        elif classes_exact:
            classes_exact = False
            print(f"label `{label}`: more than {max_distinct} classes; stopped counting new ones")

    for c in columns:
        if not c.numeric and not c.distinct_exact:
            print(f"column `{c.name}`: more than {max_distinct} distinct values; stopped counting them")
    return {
        "rows": n_rows,
        "missing_cells": sum(c.missing for c in columns),
        "ragged_rows": ragged,
        "label": label,
        "label_missing": label_missing,
        "classes": classes,
        "classes_exact": classes_exact,
        "max_distinct": max_distinct,
        "missing_values": list(MISSING_VALUES),
        "columns": [c.summary(max_distinct) for c in columns],
    }


@step
def run(ctx: Ctx) -> None:
    label = ctx.param("label", default="species")
    if label.strip() == "":
        raise ValueError("param `label` is empty: expected the name of the label column")
    max_distinct = max_distinct_param(ctx)

    with ctx.text("csv") as text:
        rows = csv.reader(text, strict=True)
        try:
            profile = profile_rows(rows, label, max_distinct)
        except csv.Error as e:
            raise ValueError(f"input `csv`, line {rows.line_num}: {e}") from None

    document = json.dumps(profile, sort_keys=True, indent=2, allow_nan=False) + "\n"
    with ctx.output("profile", "application/json") as out:
        out.write(document.encode())
    ctx.metric("rows", profile["rows"])
    ctx.metric("missing_cells", profile["missing_cells"])
    print(
        f"profiled {profile['rows']} rows x {len(profile['columns'])} columns: "
        f"{profile['missing_cells']} missing cells, {len(profile['classes'])} classes of `{label}`"
    )
