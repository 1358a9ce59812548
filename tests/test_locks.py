"""One writer per run, index or export: a second process is refused before it touches anything, naming the
process that holds it; a holder that died releases its lock, and the next one says it took over."""

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from cpcl.cli import main
from cpcl.io import LOCK_FILE
from tests.conftest import crops_folder, tiny_config


def _holding(folder, child, seconds=120):
    """Wait until ``child`` holds ``folder``'s lock; -> the lock record."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert child.poll() is None, "the holder ended early"
        try:
            record = json.loads((folder / LOCK_FILE).read_text() or "null")
        except (OSError, ValueError):
            record = None
        if record and record["pid"] == child.pid:
            return record
        time.sleep(0.1)
    raise AssertionError(f"{child.pid} never held {folder}")


def test_a_second_training_into_a_run_in_progress_is_refused(tiny_synth, tmp_path, capsys, caplog):
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(tiny_config(tiny_synth, "train.epochs=200").to_dict()))
    run = tmp_path / "run"
    child = subprocess.Popen([sys.executable, "-m", "cpcl", "train", "--config", str(config), "--out", str(run),
                              "--device", "cpu", "--no-progress"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        _holding(run, child)
        while not (run / "config.yaml").is_file():
            time.sleep(0.1)
        before = {p.name: p.stat().st_mtime_ns for p in run.iterdir() if p.name == "config.yaml"}
        for argv in (["--config", str(config), "--out", str(run)],
                     ["--config", str(config), "--out", str(run), "--overwrite"],
                     ["--resume", str(run)]):
            assert main(["train", *argv, "--device", "cpu", "--no-progress"]) == 2
            err = capsys.readouterr().err
            assert f"{run.absolute()} is in use by process {child.pid} (" in err, err
            assert "a training run cannot share it" in err
        # nothing of the run was replaced (the holder goes on writing its own files)
        assert {p.name: p.stat().st_mtime_ns for p in run.iterdir() if p.name == "config.yaml"} == before
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    # the holder was killed: the lock is free, and the next run says whose lock it took over
    with caplog.at_level(logging.WARNING, logger="cpcl.io"):
        assert main(["train", "--config", str(config), "--out", str(run), "--overwrite", "--device", "cpu",
                     "--no-progress", "--set", "train.epochs=1"]) == 0
    assert f"took over the lock of process {child.pid}" in caplog.text
    assert (run / LOCK_FILE).read_text() == ""  # released cleanly


HOLD = """
import sys, time
from cpcl.io import exclusive
with exclusive(sys.argv[1], "a test holder"):
    print("held", flush=True)
    time.sleep(120)
"""


def _hold(folder):
    """A process of its own holding ``folder`` (as a writer in progress would) until killed."""
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    return child


def test_every_writer_refuses_what_another_process_holds(tiny_synth, tiny_checkpoint, gallery, tmp_path, capsys):
    """Index build and add (files and a Milvus Lite collection), a sweep, an ONNX export and the demo: refused
    with the holder named, and the output left as it was."""
    from cpcl.retrieval.milvus import collection_lock_dir

    crops = crops_folder(gallery, tmp_path / "crops", 4)
    index = tmp_path / "idx"
    assert main(["index", "build", "--checkpoint", str(tiny_checkpoint), "--images", str(crops), "--out",
                 str(index), "--device", "cpu", "--workers", "0"]) == 0
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(tiny_config(tiny_synth).to_dict()))
    db = str(tmp_path / "gallery.db")
    cases = {
        "index add": (index, ["index", "add", str(index), "--images", str(crops), "--device", "cpu"]),
        "index build": (tmp_path / "idx2", ["index", "build", "--checkpoint", str(tiny_checkpoint), "--images",
                                            str(crops), "--out", str(tmp_path / "idx2"), "--device", "cpu"]),
        "Milvus build": (collection_lock_dir(db, "crops"),
                         ["index", "build", "--checkpoint", str(tiny_checkpoint), "--images", str(crops), "--out",
                          "crops", "--backend", "milvus", "--uri", db, "--device", "cpu"]),
        "sweep": (tmp_path / "sweep", ["sweep", "--config", str(config), "--grid", "optim.lr=1e-3,2e-3", "--out",
                                       str(tmp_path / "sweep"), "--device", "cpu"]),
        "export onnx": (tmp_path / "onnx", ["export", "onnx", "--checkpoint", str(tiny_checkpoint), "--out",
                                            str(tmp_path / "onnx")]),
        "demo": (tmp_path / "demo", ["demo", "--out", str(tmp_path / "demo"), "--device", "cpu"]),
    }
    capsys.readouterr()
    said = {}
    for what, (held, argv) in cases.items():
        before = sorted(p.name for p in Path(held).rglob("*")) if Path(held).exists() else None
        child = _hold(held)
        try:
            assert main(argv) == 2, what
            said[what] = err = capsys.readouterr().err
            assert f"is in use by process {child.pid} (" in err and "Traceback" not in err, (what, err)
            assert sorted(p.name for p in Path(held).rglob("*")) == (before or [LOCK_FILE]), what
        finally:
            child.kill()
            child.wait(timeout=30)
    # a collection is named as the user knows it, not by its lock
    assert said["Milvus build"].startswith(f"error: collection crops at {db} is in use")
