#!/usr/bin/env bash
# Compares two broker builds with wrk, the way issue 28 measured them from outside: 1 thread,
# 10 s, a fresh data dir for every run, the two builds alternating (before, after, after,
# before, ...), release builds. Prints every run and the median after/before ratio per
# workload.
#
#   scripts/wrk-compare.sh /tmp/muster-before /tmp/muster-after            # 3 pairs
#   PAIRS=5 SECONDS_EACH=10 scripts/wrk-compare.sh BEFORE AFTER
#   scripts/wrk-compare.sh --smoke      # $MUSTER_BIN against itself, one pair of 1 s runs (CI)
#
# Workloads: chat POST at 20 and 64 connections, POST /tasks at 20 and 64 (scripts/wrk/*.lua).
# Needs wrk (Debian's `wrk` package). A run with any answer other than 2xx fails.
set -euo pipefail

pairs=${PAIRS:-3}
secs=${SECONDS_EACH:-10}
if [ "${1:-}" = --smoke ]; then
  set -- "${MUSTER_BIN:?--smoke compares \$MUSTER_BIN with itself}" "$MUSTER_BIN"
  pairs=1 secs=1
fi
before=${1:?usage: scripts/wrk-compare.sh BEFORE_BIN AFTER_BIN}
after=${2:?usage: scripts/wrk-compare.sh BEFORE_BIN AFTER_BIN}
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# run BIN WORKLOAD CONNS -> prints req/s
run() {
  local bin=$1 workload=$2 conns=$3 dir="$work/data-$RANDOM$RANDOM" port up=""
  # A port the kernel has just given out free (a fixed one may be an outgoing connection's).
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  "$bin" serve --addr "127.0.0.1:$port" --data-dir "$dir" >"$work/broker.log" 2>&1 &
  local pid=$!
  for _ in $(seq 1 200); do
    if curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1; then up=1; break; fi
    sleep 0.05
  done
  if [ -z "$up" ]; then
    echo "the broker did not start:" >&2
    cat "$work/broker.log" >&2
    exit 1
  fi
  local path=/chat/messages
  [ "$workload" = create ] && path=/tasks
  local out
  out=$(wrk -t1 -c"$conns" -d"${secs}s" -s "$here/wrk/$workload.lua" "http://127.0.0.1:$port$path")
  kill -INT "$pid"
  wait "$pid" || true
  rm -rf "$dir"
  if grep -q "Non-2xx\|Socket errors" <<<"$out"; then
    echo "wrk saw errors: $out" >&2
    exit 1
  fi
  awk '/Requests\/sec/ {printf "%.0f", $2}' <<<"$out"
}

declare -A ratios
for pair in $(seq 1 "$pairs"); do
  for workload in chat create; do
    for conns in 20 64; do
      if [ $((pair % 2)) -eq 1 ]; then
        b=$(run "$before" $workload $conns); a=$(run "$after" $workload $conns)
      else
        a=$(run "$after" $workload $conns); b=$(run "$before" $workload $conns)
      fi
      r=$(python3 -c "print(f'{$a/$b:.2f}')")
      echo "pair $pair $workload@$conns: before $b, after $a req/s, ratio $r"
      ratios[$workload@$conns]="${ratios[$workload@$conns]:-} $r"
    done
  done
done
echo
echo "| workload | conns | after/before per pair | median |"
echo "|---|---|---|---|"
for key in chat@20 chat@64 create@20 create@64; do
  median=$(python3 -c "import statistics,sys; print(f'{statistics.median(map(float, sys.argv[1:])):.2f}')" ${ratios[$key]})
  echo "| ${key%@*} | ${key#*@} | ${ratios[$key]# } | **$median** |"
done
