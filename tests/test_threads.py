"""Labelling takes the node's cores under torchrun, whose OMP_NUM_THREADS=1 is meant for the training."""

from __future__ import annotations

import os

import faiss
import numba
import numpy as np
import pytest
import torch

from cpcl.clustering import pseudo_labels
from cpcl.errors import CpclError
from cpcl.threads import labelling_threads


def test_labelling_takes_the_node_cores_under_torchrun(monkeypatch):
    cores = len(os.sched_getaffinity(0))
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # what torchrun's OMP_NUM_THREADS=1 leaves each process
    try:
        assert labelling_threads(distributed=False) == 1  # one process: the user's thread count stands
        assert labelling_threads(distributed=True) == cores
        monkeypatch.setenv("CPCL_LABEL_THREADS", "3")
        assert labelling_threads(distributed=True) == 3
        for bad in ("0", "two"):
            monkeypatch.setenv("CPCL_LABEL_THREADS", bad)
            with pytest.raises(CpclError, match=f"CPCL_LABEL_THREADS='{bad}': expected a number of threads"):
                labelling_threads(distributed=True)
        monkeypatch.delenv("CPCL_LABEL_THREADS")
        seen = {}
        dbscan = pseudo_labels.dbscan_labels

        def spy(*args, **kwargs):
            seen.update(torch=torch.get_num_threads(), numba=numba.get_num_threads(),
                        faiss=faiss.omp_get_max_threads())
            return dbscan(*args, **kwargs)

        monkeypatch.setattr(pseudo_labels, "dbscan_labels", spy)
        x = np.random.default_rng(0).standard_normal((80, 8)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        pseudo_labels.cluster_features(x, k1=6, k2=3, threads=labelling_threads(distributed=True))
        assert seen == {"torch": cores, "numba": min(cores, numba.config.NUMBA_NUM_THREADS), "faiss": cores}
        assert torch.get_num_threads() == 1  # training gets its own count back
    finally:
        torch.set_num_threads(before)
