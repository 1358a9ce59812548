"""Everything checkable is checked before the expensive part: the model before the dataset, every run of the
demo before the first trains, every trial of a sweep before the first trains."""

import time

import pytest
import yaml

from cpcl.cli import main
from tests.conftest import tiny_config


@pytest.mark.parametrize("override, said", [
    ("model.pretrained=/nonexistent/weights.pt", "model.pretrained=/nonexistent/weights.pt: no such file"),
    ("model.arch=ViT-Q-99", "model.arch=ViT-Q-99: unknown architecture"),
    ("model.pretrained=cpcl:nothing", "unknown built-in weights 'cpcl:nothing'"),
])
def test_the_model_is_checked_before_the_dataset(override, said, tmp_path, capsys):
    """The data root does not exist: an error about the model means the model came first."""
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(tiny_config(tmp_path / "no-data-here", override).to_dict()))
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "run"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert said in err and "no-data-here" not in err, err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("value", ["0", "-2"])
def test_a_step_limit_below_one_is_refused_when_the_config_is_read(value, tiny_synth, tmp_path, capsys):
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(tiny_config(tiny_synth).to_dict()))
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "run"), "--device", "cpu",
                 "--set", f"train.max_steps_per_epoch={value}"]) == 2
    assert f"train.max_steps_per_epoch must be at least 1, got {value} (null: no limit)" in capsys.readouterr().err


def test_the_demo_checks_every_run_before_the_first_trains(tmp_path, capsys):
    """cluster.start_epoch=9 is fine for the ITC baseline (no clustering) and wrong for CPCL (5 epochs)."""
    t0 = time.perf_counter()
    assert main(["demo", "--out", str(tmp_path / "demo"), "--device", "cpu", "--set", "cluster.start_epoch=9"]) == 2
    assert "cluster.start_epoch=9 is after the last epoch" in capsys.readouterr().err
    assert time.perf_counter() - t0 < 20 and not (tmp_path / "demo").exists()


@pytest.mark.parametrize("grid, said", [
    (["loss.temperature=0.02,-1"], "loss.temperature must be positive, got -1"),
    (["cluster.eps=0.4,0.4"], "0.4 given twice"),
    (["cluster.eps=0.4", "cluster.eps=0.5"], "--grid cluster.eps is given twice"),
])
def test_a_sweep_refuses_a_grid_it_cannot_train_as_asked(grid, said, tiny_synth, tmp_path, capsys):
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(tiny_config(tiny_synth, "cluster.enabled=true").to_dict()))
    argv = ["sweep", "--config", str(config), "--out", str(tmp_path / "sweep"), "--device", "cpu"]
    for item in grid:
        argv += ["--grid", item]
    assert main(argv) == 2
    assert said in capsys.readouterr().err
    assert not (tmp_path / "sweep").exists()


def test_a_trial_that_repeats_another_config_is_said_and_trained_once(tiny_synth, tmp_path, caplog):
    """A grid value equal to the incumbent's (cluster.eps 0.6 is the config's own) and the same number written
    twice (0.4, 0.40): each config is trained once, and the repeats are said."""
    import logging

    from cpcl.selection import check_plan, trial_overrides

    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(tiny_config(tiny_synth, "cluster.enabled=true").to_dict()))
    plan = [(config, overrides, "") for overrides in trial_overrides({"cluster.eps": ["0.6", "0.4", "0.40"]})]
    with caplog.at_level(logging.WARNING, logger="cpcl.selection"):
        kept = check_plan(plan, [])
    assert [overrides for _, overrides, _ in kept] == [(), ("cluster.eps=0.4",)]
    assert "the trial cluster.eps=0.6 is the same config as cfg as it is: trained once" in caplog.text
    assert "the trial cluster.eps=0.40 is the same config as the trial cluster.eps=0.4" in caplog.text


@pytest.mark.parametrize("override, said", [
    ("cluster.eps=abc", "--set cluster.eps=abc: cluster.eps: expected a number, got 'abc'"),
    ("cluster.eps=-1", "--set cluster.eps=-1: cluster.eps must be positive"),
    ("cluster.epz=1", "--set cluster.epz=1: unknown config key(s): cluster.epz"),
    ("data.root=2024", "--set data.root=2024: data.root: expected a string, got 2024 (YAML reads 2024 as a value, "
                       "not text: quote it, --set 'data.root=\"2024\"')"),
])
def test_a_bad_value_from_set_is_said_against_the_set(override, said, capsys):
    """Not against the packaged YAML file, which holds no such value."""
    assert main(["train", "--config", "synthpedes_cpcl", "--out", "unused", "--set", override]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {said}") and "synthpedes_cpcl.yaml" not in err, err


@pytest.mark.parametrize("argv", [["synth", "--out", "unused"], ["sweep", "--config", "synthpedes_cpcl", "--grid",
                                                                "cluster.eps=0.5", "--out", "unused"]])
def test_a_negative_seed_is_refused_naming_the_option(argv, capsys):
    with pytest.raises(SystemExit):
        main([*argv, "--seed", "-1"])
    assert "argument --seed: must be at least 0, got -1" in capsys.readouterr().err
