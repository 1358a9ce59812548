import os
from dataclasses import replace

import pytest
import torch

from cpcl.config import config_from_dict
from cpcl.model.backbone import build_clip
from cpcl.model.checkpoint import (
    CheckpointError,
    build_model,
    export_clip_weights,
    load_checkpoint,
    save_checkpoint,
)


def _config():
    return config_from_dict({"model": {"arch": "cpcl-vit-micro", "pretrained": None, "image_size": [64, 32]}})


def test_round_trip_and_export(tmp_path):
    cfg = _config()
    model = build_model(cfg.model)
    save_checkpoint(tmp_path / "c.pt", model, cfg, epoch=3)
    loaded, tokenizer, pre, cfg2, payload = load_checkpoint(tmp_path / "c.pt")
    # the checkpoint records the activation of the model it holds
    assert cfg2 == replace(cfg, model=replace(cfg.model, quick_gelu=False))
    assert payload["epoch"] == 3 and pre.image_size == (64, 32)
    x = torch.randn(2, 3, 64, 32)
    assert torch.allclose(loaded.encode_image(x), model.eval().encode_image(x))
    # exported weights load through the weights funnel as an open_clip state dict
    export_clip_weights(tmp_path / "c.pt", tmp_path / "w.pt", half=False)
    clip = build_clip("cpcl-vit-micro", (64, 32), pretrained=str(tmp_path / "w.pt"))
    assert torch.equal(clip.visual.conv1.weight, model.clip.visual.conv1.weight)
    # and a cpcl checkpoint itself is accepted as model.pretrained
    clip = build_clip("cpcl-vit-micro", (64, 32), pretrained=str(tmp_path / "c.pt"))
    assert torch.equal(clip.visual.conv1.weight, model.clip.visual.conv1.weight)


def test_interrupted_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    cfg = _config()
    model = build_model(cfg.model)
    path = tmp_path / "last.pt"
    save_checkpoint(path, model, cfg, epoch=1)
    before = path.read_bytes()

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, model, cfg, epoch=2)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name != "last.pt"]  # no temp file left behind
    assert load_checkpoint(path)[4]["epoch"] == 1


def test_not_a_checkpoint(tmp_path):
    torch.save({"a": torch.zeros(1)}, tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match="not a cpcl checkpoint"):
        load_checkpoint(tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
