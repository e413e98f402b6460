#!/usr/bin/env python3
"""What an agent in a shell feels: the latency of one `muster` CLI command (process start,
WebSocket connect, hello, one operation, exit), next to curl doing the same over HTTP, and how
soon `muster wait` prints an event after the write that caused it.

    cargo build --release && python3 benches/cli.py [--runs 60]
    python3 benches/cli.py --smoke      # two runs of each, on $MUSTER_BIN: that it still works

Starts its own broker (the release binary, or $MUSTER_BIN) on a free loopback port with a temporary data
dir, and stops it at the end. Prints medians and 95th percentiles in milliseconds.
"""

import argparse
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MUSTER = os.environ.get("MUSTER_BIN") or os.path.join(ROOT, "target", "release", "muster")


def summary(samples):
    samples = sorted(samples)
    return statistics.median(samples), samples[int(len(samples) * 0.95)]


def timed(env, args, runs, ok=(0,)):
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run(args, env=env, capture_output=True)
        samples.append((time.perf_counter() - start) * 1000)
        if done.returncode not in ok:
            raise SystemExit(f"{args} exited {done.returncode}: {done.stderr.decode()}")
    return summary(samples)


def wait_wakeup(env, url, runs):
    """From sending a chat POST to `muster wait --topic chat` printing it."""
    samples = []
    for _ in range(runs):
        wait = subprocess.Popen(
            [MUSTER, "wait", "--topic", "chat", "--timeout", "10s"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        wait.stderr.readline()  # "muster: waiting on chat": subscribed
        start = time.perf_counter()
        post = urllib.request.Request(f"{url}/chat/messages", data=b'{"from":"bench","content":"go"}')
        urllib.request.urlopen(post).read()
        line = wait.stdout.readline()
        samples.append((time.perf_counter() - start) * 1000)
        if wait.wait() != 0 or b"go" not in line:
            raise SystemExit(f"wait failed: {line!r}")
    return summary(samples)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--smoke", action="store_true", help="two runs of each")
    a = parser.parse_args()
    runs = 2 if a.smoke else a.runs
    if not os.path.exists(MUSTER):
        raise SystemExit("build first: cargo build --release")
    if not shutil.which("curl"):
        raise SystemExit("curl is needed for the comparison")

    data = tempfile.mkdtemp(prefix="muster-cli-bench-")
    broker = subprocess.Popen(
        [MUSTER, "serve", "--addr", "127.0.0.1:0", "--data-dir", data],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
    )
    try:
        url = None
        for line in broker.stderr:
            found = re.search(rb"listening on (http://[0-9.:]+)", line)
            if found:
                url = found.group(1).decode()
                break
        if url is None:
            raise SystemExit("the broker did not start")
        env = dict(os.environ, MUSTER_URL=url)
        subprocess.run([MUSTER, "task", "add", "bench", "--as", "a"], env=env, check=True, capture_output=True)
        subprocess.run([MUSTER, "task", "claim", "T-1", "--as", "a"], env=env, check=True, capture_output=True)
        for name, args, ok in [
            ("muster task show T-1", [MUSTER, "task", "show", "T-1"], (0,)),
            ("muster task list", [MUSTER, "task", "list"], (0,)),
            ("muster task add", [MUSTER, "task", "add", "x", "--as", "a"], (0,)),
            ("muster task claim (refused, exit 5)", [MUSTER, "task", "claim", "T-1", "--as", "b"], (5,)),
            ("curl GET /tasks/T-1", ["curl", "-sf", f"{url}/tasks/T-1"], (0,)),
            ("curl POST /tasks", ["curl", "-sf", f"{url}/tasks", "-d", '{"title":"x"}'], (0,)),
        ]:
            median, p95 = timed(env, args, runs, ok)
            print(f"{name:38s} median {median:6.2f} ms   p95 {p95:6.2f} ms")
        median, p95 = wait_wakeup(env, url, max(runs // 2, 1))
        print(f"{'POST sent -> muster wait prints it':38s} median {median:6.2f} ms   p95 {p95:6.2f} ms")
    finally:
        broker.terminate()
        broker.wait()
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
