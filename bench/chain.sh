#!/usr/bin/env bash
# Per-step overhead of a linear chain of `append` steps versus the same chain
# as a bash loop of `cat` + `echo` and as a loop in a bare wasmtime host
# (engine/examples/bare_host.rs), measured in the same run (ratios, not
# absolute times, are what compare across machines).
#
#   bench/chain.sh [REPEATS]        SCALE_MAX=1000 bench/chain.sh  (smaller table)
#
# For N = 10 and N = 50: a fresh home each time, cache off (--no-cache), the
# median of REPEATS interleaved runs (default 15). Per-step overhead = (T50 - T10) / 40.
# The same again with another process keeping one core busy (`yes`).
# Also: the cached rerun of the 50-step chain (components as .wasm files and
# as crate directories), the median instantiate time of a precompiled
# component (from the run's JSON), and a scale table: chains and fan-outs
# of 10 .. SCALE_MAX (default 10000) steps, one run each, with wall time,
# per-step time and peak RSS (GNU time). The machine's load average is
# printed first and last: the numbers mean nothing without it.
set -euo pipefail
cd "$(dirname "$0")/.."
repeats=${1:-15}

rustup target add wasm32-wasip2 >/dev/null 2>&1 || true
cargo build --release -q -p sluice-engine --bin sluice --example bare_host
sluice="$PWD/target/release/sluice"
bare="$PWD/target/release/examples/bare_host"
scale_max=${SCALE_MAX:-10000}

work=$(mktemp -d)
busy=""
trap '[ -n "$busy" ] && kill "$busy" 2>/dev/null; rm -rf "$work"' EXIT
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores"
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

