"""What a new user meets on the command line: no silent overwrite, one-sentence errors with consistent exit
codes, a fast start, and options that all say what they do and what their default is."""

from __future__ import annotations

import argparse
import subprocess
import sys
import zipfile

import pytest
import yaml

from cpcl.cli import build_parser, main
from tests.conftest import tiny_config


def _train_args(cfg, out, *extra):
    return ["train", "--config", str(cfg), "--out", str(out), "--device", "cpu", "--no-progress", *extra]


def test_train_refuses_a_directory_that_holds_a_run(tiny_synth, tmp_path, capsys):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(tiny_synth, "train.max_steps_per_epoch=2").to_dict()))
    run = tmp_path / "run"
    assert main(_train_args(cfg, run)) == 0
    before = {p.name: p.stat().st_mtime_ns for p in run.iterdir()}
    capsys.readouterr()
    assert main(_train_args(cfg, run)) == 2
    err = capsys.readouterr().err
    assert "already holds a training run" in err and f"--resume {run}" in err and "--overwrite" in err
    assert {p.name: p.stat().st_mtime_ns for p in run.iterdir()} == before  # nothing touched
    (run / "best.pt").write_bytes(b"stale")  # --overwrite removes the old run's files before training anew
    assert main(_train_args(cfg, run, "--overwrite")) == 0
    assert (run / "best.pt").read_bytes() != b"stale"
    assert main(_train_args(cfg, run, "--nproc", "2")) == 2  # refused before any process starts


def test_every_command_that_writes_a_directory_refuses_an_existing_one(tiny_synth, tiny_checkpoint, tmp_path,
                                                                        capsys):
    from cpcl.demo import run_demo
    from cpcl.errors import OutputExistsError

    out = tmp_path / "sp"
    synth = ["synth", "--out", str(out), "--ids", "8", "--val-ids", "2", "--test-ids", "2", "--workers", "1"]
    assert main(synth) == 0
    assert main(synth) == 2 and "already holds a dataset" in capsys.readouterr().err
    assert main([*synth, "--overwrite"]) == 0

    vis = ["visualize", "--checkpoint", str(tiny_checkpoint), "--format", "cuhk-pedes", "--root", str(tiny_synth),
           "--queries", "2", "--out", str(tmp_path / "vis"), "--device", "cpu"]
    assert main(vis) == 0
    assert main(vis) == 2 and "already holds ranking figures" in capsys.readouterr().err
    assert main([*vis, "--overwrite"]) == 0

    weights = ["export", "weights", "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "w.pt")]
    assert main(weights) == 0
    assert main(weights) == 2 and "already exists" in capsys.readouterr().err
    assert main([*weights, "--overwrite"]) == 0

    (tmp_path / "onnx").mkdir()
    (tmp_path / "onnx" / "export.json").write_text("{}")
    onnx = ["export", "onnx", "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "onnx")]
    assert main(onnx) == 2 and "already holds an ONNX export" in capsys.readouterr().err

    (tmp_path / "demo" / "index").mkdir(parents=True)
    with pytest.raises(OutputExistsError, match="already holds a demo run"):  # before any training
        run_demo(tmp_path / "demo")


def test_a_file_that_is_not_a_checkpoint_gets_one_sentence(tmp_path, capsys):
    text = tmp_path / "notes.pt"
    text.write_text("these are my notes\n")
    noise = tmp_path / "noise.pt"
    noise.write_bytes(bytes(range(256)) * 40)
    foreign = tmp_path / "foreign.pt"
    with zipfile.ZipFile(foreign, "w") as zf:
        zf.writestr("data.pkl", b"\x80\x04K\x01.")
    for path in (text, noise, foreign):
        code = main(["eval", "--checkpoint", str(path), "--format", "cuhk-pedes", "--root", str(tmp_path),
                     "--device", "cpu"])
        err = capsys.readouterr().err
        assert code == 2
        assert err.count("\n") == 1 and str(path) in err and "is not a" in err
        assert "checkpoint is the best.pt or last.pt" in err
        assert "weights_only" not in err and "pop from" not in err and "Traceback" not in err


def test_a_weights_file_that_cannot_be_read_gets_one_sentence(tmp_path):
    from cpcl.model.backbone import WeightsError, read_state_dict

    noise = tmp_path / "w.bin"
    noise.write_bytes(bytes(range(256)) * 40)
    with pytest.raises(WeightsError) as info:
        read_state_dict(noise)
    assert "not a weights file cpcl can read" in str(info.value) and "weights_only" not in str(info.value)


@pytest.mark.parametrize("argv", [["--help"], ["configs"], ["index", "info", "INDEX"], ["train", "--help"]])
def test_light_commands_do_not_import_torch(argv, gallery, tiny_checkpoint, tmp_path):
    from cpcl.retrieval.retriever import load_retriever
    from cpcl.retrieval.service import build_index

    if "INDEX" in argv:
        build_index(load_retriever(tiny_checkpoint), gallery, tmp_path / "idx")
        argv = [str(tmp_path / "idx") if a == "INDEX" else a for a in argv]
    code = (f"import sys\nfrom cpcl.cli import main\ntry:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
            "print('HEAVY', sorted(m for m in ('torch', 'open_clip', 'faiss', 'sklearn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "HEAVY []" in out.stdout, out.stdout[-500:]


def _parsers(parser: argparse.ArgumentParser, path=()):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _parsers(child, (*path, name))


def test_every_option_says_what_it_does_and_devices_default_to_auto():
    for path, parser in _parsers(build_parser()):
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)):
                continue
            assert action.help, (path, action.dest)
            if action.dest == "device":
                assert action.default == "auto", path
        text = parser.format_help()
        if path == ("search",):
            assert "(default: 10)" in text and "(default: auto)" in text


def test_version_export_group_and_full_config_descriptions(capsys):
    from cpcl.config import config_description, packaged_configs
    from cpcl.version import __version__

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.strip() == f"cpcl {__version__}"
    commands = dict(_parsers(build_parser()))
    assert ("export", "weights") in commands and ("export", "onnx") in commands
    assert ("export-weights",) not in commands
    assert main(["configs"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    for path in packaged_configs().values():
        assert " ".join(config_description(path).split()) in out  # whole, not cut mid-sentence


def test_data_check_exit_codes(tiny_synth, tmp_path, capsys):
    assert main(["data", "check", "--format", "cuhk-pedes", "--root", str(tiny_synth)]) == 0
    assert main(["data", "check", "--format", "rstpreid", "--root", str(tmp_path)]) == 1  # the check failed
    capsys.readouterr()
    assert main(["train", "--config", "no-such-config", "--out", str(tmp_path / "r")]) == 2  # bad input
    assert "neither a file nor a packaged config" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:  # argparse's own usage errors exit 2 too
        main(["search"])
    assert info.value.code == 2
