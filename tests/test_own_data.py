"""The practitioner's data: image-caption pairs without any person_id, with or without a test split, chosen
and reported without reading an identity (``cpcl sweep --score label-free``, ``train``, ``eval``)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from cpcl.cli import main
from cpcl.config import ConfigError
from cpcl.engine.trainer import train
from cpcl.selection import parse_grid, run_selection
from tests.conftest import identity_variant, tiny_config
from tests.engine.test_cpcl import CPCL
from tests.test_label_free import _same_weights, jsonl_copy

SHORT = ("train.epochs=2", "train.max_steps_per_epoch=2")


def _config_file(path: Path, root: Path, fmt: str, *overrides: str) -> Path:
    path.write_text(json.dumps(tiny_config(root, f"data.format={fmt}", *SHORT, *overrides).to_dict()))
    return path


def test_a_label_free_sweep_finishes_and_reports_without_a_test_split(tiny_synth, tmp_path, caplog):
    """Own pairs, no person_id, no test split: every trial trains and is scored, and the sweep writes its
    selection (saying once that there is no test split); run again, it reads the trials back and finishes."""
    data = jsonl_copy(tiny_synth, tmp_path / "own", ids_in=(), splits=("train",))
    base = _config_file(tmp_path / "cpcl.json", data, "jsonl", *CPCL, "data.val_pairs_from_train=8")
    itc = _config_file(tmp_path / "itc.json", data, "jsonl", "data.val_pairs_from_train=8")
    with caplog.at_level(logging.INFO, logger="cpcl"):
        selection = run_selection(base, parse_grid(["cluster.eps=0.5"]), tmp_path / "sweep", also=[itc],
                                  score="label-free")
    assert all(t.status == "done" and t.label_free is not None for t in selection.trials)
    assert selection.chosen == max(selection.trials, key=lambda t: t.label_free) and selection.test is None
    assert caplog.text.count("has no test split") == 1
    text = (tmp_path / "sweep" / "selection.md").read_text()
    assert "**chosen**" in text and "no test split" in text
    saved = json.loads((tmp_path / "sweep" / "selection.json").read_text())
    assert saved["chosen"] == selection.chosen.number and saved["test"] is None
    (tmp_path / "sweep" / "selection.json").unlink()  # interrupted before writing: the rerun finishes too
    again = run_selection(base, parse_grid(["cluster.eps=0.5"]), tmp_path / "sweep", also=[itc], score="label-free")
    assert [t.label_free for t in again.trials] == [t.label_free for t in selection.trials]
    assert (tmp_path / "sweep" / "selection.json").is_file()


def test_a_label_free_sweep_reads_no_identity(tiny_synth, tmp_path):
    """The same sweep on data whose persons are merged into one, or split into an image each (training and val
    splits), scores every trial alike, backs off alike and chooses the same trial and best.pt."""
    variants = {"original": tiny_synth, "one": identity_variant(tiny_synth, tmp_path / "one", "one"),
                "split": identity_variant(tiny_synth, tmp_path / "split", "split")}
    sweeps = {}
    for name, root in variants.items():
        base = _config_file(tmp_path / f"{name}.json", root, "cuhk-pedes", *CPCL, "cluster.backoff_patience=1",
                            "train.epochs=4")
        sweeps[name] = run_selection(base, parse_grid(["cluster.eps=0.5"]), tmp_path / name, score="label-free")
    original = sweeps["original"]

    def rows(name: str, key: str) -> list:
        return [json.loads(line).get(key) for t in original.trials
                for line in (tmp_path / name / f"trial-{t.number:03d}" / "metrics.jsonl").open()]

    assert any(rows("original", "backed_off")), "a trial must back off, or the back-off is not tested"
    chosen = f"trial-{original.chosen.number:03d}/best.pt"
    for name in ("one", "split"):
        sweep = sweeps[name]
        assert [t.label_free for t in sweep.trials] == [t.label_free for t in original.trials], name
        assert [t.best_epoch for t in sweep.trials] == [t.best_epoch for t in original.trials], name
        assert rows(name, "backed_off") == rows("original", "backed_off"), name
        assert sweep.chosen.number == original.chosen.number, name
        assert _same_weights(tmp_path / "original" / chosen, tmp_path / name / chosen), name
        assert [t.val_mAP for t in sweep.trials] != [t.val_mAP for t in original.trials], name  # the ids did change


@pytest.mark.parametrize(("grid", "extra", "sentence"), [
    (["data.val_pairs_from_train=8,12"], (), "differ in data.val_pairs_from_train (8 vs 12), and they would be "
                                              "scored on other held-out data"),
    (["train.label_free_score=pair-mAP,pair-R1"], (), "they would be ranked by different scores"),
    (["loss.temperature=0.02,0.05"], ("train.label_free_score=pair-loss",), "the score pair-loss depends on it"),
    (["cluster.eps=0.5,0.6"], ("train.label_free_score=agreement",), "the score agreement depends on it"),
    (["cluster.eps=0.5"], ("cluster.backoff_patience=1", "cluster.backoff_on=val"),
     "cluster.backoff_on=val reads val identities, and this sweep chooses without any"),
])
def test_trials_scored_otherwise_are_refused_before_training(tiny_synth, tmp_path, grid, extra, sentence):
    data = jsonl_copy(tiny_synth, tmp_path / "own", ids_in=(), splits=("train",))
    base = _config_file(tmp_path / "cpcl.json", data, "jsonl", *CPCL, "data.val_pairs_from_train=8", *extra)
    with pytest.raises(ConfigError, match="no trial is trained") as refused:
        run_selection(base, parse_grid(grid), tmp_path / "sweep", score="label-free")
    assert sentence in str(refused.value)
    assert not (tmp_path / "sweep").exists()


def test_a_swept_value_that_the_score_does_not_read_is_allowed(tiny_synth, tmp_path):
    """pair-mAP ranks trials of different temperatures; only their loading settings differ in data.*."""
    from cpcl.selection import check_plan

    base = _config_file(tmp_path / "cpcl.json", tiny_synth, "cuhk-pedes", *CPCL)
    check_plan([(base, ("loss.temperature=0.05",), ""), (base, ("data.num_workers=2",), ""), (base, (), "")], (),
               "label-free")
    with pytest.raises(ConfigError, match="other held-out data"):
        check_plan([(base, (), ""), (base, ("data.val_ids_from_train=2",), "")], (), "val")


def test_a_test_split_of_pairs_only_is_reported_on_its_pairs(tiny_synth, tmp_path, capsys, caplog):
    """Own data with a test split of pairs (no person_id): training reports the pair scores of the test split
    and says that identity metrics need identities; `cpcl eval` does the same."""
    data = jsonl_copy(tiny_synth, tmp_path / "own", ids_in=())
    config = _config_file(tmp_path / "own.json", data, "jsonl")
    with caplog.at_level(logging.INFO, logger="cpcl"):
        assert main(["train", "--config", str(config), "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "| model | pair R1 | pair mAP |" in out and "| best-label-free |" in out
    assert "identity metrics need identities" in caplog.text
    test = json.loads((tmp_path / "run" / "results.json").read_text())["test"]
    assert set(test) == {"zero-shot", "last", "best-label-free"}  # no chance row: it ranks identities
    assert all(0 < row["pair-mAP"] <= 100 and "rank1" not in row for row in test.values())
    assert main(["eval", "--checkpoint", str(tmp_path / "run" / "best.pt"), "--format", "jsonl", "--root", str(data),
                 "--split", "test", "--json", str(tmp_path / "eval.json")]) == 0
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert saved["pair-mAP"] == pytest.approx(test["best-label-free"]["pair-mAP"])
    capsys.readouterr()
    # the ranking sheet frames each caption's own image as its right match
    assert main(["visualize", "--checkpoint", str(tmp_path / "run" / "best.pt"), "--format", "jsonl", "--root",
                 str(data), "--split", "test", "--out", str(tmp_path / "rankings"), "--queries", "3"]) == 0
    assert "green = the caption's own image (no person_id)" in capsys.readouterr().out
    assert (tmp_path / "rankings" / "sheet.png").is_file()


def test_held_out_pairs_are_pairs_even_where_the_records_have_identities(tiny_synth, tmp_path):
    """data.val_pairs_from_train on a JSONL whose records carry person_id: the held-out images' persons may have
    other images in training, so the held-out records are pairs (no person_id) and best.pt is chosen label-free,
    the same as without any identity."""
    runs = {}
    for name, ids_in in (("with-ids", ("train",)), ("without", ())):
        data = jsonl_copy(tiny_synth, tmp_path / name, ids_in=ids_in, splits=("train",))
        config = tiny_config(data, "data.format=jsonl", "data.val_pairs_from_train=8", *SHORT)
        runs[name] = train(config, tmp_path / f"run-{name}", progress=False)
    assert runs["with-ids"].select_on == runs["without"].select_on == "label-free"
    assert runs["with-ids"].best_val is None and runs["with-ids"].label_free == runs["without"].label_free
    assert _same_weights(tmp_path / "run-with-ids" / "best.pt", tmp_path / "run-without" / "best.pt")
