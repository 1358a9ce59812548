"""One thread count for every parallel library in the process, and idle threads that sleep.

PyTorch, numba (the Jaccard kernels) and faiss (the k-NN) all run OpenMP parallel regions, and they share
one OpenMP runtime: a numba or faiss call sets the process-wide OpenMP thread count, so after the first
clustering PyTorch trained with every core again whatever ``OMP_NUM_THREADS`` or ``torch.set_num_threads``
had asked for. And OpenMP's idle threads spin by default, which on a CPU shared with other work burns the
time slices the busy threads need (a demo step took 7x as long under a load of three busy processes).

:func:`short_spin_waits` (called by the command line before PyTorch loads) lets idle threads spin only
briefly before they sleep, and :func:`library_threads` runs numba and faiss with PyTorch's thread count and
gives PyTorch its count back. ``benchmarks/busy_machine.py`` measured the choice: a short spin costs nothing
on a quiet machine, where sleeping at once (``OMP_WAIT_POLICY=PASSIVE``) made steps about 15 % slower, and
takes most of the loss away on a busy one, where ``PASSIVE`` is faster still.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from cpcl.errors import CpclError

SPIN_COUNT = "10000"  # GNU OpenMP's default is 300000 spins before an idle thread sleeps


def short_spin_waits() -> None:
    """Idle OpenMP threads spin briefly, then sleep (``GOMP_SPINCOUNT``), unless the user chose a wait policy
    or a spin count. Takes effect only if called before the OpenMP runtime loads (before ``import torch``)."""
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ.setdefault("GOMP_SPINCOUNT", SPIN_COUNT)


LABEL_THREADS_ENV = "CPCL_LABEL_THREADS"


def labelling_threads(distributed: bool) -> int:
    """Threads for pseudo labelling (k-NN, Jaccard distances, DBSCAN, OPLM).

    One process: PyTorch's thread count. Under torchrun every process gets ``OMP_NUM_THREADS=1`` (torchrun's
    default with several processes per node), yet rank 0 labels alone while the other ranks wait for its
    labels: it takes every core this process may run on. ``CPCL_LABEL_THREADS`` overrides both.
    """
    import torch

    text = os.environ.get(LABEL_THREADS_ENV, "").strip()
    if text:
        if not text.isdigit() or int(text) < 1:
            raise CpclError(f"{LABEL_THREADS_ENV}={text!r}: expected a number of threads, at least 1")
        return int(text)
    if not distributed:
        return torch.get_num_threads()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, cores or 1)


@contextlib.contextmanager
def library_threads(threads: int | None = None) -> Iterator[int]:
    """Run PyTorch, numba and faiss work with ``threads`` threads (default: PyTorch's count), and give PyTorch
    its count back afterwards."""
    import faiss
    import numba
    import torch

    before = torch.get_num_threads()
    threads = threads or before
    numba_before = numba.get_num_threads()
    torch.set_num_threads(threads)
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    faiss.omp_set_num_threads(threads)
    try:
        yield threads
    finally:
        numba.set_num_threads(numba_before)
        torch.set_num_threads(before)
