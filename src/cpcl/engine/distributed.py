"""Distributed data parallel plumbing: the process group, collectives, and the batch sharding.

A run started by ``torchrun`` (``WORLD_SIZE`` > 1 in the environment, or 1 with ``CPCL_FORCE_DISTRIBUTED=1``)
joins a process group with a backend for every device a collective's tensors can be on:
``cpu:gloo,cuda:nccl`` when it trains on CUDA (NCCL has no CPU collectives: sizes, indices, loss totals and
the features gathered for clustering are CPU tensors), gloo on the CPU (the CPU test suite checks every
collective against the CUDA run's backends: ``tests/support/collectives.py``). Every rank
builds the same global batch order from ``(seed, epoch)`` and takes its contiguous slice of each global
batch, so a run on N ranks sees the same batches as a single-process run with the same
``train.batch_size`` (the global batch).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from cpcl.errors import CpclError

T = TypeVar("T")


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    forced: bool = False  # a process group of one rank (CPCL_FORCE_DISTRIBUTED=1): every collective runs

    @property
    def enabled(self) -> bool:
        return self.world_size > 1 or self.forced

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = DistInfo()


def launched_distributed() -> bool:
    """Started by torchrun with several processes, or with one and ``CPCL_FORCE_DISTRIBUTED=1`` (a one-GPU
    machine then runs every collective through its real backend: NCCL refuses two ranks on one GPU)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 or (_forced() and "RANK" in os.environ)


def _forced() -> bool:
    return os.environ.get("CPCL_FORCE_DISTRIBUTED") == "1"


def backend_for(device: torch.device) -> str:
    """The process group's backends when training on ``device``: one for each device type a tensor handed
    to a collective can be on."""
    return "cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo"


def init_distributed(device: torch.device) -> tuple[DistInfo, torch.device]:
    """Join the process group torchrun set up (if any) -> ``(info, this rank's device)``."""
    if not launched_distributed():
        return SINGLE, device
    info = DistInfo(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)),
                    forced=_forced())
    if device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        # a rank that dies or stalls stops the others after this long instead of leaving them waiting forever
        timeout = datetime.timedelta(minutes=float(os.environ.get("CPCL_DIST_TIMEOUT_MIN", "30")))
        dist.init_process_group(backend_for(device), rank=info.rank, world_size=info.world_size,
                                device_id=device if device.type == "cuda" else None, timeout=timeout)
    return info, device


def shutdown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def all_gather_tensor(x: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Concatenate equal-shaped tensors of every rank in rank order (no gradient)."""
    if not info.enabled:
        return x
    parts = [torch.empty_like(x) for _ in range(info.world_size)]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def all_gather_with_grad(x: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Like :func:`all_gather_tensor`, and the gradient of every rank's loss flows back to each rank's ``x``."""
    if not info.enabled:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x.contiguous()))


def all_reduce_sum(x: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if not info.enabled:
        return x
    x = x.clone()
    dist.all_reduce(x)
    return x


def broadcast_object(obj, info: DistInfo):
    """Rank 0's ``obj`` on every rank."""
    if not info.enabled:
        return obj
    box = [obj if info.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(obj, info: DistInfo) -> list:
    """Every rank's ``obj``, in rank order, on every rank (picklable objects; through gloo on a CUDA run)."""
    if not info.enabled:
        return [obj]
    out = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_module(module: torch.nn.Module, info: DistInfo) -> None:
    """Rank 0's parameters and buffers of ``module`` on every rank, in place (on the rank's device)."""
    if not info.enabled:
        return
    for tensor in module.state_dict().values():
        dist.broadcast(tensor, src=0)


def on_main_first(fn: Callable[[], T], info: DistInfo) -> T:
    """``fn()`` on rank 0, then on every other rank once rank 0 is done (what rank 0 writes — a generated
    dataset, a cache — the others then read). An error on rank 0 is raised on every rank, with its message,
    instead of leaving the others waiting."""
    if not info.enabled:
        return fn()
    problem, result = None, None
    if info.is_main:
        try:
            result = fn()
        except Exception as exc:
            problem = f"{type(exc).__name__} on rank 0: {exc}"
            raise
        finally:
            broadcast_object(problem, info)
        return result
    problem = broadcast_object(None, info)
    if problem is not None:
        raise CpclError(problem)
    return fn()


def gather_in_order(local: torch.Tensor, indices: torch.Tensor, total: int, info: DistInfo) -> torch.Tensor:
    """Rows ``local`` (n, D) computed for dataset ``indices`` (n,) on each rank -> all ``total`` rows in
    dataset order, on every rank. Ranks may hold different n (padded for the collective)."""
    if not info.enabled:
        out = torch.empty(total, *local.shape[1:], dtype=local.dtype)
        out[indices] = local
        return out
    size = torch.tensor([len(indices)])
    sizes = all_gather_tensor(size, info).tolist()
    width = max(sizes)
    padded = torch.zeros(width, *local.shape[1:], dtype=local.dtype)
    padded[:len(local)] = local
    padded_idx = torch.full((width,), -1, dtype=torch.long)
    padded_idx[:len(indices)] = indices
    rows, idx = all_gather_tensor(padded, info), all_gather_tensor(padded_idx, info)
    keep = idx >= 0
    out = torch.empty(total, *local.shape[1:], dtype=local.dtype)
    out[idx[keep]] = rows[keep]
    return out


class ShardedBatchSampler(Sampler[list[int]]):
    """Global batches of ``batch_size`` drawn from ``sampler`` (dropping the last incomplete one); each rank
    yields its contiguous ``batch_size / world_size`` slice of every global batch, in order."""

    def __init__(self, sampler: Iterable[int], batch_size: int, info: DistInfo, max_batches: int | None = None):
        if batch_size % info.world_size:
            raise ValueError(f"train.batch_size={batch_size} (the global batch) must be a multiple of the "
                             f"{info.world_size} processes")
        self.sampler = sampler
        self.batch_size = batch_size
        self.local = batch_size // info.world_size
        self.start = info.rank * self.local
        self.max_batches = max_batches

    def __len__(self) -> int:
        n = len(self.sampler) // self.batch_size
        return n if self.max_batches is None else min(n, self.max_batches)

    def __iter__(self) -> Iterator[list[int]]:
        batch: list[int] = []
        emitted = 0
        for index in self.sampler:
            batch.append(int(index))
            if len(batch) == self.batch_size:
                yield batch[self.start:self.start + self.local]
                emitted += 1
                batch = []
                if self.max_batches is not None and emitted >= self.max_batches:
                    return
