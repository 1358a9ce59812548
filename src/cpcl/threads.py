"""One thread count for every parallel library in the process, and idle threads that sleep.

PyTorch, numba (the Jaccard kernels) and faiss (the k-NN) all run OpenMP parallel regions, and they share
one OpenMP runtime: a numba or faiss call sets the process-wide OpenMP thread count, so after the first
clustering PyTorch trained with every core again whatever ``OMP_NUM_THREADS`` or ``torch.set_num_threads``
had asked for. And OpenMP's idle threads spin by default, which on a CPU shared with other work burns the
time slices the busy threads need (a demo step took 7.5x as long under a load of three busy processes).

:func:`passive_waits` (called by the command line before PyTorch loads) makes idle threads sleep, and
:func:`library_threads` runs numba and faiss with PyTorch's thread count and gives PyTorch its count back.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator


def passive_waits() -> None:
    """Idle OpenMP threads sleep instead of spinning (``OMP_WAIT_POLICY=PASSIVE``) unless the user chose a
    policy. Takes effect only if called before the OpenMP runtime loads (before ``import torch``)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@contextlib.contextmanager
def library_threads() -> Iterator[int]:
    """Run numba and faiss work with PyTorch's thread count, and restore that count afterwards."""
    import faiss
    import numba
    import torch

    threads = torch.get_num_threads()
    numba_before = numba.get_num_threads()
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    faiss.omp_set_num_threads(threads)
    try:
        yield threads
    finally:
        numba.set_num_threads(numba_before)
        torch.set_num_threads(threads)
