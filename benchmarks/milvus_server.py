"""A real Milvus standalone server on this machine, for the tests and the benchmarks: PyPI's ``milvus`` package
(``pip install 'cpcl[milvus-server]'``; Milvus 2.3, no Docker) started as ``milvus-server --data DIR``.

>>> with MilvusServer(tmp_dir) as server:       # about 40 s to answer
...     build_index(retriever, crops, "gallery", uri=server.uri)

The server takes the first free ports from the ones asked for (the proxy's from a free one, so that two
servers, or a user's own Milvus on 19530, do not collide) and writes them into ``DIR/configs/milvus.yaml``,
where the address is read back. It runs in a process group of its own; :meth:`MilvusServer.stop` sends it
SIGTERM and, since Milvus 2.3 can take minutes to stop on its own, SIGKILL after ``stop_timeout`` seconds.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml


class MilvusServerError(RuntimeError):
    """The server could not be started (or is not installed); the message says why and where its logs are."""


def server_command() -> str | None:
    """The ``milvus-server`` launcher of this environment, or None where the package is not installed."""
    beside = Path(sys.executable).with_name("milvus-server")
    return str(beside) if beside.is_file() else shutil.which("milvus-server")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MilvusServer:
    """One ``milvus-server`` process group with its data under ``data_dir``; :attr:`uri` once started."""

    def __init__(self, data_dir: str | Path, start_timeout: float = 180.0, stop_timeout: float = 20.0):
        self.data_dir = Path(data_dir)
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.process: subprocess.Popen | None = None
        self.uri = ""

    def __enter__(self) -> MilvusServer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> str:
        """Start the server and wait until it answers -> its URI (``http://127.0.0.1:PORT``)."""
        command = server_command()
        if command is None:
            raise MilvusServerError("milvus-server is not installed: pip install 'cpcl[milvus-server]'")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = (self.data_dir / "launcher.log").open("w")
        self.process = subprocess.Popen([command, "--data", str(self.data_dir), "--proxy-port", str(_free_port())],
                                        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        start_new_session=True)
        log.close()
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise MilvusServerError(f"milvus-server exited with status {self.process.returncode} before it "
                                        f"answered; its logs are in {self.data_dir}")
            crashed = self._crash()
            if crashed:  # the launcher outlives the server binary: stop it and say why
                self.stop()
                raise MilvusServerError(f"the Milvus server failed to start ({crashed}); its logs are in "
                                        f"{self.data_dir}")
            uri = self._uri()
            if uri and self._answers(uri):
                self.uri = uri
                return uri
            time.sleep(0.5)
        self.stop()
        raise MilvusServerError(f"milvus-server did not answer within {self.start_timeout:.0f} s; its logs are in "
                                f"{self.data_dir}")

    def _crash(self) -> str:
        """Why the server binary died, once it has (a Go panic in its stderr): its first error line, or ""."""
        logs = self.data_dir / "logs"
        try:
            if "panic:" not in (logs / "milvus-stderr.log").read_text(errors="replace"):
                return ""
            errors = [line for line in (logs / "milvus-stdout.log").read_text(errors="replace").splitlines()
                      if "[ERROR]" in line]
        except OSError:
            return ""
        first = errors[0] if errors else "a panic"
        if "address already in use" in first:  # Milvus 2.3's embedded etcd always takes 127.0.0.1:2380
            return f"{first[:300]} — another Milvus server on this machine holds that port"
        return first[:300]

    def _uri(self) -> str:
        """The proxy's address as the launcher resolved it, once it has written its config."""
        config = self.data_dir / "configs" / "milvus.yaml"
        try:
            return f"http://127.0.0.1:{int(yaml.safe_load(config.read_text())['proxy']['port'])}"
        except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError):
            return ""

    @staticmethod
    def _answers(uri: str) -> bool:
        from pymilvus import MilvusClient

        try:
            client = MilvusClient(uri=uri, timeout=3)
            client.list_collections()
            client.close()
            return True
        except Exception:  # not up yet: connection refused, or its coordinators not ready
            return False

    def stop(self) -> None:
        """SIGTERM to the server's process group, then SIGKILL after ``stop_timeout`` seconds; waits for it."""
        if self.process is None:
            return
        group = self.process.pid  # the group's id: the launcher leads a session of its own
        for sig, wait in ((signal.SIGTERM, self.stop_timeout), (signal.SIGKILL, 30.0)):
            try:
                os.killpg(group, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and self._alive(group):
                time.sleep(0.2)
            if not self._alive(group):
                break
        self.process.wait(timeout=30)
        self.process = None

    def _alive(self, group: int) -> bool:
        """Whether any process of the group runs (the launcher is reaped first: a zombie would count)."""
        self.process.poll()
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return False
        return True
