import json
import shutil

from cpcl.cli import main


def test_synth_then_data_check(tmp_path, capsys):
    out = tmp_path / "sp"
    assert main(["synth", "--out", str(out), "--seed", "1", "--ids", "12", "--val-ids", "2", "--test-ids", "2",
                 "--height", "64", "--width", "32", "--workers", "1"]) == 0
    assert (out / "montage.png").is_file()
    assert main(["data", "check", "--format", "cuhk-pedes", "--root", str(out)]) == 0
    text = capsys.readouterr().out
    assert "no problems found" in text and "train" in text


def test_data_check_lists_every_problem(tiny_synth, tmp_path, capsys):
    root = tmp_path / "broken"
    shutil.copytree(tiny_synth, root)
    records = json.loads((root / "reid_raw.json").read_text())
    records[0]["captions"] = []
    del records[1]["id"]
    (root / "imgs" / records[2]["file_path"]).write_bytes(b"not a png")
    (root / "imgs" / records[3]["file_path"]).unlink()
    (root / "reid_raw.json").write_text(json.dumps(records))
    assert main(["data", "check", "--format", "cuhk-pedes", "--root", str(root)]) == 1
    out = capsys.readouterr().out
    assert "4 problem(s)" in out
    for needle in ("reid_raw.json#0", "reid_raw.json#1", "unreadable image", "reid_raw.json#3: image not found"):
        assert needle in out


def test_train_command_with_overrides(tiny_synth, tmp_path, capsys):
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(f"data:\n  format: cuhk-pedes\n  root: {tiny_synth}\nmodel:\n  arch: cpcl-vit-micro\n"
                   "  pretrained: null\n  image_size: [64, 32]\n")
    code = main(["train", "--config", str(cfg), "--out", str(tmp_path / "run"), "--set", "train.epochs=1",
                 "--set", "train.batch_size=16", "--set", "train.max_steps_per_epoch=2", "--device", "cpu",
                 "--no-progress"])
    assert code == 0
    assert "best-on-val" in capsys.readouterr().out
    assert "epochs: 1" in (tmp_path / "run" / "config.yaml").read_text()


def test_errors_are_clear_and_exit_nonzero(tmp_path, capsys):
    cfg = tmp_path / "exp.yaml"
    cfg.write_text("train:\n  epoch: 3\n")
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "r")]) == 2
    assert "train.epoch" in capsys.readouterr().err
    assert main(["data", "check", "--format", "rstpreid", "--root", str(tmp_path)]) == 1
    assert "data_captions.json" in capsys.readouterr().err


def test_configs_lists_packaged_configs(capsys):
    assert main(["configs"]) == 0
    out = capsys.readouterr().out
    assert "synthpedes_itc" in out and "pretrain_synthclip_tiny" in out


def test_every_packaged_config_parses():
    from cpcl.config import load_config, packaged_configs

    paths = list(packaged_configs().values())
    assert len(paths) >= 5
    for path in paths:
        load_config(path)


def test_pretrain_writes_into_its_run_and_leaves_the_packaged_weights_alone(tiny_synth, tmp_path, monkeypatch, capsys):
    import hashlib

    import yaml

    from cpcl.model import backbone
    from tests.conftest import tiny_config

    packaged = backbone.BUILTIN_WEIGHTS["synthclip-tiny"][1]
    before = hashlib.sha256(packaged.read_bytes()).hexdigest()
    cfg = tmp_path / "pre.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(tiny_synth, "train.max_steps_per_epoch=2").to_dict()))
    run = tmp_path / "pre"
    assert main(["pretrain", "--config", str(cfg), "--out", str(run), "--device", "cpu", "--no-progress"]) == 0
    assert (run / "synthclip_tiny.pt").is_file()
    assert hashlib.sha256(packaged.read_bytes()).hexdigest() == before
    assert "cpcl:synthclip-tiny is unchanged" in capsys.readouterr().out
    # replacing the packaged asset is an explicit flag that says what it replaces
    fake = tmp_path / "packaged.pt"
    monkeypatch.setitem(backbone.BUILTIN_WEIGHTS, "synthclip-tiny", ("cpcl-vit-tiny", fake))
    assert main(["pretrain", "--config", str(cfg), "--out", str(tmp_path / "pre2"), "--device", "cpu",
                 "--no-progress", "--replace-packaged"]) == 0
    assert fake.is_file() and "replace the packaged cpcl:synthclip-tiny" in capsys.readouterr().out
    assert main(["pretrain", "--out", str(run), "--replace-packaged", "--weights-out", str(tmp_path / "w.pt")]) == 2
    assert "drop --weights-out" in capsys.readouterr().err
