"""The reference a user would otherwise reach for: polars doing what the
`ingest` and `stats` steps do, timed, for bench/data.sh.

    python data_polars.py CSV TRAIN_ARROWS OUT_DIR LABEL EVAL_FRACTION SEED

Prints one JSON line per task, `{"task", "ms", "threads", "rows"}`:

- `ingest`: read the CSV (`NA` and empty are missing, types inferred from
  the first 10000 rows like the step's default `infer_rows`), drop rows
  without a label, numbers to Float64, split by a seeded hash of the row
  index (polars' own hash, not the step's SplitMix64: the same work, not
  the same rows), write train and eval as Arrow IPC streams.
- `stats`: from the step's own input (TRAIN_ARROWS, `ingest.train` of the
  sluice run): per column count, missing, distinct, and min/max/mean/std
  of numbers.
- `stats_csv`: the same statistics straight from the CSV, as a user
  without the pipeline would compute them.

Run it with POLARS_MAX_THREADS=1 for the single-threaded comparison (the
steps are single-threaded).
"""

import json
import os
import sys
import time

import polars as pl


def timed(task, f):
    start = time.perf_counter()
    rows = f()
    ms = (time.perf_counter() - start) * 1e3
    print(json.dumps({"task": task, "ms": round(ms, 3), "threads": pl.thread_pool_size(), "rows": rows}))


def read_csv(csv):
    return pl.read_csv(csv, null_values=["NA", ""], infer_schema_length=10000)


def ingest(csv, out_dir, label, eval_fraction, seed):
    df = read_csv(csv)
    numbers = [c for c, t in df.schema.items() if t.is_numeric()]
    df = df.with_columns([pl.col(c).cast(pl.Float64) for c in numbers])
    df = df.with_columns(pl.int_range(pl.len(), dtype=pl.UInt64).alias("__row"))
    df = df.filter(pl.col(label).is_not_null())
    unit = (pl.col("__row").hash(seed) // 2048).cast(pl.Float64) / float(2**53)
    is_eval = unit < eval_fraction
    train = df.filter(~is_eval).drop("__row")
    evals = df.filter(is_eval).drop("__row")
    train.write_ipc_stream(os.path.join(out_dir, "train.arrows"))
    evals.write_ipc_stream(os.path.join(out_dir, "eval.arrows"))
    return train.height + evals.height


def statistics(df):
    exprs = []
    for c, t in df.schema.items():
        col = pl.col(c)
        exprs += [
            col.count().alias(f"{c}:count"),
            col.null_count().alias(f"{c}:missing"),
            col.n_unique().alias(f"{c}:distinct"),
        ]
        if t.is_numeric():
            exprs += [
                col.min().alias(f"{c}:min"),
                col.max().alias(f"{c}:max"),
                col.mean().alias(f"{c}:mean"),
                col.std().alias(f"{c}:std"),
            ]
    df.select(exprs)
    return df.height


def main():
    csv, train_arrows, out_dir, label, eval_fraction, seed = sys.argv[1:]
    timed("ingest", lambda: ingest(csv, out_dir, label, float(eval_fraction), int(seed)))
    timed("stats", lambda: statistics(pl.read_ipc_stream(train_arrows)))
    timed("stats_csv", lambda: statistics(read_csv(csv)))


if __name__ == "__main__":
    main()
