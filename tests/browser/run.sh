#!/usr/bin/env bash
# Runs the dashboard browser test against a fresh `sluice serve`.
#
#   SLUICE=target/release/sluice tests/browser/run.sh
#
# Builds nothing. Starts the server on a free port with a temporary home,
# installs playwright-core from the lockfile if needed, runs dashboard.mjs
# (screenshot: target/browser/dashboard.png), stops the server and exits
# with the test's status. Env: SLUICE (required), CHROMIUM (default
# /usr/bin/chromium), SLUICE_TOKEN (the server's one token, tenant `ci`,
# role `runner`; random when unset),
# SERVER_START_TIMEOUT_S (default 60).
set -euo pipefail

: "${SLUICE:?set SLUICE to the sluice binary, e.g. SLUICE=target/release/sluice}"
case "$SLUICE" in
  */*) SLUICE="$(cd "$(dirname "$SLUICE")" && pwd)/$(basename "$SLUICE")" ;;
  *) SLUICE="$(command -v "$SLUICE")" ;;
esac
[ -x "$SLUICE" ] || { echo "error: $SLUICE is not executable" >&2; exit 2; }

cd "$(dirname "$0")/../.."
tmp="$(mktemp -d)"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

# The server's first stdout line names its address. Read it through a FIFO
# (no polling), then keep draining stdout so the server never blocks on it.
# An authenticated server: the dashboard must ask for the token and use it.
SLUICE_TOKEN=${SLUICE_TOKEN:-"browser-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"}
printf '[[tokens]]\ntoken = "%s"\ntenant = "ci"\nrole = "runner"\n' "$SLUICE_TOKEN" >"$tmp/config.toml"
mkfifo "$tmp/stdout"
"$SLUICE" serve --home "$tmp/home" --config "$tmp/config.toml" --listen 127.0.0.1:0 >"$tmp/stdout" 2>"$tmp/stderr" &
server_pid=$!
exec 3<"$tmp/stdout"
first=""
if ! IFS= read -r -t "${SERVER_START_TIMEOUT_S:-60}" first <&3; then
  echo "error: sluice serve printed no first line within ${SERVER_START_TIMEOUT_S:-60} s" >&2
  tail -n 50 "$tmp/stderr" >&2 || true
  exit 1
fi
cat <&3 >"$tmp/stdout.rest" &
exec 3<&-
if [[ ! "$first" =~ ^listening\ on\ (http://127\.0\.0\.1:[0-9]+)$ ]]; then
  echo "error: expected 'listening on http://127.0.0.1:PORT' as the first line, got: $first" >&2
  tail -n 50 "$tmp/stderr" >&2 || true
  exit 1
fi
base="${BASH_REMATCH[1]}"
echo "sluice serve at $base (home $tmp/home)"

if [ ! -d tests/browser/node_modules/playwright-core ]; then
  npm ci --prefix tests/browser --no-audit --no-fund
fi

mkdir -p target/browser
args=(--base "$base" --screenshot target/browser/dashboard.png)
args+=(--token "$SLUICE_TOKEN")
status=0
node tests/browser/dashboard.mjs "${args[@]}" || status=$?
if [ "$status" -ne 0 ]; then
  echo "--- sluice serve stderr (last 50 lines) ---" >&2
  tail -n 50 "$tmp/stderr" >&2 || true
fi
exit "$status"
