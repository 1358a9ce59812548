"""Every record `cpcl data check` flags stops training before any work; images are decoded once."""

from __future__ import annotations

import json
import shutil

import pytest

from cpcl.data import checks
from cpcl.data.checks import dataset_problems
from cpcl.data.formats import read_annotations
from cpcl.data.records import DatasetError
from cpcl.engine.trainer import train
from tests.conftest import tiny_config


@pytest.fixture()
def broken(tiny_synth, tmp_path, monkeypatch):
    """The tiny dataset with one missing, one truncated and one non-image training file, and an empty caption."""
    monkeypatch.setenv("CPCL_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "broken"
    shutil.copytree(tiny_synth, root)
    records = json.loads((root / "reid_raw.json").read_text())
    train_idx = [i for i, r in enumerate(records) if r["split"] == "train"]
    missing, truncated, garbage, empty = train_idx[:4]
    (root / "imgs" / records[missing]["file_path"]).unlink()
    png = root / "imgs" / records[truncated]["file_path"]
    png.write_bytes(png.read_bytes()[: len(png.read_bytes()) // 2])
    (root / "imgs" / records[garbage]["file_path"]).write_bytes(b"not an image at all")
    records[empty]["captions"] = [""]
    (root / "reid_raw.json").write_text(json.dumps(records))
    return root, {f"reid_raw.json#{i}" for i in (missing, truncated, garbage, empty)}


def test_training_refuses_every_problem_that_data_check_lists(broken, tmp_path):
    root, bad = broken
    listed = {str(p).split(": ")[0].rsplit("/", 1)[-1] for p in dataset_problems(read_annotations("cuhk-pedes", root))}
    assert listed == bad  # data check names all four
    out = tmp_path / "run"
    with pytest.raises(DatasetError) as info:
        train(tiny_config(root), out, progress=False)
    for where in bad:
        assert where in str(info.value)
    assert "4 problem(s)" in str(info.value) and "truncated" in str(info.value)
    assert not any(out.iterdir())  # nothing written: a corrected dataset can train into the same --out


def test_images_are_decoded_once_and_again_when_they_change(tiny_synth, tmp_path, monkeypatch):
    monkeypatch.setenv("CPCL_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "data"
    shutil.copytree(tiny_synth, root)
    decoded = []
    real = checks._decode_error
    monkeypatch.setattr(checks, "_decode_error", lambda path: decoded.append(path) or real(path))
    ann = read_annotations("cuhk-pedes", root)
    assert dataset_problems(ann) == []
    first = len(decoded)
    assert first == len(ann.records)
    assert dataset_problems(ann) == []
    assert len(decoded) == first  # remembered by path, size and modification time
    image = ann.records[0].image_path
    image.write_bytes(image.read_bytes()[:100])
    problems = dataset_problems(ann)
    assert len(decoded) == first + 1 and len(problems) == 1 and ann.records[0].source in str(problems[0])
