#!/usr/bin/env bash
# Compares the broker's request path at BASE (a commit, tag or branch) with the working
# tree's HEAD build: builds BASE in a worktree of its own (into a target dir kept between
# runs, so a second comparison rebuilds only what changed), then runs benches/compare.py —
# alternating pairs, per-scenario medians and the after/before ratio — at 20 and 64
# connections. Every change on the request path reports this against the last landed commit.
#
#   scripts/perf-compare.sh 14f27dd                       # 5 pairs, create, claim and chat
#   scripts/perf-compare.sh 14f27dd --pairs 3 --scenarios chat
#
# Arguments after BASE go to benches/compare.py. MUSTER_PERF_DIR (default
# /tmp/muster-perf) holds the worktree and the two binaries; MUSTER_PERF_TARGET (default
# $MUSTER_PERF_DIR/target) is BASE's target dir.
set -euo pipefail

base=${1:?usage: scripts/perf-compare.sh BASE [compare.py options]}
shift
root=$(git rev-parse --show-toplevel)
dir=${MUSTER_PERF_DIR:-/tmp/muster-perf}
sha=$(git -C "$root" rev-parse --verify "$base^{commit}")
mkdir -p "$dir"

target=${MUSTER_PERF_TARGET:-$dir/target}
tree="$dir/tree"
if [ ! -e "$tree/.git" ]; then
  git -C "$root" worktree add --detach "$tree" "$sha" >/dev/null
else
  git -C "$tree" checkout --quiet --detach "$sha"
fi
echo "== building $base ($sha) in $tree" >&2
CARGO_TARGET_DIR="$target" cargo build --release --quiet --manifest-path "$tree/Cargo.toml" --bin muster
cp "$target/release/muster" "$dir/muster-before"

echo "== building HEAD ($(git -C "$root" rev-parse --short HEAD)$(git -C "$root" diff --quiet HEAD || echo ', with uncommitted changes'))" >&2
cargo build --release --quiet --manifest-path "$root/Cargo.toml" --bin muster
cp "$root/target/release/muster" "$dir/muster-after"

cd "$root"
python3 benches/compare.py "$dir/muster-before" "$dir/muster-after" --connections 20,64 "$@"
