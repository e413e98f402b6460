"""Test support: the real broker binary as a subprocess, and loopback helpers."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = REPO / "protocol" / "examples"
BIN = os.environ.get("MUSTER_BIN", str(REPO / "target" / "debug" / "muster"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Broker:
    """``muster serve`` on loopback; ``kill()`` is SIGKILL, ``start()`` again restarts it on
    the same port (and data dir, unless given another)."""

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.proc: subprocess.Popen[str] | None = None
        self.log: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, data_dir: Path | None = None, port: int | None = None, timeout: float = 30) -> None:
        assert self.proc is None, "already running"
        if data_dir is not None:
            self.data_dir = data_dir
        port = port or self.port
        proc = subprocess.Popen(
            [BIN, "serve", "--addr", f"127.0.0.1:{port}", "--data-dir", str(self.data_dir)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.proc = proc
        ready = threading.Event()

        def drain() -> None:
            assert proc.stderr is not None
            for line in proc.stderr:
                self.log.append(line)
                if "listening on http://" in line:
                    ready.set()

        threading.Thread(target=drain, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not ready.wait(0.05):
            if proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("broker did not start:\n" + "".join(self.log[-20:]))

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, no close frames."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
            self.proc = None

    def http(
        self,
        method: str,
        path: str,
        body: Any = None,
        agent: str | None = None,
        port: int | None = None,
        workspace: str | None = None,
    ) -> Any:
        """One HTTP request; with ``workspace``, to that workspace's route (``/w/{workspace}...``)."""
        headers = {"Content-Type": "application/json"}
        if agent:
            headers["X-Agent"] = agent
        prefix = f"/w/{workspace}" if workspace else ""
        request = urllib.request.Request(
            f"http://127.0.0.1:{port or self.port}{prefix}{path}",
            data=json.dumps(body).encode() if body is not None else None,
            method=method,
            headers=headers,
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())


def token_add(name: str, data_dir: Path) -> str:
    """``muster token add NAME --data-dir DIR``: the token it prints on stdout."""
    out = subprocess.run(
        [BIN, "token", "add", name, "--data-dir", str(data_dir)], check=True, capture_output=True, text=True, timeout=30
    )
    return out.stdout.strip().splitlines()[-1].strip()


@pytest.fixture(scope="session")
def muster_bin() -> str:
    if not os.path.isfile(BIN) or not os.access(BIN, os.X_OK):
        pytest.fail(f"no broker binary at {BIN} (set MUSTER_BIN, or build it with cargo build)")
    return BIN


@pytest.fixture
def broker(muster_bin: str, tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path / "data")
    b.start()
    try:
        yield b
    finally:
        b.stop()
