"""Every long phase says what it is doing: a log line when it starts and one with its seconds when it ends."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator


@contextlib.contextmanager
def phase(log: logging.Logger, name: str, seconds: dict[str, float] | None = None) -> Iterator[None]:
    """Log ``name ...`` now and ``name: 1.2s`` at the end; record the seconds in ``seconds[name]``."""
    log.info("%s ...", name)
    start = time.perf_counter()
    try:
        yield
    finally:
        elapsed = time.perf_counter() - start
        if seconds is not None:
            seconds[name] = elapsed
        log.info("%s: %.1fs", name, elapsed)
