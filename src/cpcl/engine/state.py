"""Everything a run needs to continue after a stop: what ``last.pt`` holds and ``--resume`` restores."""

from __future__ import annotations

import io
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cpcl.config import Config
from cpcl.engine.distributed import DistInfo, gather_objects
from cpcl.engine.objective import Objective
from cpcl.engine.seeding import resumed_rank_seed, seed_everything
from cpcl.model.checkpoint import read_checkpoint, save_checkpoint
from cpcl.model.retrieval_model import RetrievalModel


@dataclass
class Best:
    """The best score one criterion has seen, and its epoch (None: no epoch scored yet)."""

    score: float = -math.inf
    epoch: int | None = None


CRITERIA = ("val", "label-free")  # val: R1 + mAP over held-out persons; label-free: train.label_free_score


@dataclass
class RunState:
    """The model, its optimiser, schedule, loss scaler and objective, and the run's own bookkeeping.

    ``epoch`` is the last completed epoch; ``history`` its rows of ``metrics.jsonl``; ``test_reference`` the
    chance and zero-shot test rows computed before training. :meth:`state_dict` adds the random states of
    every generator the run draws from, so that a resumed run continues exactly as the uninterrupted one.
    """

    model: RetrievalModel
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    objective: Objective
    epoch: int = 0
    best: dict[str, Best] = field(default_factory=lambda: {c: Best() for c in CRITERIA})
    history: list[dict[str, Any]] = field(default_factory=list)
    # cluster.backoff_patience: epochs on pseudo labels in a row without a new best val score (rank 0), and
    # the epoch after which the run went back to the instance loss alone
    stale_epochs: int = 0
    backed_off: int | None = None
    previous_labels: tuple[np.ndarray, np.ndarray] | None = None  # the last usable (image, text) pseudo labels
    zero_shot_val: dict[str, Any] | None = None
    test_reference: dict[str, dict[str, Any]] = field(default_factory=dict)
    data: dict[str, Any] | None = None  # the data the run started on (Annotations.fingerprint)

    def state_dict(self, rank_rngs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """Checkpoint entries besides the model weights (which every checkpoint holds). ``rank_rngs``: the random
        states of every rank, in rank order (a distributed run's ranks augment from streams of their own)."""
        labels = self.objective.labels  # the epoch's pseudo labels, kept for inspection; not restored
        run = {"best": {c: [b.score, b.epoch] for c, b in self.best.items()}, "history": self.history,
               "stale_epochs": self.stale_epochs, "backed_off": self.backed_off,
               "previous_labels": None if self.previous_labels is None else
               [torch.from_numpy(x) for x in self.previous_labels],
               "zero_shot_val": self.zero_shot_val, "zero_shot_row": zero_shot_row(self.zero_shot_val),
               "test_reference": dict(self.test_reference), **self.objective.state_dict(),
               "labels": None if labels is None else {"image": labels.image, "text": labels.text},
               "rng": rng_state(), "rank_rngs": rank_rngs, "data": self.data}
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(), "run": run}

    def load_state_dict(self, payload: dict[str, Any], rank: int, seed: int) -> None:
        """Restore from a ``last.pt`` payload (model weights included) and the random states it holds: rank
        ``rank``'s own where the run saved those of several ranks; a rank the run did not have draws a stream of
        its own from the run's ``seed`` (``train.seed``), the epoch and the rank."""
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        self.scaler.load_state_dict(payload["scaler"])
        run = payload["run"]
        self.objective.load_state_dict(run)
        self.epoch = payload["epoch"]
        if "best" in run:
            self.best = {c: Best(*run["best"][c]) for c in CRITERIA}
        else:  # a last.pt from before label-free selection: val only
            self.best = {"val": Best(run["best_score"], run["best_epoch"]), "label-free": Best()}
        self.history = run["history"]
        self.stale_epochs, self.backed_off = run.get("stale_epochs", 0), run.get("backed_off")
        previous = run.get("previous_labels")
        self.previous_labels = None if previous is None else tuple(x.numpy() for x in previous)
        self.zero_shot_val = run["zero_shot_val"]
        self.test_reference = dict(run["test_reference"])
        self.data = run.get("data")
        rank_rngs = run.get("rank_rngs") or [run["rng"]]
        if rank < len(rank_rngs):
            set_rng_state(rank_rngs[rank])
        else:  # resumed on more ranks than the run had: this rank's stream from (train.seed, epoch, rank)
            set_rng_state(run["rng"])
            seed_everything(resumed_rank_seed(seed, self.epoch, rank))

    def save(self, path: Path, config: Config, val: dict[str, Any] | None,
             rank_rngs: list[dict[str, Any]] | None = None) -> None:
        """Write the state as a checkpoint, atomically."""
        save_checkpoint(path, self.model, config, epoch=self.epoch, val=val, **self.state_dict(rank_rngs))

    def metrics_rows(self) -> list[dict[str, Any]]:
        """``metrics.jsonl`` as of this state: the zero-shot row, then one row per completed epoch."""
        return [zero_shot_row(self.zero_shot_val), *self.history]


def zero_shot_row(zero_shot_val: dict[str, Any] | None) -> dict[str, Any]:
    return {"epoch": 0, "val": zero_shot_val}


def read_resume_state(out: Path) -> dict[str, Any]:
    """The ``last.pt`` payload of the run in ``out``, checked to hold a training state."""
    path = out / "last.pt"
    if not path.is_file():
        raise FileNotFoundError(f"cannot resume {out}: no last.pt (no epoch of this run has completed)")
    payload = read_checkpoint(path)
    if "run" not in payload:
        raise ValueError(f"{path} holds no training state to resume from (written by an older cpcl?)")
    return payload


def rng_state() -> dict[str, Any]:
    """Every generator a run draws from, at an epoch boundary (the DataLoader seeds its workers from torch's)."""
    np_state = np.random.get_state()
    return {"python": random.getstate(), "numpy": (np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def gather_rng_states(dist: DistInfo) -> list[dict[str, Any]] | None:
    """Every rank's :func:`rng_state`, in rank order, on every rank (None when not distributed). Sent as the
    bytes ``torch.save`` writes: object collectives cannot unpickle tensors."""
    if not dist.enabled:
        return None
    buf = io.BytesIO()
    torch.save(rng_state(), buf)
    return [torch.load(io.BytesIO(b), weights_only=True) for b in gather_objects(buf.getvalue(), dist)]


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy(), *rest))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
