"""The selection protocol chooses on val identities only and looks at test once."""

from __future__ import annotations

import json

import yaml

from cpcl.evaluation import evaluate as evaluate_module
from cpcl.selection import parse_grid, run_selection, trial_overrides
from tests.conftest import permuted_copy, tiny_config
from tests.engine.test_cpcl import CPCL

GRID = ["cluster.eps=0.5,0.7", "loss.intra_weight=0.5,1.0"]


def _config(root, tmp_path, name="cfg.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(tiny_config(root, *CPCL, "train.max_steps_per_epoch=2").to_dict()))
    return path


def test_grid_and_random_part_of_it():
    grid = parse_grid(GRID)
    assert trial_overrides(grid) == [(), ("cluster.eps=0.5", "loss.intra_weight=0.5"),
                                     ("cluster.eps=0.5", "loss.intra_weight=1.0"),
                                     ("cluster.eps=0.7", "loss.intra_weight=0.5"),
                                     ("cluster.eps=0.7", "loss.intra_weight=1.0")]
    some = trial_overrides(grid, limit=2, seed=3)
    assert len(some) == 3 and some[0] == () and some == trial_overrides(grid, limit=2, seed=3)
    assert set(some) <= set(trial_overrides(grid))


def test_selection_scores_on_val_and_evaluates_test_once(tiny_synth, tmp_path, monkeypatch):
    test_evaluations = []
    real = evaluate_module.EvalSplit.report

    def spy(self, model, device, batch_size=256, progress=False):
        metrics = real(self, model, device, batch_size, progress)
        if self.captions == test_captions:
            test_evaluations.append(metrics)
        return metrics

    from cpcl.data.formats import load_annotations

    test_captions = [c for r in load_annotations("cuhk-pedes", tiny_synth).split("test") for c in r.captions]
    monkeypatch.setattr(evaluate_module.EvalSplit, "report", spy)
    grid = parse_grid([*GRID, "oplm.threshold=0.3"])  # every trial valid
    selection = run_selection(_config(tiny_synth, tmp_path), grid, tmp_path / "sweep", device="cpu")
    assert len(selection.trials) == 5 and all(t.status == "done" for t in selection.trials)
    best = max(selection.trials, key=lambda t: (t.val_rank1, t.val_mAP))
    assert selection.chosen == best
    assert len(test_evaluations) == 1 and selection.test == test_evaluations[0]  # test, once
    saved = json.loads((tmp_path / "sweep" / "selection.json").read_text())
    assert saved["chosen"] == best.number and "**chosen**" in (tmp_path / "sweep" / "selection.md").read_text()
    # an interrupted selection continues: finished trials are read back, not trained again
    (tmp_path / "sweep" / "selection.json").unlink()
    again = run_selection(_config(tiny_synth, tmp_path), grid, tmp_path / "sweep", device="cpu")
    assert [t.val_rank1 for t in again.trials] == [t.val_rank1 for t in selection.trials]
    assert all(t.seconds == s.seconds for t, s in zip(again.trials, selection.trials, strict=True))


def test_a_combination_that_cannot_work_is_recorded_not_trained(tiny_synth, tmp_path):
    grid = parse_grid(["oplm.enabled=true,false", "oplm.threshold=0.3"])  # threshold without OPLM: invalid
    selection = run_selection(_config(tiny_synth, tmp_path), grid, tmp_path / "sweep", device="cpu")
    statuses = {t.overrides[0]: t.status for t in selection.trials[1:]}
    assert statuses == {"oplm.enabled=true": "done", "oplm.enabled=false": "invalid"}
    assert "oplm.threshold=0.3 has no effect" in selection.trials[2].message


def test_the_selection_never_reads_training_identities(tiny_synth, tmp_path):
    """Permuting the training split's identities changes nothing the protocol sees or chooses."""
    permuted = permuted_copy(tiny_synth, tmp_path / "permuted", shift=5)
    grid = parse_grid(GRID)
    a = run_selection(_config(tiny_synth, tmp_path, "a.yaml"), grid, tmp_path / "a", device="cpu", limit=3)
    b = run_selection(_config(permuted, tmp_path, "b.yaml"), grid, tmp_path / "b", device="cpu", limit=3)
    assert [(t.overrides, t.val_rank1, t.val_mAP) for t in a.trials] == \
        [(t.overrides, t.val_rank1, t.val_mAP) for t in b.trials]
    assert a.chosen.overrides == b.chosen.overrides and a.test == b.test


def test_another_config_is_one_more_trial_and_can_be_chosen(tiny_synth, tmp_path, monkeypatch):
    """--also synthpedes_itc: the baseline as it is is a trial; when it does best on val it is the choice,
    and test is evaluated once, on its own checkpoint."""
    import cpcl.selection as selection_module

    baseline = tmp_path / "itc.yaml"
    baseline.write_text(yaml.safe_dump(tiny_config(tiny_synth, "train.max_steps_per_epoch=2").to_dict()))
    real_train = selection_module.train

    def train(config, run_dir, **kwargs):  # the baseline "does best on val"
        result = real_train(config, run_dir, **kwargs)
        if not config.cluster.enabled:
            result.best_val = {**result.best_val, "rank1": 100.0}
        return result

    monkeypatch.setattr(selection_module, "train", train)
    grid = parse_grid(["cluster.eps=0.5"])
    chosen = run_selection(_config(tiny_synth, tmp_path), grid, tmp_path / "sweep", device="cpu", also=[baseline])
    assert [(t.overrides, t.config) for t in chosen.trials] == [((), ""), (("cluster.eps=0.5",), ""),
                                                                ((), str(baseline))]
    assert chosen.chosen.number == 2 and chosen.chosen.val_rank1 == 100.0
    from cpcl.evaluation.evaluate import load_eval_split

    model, split, _ = load_eval_split(tmp_path / "sweep" / "trial-002" / "best.pt", "cuhk-pedes", tiny_synth, "test",
                                      "cpu")
    assert chosen.test == split.evaluate(model, "cpu", 64).as_dict()
    assert "config itc as it is" in (tmp_path / "sweep" / "selection.md").read_text()
    # read back after an interruption: the same three trials, none trained again
    (tmp_path / "sweep" / "selection.json").unlink()
    monkeypatch.setattr(selection_module, "train", lambda *a, **k: (_ for _ in ()).throw(AssertionError("trained")))
    again = run_selection(_config(tiny_synth, tmp_path), grid, tmp_path / "sweep", device="cpu", also=[baseline])
    assert [t.config for t in again.trials] == [t.config for t in chosen.trials]


def test_a_finished_trial_is_reused_only_for_the_same_config(tiny_synth, tmp_path, monkeypatch):
    """Continuing a selection with another --set trains its trials again instead of reading stale ones."""
    import cpcl.selection as selection_module

    grid = parse_grid(["cluster.eps=0.5"])
    run_selection(_config(tiny_synth, tmp_path), grid, tmp_path / "sweep", device="cpu")
    (tmp_path / "sweep" / "selection.json").unlink()
    trained, real_train = [], selection_module.train
    monkeypatch.setattr(selection_module, "train", lambda config, run_dir, **kw: trained.append(run_dir.name)
                        or real_train(config, run_dir, **kw))
    run_selection(_config(tiny_synth, tmp_path), grid, tmp_path / "sweep", device="cpu")
    assert trained == []  # the same config: read back
    (tmp_path / "sweep" / "selection.json").unlink()
    run_selection(_config(tiny_synth, tmp_path), grid, tmp_path / "sweep", device="cpu",
                  base_overrides=["train.seed=1"])
    assert trained == ["trial-000", "trial-001"]  # another seed: trained again
