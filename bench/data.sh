#!/usr/bin/env bash
# Large data, measured in one run (issue 12's benchmark).
#
#   bench/data.sh [ROWS...]          # default: 100000 1000000
#
# For each ROWS: generates a penguins-shaped CSV (`penguins-gen ROWS 7`;
# no files committed) and runs, on the same file:
# - the example pipeline (examples/pipelines/tabular.toml, its own 256 MiB
#   limits) with the release `sluice`: per step status, wall time, source
#   rows/s and MB/s, peak guest memory, fuel;
# - the same step logic built natively (`data-bench steps`, an example of
#   sluice-tabular, same params read from the spec): native ms and the
#   ratio wasm/native, after checking every output is byte-identical to the
#   run's (sha256 against the run's digests);
# - polars (PyPI, pinned; venv in target/bench-venv) doing ingest (CSV →
#   split → Arrow IPC) and stats, with its default threads and with
#   POLARS_MAX_THREADS=1: the ratio sluice step / polars;
# - `data-bench phases`: where native ingest and the readers spend time.
# Then the host API's Arrow throughput: a COPY_BYTES (default 1e9) Arrow
# stream copied by tests/components/table-io (`mode = "copy"`) in a
# one-step pipeline, read once and twice (`passes`), and once more by a
# new process (which verifies the input in full), and copied as bytes
# (`mode = "bytes"`: the host API alone, nothing decoded), against `cat`
# and `cp` of the same file and the store's SHA-256 of it.
#
# Environment: EPOCHS (train epochs, default 1: the pipeline's own 10
# would dominate at 10 M rows), COPY_BYTES (0 skips the copy section),
# POLARS=0 skips polars. Prints the commit and the machine's load: on a
# shared machine the numbers are pessimistic.
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=("$@")
((${#sizes[@]})) || sizes=(100000 1000000)
epochs=${EPOCHS:-1}
copy_bytes=${COPY_BYTES:-1000000000}
polars_version=2.1.0

rustup target add wasm32-wasip2 >/dev/null 2>&1 || true
cargo build --release -q -p sluice-engine
cargo build --release -q -p sluice-tabular --example penguins-gen --example data-bench
sluice="$PWD/target/release/sluice"
generator="$PWD/target/release/examples/penguins-gen"
native="$PWD/target/release/examples/data-bench"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export SLUICE_COMPILE_CACHE="$work/compile-cache"

# Milliseconds since the epoch, for timing shell commands.
now_ms() { echo $((${EPOCHREALTIME/./} / 1000)); }

# polars in a venv of its own; the column is skipped, not the bench, when
# PyPI cannot be reached.
python=""
if [[ ${POLARS:-1} != 0 ]]; then
  venv="$PWD/target/bench-venv"
  if [[ ! -x $venv/bin/python ]] || ! "$venv/bin/python" -c "import polars, sys; sys.exit(polars.__version__ != '$polars_version')" 2>/dev/null; then
    { python3 -m venv "$venv" && "$venv/bin/pip" install -q "polars==$polars_version"; } >"$work/pip.log" 2>&1 ||
      echo "polars: not installed ($(tail -1 "$work/pip.log")); skipping the polars column"
  fi
  "$venv/bin/python" -c "import polars" 2>/dev/null && python="$venv/bin/python"
fi

commit=$(git rev-parse --short HEAD)
git diff --quiet HEAD 2>/dev/null || commit="$commit+dirty"
echo "commit $commit; load $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores; $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
[[ -n $python ]] && echo "polars $("$python" -c 'import polars as pl; print(pl.__version__, "with", pl.thread_pool_size(), "threads")')"

# Build the step crates (and compile them) once, outside the timed runs.
# Timed runs go one step at a time (`--jobs 1`): the native build is
# sequential too, and two steps side by side on two cores would each be
# timed with the other's load.
sed -e "s#\"\\.\\./#\"$PWD/examples/#" examples/pipelines/tabular.toml >"$work/warm.toml"
"$sluice" run "$work/warm.toml" --home "$work/warm" --param epochs=1 --json >/dev/null 2>&1 || true

for rows in "${sizes[@]}"; do
  csv="$work/penguins-$rows.csv"
  "$generator" "$rows" 7 >"$csv"
  spec="$work/tabular-$rows.toml"
  sed -e "s#^raw = .*#raw = \"$csv\"#" \
    -e "s#\"\\.\\./steps/#\"$PWD/examples/steps/#" \
    examples/pipelines/tabular.toml >"$spec"
  "$sluice" run "$spec" --home "$work/home-$rows" --no-cache --jobs 1 --param "epochs=$epochs" --json >"$work/run-$rows.json" 2>"$work/run-$rows.err" || true

  # The native build, with the params the spec gives each step.
  mapfile -t params < <(python3 - "$spec" "$epochs" <<'PY'
import re, sys, tomllib
spec = tomllib.load(open(sys.argv[1], "rb"))
top = dict(spec.get("params", {}), epochs=sys.argv[2])
seen = {}
for step in spec["steps"].values():
    for k, v in step.get("params", {}).items():
        seen[k] = re.sub(r"\$\{params\.(\w+)\}", lambda m: str(top[m.group(1)]), str(v))
for k, v in sorted(seen.items()):
    print(f"{k}={v}")
PY
)
  "$native" steps "$csv" "$work/native-$rows" "${params[@]}" >"$work/native-$rows.jsonl" 2>"$work/native-$rows.err" || true
  "$native" phases "$csv" "$work/native-$rows" >"$work/phases-$rows.jsonl" 2>>"$work/native-$rows.err" || true

  # polars on the same CSV; its stats read the step's own input.
  : >"$work/polars-$rows.jsonl"
  : >"$work/polars1-$rows.jsonl"
  if [[ -n $python ]]; then
    label=$(printf '%s\n' "${params[@]}" | sed -n 's/^label=//p')
    fraction=$(printf '%s\n' "${params[@]}" | sed -n 's/^eval_fraction=//p')
    mkdir -p "$work/polars-$rows"
    "$python" bench/data_polars.py "$csv" "$work/native-$rows/ingest.train" "$work/polars-$rows" \
      "$label" "${fraction:-0.2}" 0 >"$work/polars-$rows.jsonl" 2>"$work/polars-$rows.err" || true
    POLARS_MAX_THREADS=1 "$python" bench/data_polars.py "$csv" "$work/native-$rows/ingest.train" "$work/polars-$rows" \
      "$label" "${fraction:-0.2}" 0 >"$work/polars1-$rows.jsonl" 2>>"$work/polars-$rows.err" || true
    rm -rf "$work/polars-$rows"
  fi

  python3 - "$work" "$rows" "$(stat -c %s "$csv")" <<'PY'
import hashlib, json, os, sys
work, rows, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def lines(name):
    path = os.path.join(work, name)
    if not os.path.exists(path):
        return []
    return [json.loads(l) for l in open(path) if l.strip().startswith("{")]
def err(name):
    path = os.path.join(work, name)
    return open(path).read().strip() if os.path.exists(path) else ""
try:
    run = json.load(open(os.path.join(work, f"run-{rows}.json")))
except ValueError:
    print(f"{rows} rows: sluice run printed no JSON: {err(f'run-{rows}.err')[-500:]}")
    run = {"status": "failed", "steps": []}
native = {s["step"]: s for s in lines(f"native-{rows}.jsonl")}
polars = {p["task"]: p for p in lines(f"polars-{rows}.jsonl")}
polars1 = {p["task"]: p for p in lines(f"polars1-{rows}.jsonl")}

# Every output of every step that ran both ways, byte for byte.
checked, differ = 0, []
for s in run["steps"]:
    for out, ref in (s.get("outputs") or {}).items():
        path = os.path.join(work, f"native-{rows}", f"{s['name']}.{out}")
        if not os.path.exists(path):
            continue
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        checked += 1
        if "sha256:" + h.hexdigest() != ref["digest"]:
            differ.append(f"{s['name']}.{out}")

print(f"\n{rows} rows ({size / 1e6:.1f} MB of CSV): run {run['status']}")
threads = next(iter(polars.values()), {}).get("threads")
pol_head = f" {'vs polars':>9} {'vs polars×1':>11}" if polars else ""
print(f"  {'step':<10} {'status':<10} {'wall ms':>8} {'src rows/s':>11} {'MB/s':>7} {'peak MiB':>9} {'fuel':>15} {'native ms':>10} {'wasm/nat':>8}{pol_head}")
for s in run["steps"]:
    wall = s.get("wall_ms") or 0
    rate = f"{rows / (wall / 1e3):11.0f}" if wall else f"{'-':>11}"
    mbs = f"{size / 1e6 / (wall / 1e3):7.1f}" if wall else f"{'-':>7}"
    peak = (s.get("memory_peak_bytes") or 0) / 2**20
    n = native.get(s["name"])
    nat = f"{n['ms']:10.0f}" if n else f"{'-':>10}"
    ratio = f"{wall / n['ms']:7.2f}×" if n and n["ms"] > 0 and wall else f"{'-':>8}"
    line = f"  {s['name']:<10} {s['status']:<10} {wall:8d} {rate} {mbs} {peak:9.1f} {s.get('fuel_used') or 0:15d} {nat} {ratio}"
    if polars:
        p, p1 = polars.get(s["name"]), polars1.get(s["name"])
        line += f" {wall / p['ms']:8.1f}×" if p and wall else f" {'-':>9}"
        line += f" {wall / p1['ms']:10.1f}×" if p1 and wall else f" {'-':>11}"
    if s.get("error"):
        line += f"  {s['error']['message'][:100]}"
    print(line)
if not native:
    print(f"  native: failed: {err(f'native-{rows}.err')[-300:]}")
elif differ:
    print(f"  native outputs: {checked - len(differ)} of {checked} identical (sha256 against the run's digests);"
          f" differ: {', '.join(differ)}")
elif checked:
    print(f"  native outputs identical ({checked} outputs, sha256 against the run's digests)")
if polars:
    def fmt(p):
        return ", ".join(f"{t} {p[t]['ms']:.0f} ms" for t in ("ingest", "stats", "stats_csv") if t in p)
    print(f"  polars, {threads} threads: {fmt(polars)}; 1 thread: {fmt(polars1)}"
          " (stats reads ingest.train, the step's input; stats_csv reads the CSV)")
elif err(f"polars-{rows}.err"):
    print(f"  polars failed: {err(f'polars-{rows}.err')[-300:]}")
phases = lines(f"phases-{rows}.jsonl")
if phases:
    print("  native phases: " + "; ".join(
        f"{p['phase']} {p['ms']:.0f} ms ({p['bytes'] / 1e6 / (p['ms'] / 1e3):.0f} MB/s)" for p in phases if p["ms"] > 0))
PY
  rm -rf "$work/native-$rows" "$work/home-$rows" "$csv"
done

((copy_bytes > 0)) || exit 0
# Arrow bytes through the host API.
table="$work/table.arrows"
"$native" arrows "$copy_bytes" "$table" >"$work/arrows.json"
"$native" hash "$table" >"$work/hash.json"
cat "$table" >/dev/null # the first `cat` may find a cold cache; time the second
t0=$(now_ms)
cat "$table" >/dev/null
t1=$(now_ms)
cp "$table" "$work/copy.arrows"
t2=$(now_ms)
rm -f "$work/copy.arrows"
cat >"$work/copy.toml" <<EOF
name = "arrow-copy"
[params]
passes = "1"
mode = "copy"
[sources]
table = "$table"
[steps.copy]
component = "$PWD/tests/components/table-io"
inputs = { in = "sources.table" }
params = { mode = "\${params.mode}", passes = "\${params.passes}" }
outputs = ["out"]
limits = { memory_mib = 256, output_mib = 4096, timeout_s = 600 }
EOF
# Build the component outside the timing (on a tiny table).
"$native" arrows 1 "$work/tiny.arrows" >/dev/null
sed "s#^table = .*#table = \"$work/tiny.arrows\"#" "$work/copy.toml" >"$work/copy-tiny.toml"
"$sluice" run "$work/copy-tiny.toml" --home "$work/copy-warm" --json >/dev/null 2>&1 || true
# Each in a fresh home: the run imports the source, so its store wrote it
# and its verified-on-write index vouches for it. Then passes=1 again in
# the first home: a new process re-imports nothing (the blob is there) and
# so verifies the input in full on open.
for passes in 1 2; do
  "$sluice" run "$work/copy.toml" --home "$work/copy-home-$passes" --no-cache --jobs 1 --param "passes=$passes" --json \
    >"$work/copy-$passes.json" 2>"$work/copy-$passes.err" || true
done
# The same bytes copied as the host hands them over, nothing decoded: the
# host API alone.
"$sluice" run "$work/copy.toml" --home "$work/copy-home-bytes" --no-cache --jobs 1 --param mode=bytes --json \
  >"$work/copy-bytes.json" 2>"$work/copy-bytes.err" || true
"$sluice" run "$work/copy.toml" --home "$work/copy-home-1" --no-cache --jobs 1 --param "passes=1" --json \
  >"$work/copy-3.json" 2>"$work/copy-3.err" || true
python3 - "$work" "$((t1 - t0))" "$((t2 - t1))" <<'PY'
import json, os, sys
work, cat_ms, cp_ms = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
table = json.load(open(os.path.join(work, "arrows.json")))
hashed = json.load(open(os.path.join(work, "hash.json")))
gb = table["bytes"] / 1e9
def step(passes):
    try:
        run = json.load(open(os.path.join(work, f"copy-{passes}.json")))
        return run["steps"][0]
    except (ValueError, IndexError, KeyError):
        print(f"  copy (passes={passes}) printed no run: {open(os.path.join(work, f'copy-{passes}.err')).read()[-300:]}")
        return None
def rate(ms):
    return f"{gb / (ms / 1e3):6.2f} GB/s" if ms > 0 else "     - GB/s"
print(f"\nArrow stream through the host API: {table['bytes'] / 1e9:.2f} GB, {table['rows']} rows")
print(f"  {'what':<44} {'ms':>7} {'rate':>11}")
print(f"  {'cat FILE > /dev/null':<44} {cat_ms:7d} {rate(cat_ms)}")
print(f"  {'cp FILE DEST':<44} {cp_ms:7d} {rate(cp_ms)}")
print(f"  {'sha256 (the store hash, native)':<44} {hashed['ms']:7.0f} {rate(hashed['ms'])}")
one, two, cold, raw = step(1), step(2), step(3), step("bytes")
for what, s in (("table-io copy step (read, write)", one),
                ("table-io copy, passes=2 (read, read, write)", two),
                ("copy, input from an earlier process", cold),
                ("byte copy step (host API only, no decoding)", raw)):
    if s is None:
        continue
    extra = "" if s["status"] == "succeeded" else f"  {s['status']}: {(s.get('error') or {}).get('message', '')[:100]}"
    print(f"  {what:<44} {s['wall_ms']:7d} {rate(s['wall_ms'])}  peak {(s.get('memory_peak_bytes') or 0) / 2**20:.1f} MiB{extra}")
if one and two and cold and one["status"] == two["status"] == cold["status"] == "succeeded":
    read = two["wall_ms"] - one["wall_ms"]
    copy = one["wall_ms"]
    hash_ms = hashed["ms"]
    print(f"  {'one extra read pass (passes=2 − passes=1)':<44} {read:7d} {rate(read)}")
    print(f"  {'verifying the input on open (cold − copy)':<44} {cold['wall_ms'] - copy:7d}")
    print(f"  copy step vs cat: {copy / cat_ms:.1f}× the time; vs cp: {copy / cp_ms:.1f}×" if cat_ms and cp_ms else "")
    print(f"  a content-addressed copy hashes its output once: SHA-256 alone takes {hash_ms:.0f} ms here"
          f" ({100 * hash_ms / copy:.0f}% of the copy, on a second thread beside the guest); the input,"
          f" written by this process, is not hashed again")
PY
