"""A run records the data it read — its absolute root and a fingerprint of its records — and continues on nothing
else: a resume from another folder reads the files the run started with, and a resume onto changed or other data
is refused in one sentence that names what changed, before anything is written."""

import json
import shutil

import pytest
import yaml

from cpcl.cli import main
from cpcl.data.synth import generate_synthpedes
from cpcl.engine.trainer import train
from tests.conftest import tiny_config


@pytest.fixture
def two_datasets(tiny_synth, tmp_path):
    """``a/data`` (the tiny SynthPedes) and ``b/data`` (another one: more persons, other records), with an empty
    ``x`` folder beside each to stand in."""
    shutil.copytree(tiny_synth, tmp_path / "a" / "data")
    generate_synthpedes(tmp_path / "b" / "data", num_ids=34, seed=5, height=64, width=32, val_ids=6, test_ids=6,
                        workers=1, montage=False)
    for side in "ab":
        (tmp_path / side / "x").mkdir()
    return tmp_path


def _train_from(folder, monkeypatch, run):
    monkeypatch.chdir(folder)
    config = tiny_config("../data", "train.max_steps_per_epoch=1")
    train(config, run, progress=False)
    return run


def test_a_relative_root_is_recorded_absolute_and_a_resume_elsewhere_reads_it(two_datasets, monkeypatch):
    run = _train_from(two_datasets / "a" / "x", monkeypatch, two_datasets / "run")
    recorded = yaml.safe_load((run / "config.yaml").read_text())["data"]["root"]
    assert recorded == str((two_datasets / "a" / "data").resolve())
    first = (run / "metrics.jsonl").read_text()
    monkeypatch.chdir(two_datasets / "b" / "x")  # where ../data is another dataset
    assert main(["train", "--resume", str(run), "--device", "cpu", "--no-progress"]) == 0
    assert (run / "metrics.jsonl").read_text() == first  # the finished epoch, re-evaluated on the same val split
    tested = json.loads((run / "results.json").read_text())["test"]
    own = sum(r["split"] == "test" for r in json.loads((two_datasets / "a" / "data" / "reid_raw.json").read_text()))
    assert {row["num_gallery"] for row in tested.values()} == {own}  # one test set in the results: the run's own


def test_a_resume_onto_other_data_is_refused_naming_what_changed(two_datasets, monkeypatch, capsys):
    """A run recorded with a relative root (as cpcl wrote them before), resumed from a folder where that root is
    another dataset: refused, both annotation files and the counts named; nothing in the run changes."""
    run = _train_from(two_datasets / "a" / "x", monkeypatch, two_datasets / "run")
    recorded = yaml.safe_load((run / "config.yaml").read_text())
    recorded["data"]["root"] = "../data"
    (run / "config.yaml").write_text(yaml.safe_dump(recorded))
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    monkeypatch.chdir(two_datasets / "b" / "x")
    assert main(["train", "--resume", str(run), "--device", "cpu", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"cannot resume {run}: it started on {(two_datasets / 'a' / 'data' / 'reid_raw.json').resolve()}" in err
    assert f"this resume reads {(two_datasets / 'b' / 'data' / 'reid_raw.json').resolve()}" in err
    assert "train: 52 images / 104 captions then, 58 / 116 now" in err and "Traceback" not in err
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


def test_a_resume_onto_changed_records_is_refused(two_datasets, monkeypatch, capsys):
    """The same annotation file, edited after the run started (a caption changed: the counts agree)."""
    run = _train_from(two_datasets / "a" / "x", monkeypatch, two_datasets / "run")
    annotations = two_datasets / "a" / "data" / "reid_raw.json"
    records = json.loads(annotations.read_text())
    records[0]["captions"][0] = "a person in a red coat"
    annotations.write_text(json.dumps(records))
    assert main(["train", "--resume", str(run), "--device", "cpu", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"it started on {annotations.resolve()}, whose records differ (the same counts" in err


def test_a_copy_of_the_data_elsewhere_resumes(two_datasets, monkeypatch, caplog):
    """The fingerprint is of the records, not of where they lie: the dataset moved, the root edited, the run goes
    on."""
    run = _train_from(two_datasets / "a" / "x", monkeypatch, two_datasets / "run")
    moved = two_datasets / "moved"
    shutil.move(two_datasets / "a" / "data", moved)
    recorded = yaml.safe_load((run / "config.yaml").read_text())
    recorded["data"]["root"] = str(moved)
    (run / "config.yaml").write_text(yaml.safe_dump(recorded))
    assert main(["train", "--resume", str(run), "--device", "cpu", "--no-progress"]) == 0
