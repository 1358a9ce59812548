"""Dynamic batching: queries that arrive together are encoded as one batch and searched together.

A server thread answers many HTTP requests at once, but the model and the index each already use every
core, so running queries side by side only makes them fight. A :class:`QueryBatcher` owns one worker
thread: it takes the oldest waiting query, every other query already waiting (up to ``max_batch``), and —
when the last batch held more than one query, i.e. there are concurrent clients — those that arrive
within ``window_ms``; then it calls ``run_batch`` once for all of them. A lone client never waits for the
window. Each caller gets its own result back, with the size of the batch it rode in and how long it
waited.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any


@dataclass
class _Request:
    query: str
    k: int
    nprobe: int | None
    arrived: float = field(default_factory=time.perf_counter)
    future: Future = field(default_factory=Future)


# (queries, k, nprobe) -> one result per query, in order
RunBatch = Callable[[Sequence[str], int, int | None], list[Any]]


class QueryBatcher:
    """Collects concurrent queries and answers them with one ``run_batch`` call per batch.

    ``run_batch(queries, k, nprobe)`` must return one result per query, in order, each with an ``extra``
    dict and a ``hits`` list (at least ``k`` long, cut here to each request's own ``k``).
    """

    def __init__(self, run_batch: RunBatch, window_ms: float = 2.0, max_batch: int = 32):
        if max_batch < 1 or window_ms < 0:
            raise ValueError(f"max_batch must be ≥ 1 and window_ms ≥ 0, got {max_batch} and {window_ms}")
        self.run_batch = run_batch
        self.window = window_ms / 1e3
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._last_size = 1
        self._closed = False
        self._worker = threading.Thread(target=self._loop, name="cpcl-query-batcher", daemon=True)
        self._worker.start()

    def submit(self, query: str, k: int, nprobe: int | None = None, timeout: float | None = None):
        """Queue one query and wait for its result (an exception of its batch is raised here)."""
        return self._enqueue(query, k, nprobe).result(timeout)

    async def submit_async(self, query: str, k: int, nprobe: int | None = None):
        """:meth:`submit` for an event loop: the loop is free while the query waits for its batch."""
        return await asyncio.wrap_future(self._enqueue(query, k, nprobe))

    def _enqueue(self, query: str, k: int, nprobe: int | None) -> Future:
        if self._closed:
            raise RuntimeError("the query batcher is closed")
        request = _Request(query, k, nprobe)
        self._queue.put(request)
        return request.future

    def close(self) -> None:
        """Answer what is queued, then stop the worker."""
        if not self._closed:
            self._closed = True
            self._queue.put(None)
            self._worker.join()

    def _collect(self, first: _Request) -> tuple[list[_Request], bool]:
        """``first`` and the queries to batch with it -> (batch, whether the batcher was closed meanwhile)."""
        batch = [first]
        deadline = time.perf_counter() + (self.window if self._last_size > 1 else 0.0)
        while len(batch) < self.max_batch:
            try:
                wait = deadline - time.perf_counter()
                request = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if request is None:
                return batch, True
            batch.append(request)
        return batch, False

    def _loop(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                break
            batch, stop = self._collect(first)
            self._last_size = len(batch)
            started = time.perf_counter()
            # one run per nprobe (the server uses the index's; the Python API may mix them)
            for nprobe in dict.fromkeys(r.nprobe for r in batch):
                group = [r for r in batch if r.nprobe == nprobe]
                try:
                    results = self.run_batch([r.query for r in group], max(r.k for r in group), nprobe)
                except BaseException as exc:  # noqa: BLE001 - handed to every caller of the batch
                    for r in group:
                        r.future.set_exception(exc)
                    continue
                for r, result in zip(group, results, strict=True):
                    result.hits = result.hits[:r.k]
                    result.extra.update(batch=len(batch), wait_ms=round((started - r.arrived) * 1e3, 2))
                    r.future.set_result(result)
