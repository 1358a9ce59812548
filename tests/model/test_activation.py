"""The activation is part of the model's description: a run records it, and every rebuild uses it."""

from __future__ import annotations

import io
import logging

import torch
import yaml

from benchmarks.real_path import write_openai_archive
from cpcl.engine.trainer import train
from cpcl.model.backbone import build_clip, uses_quick_gelu
from cpcl.model.checkpoint import load_checkpoint, read_checkpoint
from tests.conftest import tiny_config


def _strip_activation(path, out, pretrained=None):
    """A copy of checkpoint ``path`` as cpcl wrote it before it recorded the activation."""
    payload = read_checkpoint(path)
    payload["config"]["model"].pop("quick_gelu")
    if pretrained is not None:
        payload["config"]["model"]["pretrained"] = pretrained
    buf = io.BytesIO()
    torch.save(payload, buf)
    out.write_bytes(buf.getvalue())
    return out


def test_run_from_openai_archive_rebuilds_quick_gelu(tiny_synth, tmp_path):
    archive = write_openai_archive(tmp_path / "ViT-micro.pt", "cpcl-vit-micro")
    config = tiny_config(tiny_synth, f"model.pretrained={archive}", "train.max_steps_per_epoch=2")
    run = tmp_path / "run"
    train(config, run, progress=False)
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["quick_gelu"] is True
    for name in ("best.pt", "last.pt"):
        model, _, _, cfg, payload = load_checkpoint(run / name)
        assert payload["config"]["model"]["quick_gelu"] is True and cfg.model.quick_gelu is True
        assert uses_quick_gelu(model.clip), name
    # the features are those of the trained network: QuickGELU with the trained weights
    trained = build_clip("cpcl-vit-micro", (64, 32), quick_gelu=True).eval()
    trained.load_state_dict({k.removeprefix("clip."): v for k, v in read_checkpoint(run / "best.pt")["model"].items()})
    x = torch.randn(3, 3, 64, 32)
    model = load_checkpoint(run / "best.pt")[0]
    assert torch.allclose(model.encode_image(x), torch.nn.functional.normalize(trained.encode_image(x), dim=-1),
                          atol=1e-6)


def test_checkpoint_without_the_record_infers_it_from_its_weights_spec(tiny_synth, tmp_path, caplog):
    archive = write_openai_archive(tmp_path / "ViT-micro.pt", "cpcl-vit-micro")
    run = tmp_path / "run"
    train(tiny_config(tiny_synth, f"model.pretrained={archive}", "train.max_steps_per_epoch=1"), run, progress=False)
    caplog.set_level(logging.INFO, logger="cpcl.model.checkpoint")
    old = _strip_activation(run / "best.pt", tmp_path / "old.pt")
    for _ in range(2):  # said once per file
        assert uses_quick_gelu(load_checkpoint(old)[0].clip)
    assert sum("before cpcl recorded the activation: QuickGELU" in r.message for r in caplog.records) == 1
    # the tag OpenAI's weights come under: certain without any file
    tagged = _strip_activation(run / "best.pt", tmp_path / "tagged.pt", pretrained="openai")
    assert uses_quick_gelu(load_checkpoint(tagged)[0].clip)
    # a random-init run of old was GELU, certainly
    plain = _strip_activation(run / "best.pt", tmp_path / "plain.pt", pretrained="")
    assert not uses_quick_gelu(load_checkpoint(plain)[0].clip)
    # the archive is gone: not certain, GELU with a warning
    gone = _strip_activation(run / "best.pt", tmp_path / "gone.pt", pretrained=str(tmp_path / "moved" / "a.pt"))
    caplog.clear()
    assert not uses_quick_gelu(load_checkpoint(gone)[0].clip)
    assert any(r.levelno == logging.WARNING and "assuming GELU" in r.message for r in caplog.records)


def test_resume_keeps_the_activation(tiny_synth, tmp_path):
    archive = write_openai_archive(tmp_path / "ViT-micro.pt", "cpcl-vit-micro")
    config = tiny_config(tiny_synth, f"model.pretrained={archive}", "train.max_steps_per_epoch=1", "train.epochs=2")
    run = tmp_path / "run"
    first = train(config, run, progress=False)
    # resume the finished run with the config as the user wrote it: its last row is re-evaluated by the
    # rebuilt network, which must be the trained one. The archive is gone (last.pt holds the weights), so only
    # what the run recorded can say that the network is QuickGELU
    archive.unlink()
    again = train(config, run, progress=False, resume=True)
    assert again.test["last"] == first.test["last"]


def test_exported_weights_rebuild_the_trained_network(tiny_synth, tmp_path, caplog, capsys):
    """`cpcl export weights` of a QuickGELU run (OpenAI weights) records the activation and resize: a run started
    from the file (model.pretrained, as its help offers) builds QuickGELU with the trained weights, and a run
    that would resize otherwise is told; open_clip reads the file as it is."""
    import open_clip

    from cpcl.cli import main
    from cpcl.model.checkpoint import build_model

    archive = write_openai_archive(tmp_path / "ViT-micro.pt", "cpcl-vit-micro")
    run = tmp_path / "run"
    train(tiny_config(tiny_synth, f"model.pretrained={archive}", "train.max_steps_per_epoch=1",
                      "model.resize=bilinear"), run, progress=False)
    exported = tmp_path / "exported.pt"
    assert main(["export", "weights", "--checkpoint", str(run / "best.pt"), "--out", str(exported), "--fp32"]) == 0
    trained = load_checkpoint(run / "best.pt")[0]
    config = tiny_config(tiny_synth, f"model.pretrained={exported}", "model.resize=bilinear")
    rebuilt = build_model(config.model).eval()
    assert uses_quick_gelu(rebuilt.clip)
    x = torch.randn(2, 3, 64, 32)
    assert torch.allclose(rebuilt.encode_image(x), trained.encode_image(x), atol=1e-6)
    # the run from the file records the activation it built, so its checkpoints rebuild it too
    second = tmp_path / "second"
    train(tiny_config(tiny_synth, f"model.pretrained={exported}", "train.max_steps_per_epoch=1",
                      "model.resize=bilinear"), second, progress=False)
    assert yaml.safe_load((second / "config.yaml").read_text())["model"]["quick_gelu"] is True
    with caplog.at_level(logging.WARNING, logger="cpcl.model.checkpoint"):
        build_model(tiny_config(tiny_synth, f"model.pretrained={exported}").model)
    assert "resized bilinear, and this model resizes bicubic" in caplog.text
    clip = open_clip.create_model("cpcl-vit-micro", force_image_size=(64, 32), force_quick_gelu=True)
    open_clip.load_checkpoint(clip, str(exported))  # an open_clip checkpoint: {"state_dict": ...}
    assert torch.allclose(torch.nn.functional.normalize(clip.eval().encode_image(x), dim=-1),
                          trained.encode_image(x), atol=1e-6)
