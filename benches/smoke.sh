#!/usr/bin/env bash
# Every benchmark in smoke mode: a second or so each, a few connections, the debug build. It
# proves that each still builds, starts its broker and gets the answers it expects, so that
# no figure in BENCHMARKS.md comes from a command that no longer works. Run by .ci/run.
#
# Each `[[bench]]` of Cargo.toml and each benches/*.py is run with `--smoke`, found here by
# listing them: a new benchmark without a smoke mode fails CI.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --quiet --bin muster
export MUSTER_BIN="$PWD/target/debug/muster"
for bench in $(sed -n '/^\[\[bench\]\]/,/^name/s/^name = "\(.*\)"/\1/p' Cargo.toml); do
  echo "-- $bench"
  cargo test --quiet --bench "$bench" -- --smoke
done
for script in benches/*.py; do
  echo "-- $script"
  python3 "$script" --smoke
done
echo "-- scripts/wrk-compare.sh (the issue-28 comparison with wrk)"
scripts/wrk-compare.sh --smoke
echo "-- tests/dashboard/bench.mjs"
[ -d tests/dashboard/node_modules ] || (cd tests/dashboard && npm ci --silent --no-audit --no-fund)
node tests/dashboard/bench.mjs --smoke
