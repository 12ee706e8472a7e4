#!/usr/bin/env bash
# Gpu job dispatch latency on a warm CPU worker pool: median/p90 of
# submit -> `run` line delivered, and of the full round trip, over N jobs
# (default 200). See engine/examples/gpu-dispatch.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --release --quiet -p sluice-engine --example gpu-dispatch -- "${1:-200}"
