"""Tiny checkpoints (random-init micro CLIP) and the tiny SynthPedes test gallery, shared by the search tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cpcl.model.checkpoint import build_model, save_checkpoint
from tests.conftest import tiny_config


def _checkpoint(root: Path, out: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    config = tiny_config(root)
    save_checkpoint(out, build_model(config.model, pretrained=False), config, epoch=0)
    return out


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_synth, tmp_path_factory) -> Path:
    return _checkpoint(tiny_synth, tmp_path_factory.mktemp("ckpt") / "best.pt", seed=0)


@pytest.fixture(scope="session")
def other_checkpoint(tiny_synth, tmp_path_factory) -> Path:
    """Same architecture, other weights: a different model for the index."""
    return _checkpoint(tiny_synth, tmp_path_factory.mktemp("ckpt-other") / "best.pt", seed=1)

