#!/usr/bin/env bash
# How many requests a broker build answers per fdatasync, and per batch, under load: runs
# BINARY on a fresh data dir under `strace -c` (fdatasync/fsync only), drives it with the
# load generator for a few seconds, then prints the generator's line, the broker's
# batch and command counters (/metrics) and strace's count and time per sync call.
#
#   scripts/syncs-per-request.sh target/release/muster chat 20
#   scripts/syncs-per-request.sh /tmp/muster-before create 64 10
#
# strace slows every traced call: compare builds with each other under it, and take
# throughput from benches/compare.py, not from here.
set -euo pipefail

bin=$(realpath "${1:?usage: scripts/syncs-per-request.sh BINARY [SCENARIO] [CONNECTIONS] [SECONDS]}")
scenario=${2:-chat}
connections=${3:-20}
seconds=${4:-5}
root=$(git rev-parse --show-toplevel)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

strace -f --seccomp-bpf -c -e trace=fdatasync,fsync -o "$work/strace.txt" \
  "$bin" serve --addr "127.0.0.1:$port" --data-dir "$work/data" >"$work/broker.log" 2>&1 &
tracer=$!
for _ in $(seq 100); do
  curl -fs "http://127.0.0.1:$port/health" >/dev/null && break
  sleep 0.1
done

(cd "$root" && cargo bench --quiet --bench load -- --addr "127.0.0.1:$port" --seconds "$seconds" --runs 1 \
  --connections "$connections" --scenarios "$scenario") | grep '^|' || true
curl -fs "http://127.0.0.1:$port/metrics" | grep -E '^muster_(batches_total|commands_total|commit_seconds_count)' || true

# SIGTERM to the broker (strace's child); strace writes its table as it exits.
pkill -TERM -P "$tracer" || true
wait "$tracer" || true
cat "$work/strace.txt"
