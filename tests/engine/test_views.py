"""Views into training: the pseudo labels saved per epoch, the TensorBoard log, and `cpcl clusters`."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from cpcl.cli import main
from cpcl.engine.tensorboard import scalars
from cpcl.engine.trainer import train
from tests.conftest import tiny_config
from tests.engine.test_cpcl import CPCL


@pytest.fixture(scope="module")
def run(tiny_synth, tmp_path_factory):
    out = tmp_path_factory.mktemp("views") / "cpcl"
    train(tiny_config(tiny_synth, *CPCL, "train.tensorboard=true"), out, progress=False)
    return out


def _rows(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][1:]


def test_each_epoch_saves_the_labels_it_trained_on(run):
    for row in _rows(run):
        saved = np.load(run / "pseudo_labels" / f"epoch_{row['epoch']:03d}.npz")
        pseudo = row["pseudo"]
        image, text = saved["image"], saved["text"]
        assert image.dtype == np.int32 and len(text) > len(image)
        assert len(np.unique(image[image >= 0])) == pseudo["image_clusters"]
        assert len(np.unique(text[text >= 0])) == pseudo["text_clusters"]
        assert len(saved["image_recovered"]) == pseudo["image_recovered"]
        assert (image[saved["image_recovered"]] >= 0).all()  # a recovered outlier carries its borrowed label
        assert bool(saved["usable"])


def test_tensorboard_holds_the_numbers_of_metrics_jsonl(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    for row in _rows(run):
        expected = dict(scalars(row))
        assert {"loss/loss", "loss/sdm", "val/rank1", "pseudo/image_clusters", "time/extract", "train/lr"} <= set(
            expected)
        assert set(expected) <= tags
        for tag, value in expected.items():
            logged = {e.step: e.value for e in events.Scalars(tag)}
            assert logged[row["epoch"]] == pytest.approx(value, rel=1e-6), tag


def test_cluster_browser_draws_an_epoch(run, tmp_path, capsys):
    out = tmp_path / "view"
    assert main(["clusters", str(run), "--epoch", "2", "--out", str(out), "--order", "impure"]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "clusters.json").read_text())
    pseudo = _rows(run)[1]["pseudo"]
    assert summary["clusters"] == pseudo["image_clusters"] and f"{pseudo['image_clusters']} image clusters" in printed
    purities = [c["purity"] for c in summary["table"]]
    assert purities == sorted(purities)  # least pure first
    labelled = int((np.load(run / "pseudo_labels" / "epoch_002.npz")["image"] >= 0).sum())
    assert sum(c["size"] for c in summary["table"]) <= labelled
    assert (out / "sheet_01.png").stat().st_size > 0
    page = (out / "index.html").read_text()
    thumbs = re.findall(r'src="(thumbs/[^"]+)"', page)
    assert thumbs and all((out / t).is_file() for t in thumbs)
    assert page.count("<section") == summary["shown"]
    # the text clusters too, and the default epoch is the last one saved
    assert main(["clusters", str(run), "--modality", "text", "--out", str(tmp_path / "text")]) == 0
    assert json.loads((tmp_path / "text" / "clusters.json").read_text())["clusters"] == pseudo["text_clusters"]
    assert main(["clusters", str(run), "--epoch", "2", "--out", str(out)]) == 2  # not over an existing view
    assert "--overwrite" in capsys.readouterr().err


def test_cluster_view_errors_are_one_sentence(run, tiny_synth, tmp_path, capsys):
    baseline = tmp_path / "itc"
    train(tiny_config(tiny_synth, "train.max_steps_per_epoch=1"), baseline, progress=False)
    for args, needle in ((["clusters", str(run), "--epoch", "7"], "epoch 7 has no saved pseudo labels; epochs with "
                          "labels: 1-2"),
                         (["clusters", str(baseline)], "has no saved pseudo labels"),
                         (["clusters", str(tmp_path)], "not a run directory")):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert needle in err and err.count("\n") == 1, err


def test_a_cluster_is_drawn_majority_person_first():
    from cpcl.views.clusters import Cluster

    c = Cluster(3, members=[0, 1, 2, 3, 4, 5], images=[0, 1, 2, 3, 4, 5], recovered=[False] * 6,
                persons=[7, 9, 9, 8, 9, 8])
    assert c.purity == pytest.approx(0.5)
    assert [c.persons[i] for i in c.drawing_order()] == [9, 9, 9, 8, 8, 7]
    unlabelled = Cluster(3, [0, 1], [0, 1], [False, False], [None, None])
    assert unlabelled.purity is None and unlabelled.drawing_order() == [0, 1]
