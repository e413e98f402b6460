#!/usr/bin/env bash
# The existing suites against a cluster: starts three nats-servers on loopback from the
# configs in tests/cluster/ (ports and store dirs moved by flags), then runs the suites
# named below with MUSTER_TEST_CLUSTER set, so that each test's broker is a three-node Muster
# cluster on them and its requests and connections are spread over the nodes (see
# tests/common/mod.rs). Extra arguments go to `cargo test` (e.g. a test name filter).
#
# Single-node by nature, and not run here: the crash, disk-full, durability and token-file
# suites (they test one data dir on one disk) and the cluster's own tests (tests/cluster.rs,
# which start their own servers).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v nats-server >/dev/null; then
  [ "${MUSTER_REQUIRE_NATS:-}" = 1 ] && { echo "MUSTER_REQUIRE_NATS=1 but nats-server is not installed" >&2; exit 1; }
  echo "SKIPPED: the suites on a cluster (no nats-server; apt install nats-server)"
  exit 0
fi

base=${MUSTER_TEST_NATS_PORT:-14222}
store=$(mktemp -d)
pids=()
stop() {
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$store"
}
trap stop EXIT
# The nodes' NATS user (the servers' configs name its public key; the nodes get its seed).
export MUSTER_NKEY MUSTER_NATS_NKEY="$store/nodes.nk"
MUSTER_NKEY=$(cargo run -q --bin muster -- nats-key "$MUSTER_NATS_NKEY")
routes=""
for i in 1 2 3; do routes+="${routes:+,}nats://127.0.0.1:$((base + 1000 + i))"; done
urls=""
for i in 1 2 3; do
  port=$((base + i - 1))
  nats-server -c "tests/cluster/nats-$i.conf" -a 127.0.0.1 -p "$port" \
    --cluster "nats://127.0.0.1:$((base + 1000 + i))" --routes "$routes" \
    -sd "$store/nats-$i" 2>"$store/nats-$i.log" &
  pids+=($!)
  urls+="${urls:+,}nats://127.0.0.1:$port"
done
for i in 1 2 3; do
  port=$((base + i - 1))
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
  done
done

export MUSTER_TEST_CLUSTER=$urls
# MUSTER_TEST_SUITES (space-separated) runs fewer.
read -r -a suites <<<"${MUSTER_TEST_SUITES:-seed http_api ws claim_race client cli mcp mcp_sdk reservations presence}"
args=()
for suite in "${suites[@]}"; do args+=(--test "$suite"); done
if ! cargo test --no-fail-fast "${args[@]}" "$@"; then
  for i in 1 2 3; do echo "== nats-server $i (last lines)"; tail -n 20 "$store/nats-$i.log"; done
  exit 1
fi
