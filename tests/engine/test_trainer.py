import json

import pytest
import torch

from cpcl.cli import main
from cpcl.engine.trainer import train
from cpcl.model.checkpoint import load_checkpoint, read_checkpoint
from tests.conftest import tiny_config


def test_one_epoch_end_to_end(tiny_synth, tmp_path, capsys):
    cfg = tiny_config(tiny_synth, "train.epochs=1")
    run = tmp_path / "run"
    result = train(cfg, run, progress=False)
    for name in ("config.yaml", "metrics.jsonl", "best.pt", "last.pt", "curves.png", "results.json", "results.md"):
        assert (run / name).is_file(), name
    # the label-free choice is reported beside the val one, so the cost of choosing blind is visible
    assert set(result.test) == {"chance", "zero-shot", "last", "best-on-val", "best-label-free"}
    selection = json.loads((run / "results.json").read_text())["selection"]
    assert selection["select_on"] == "val" and selection["label-free"]["name"] == "pair-mAP"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1]
    assert rows[1]["loss"] > 0 and "rank1" in rows[1]["val"]
    payload = read_checkpoint(run / "best.pt")
    assert payload["config"]["model"]["arch"] == "cpcl-vit-micro"  # the resolved config travels inside
    assert "optimizer" in read_checkpoint(run / "last.pt")

    # the checkpoint evaluates through the CLI to the same numbers as the trainer's "best-on-val" row
    out = tmp_path / "m.json"
    assert main(["eval", "--checkpoint", str(run / "best.pt"), "--format", "cuhk-pedes", "--root",
                 str(tiny_synth), "--split", "test", "--json", str(out), "--device", "cpu"]) == 0
    metrics = json.loads(out.read_text())
    for key in ("rank1", "rank5", "rank10", "mAP", "mINP", "rSum"):
        assert metrics[key] == pytest.approx(result.test["best-on-val"][key], abs=1e-6)
    assert "R1" in capsys.readouterr().out


def test_training_learns(tiny_synth, tmp_path):
    """A few epochs on the tiny set fit the training pairs: the loss falls clearly."""
    cfg = tiny_config(tiny_synth, "train.epochs=6", "optim.lr=2e-3", "augment.random_erasing=0")
    train(cfg, tmp_path / "run", progress=False)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()][1:]
    assert rows[-1]["loss"] < 0.8 * rows[0]["loss"]


def test_same_seed_same_run(tiny_synth, tmp_path):
    cfg = tiny_config(tiny_synth, "train.epochs=1", "train.max_steps_per_epoch=3")
    train(cfg, tmp_path / "a", progress=False)
    train(cfg, tmp_path / "b", progress=False)
    a = load_checkpoint(tmp_path / "a" / "last.pt")[0].state_dict()
    b = load_checkpoint(tmp_path / "b" / "last.pt")[0].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_training_does_not_depend_on_evaluating_test(tiny_synth, tmp_path):
    """A selection trial (test switched off) trains exactly as the same config trained normally."""
    cfg = tiny_config(tiny_synth, "train.epochs=2", "train.max_steps_per_epoch=3")
    train(cfg, tmp_path / "a", progress=False)
    train(cfg, tmp_path / "b", progress=False, evaluate_test=False)
    a = load_checkpoint(tmp_path / "a" / "last.pt")[0].state_dict()
    b = load_checkpoint(tmp_path / "b" / "last.pt")[0].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
