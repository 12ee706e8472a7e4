#!/usr/bin/env bash
# Request rate of the service on loopback: `GET /v1/runs/{id}` (a finished
# run of the example pipeline: index lookup + summary read + JSON) against
# `GET /healthz` (the same server, auth, routing and HTTP, no work) as the
# baseline, measured in the same run with the same load generator.
#
#   bench/http.sh [SECONDS] [CONNECTIONS]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-5}
connections=${2:-4}

rustup target add wasm32-wasip2 >/dev/null 2>&1 || true
cargo build --release -q -p sluice-engine --bin sluice --example http_load
sluice="$PWD/target/release/sluice"
load="$PWD/target/release/examples/http_load"

work=$(mktemp -d)
server=""
trap '[ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$work"' EXIT
# No rate limit: the benchmark measures the server, not the limiter.
printf '[server]\nrate_limit_per_minute = 0\nroot = "%s"\n' "$PWD" >"$work/config.toml"
mkfifo "$work/out"
"$sluice" serve --home "$work/home" --config "$work/config.toml" --listen 127.0.0.1:0 >"$work/out" 2>"$work/err" &
server=$!
exec 3<"$work/out"
read -r first <&3
cat <&3 >/dev/null &
addr=${first#listening on http://}
id=$(curl -sf -X POST "http://$addr/v1/runs" -d '{"pipeline":"examples/pipelines/tabular.toml"}' | sed 's/.*"id":"\([^"]*\)".*/\1/')
curl -sfN "http://$addr/v1/runs/$id/events" >/dev/null   # ends with the run
echo "run $id: $(curl -sf "http://$addr/v1/runs/$id" | sed 's/.*"status":"\([a-z]*\)".*/\1/' | head -c 20)"

base=$("$load" "$addr" /healthz "$connections" "$seconds")
run=$("$load" "$addr" "/v1/runs/$id" "$connections" "$seconds")
echo "baseline $base"
echo "run      $run"
rps() { sed 's/.*"rps":\([0-9.]*\).*/\1/' <<<"$1"; }
awk -v r="$(rps "$run")" -v b="$(rps "$base")" \
  'BEGIN { printf "GET /v1/runs/{id}: %.0f req/s = %.2f x GET /healthz (%.0f req/s)\n", r, r / b, b }'
