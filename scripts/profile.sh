#!/usr/bin/env bash
# A CPU profile of the write path: runs BINARY on a fresh data dir, drives it with the load
# generator, records every thread of the broker with `perf record` (DWARF call graphs, so a
# plain release build will do) and writes a flame graph (inferno) and the folded stacks.
#
#   scripts/profile.sh target/release/muster chat 20 docs/flame-chat-20.svg
#   scripts/profile.sh target/release/muster create 20 docs/flame-create-20.svg 5
#
# Needs `perf` (Debian: linux-perf) and inferno (`cargo install inferno`). perf slows the
# broker it records: read the graph for shares of the time, and take throughput from
# benches/compare.py.
set -euo pipefail

bin=$(realpath "${1:?usage: scripts/profile.sh BINARY SCENARIO CONNECTIONS OUT.svg [SECONDS]}")
scenario=${2:?scenario}
connections=${3:?connections}
out=${4:?output svg}
seconds=${5:-5}
root=$(git rev-parse --show-toplevel)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

"$bin" serve --addr "127.0.0.1:$port" --data-dir "$work/data" >"$work/broker.log" 2>&1 &
broker=$!
for _ in $(seq 100); do
  curl -fs "http://127.0.0.1:$port/health" >/dev/null && break
  sleep 0.1
done
(cd "$root" && cargo bench --quiet --bench load --no-run)

# Recording starts a second into the load and stops a second before its end.
(cd "$root" && cargo bench --quiet --bench load -- --addr "127.0.0.1:$port" --seconds "$((seconds + 2))" \
  --runs 1 --connections "$connections" --scenarios "$scenario") | grep '^|' &
load=$!
sleep 1
perf record -q -F 499 --call-graph dwarf,16384 -p "$broker" -o "$work/perf.data" -- sleep "$seconds" 2>/dev/null
wait "$load"
curl -fs "http://127.0.0.1:$port/metrics" | grep -E '^muster_(batches_total|commands_total)' || true
kill -TERM "$broker"
wait "$broker" || true

perf script -i "$work/perf.data" 2>/dev/null | inferno-collapse-perf --all >"$work/folded"
cp "$work/folded" "${out%.svg}.folded"  # for scripts that sum it up; not kept in the repository
inferno-flamegraph --minwidth 0.5 --title "muster $scenario, $connections connections" <"$work/folded" >"$out"
echo "wrote $out and ${out%.svg}.folded ($(wc -l <"$work/folded") stacks)"
