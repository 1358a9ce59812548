"""The collective checker the CPU tests train under: every collective of ``torch.distributed`` refuses a tensor
on a device type the run's process group would have no backend for.

A CUDA run joins ``cpu:gloo,cuda:nccl`` (NCCL has no CPU collectives: sizes, indices, loss totals and the
features gathered for clustering are CPU tensors); the CPU suite trains on gloo, which takes every tensor, so
without this check a CPU tensor handed to a collective would pass here and fail on the first GPU cluster.

``checked_env()`` is the environment of a process (and of every process it starts: ``cpcl train --nproc``
relaunches under ``torchrun``) that installs the check at start-up: ``sitecustomize.py`` beside this file reads
``CPCL_CHECK_COLLECTIVES`` — a device type (``cuda``: the backends a CUDA run has) or a backend string
(``nccl``: what an NCCL-only group would have).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.distributed as dist

from cpcl.engine.distributed import backend_for

HERE = Path(__file__).resolve().parent
COLLECTIVES = ("all_gather", "all_gather_into_tensor", "all_reduce", "broadcast", "reduce_scatter",
               "reduce_scatter_tensor", "gather", "scatter", "reduce")


def checked_env(run: str = "cuda", env: dict | None = None) -> dict:
    """``env`` (default: this process's) with the check for ``run`` installed in every Python it starts."""
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), env.get("PYTHONPATH", "")) if p)
    env["CPCL_CHECK_COLLECTIVES"] = run
    return env


def backend_devices(backend: str) -> set[str]:
    """Device types a backend string serves: ``"cpu:gloo,cuda:nccl"`` -> {cpu, cuda}; ``"nccl"`` -> {cuda}."""
    if ":" in backend:
        return {part.split(":")[0] for part in backend.split(",")}
    return {"cuda"} if backend == "nccl" else {"cpu"}


def check_collective_devices(allowed: set[str], run: str) -> None:
    """Make every collective refuse a tensor whose device type is not in ``allowed``: the device types that a
    run on ``run`` has a backend for."""

    def tensors(value):
        if isinstance(value, torch.Tensor):
            yield value
        elif isinstance(value, (list, tuple)):
            for item in value:
                yield from tensors(item)

    def wrap(name, function):
        def checked(*args, **kwargs):
            for tensor in tensors([*args, *kwargs.values()]):
                if tensor.device.type not in allowed:
                    raise RuntimeError(f"dist.{name} got a {tensor.device.type} tensor {tuple(tensor.shape)}: a "
                                       f"{run} process group has no backend for it (backends for: "
                                       f"{', '.join(sorted(allowed))})")
            return function(*args, **kwargs)

        checked.cpcl_checked = function
        return checked

    for name in COLLECTIVES:
        if hasattr(dist, name) and not hasattr(getattr(dist, name), "cpcl_checked"):
            setattr(dist, name, wrap(name, getattr(dist, name)))


def install_from_env() -> None:
    """The check ``CPCL_CHECK_COLLECTIVES`` asks for, if any."""
    run = os.environ.get("CPCL_CHECK_COLLECTIVES")
    if run:
        backend = backend_for(torch.device(run)) if run in ("cpu", "cuda") else run
        check_collective_devices(backend_devices(backend), backend)
