#!/usr/bin/env bash
# GPU check (needs an NVIDIA GPU, its driver and PyTorch with CUDA; about
# 2-5 minutes, most of it the release build): trains the tabular-gpu example
# on the PyTorch worker twice with --no-cache, prints each run's per-step
# table with the gpu columns (util, memory util, framebuffer, SM activity),
# the gpu job lines (device, dispatch, MFU, under-use flags), and whether
# the two model digests are bitwise equal (deterministic kernels, same
# device/driver/library fingerprint).
#
#   scripts/gpu-check.sh                 # a fresh temp home
#   SLUICE_HOME=/tmp/h scripts/gpu-check.sh
#   GPU_CHECK_WORKER=cpu scripts/gpu-check.sh   # the same path without a GPU
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "gpu-check: $*" >&2; exit 2; }
worker=${GPU_CHECK_WORKER:-torch}
if [ "$worker" = torch ]; then
  command -v nvidia-smi >/dev/null || die "nvidia-smi not found: this check needs an NVIDIA GPU and driver"
  nvidia-smi --query-gpu=name,uuid,driver_version,memory.total,memory.used --format=csv,noheader
  python3 - <<'PY' || die "PyTorch with CUDA is needed by the torch worker (pip install torch)"
import sys
import torch
ok = torch.cuda.is_available()
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuda available: {ok}")
sys.exit(0 if ok else 1)
PY
fi
rustup target add wasm32-wasip2 >/dev/null 2>&1 || true

started=$SECONDS
cargo build --release --quiet -p sluice-engine
sluice=target/release/sluice
home=${SLUICE_HOME:-$(mktemp -d)}
echo "home: $home (build took $((SECONDS - started)) s)"

digests=()
for i in 1 2; do
  echo
  echo "== run $i: tabular-gpu with --param worker=$worker --no-cache"
  out=$("$sluice" run examples/pipelines/tabular-gpu.toml --param "worker=$worker" --no-cache --home "$home" 2>/dev/null) \
    || { echo "$out"; die "run $i failed"; }
  echo "$out" | sed -n '/^run /,$p'
  run_id=$(echo "$out" | sed -n 's/^run \([0-9a-z-]*\)  pipeline.*/\1/p' | head -1)
  [ -n "$run_id" ] || die "no run id in the output of run $i"
  "$sluice" show "$run_id" --json --home "$home" > "$home/run$i.json"
  digest=$(python3 - "$home/run$i.json" <<'PY'
import json
import sys

summary = json.load(open(sys.argv[1]))
train = next(s for s in summary["steps"] if s["name"] == "train")
def show(value, fmt):
    return "-" if value is None else fmt.format(value)


for job in (train.get("gpu") or {}).get("jobs") or []:
    usage = job.get("usage") or {}
    print(
        "  job {}: {} on {}, wall {} ms, dispatch {} ms, {} samples, util {}, "
        "SM active {}, energy {} mJ, MFU {}".format(
            job["id"], job["state"], job.get("device"), job["wall_ms"],
            show(None if job.get("dispatch_us") is None else job["dispatch_us"] / 1000, "{:.2f}"),
            usage.get("samples", 0), show(usage.get("util_mean"), "{:.0f}%"),
            show(usage.get("sm_active_mean"), "{:.0f}%"), show(usage.get("energy_mj"), "{}"),
            show(job.get("mfu"), "{:.2%}"),
        ),
        file=sys.stderr,
    )
print(train["outputs"]["model"]["digest"])
PY
)
  digests+=("$digest")
done

echo
if [ "${digests[0]}" = "${digests[1]}" ]; then
  echo "model digests EQUAL: ${digests[0]}"
else
  echo "model digests DIFFER: ${digests[0]} vs ${digests[1]}"
fi
echo "gpu-check took $((SECONDS - started)) s"
