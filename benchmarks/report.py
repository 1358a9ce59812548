"""What every benchmark writes: a Markdown table, the machine it ran on, and results/<name>.{json,md}.

Imported by the scripts next to it (`python benchmarks/<script>.py` puts this folder on the path).
"""

from __future__ import annotations

import json
import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]], align: str | None = None) -> str:
    """A Markdown table; ``align`` is one character per column, ``l`` or ``r`` (default: all left)."""
    align = align or "l" * len(header)
    rule = "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"
    lines = ["| " + " | ".join(map(str, header)) + " |", rule]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines)


def machine() -> str:
    """The processor, its core count and the load average (1, 5, 15 min) when this is called."""
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average {load}"


def command() -> str:
    """The command line that ran this benchmark, as a person would type it."""
    return "python " + " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:])


def write_results(name: str, data: object, text: str) -> None:
    """``results/<name>.json`` (the numbers) and ``results/<name>.md`` (the table a person reads)."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(text.rstrip("\n") + "\n")
    print(text)


def train_or_reuse(out: Path, config, reuse: bool) -> dict:
    """``{"best_epoch", "wall_s", "test"}`` of ``config`` trained into ``out`` — or, with ``reuse``, of the
    completed run already there when it was trained from exactly ``config``."""
    import time

    from cpcl.config import load_config, trained_as_requested
    from cpcl.engine.trainer import train

    done = (out / "results.json").is_file() and (out / "config.yaml").is_file()
    if reuse and done and trained_as_requested(load_config(out / "config.yaml"), config):
        saved = json.loads((out / "results.json").read_text())
        wall = (out / "results.json").stat().st_mtime - (out / "config.yaml").stat().st_mtime
        print(f"{out}: reusing its finished run", flush=True)
        return {"best_epoch": saved["best_epoch"], "wall_s": wall, "test": saved["test"]}
    t0 = time.perf_counter()
    result = train(config, out, progress=False, allow_identity_labels=config.train.supervised, overwrite=True)
    return {"best_epoch": result.best_epoch, "wall_s": time.perf_counter() - t0, "test": result.test}
