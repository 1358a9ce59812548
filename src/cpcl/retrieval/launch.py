"""Run ``cpcl serve`` in a process of its own, as a user would, and wait until it answers.

>>> with serve_in_subprocess("runs/demo/index") as server:
...     urllib.request.urlopen(server.url + "/api/search?q=a+man+in+a+red+jacket")

Used by the browser test, the load test and the script that draws the page's screenshot.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cpcl.errors import CpclError


class ServerError(CpclError, RuntimeError):
    """The server exited or did not answer in time; the message holds what it printed."""


@dataclass(frozen=True)
class RunningServer:
    url: str  # http://127.0.0.1:PORT
    port: int
    process: subprocess.Popen


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve_in_subprocess(index: str | Path, *args: str, port: int | None = None,
                        timeout: float = 120.0) -> Iterator[RunningServer]:
    """``cpcl serve INDEX --port PORT ARGS...`` on loopback; yields once ``/healthz`` answers, stops it on exit."""
    port = port or free_port()
    process = subprocess.Popen([sys.executable, "-m", "cpcl", "serve", str(index), "--port", str(port), *args],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_healthy(url, process, timeout)
        yield RunningServer(url, port, process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_until_healthy(url: str, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(f"{url}/healthz", timeout=1)
            return
        except OSError:
            if process.poll() is not None:
                problem = f"exited with status {process.returncode}"
            elif time.monotonic() > deadline:
                process.kill()
                problem = f"did not answer within {timeout:.0f}s"
            else:
                time.sleep(0.2)
                continue
            raise ServerError(f"cpcl serve {problem}:\n{process.stdout.read()}") from None
