"""The opt-in TensorBoard log of a run (``train.tensorboard: true``): each epoch's row of ``metrics.jsonl``
as scalars under ``RUN_DIR/tensorboard``, grouped as ``loss/``, ``val/``, ``pseudo/``, ``time/`` and
``train/`` — the same numbers, for people who read their runs in TensorBoard."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cpcl.errors import UsageError

LOSS_KEYS = ("sdm", "itc", "intra_image", "intra_text", "cross_image", "cross_text", "loss")


def require_tensorboard() -> None:
    """Fail before training, in one sentence, when the package is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        raise UsageError("train.tensorboard=true needs the tensorboard package: pip install 'cpcl[tensorboard]' "
                         "(or leave it false; metrics.jsonl holds the same numbers)") from None


def scalars(row: dict[str, Any]) -> Iterator[tuple[str, float]]:
    """A ``metrics.jsonl`` row -> ``(tag, value)`` for each number in it (nested keys joined by ``/``)."""
    for key, value in row.items():
        if key == "epoch":
            continue
        group = "loss" if key in LOSS_KEYS else key if isinstance(value, dict) else "train"
        yield from _flatten(f"{group}/{key}" if group in ("loss", "train") else group, value)


def _flatten(tag: str, value: Any) -> Iterator[tuple[str, float]]:
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from _flatten(f"{tag}/{key}", inner)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield tag, float(value)


class TensorBoardLog:
    """Writes rows as they come; reopening the directory of a resumed run appends to it."""

    def __init__(self, directory: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(directory))

    def write(self, row: dict[str, Any]) -> None:
        for tag, value in scalars(row):
            self.writer.add_scalar(tag, value, global_step=row["epoch"])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
