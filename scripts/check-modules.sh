#!/usr/bin/env bash
# The architecture, checked on the module graph that cargo-modules builds with
# rust-analyzer (so `use` declarations and inline `crate::` paths alike):
#   1. no cycle between the modules of src/ (Graphviz's sccmap finds the strongly connected
#      components; a cycle is one with more than one module);
#   2. axum is used only under src/transport/ and src/dashboard/.
# cargo-modules' own --acyclic is not used: in 0.27 it checks the unfiltered item graph,
# where a type and its own methods already form a cycle.
# Needs cargo-modules (cargo install cargo-modules --version 0.27.0 --locked) and graphviz.
set -euo pipefail
cd "$(dirname "$0")/.."
graph=$(mktemp)
trap 'rm -f "$graph"' EXIT

# Modules only, "uses" edges only (items are folded into the module that defines them).
cargo modules dependencies --lib -p muster --no-externs --no-sysroot --no-fns --no-types --no-traits --no-owns \
  > "$graph"
cycles=$(sccmap "$graph" | grep -E '^\s+"[^"]+" -> "[^"]+"' | sed -E 's/^\s+"([^"]+)" -> "([^"]+)".*/  \1 -> \2/' || true)
if [ -n "$cycles" ]; then
  echo "module cycles (edges inside strongly connected components):"
  echo "$cycles"
  exit 1
fi
echo "no module cycle"

# Every use of axum, from types as well as modules.
cargo modules dependencies --lib -p muster --no-sysroot --no-fns --no-traits --no-owns > "$graph"
outside=$(grep -E '^\s*"[^"]+" -> "axum' "$graph" | sed -E 's/^\s*"([^"]+)" -> "([^"]+)".*/  \1 -> \2/' \
  | grep -vE '^  muster::(transport|dashboard)(::|\s)' || true)
if [ -n "$outside" ]; then
  echo "axum used outside src/transport and src/dashboard:"
  echo "$outside"
  exit 1
fi
echo "axum only in transport/ and dashboard/"
