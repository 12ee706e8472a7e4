#!/usr/bin/env bash
# Per-step overhead of a linear chain of `append` steps versus the same chain
# as a bash loop of `cat` + `echo`, measured in the same run (ratios, not
# absolute times, are what compare across machines).
#
#   bench/chain.sh [REPEATS]
#
# For N = 10 and N = 50: a fresh home each time, cache off (--no-cache), the
# median of REPEATS interleaved runs (default 15). Per-step overhead = (T50 - T10) / 40.
# Also: the cached rerun of the 50-step chain and the median instantiate
# time of a precompiled component (from the run's JSON).
set -euo pipefail
cd "$(dirname "$0")/.."
repeats=${1:-15}

rustup target add wasm32-wasip2 >/dev/null 2>&1 || true
cargo build --release -q -p sluice-engine
sluice="$PWD/target/release/sluice"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Build the append component through the engine (a one-step pipeline on the
# crate), then reference the .wasm directly so no cargo call is timed.
printf 'seed line\n' >"$work/in.txt"
cat >"$work/build.toml" <<SPEC
name = "build"
[sources]
text = "in.txt"
[steps.a]
component = "$PWD/examples/steps/append"
inputs = { in = "sources.text" }
params = { line = "x" }
outputs = ["out"]
SPEC
"$sluice" run "$work/build.toml" --home "$work/buildhome" --json >/dev/null
wasm="$PWD/target/sluice-steps/wasm32-wasip2/release/step_append.wasm"
export SLUICE_COMPILE_CACHE="$work/compile-cache"

chain_spec() { # N -> spec path
  local n=$1 spec="$work/chain$1.toml"
  {
    echo "name = \"chain$n\""
    echo '[sources]'
    echo 'text = "in.txt"'
    for ((i = 0; i < n; i++)); do
      if ((i == 0)); then input="sources.text"; else input="s$((i - 1)).out"; fi
      echo "[steps.s$i]"
      echo "component = \"$wasm\""
      echo "inputs = { in = \"$input\" }"
      echo "params = { line = \"line $i\" }"
      echo 'outputs = ["out"]'
    done
  } >"$spec"
  echo "$spec"
}

now_ns() { date +%s%N; }

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

run_sluice() { # N REPEAT -> ns (fresh home, cache off)
  local home="$work/home-$1-$2" t0
  t0=$(now_ns)
  "$sluice" run "$work/chain$1.toml" --home "$home" --no-cache --json >"$work/last$1.json"
  echo $(($(now_ns) - t0))
}

run_bash() { # N REPEAT -> ns
  local dir="$work/bash-$1-$2" t0
  mkdir -p "$dir"
  t0=$(now_ns)
  cp "$work/in.txt" "$dir/0"
  for ((i = 0; i < $1; i++)); do
    cat "$dir/$i" >"$dir/$((i + 1))"
    echo "line $i" >>"$dir/$((i + 1))"
  done
  echo $(($(now_ns) - t0))
}

chain_spec 10 >/dev/null
chain_spec 50 >/dev/null
"$sluice" run "$work/chain10.toml" --home "$work/warm" --no-cache --json >/dev/null # compile once
# Interleaved, so drift in machine speed hits both sides alike; `sync`
# before each timed run so one side's unflushed files do not slow the other
# side's fsyncs (sluice makes every blob durable; the bash loop does not).
for ((r = 0; r < repeats; r++)); do
  sync; echo "s10 $(run_sluice 10 "$r")"
  sync; echo "s50 $(run_sluice 50 "$r")"
  sync; echo "b10 $(run_bash 10 "$r")"
  sync; echo "b50 $(run_bash 50 "$r")"
done >"$work/times"
pick() { awk -v k="$1" '$1 == k {print $2}' "$work/times" | median; }
s10=$(pick s10)
s50=$(pick s50)
b10=$(pick b10)
b50=$(pick b50)

# Cached rerun of the 50-step chain in one home.
spec50="$work/chain50.toml"
"$sluice" run "$spec50" --home "$work/cached" --json >/dev/null
cached=$(for ((r = 0; r < repeats; r++)); do
  sync
  t0=$(now_ns)
  "$sluice" run "$spec50" --home "$work/cached" --json >"$work/cached.json"
  echo $(($(now_ns) - t0))
done | median)
grep -q '"status": "cached"' "$work/cached.json"
executed=$(grep -c '"attempts": [1-9]' "$work/cached.json" || true)

inst=$(grep -o '"instantiate_us": [0-9]*' "$work/last50.json" | awk '{print $2}' | median)

awk -v s10="$s10" -v s50="$s50" -v b10="$b10" -v b50="$b50" -v cached="$cached" \
    -v inst="$inst" -v executed="$executed" -v repeats="$repeats" 'BEGIN {
  sl = (s50 - s10) / 40 / 1e6; bl = (b50 - b10) / 40 / 1e6
  printf "chain benchmark (median of %d interleaved runs; fresh home, --no-cache)\n", repeats
  printf "  sluice   T10 %8.1f ms   T50 %8.1f ms   per-step %.3f ms\n", s10/1e6, s50/1e6, sl
  printf "  bash     T10 %8.1f ms   T50 %8.1f ms   per-step %.3f ms\n", b10/1e6, b50/1e6, bl
  printf "  ratio sluice/bash per-step overhead: %.2f  (target <= 0.50)\n", sl / bl
  printf "  cached rerun of 50 steps: %.1f ms, steps executed: %d  (target <= 50 ms)\n", cached/1e6, executed
  printf "  instantiate from InstancePre (median over the 50 steps): %d us  (target well under 1000 us)\n", inst
}'