chain_spec() { # N [COMPONENT [SHAPE [NAME [LINE]]]] -> spec path; SHAPE chain|fan
  local n=$1 component=${2:-$wasm} shape=${3:-chain} spec="$work/${4:-chain$1}.toml" line=${5-line}
  {
    echo "name = \"chain$n\""
    echo '[sources]'
    echo 'text = "in.txt"'
    for ((i = 0; i < n; i++)); do
      if ((i == 0)) || [ "$shape" = fan ]; then input="sources.text"; else input="s$((i - 1)).out"; fi
      echo "[steps.s$i]"
      echo "component = \"$component\""
      echo "inputs = { in = \"$input\" }"
      echo "params = { line = \"${line:+$line $i}\" }"
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

run_bare() { # N REPEAT -> ns of the step loop (compilation excluded)
  "$bare" "$wasm" "$work/in.txt" "$work/bare-$1-$2" "$1" chain | awk '{print $4}'
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
interleaved() { # REPEATS TAG -> lines "KEY ns" in $work/times-TAG
  for ((r = 0; r < $1; r++)); do
    sync; echo "s10 $(run_sluice 10 "$2$r")"
    sync; echo "s50 $(run_sluice 50 "$2$r")"
    sync; echo "b10 $(run_bash 10 "$2$r")"
    sync; echo "b50 $(run_bash 50 "$2$r")"
    sync; echo "w10 $(run_bare 10 "$2$r")"
    sync; echo "w50 $(run_bare 50 "$2$r")"
  done >"$work/times-$2"
}
interleaved "$repeats" quiet
pick() { awk -v k="$1" '$1 == k {print $2}' "$work/times-${2:-quiet}" | median; }
s10=$(pick s10)
s50=$(pick s50)
b10=$(pick b10)
b50=$(pick b50)
w10=$(pick w10)
w50=$(pick w50)

# The same with one core kept busy by another process.
yes >/dev/null &
busy=$!
interleaved "$(((repeats + 1) / 2))" busy
kill "$busy"; wait "$busy" 2>/dev/null || true; busy=""
ys10=$(pick s10 busy)
ys50=$(pick s50 busy)
yb10=$(pick b10 busy)
yb50=$(pick b50 busy)
yw10=$(pick w10 busy)
yw50=$(pick w50 busy)

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

# The same with every step's component given as the crate directory: the
# builder must find the crate fresh (by its fingerprint, no cargo call).
crate_spec=$(chain_spec 50 "$PWD/examples/steps/append" chain crate50)
"$sluice" run "$crate_spec" --home "$work/cached-crate" --json >/dev/null
"$sluice" run "$crate_spec" --home "$work/cached-crate" --json >/dev/null
cached_crate=$(for ((r = 0; r < repeats; r++)); do
  sync
  t0=$(now_ns)
  "$sluice" run "$crate_spec" --home "$work/cached-crate" --json >"$work/cached-crate.json"
  echo $(($(now_ns) - t0))
done | median)
grep -q '"status": "cached"' "$work/cached-crate.json"
executed_crate=$(grep -c '"attempts": [1-9]' "$work/cached-crate.json" || true)

inst=$(grep -o '"instantiate_us": [0-9]*' "$work/last50.json" | awk '{print $2}' | median)

awk -v s10="$s10" -v s50="$s50" -v b10="$b10" -v b50="$b50" -v cached="$cached" \
    -v w10="$w10" -v w50="$w50" -v cached_crate="$cached_crate" -v executed_crate="$executed_crate" \
    -v ys10="$ys10" -v ys50="$ys50" -v yb10="$yb10" -v yb50="$yb50" -v yw10="$yw10" -v yw50="$yw50" \
    -v busy_repeats="$(((repeats + 1) / 2))" \
    -v inst="$inst" -v executed="$executed" -v repeats="$repeats" 'BEGIN {
  sl = (s50 - s10) / 40 / 1e6; bl = (b50 - b10) / 40 / 1e6; wl = (w50 - w10) / 40 / 1e6
  printf "chain benchmark (median of %d interleaved runs; fresh home, --no-cache)\n", repeats
  printf "  sluice   T10 %8.1f ms   T50 %8.1f ms   per-step %.3f ms\n", s10/1e6, s50/1e6, sl
  printf "  bash     T10 %8.1f ms   T50 %8.1f ms   per-step %.3f ms\n", b10/1e6, b50/1e6, bl
  printf "  bare     T10 %8.1f ms   T50 %8.1f ms   per-step %.3f ms  (wasmtime loop, no store/record/fsync)\n", w10/1e6, w50/1e6, wl
  printf "  ratio sluice/bash per-step overhead: %.2f  (target <= 0.25)\n", sl / bl
  printf "  ratio sluice/bare-wasmtime per-step overhead: %.2f  (target <= 1.0)\n", sl / wl
  ysl = (ys50 - ys10) / 40 / 1e6; ybl = (yb50 - yb10) / 40 / 1e6; ywl = (yw50 - yw10) / 40 / 1e6
  printf "  with one core busy (yes > /dev/null; median of %d):\n", busy_repeats
  printf "    per-step sluice %.3f ms, bash %.3f ms, bare %.3f ms; ratio sluice/bash %.2f, sluice/bare %.2f\n", ysl, ybl, ywl, ysl / ybl, ysl / ywl
  printf "  cached rerun of 50 steps: %.1f ms, steps executed: %d  (target <= 50 ms)\n", cached/1e6, executed
  printf "  cached rerun of 50 steps, components as crate dirs: %.1f ms, steps executed: %d  (target <= 20 ms)\n", cached_crate/1e6, executed_crate
  printf "  instantiate from InstancePre (median over the 50 steps): %d us  (target well under 1000 us)\n", inst
}'

# Scale: one run per size, fresh home, --no-cache; shape chain (each step
# reads the previous output and appends an empty line, so data grows by one
# byte a step: 50 MB in all at 10000) or fan (every step reads the source). Per step = wall / N (bare: its step loop / N, as
# it compiles the component itself where sluice hits its compile cache);
# peak RSS from GNU time.
rss_wall() { # CMD... -> "wall_ns rss_kib"
  local t0 t1
  t0=$(now_ns)
  /usr/bin/time -f '%M' -o "$work/rss" "$@" >"$work/scale-out"
  t1=$(now_ns)
  echo "$((t1 - t0)) $(tail -n1 "$work/rss")"
}
echo "scale (one run each; fresh home, --no-cache; load now: $(cut -d' ' -f1-3 /proc/loadavg))"
printf '  %-5s %6s | %10s %9s %9s | %10s %9s %9s\n' shape N "sluice s" "ms/step" "RSS MiB" "bare loop s" "ms/step" "RSS MiB"
for shape in chain fan; do
  for n in 10 100 1000 10000; do
    ((n <= scale_max)) || continue
    spec=$(chain_spec "$n" "$wasm" "$shape" "scale-$shape$n" "")
    sync
    read -r sw sr < <(rss_wall "$sluice" run "$spec" --home "$work/scale-$shape$n" --no-cache --json)
    sync
    read -r _ br < <(rss_wall "$bare" "$wasm" "$work/in.txt" "$work/scale-bare-$shape$n" "$n" "$shape" "")
    bw=$(awk '{print $4}' "$work/scale-out") # the step loop, without compiling
    awk -v s="$shape" -v n="$n" -v sw="$sw" -v sr="$sr" -v bw="$bw" -v br="$br" 'BEGIN {
      printf "  %-5s %6d | %10.2f %9.3f %9.1f | %10.2f %9.3f %9.1f\n", s, n, sw/1e9, sw/1e6/n, sr/1024, bw/1e9, bw/1e6/n, br/1024 }'
    rm -rf "$work/scale-$shape$n" "$work/scale-bare-$shape$n"
  done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
