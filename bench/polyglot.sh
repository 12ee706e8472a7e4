#!/usr/bin/env bash
# Python and JavaScript steps against the Rust `append` step, measured in
# one run (issue 13's numbers): the same step (copy `in` to `out`, append a
# line) in each language —
#   Rust        examples/steps/append
#   Python      tests/components-py/append   (componentize-py 0.25.1)
#   JavaScript  tests/components-js/append   (ComponentizeJS 0.23.0)
#
#   bench/polyglot.sh [REPEATS]      (default 9)
#
# For each: a copy of the step directory (so its build memo starts empty)
# run in a fresh home: `cold` = build + compile + run; again in another
# fresh home: `memo` = memoized build (sources hashed, memo verified) +
# compile + run; then REPEATS runs with --no-cache in that home: `warm` =
# process start + run with the compiled component from the compile cache.
# Build ≈ cold − memo, compile ≈ memo − warm. From the warm runs' JSON:
# the step's median wall time (instantiate + run) and instantiate time —
# the per-call overhead — and the ratio to Rust's. Component and cwasm
# sizes from the memo and the compile cache. The tools (venv, npm
# packages) are installed before timing. The machine's load is printed:
# on a shared 2-core box the numbers are pessimistic.
set -euo pipefail
cd "$(dirname "$0")/.."
repeats=${1:-9}

rustup target add wasm32-wasip2 >/dev/null 2>&1 || true
cargo build --release -q -p sluice-engine
sluice="$PWD/target/release/sluice"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "commit $(git rev-parse --short HEAD), load $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) cores"
printf 'payload\n' >"$work/in.txt"

now_ms() { date +%s%3N; }
spec() { # spec NAME COMPONENT_DIR
  printf 'name = "%s"\n[sources]\nt = "in.txt"\n[steps.s]\ncomponent = "%s"\ninputs = { in = "sources.t" }\nparams = { line = "bench" }\noutputs = ["out"]\n' \
    "$1" "$2" >"$work/$1.toml"
}
run() { # run HOME SPEC [ARGS...] -> prints JSON
  local home=$1 spec=$2; shift 2
  (cd "$work" && SLUICE_COMPILE_CACHE="$home/cc" "$sluice" run "$spec" --home "$home" --json "$@")
}

mkdir -p "$work/steps"
cp -r examples/steps/append "$work/steps/rust"
rm -rf "$work/steps/rust/target"
# The Rust crate builds inside the workspace; use it in place.
rust_dir="$PWD/examples/steps/append"
for lang in python js; do
  src=tests/components-$([ "$lang" = python ] && echo py || echo js)/append
  mkdir -p "$work/steps/$lang"
  find "$src" -maxdepth 1 -type f -exec cp {} "$work/steps/$lang/" \;
done
# Tools installed (and the Rust crate built) before anything is timed.
spec warmup-rust "$rust_dir"; run "$work/h-warm" warmup-rust.toml >/dev/null
for lang in python js; do
  cp -r "$work/steps/$lang" "$work/steps/$lang-warmup"
  spec "warmup-$lang" "$work/steps/$lang-warmup"; run "$work/h-warm" "warmup-$lang.toml" >/dev/null
done

printf '\n%-11s %9s %9s %9s %8s %8s %10s %10s %9s %9s\n' lang cold_ms memo_ms warm_ms build_s compile_s wasm_MB cwasm_MB step_ms inst_ms
declare -A step_ms inst_us warm_ms
for lang in rust python js; do
  dir="$work/steps/$lang"; [ "$lang" = rust ] && dir="$rust_dir"
  spec "$lang" "$dir"
  t0=$(now_ms); run "$work/h-$lang-1" "$lang.toml" >"$work/$lang-cold.json"; t1=$(now_ms)
  run "$work/h-$lang-2" "$lang.toml" >/dev/null; t2=$(now_ms)
  walls=(); insts=(); totals=()
  for _ in $(seq "$repeats"); do
    a=$(now_ms); run "$work/h-$lang-2" "$lang.toml" --no-cache >"$work/$lang-warm.json"; b=$(now_ms)
    totals+=($((b - a)))
    walls+=("$(jq '.steps[0].wall_ms' "$work/$lang-warm.json")")
    insts+=("$(jq '.steps[0].instantiate_us' "$work/$lang-warm.json")")
  done
  median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
  warm=$(median "${totals[@]}"); wall=$(median "${walls[@]}"); inst=$(median "${insts[@]}")
  status=$(jq -r '.steps[0].status' "$work/$lang-cold.json")
  [ "$status" = succeeded ] || { echo "$lang: step $status" >&2; jq '.steps[0].error' "$work/$lang-cold.json" >&2; exit 1; }
  hex=$(jq -r '.steps[0].component' "$work/$lang-cold.json"); hex=${hex#sha256:}
  wasm_bytes=$(find "$work/h-$lang-1" -path "*/sha256/${hex:0:2}/${hex:2}" -printf '%s\n' | head -n 1)
  cwasm_bytes=$(du -sb "$work/h-$lang-2/cc" | cut -f1)
  step_ms[$lang]=$wall; inst_us[$lang]=$inst; warm_ms[$lang]=$warm
  build=$(( (t1 - t0) - (t2 - t1) )); compile=$(( (t2 - t1) - warm ))
  [ "$lang" = rust ] && build=0
  printf '%-11s %9d %9d %9d %8.1f %8.1f %10.1f %10.1f %9d %9.1f\n' "$lang" $((t1 - t0)) $((t2 - t1)) "$warm" \
    "$(echo "$build / 1000" | bc -l)" "$(echo "$compile / 1000" | bc -l)" \
    "$(echo "$wasm_bytes / 1000000" | bc -l)" "$(echo "$cwasm_bytes / 1000000" | bc -l)" "$wall" "$(echo "$inst / 1000" | bc -l)"
done
echo
# The step's wall time has 1 ms resolution (a Rust append rounds to 0):
# compare instantiate times (µs) and whole warm invocations instead.
for lang in python js; do
  printf 'per-call overhead %s vs rust: instantiate %.1f ms vs %.2f ms (%.0fx); step %s ms vs %s ms; warm sluice run %s ms vs %s ms (%.1fx)\n' \
    "$lang" "$(echo "${inst_us[$lang]} / 1000" | bc -l)" "$(echo "${inst_us[rust]} / 1000" | bc -l)" \
    "$(echo "${inst_us[$lang]} / (${inst_us[rust]} + 0.001)" | bc -l)" "${step_ms[$lang]}" "${step_ms[rust]}" \
    "${warm_ms[$lang]}" "${warm_ms[rust]}" "$(echo "${warm_ms[$lang]} / (${warm_ms[rust]} + 0.001)" | bc -l)"
done
echo "(rust build_s not measured: cargo's own incremental build; cold_ms includes it when stale)"
echo "load $(cut -d' ' -f1-3 /proc/loadavg)"
