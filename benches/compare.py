#!/usr/bin/env python3
"""Compares two builds of the broker with the HTTP load generator (benches/load.rs), in
alternating pairs on the same machine: before, after, after, before, ... so that drift of a
shared machine falls on both sides. Prints every run and, per scenario, the median of the
after/before throughput ratios.

    cargo build --release && cp target/release/muster /tmp/muster-after
    git stash / checkout the old revision; cargo build --release; cp ... /tmp/muster-before
    python3 benches/compare.py /tmp/muster-before /tmp/muster-after --pairs 5
    python3 benches/compare.py --smoke     # $MUSTER_BIN against itself, one tiny pair (CI)

The generator itself comes from the current tree (`cargo bench --bench load`); only the
broker binary changes, through MUSTER_BIN.
"""

import argparse
import os
import re
import statistics
import subprocess
import sys

ROW = re.compile(r"^\| (\S+) \| (\d+) \| (\d+) \|")


def run(binary, args, smoke):
    env = dict(os.environ, MUSTER_BIN=binary)
    # The smoke run uses the debug build of the generator, which CI has already compiled.
    cmd = ["cargo", "test" if smoke else "bench", "--quiet", "--bench", "load", "--"] + args
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    rates = {}
    for line in out.splitlines():
        m = ROW.match(line)
        if m:
            rates[(m.group(1), int(m.group(2)))] = int(m.group(3))
    if not rates:
        sys.exit(f"no results from {cmd}:\n{out}")
    return rates


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("before", nargs="?", default=os.environ.get("MUSTER_BIN"))
    parser.add_argument("after", nargs="?", default=os.environ.get("MUSTER_BIN"))
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--smoke", action="store_true", help="one pair of 0.3 s create runs on 2 connections")
    parser.add_argument("--seconds", default="5")
    parser.add_argument("--connections", default="20,64")
    parser.add_argument("--scenarios", default="create,claim,chat")
    a = parser.parse_args()
    if not a.before or not a.after:
        parser.error("give the two binaries (or set MUSTER_BIN)")
    if a.smoke:
        a.pairs, a.seconds, a.connections, a.scenarios = 1, "0.3", "2", "create"
    args = ["--seconds", a.seconds, "--runs", "1", "--connections", a.connections, "--scenarios", a.scenarios]
    runs = {"before": [], "after": []}
    for i in range(a.pairs):
        order = ["before", "after"] if i % 2 == 0 else ["after", "before"]
        for side in order:
            rates = run(getattr(a, side), args, a.smoke)
            runs[side].append(rates)
            print(f"pair {i + 1} {side:6}: " + ", ".join(f"{s}@{c} {r}" for (s, c), r in sorted(rates.items())), flush=True)
    print()
    print("| scenario | conns | before req/s (median) | after req/s (median) | after/before per pair | median ratio |")
    print("|---|---|---|---|---|---|")
    for key in sorted(runs["before"][0]):
        before = [r[key] for r in runs["before"]]
        after = [r[key] for r in runs["after"]]
        ratios = [x / y for x, y in zip(after, before)]
        print(
            f"| {key[0]} | {key[1]} | {statistics.median(before):.0f} | {statistics.median(after):.0f} | "
            + " / ".join(f"{r:.2f}" for r in ratios)
            + f" | **{statistics.median(ratios):.3f}** |"
        )


if __name__ == "__main__":
    main()
