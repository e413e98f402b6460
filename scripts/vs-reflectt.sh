#!/usr/bin/env bash
# Chat posts against reflectt-node, in one window, with the same generator and workload:
# alternating runs of a fresh reflectt-node and a fresh muster (each on an empty directory of
# its own, the article's request: POST /chat/messages {"from","content","channel"}).
#
#   scripts/vs-reflectt.sh /tmp/reflectt target/release/muster [CONNECTIONS] [SECONDS] [PAIRS]
#
# REFLECTT_DIR is a built checkout of the public reflectt-node repository (`git checkout
# v0.1.34 && npm ci && npm run build`). reflectt-node kills whatever holds its port when it
# starts: each instance gets a port of its own.
set -euo pipefail

reflectt=$(realpath "${1:?usage: scripts/vs-reflectt.sh REFLECTT_DIR MUSTER_BIN [CONNECTIONS] [SECONDS] [PAIRS]}")
muster=$(realpath "${2:?muster binary}")
connections=${3:-20}
seconds=${4:-5}
pairs=${5:-3}
root=$(git rev-parse --show-toplevel)
(cd "$root" && cargo bench --quiet --bench load --no-run)

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_up() {
  for _ in $(seq 300); do
    curl -fs -o /dev/null "http://127.0.0.1:$1/health" && return 0
    sleep 0.1
  done
  echo "nothing answers on port $1" >&2
  return 1
}
load() {
  (cd "$root" && cargo bench --quiet --bench load -- --addr "127.0.0.1:$1" --seconds "$seconds" --runs 1 \
    --connections "$connections" --scenarios chat) | grep '^| chat'
}

for pair in $(seq "$pairs"); do
  work=$(mktemp -d)
  port=$(free_port)
  (cd "$work" && REFLECTT_HOME="$work/home" HOST=127.0.0.1 PORT=$port NODE_ENV=production REFLECTT_TELEMETRY=false \
    exec node "$reflectt/dist/index.js" >"$work/reflectt.log" 2>&1) &
  peer=$!
  wait_up "$port"
  echo "pair $pair reflectt-node $(load "$port")"
  kill "$peer"; wait "$peer" 2>/dev/null || true

  port=$(free_port)
  "$muster" serve --addr "127.0.0.1:$port" --data-dir "$work/muster" >"$work/muster.log" 2>&1 &
  broker=$!
  wait_up "$port"
  echo "pair $pair muster        $(load "$port")"
  kill "$broker"; wait "$broker" 2>/dev/null || true
  rm -rf "$work"
done
