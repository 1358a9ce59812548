"""Choosing without a single identity label: label-free scores on held-out pairs, ``train.select_on``,
``cpcl sweep --score label-free``, the back-off counted label-free, and the refusals that come first."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from cpcl.cli import main
from cpcl.config import ConfigError
from cpcl.data.formats import load_annotations
from cpcl.engine.trainer import train
from cpcl.evaluation.label_free import pair_scores
from cpcl.model.checkpoint import read_checkpoint
from tests.conftest import identity_variant, tiny_config
from tests.engine.test_cpcl import CPCL

LABEL_FREE = ("train.select_on=label-free", "train.epochs=3", "train.max_steps_per_epoch=2")


def jsonl_copy(root: Path, out: Path, ids_in: tuple[str, ...] = ("test",), splits: tuple[str, ...] = ("train", "val",
                                                                                                       "test")) -> Path:
    """The tiny SynthPedes as a JSONL dataset of the practitioner's kind: ``person_id`` only on the records of the
    splits ``ids_in``; only the splits ``splits``."""
    out.mkdir(parents=True)
    (out / "imgs").symlink_to(root / "imgs")
    lines = []
    for r in json.loads((root / "reid_raw.json").read_text()):
        if r["split"] not in splits:
            continue
        for caption in r["captions"]:
            line = {"image": f"imgs/{r['file_path']}", "caption": caption, "split": r["split"]}
            if r["split"] in ids_in:
                line["person_id"] = r["id"]
            lines.append(line)
    (out / "annotations.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return out


def test_pair_scores_against_a_per_query_loop():
    rng = np.random.default_rng(0)
    sim = torch.from_numpy(rng.standard_normal((9, 4)).astype(np.float32))
    own = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 3])
    scores = pair_scores(sim, own, temperature=0.5)
    ranks = [int((sim[q] > sim[q, own[q]]).sum()) + 1 for q in range(9)]  # no ties in random floats
    assert scores["pair-R1"] == pytest.approx(100 * np.mean([r == 1 for r in ranks]))
    assert scores["pair-mAP"] == pytest.approx(100 * np.mean([1 / r for r in ranks]))  # one relevant item
    loss = np.mean([-torch.log_softmax(sim[q] / 0.5, 0)[own[q]].item() for q in range(9)])
    assert scores["pair-loss"] == pytest.approx(-loss, rel=1e-5)


def test_held_out_pairs_are_whole_images_the_same_ones_every_time(tiny_synth, tmp_path):
    data = jsonl_copy(tiny_synth, tmp_path / "data", ids_in=(), splits=("train",))
    ann = load_annotations("jsonl", data)
    held = ann.hold_out_pairs(10)
    val = held.split("val")
    assert len(val) == 10 and ann.hold_out_pairs(10).split("val") == val
    assert sum(len(r.captions) for r in val) == sum(len(r.captions) for r in ann.split("train")
                                                    if r.image_path in {v.image_path for v in val})
    assert len(held.split("train")) == len(ann.split("train")) - 10
    with pytest.raises(ConfigError, match=r"data.val_pairs_from_train=52: .* has only 52 images; keep some"):
        ann.hold_out_pairs(52)
    with pytest.raises(ConfigError, match="already has a val split"):
        load_annotations("cuhk-pedes", tiny_synth).hold_out_pairs(3)


def _run_rows(run: Path, key: str) -> list:
    return [json.loads(line).get(key) for line in (run / "metrics.jsonl").open()]


def _same_weights(a: Path, b: Path) -> bool:
    wa, wb = read_checkpoint(a)["model"], read_checkpoint(b)["model"]
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_label_free_choice_and_back_off_read_no_identity(tiny_synth, tmp_path):
    """Merging persons two by two or all into one, making every image a person of its own, or deleting the
    identities (of the training and val splits) changes no label-free score, back-off, choice or best.pt: under
    label-free selection nothing reads an identity. A one-to-one relabelling could not tell: it changes no
    identity metric."""
    variants = {"original": (tiny_synth, "cuhk-pedes"),
                "merged": (identity_variant(tiny_synth, tmp_path / "merged", "merge"), "cuhk-pedes"),
                "one": (identity_variant(tiny_synth, tmp_path / "one", "one"), "cuhk-pedes"),
                "split": (identity_variant(tiny_synth, tmp_path / "split", "split"), "cuhk-pedes"),
                "deleted": (jsonl_copy(tiny_synth, tmp_path / "deleted"), "jsonl")}
    runs = {}
    for name, (root, fmt) in variants.items():
        config = tiny_config(root, *CPCL, *LABEL_FREE, "train.epochs=4", "cluster.backoff_patience=1",
                             f"data.format={fmt}")
        runs[name] = train(config, tmp_path / name, progress=False)
    original = runs["original"]
    assert original.select_on == "label-free" and original.label_free["name"] == "pair-mAP"
    backed_off = [r for r in _run_rows(tmp_path / "original", "backed_off") if r]
    assert backed_off, "the scenario must back off once, or it tests nothing"
    merged_val = [r["mAP"] for r in _run_rows(tmp_path / "merged", "val")[1:]]
    assert merged_val != [r["mAP"] for r in _run_rows(tmp_path / "original", "val")[1:]]  # identities did change
    for name in ("merged", "one", "split", "deleted"):
        assert runs[name].label_free == original.label_free, name
        assert runs[name].best_epoch == original.best_epoch, name
        assert _run_rows(tmp_path / name, "label_free") == _run_rows(tmp_path / "original", "label_free"), name
        assert _run_rows(tmp_path / name, "backed_off") == _run_rows(tmp_path / "original", "backed_off"), name
        assert _same_weights(tmp_path / "original" / "best.pt", tmp_path / name / "best.pt"), name
        assert _same_weights(tmp_path / "original" / "last.pt", tmp_path / name / "last.pt"), name
    # where val identities exist, both choices are reported on test: the cost of choosing blind is visible
    assert {"best-on-val", "best-label-free"} <= set(original.test)
    assert original.test["best-label-free"] == runs["merged"].test["best-label-free"]
    saved = json.loads((tmp_path / "original" / "results.json").read_text())
    assert saved["selection"]["select_on"] == "label-free"
    assert saved["selection"]["label-free"] == {**original.label_free}
    assert (tmp_path / "original" / "best-on-val.pt").is_file()


@pytest.mark.parametrize("explicit", [True, False])
def test_a_back_off_on_val_identities_is_refused_under_label_free_selection(tiny_synth, tmp_path, explicit):
    """train.select_on=label-free on data with val identities, or auto resolving to label-free on val pairs
    without them: a back-off counted on val identities is refused before training."""
    data = tiny_synth if explicit else jsonl_copy(tiny_synth, tmp_path / "own", ids_in=())
    config = tiny_config(data, *CPCL, "cluster.backoff_patience=1", "cluster.backoff_on=val",
                         *(LABEL_FREE if explicit else ("data.format=jsonl",)))
    with pytest.raises(ConfigError, match="backoff_on=val reads val identities, but best.pt is chosen label-free"):
        train(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "last.pt").exists()


def test_own_jsonl_pairs_without_any_person_id_choose_label_free_through_the_cli(tiny_synth, tmp_path, caplog):
    """A practitioner's pairs: no person_id anywhere, no test split. The default (auto) chooses best.pt
    label-free on the val split's pairs, and says so; without a val split, data.val_pairs_from_train holds
    some out."""
    data = jsonl_copy(tiny_synth, tmp_path / "own", ids_in=(), splits=("train", "val"))
    config = tmp_path / "own.yaml"
    config.write_text(json.dumps({**{k: v for k, v in tiny_config(data).to_dict().items() if k != "model"},
                                  "data": {"format": "jsonl", "root": str(data)},
                                  "model": {"arch": "cpcl-vit-micro", "pretrained": None, "image_size": [64, 32]},
                                  "train": {"epochs": 2, "batch_size": 16, "max_steps_per_epoch": 2}}))
    with caplog.at_level(logging.INFO, logger="cpcl"):
        assert main(["train", "--config", str(config), "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["selection"]["select_on"] == "label-free" and saved["selection"]["val"] is None
    assert saved["best_epoch"] == saved["selection"]["label-free"]["epoch"]
    assert (tmp_path / "run" / "best.pt").is_file() and not (tmp_path / "run" / "best-on-val.pt").exists()
    assert "best.pt is chosen label-free" in caplog.text
    # no val split at all: pairs held out of the training split
    train_only = jsonl_copy(tiny_synth, tmp_path / "train-only", ids_in=(), splits=("train",))
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "run2"), "--no-progress",
                 "--set", f"data.root={train_only}", "--set", "data.val_pairs_from_train=8"]) == 0
    saved = json.loads((tmp_path / "run2" / "results.json").read_text())
    assert saved["selection"]["select_on"] == "label-free" and saved["best_epoch"] is not None


@pytest.mark.parametrize(("sets", "sentence"), [
    (("train.select_on=val",), "train.select_on=val needs identities in the val split"),
    (("data.val_pairs_from_train=500",), "has only 52 images; keep some to train on"),
    (("train.select_on=label-free", "data.val_pairs_from_train=0"), "needs held-out pairs"),
    (("train.label_free_score=pair-R5",), "train.label_free_score: expected one of pair-mAP"),
    (("train.label_free_score=agreement",), "reads the pseudo labels, but cluster.enabled is false"),
])
def test_choices_the_data_cannot_serve_are_refused_before_training(tiny_synth, tmp_path, capsys, sets, sentence):
    data = jsonl_copy(tiny_synth, tmp_path / "own", ids_in=(), splits=("train",))
    args = ["train", "--config", "synthpedes_itc", "--out", str(tmp_path / "run"), "--no-progress",
            "--set", "data.format=jsonl", "--set", f"data.root={data}", "--set", "model.pretrained=null",
            "--set", "model.arch=cpcl-vit-micro", "--set", "model.image_size=[64,32]"]
    for s in sets:
        args += ["--set", s]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert sentence in err and "Traceback" not in err
    assert not (tmp_path / "run" / "config.yaml").exists() and not (tmp_path / "run" / "last.pt").exists()


def test_sweep_scores_label_free(tiny_synth, tmp_path):
    """`cpcl sweep --score label-free`: every trial chooses its best.pt label-free and is scored by its best
    label-free score; the ITC baseline is one more trial, compared on the same score."""
    from cpcl.selection import parse_grid, run_selection

    base = tmp_path / "base.json"
    base.write_text(json.dumps(tiny_config(tiny_synth, *CPCL, "train.epochs=2", "train.max_steps_per_epoch=2")
                               .to_dict()))
    itc = tmp_path / "itc.json"
    itc.write_text(json.dumps(tiny_config(tiny_synth, "train.epochs=2", "train.max_steps_per_epoch=2").to_dict()))
    selection = run_selection(base, parse_grid(["cluster.eps=0.5"]), tmp_path / "sweep", device="cpu",
                              also=[itc], score="label-free")
    assert all(t.status == "done" and t.label_free is not None for t in selection.trials)
    assert selection.chosen == max(selection.trials, key=lambda t: t.label_free)
    assert selection.test is not None
    for t in selection.trials:
        saved = json.loads((tmp_path / "sweep" / f"trial-{t.number:03d}" / "results.json").read_text())
        assert saved["selection"]["select_on"] == "label-free"
        assert saved["selection"]["label-free"]["score"] == t.label_free
    assert "score: label-free" in (tmp_path / "sweep" / "selection.md").read_text()


def test_back_off_counted_label_free(tiny_synth, tmp_path, monkeypatch):
    """cluster.backoff_on=label-free: scripted label-free scores 10, 30, 20, 15 -> back to epoch 2's weights."""
    from cpcl.engine import trainer

    scripted = iter([10.0, 30.0, 20.0, 15.0, 40.0])
    real_validate = trainer.validate

    def validate(*args, **kwargs):
        metrics, label_free = real_validate(*args, **kwargs)
        return metrics, {**label_free, "pair-mAP": next(scripted)}

    monkeypatch.setattr(trainer, "validate", validate)
    config = tiny_config(tiny_synth, *CPCL, "train.epochs=5", "train.max_steps_per_epoch=2",
                         "cluster.backoff_patience=2", "cluster.backoff_on=label-free", "train.select_on=label-free")
    result = train(config, tmp_path / "run", progress=False)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()][1:]
    assert rows[3]["backed_off"] == {"restored_epoch": 2, "stale_epochs": 2}
    assert result.best_epoch == 5 and result.label_free["score"] == 40.0


def _naive_neighbourhood_scores(text: np.ndarray, image: np.ndarray, own: np.ndarray, k: int) -> dict[str, float]:
    """The neighbourhood scores as their definitions read, one caption at a time, with Python sets."""
    def nearest(query, keys, count, skip=()):
        order = [j for j in np.argsort(-(keys @ query), kind="stable") if j not in skip]
        return order[:count]

    agree, agree_kr, pairs = [], [], []
    for q in range(len(text)):
        i = own[q]
        top_images = set(nearest(text[q], image, k))
        around = nearest(image[i], image, k + 1)  # itself included
        agree.append(len(top_images & set(around[:k])) / k)
        mutual = {j for j in around if i in nearest(image[j], image, k + 1)}
        agree_kr.append(len(top_images & mutual) / len(mutual))
        same_image = {c for c in range(len(text)) if own[c] == i}
        via_captions = [own[c] for c in nearest(text[q], text, k, skip=same_image)]
        other_images = set(nearest(image[i], image, k, skip={i}))
        pairs.append(np.mean([m in other_images for m in via_captions]))
    return {"nbr-agree": 100 * np.mean(agree), "nbr-agree-kr": 100 * np.mean(agree_kr),
            "nbr-pairs": 100 * np.mean(pairs)}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_neighbourhood_scores_against_their_definitions(seed):
    from cpcl.evaluation.label_free import neighbourhood_scores

    rng = np.random.default_rng(seed)
    people = rng.standard_normal((6, 16))  # images and captions of a person lie near its centre
    person_of_image = rng.integers(0, 6, size=25)
    image = people[person_of_image] + 0.6 * rng.standard_normal((25, 16))
    own = np.repeat(np.arange(25), rng.integers(1, 4, size=25))
    text = people[person_of_image[own]] + 0.8 * rng.standard_normal((len(own), 16))
    image, text = (x / np.linalg.norm(x, axis=1, keepdims=True) for x in (image, text))
    got = neighbourhood_scores(torch.from_numpy(text).float(), torch.from_numpy(image).float(),
                               torch.from_numpy(own), k=5)
    expected = _naive_neighbourhood_scores(text.astype(np.float32), image.astype(np.float32), own, 5)
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=1e-4), name  # float32 means on a x100 scale
    # a model that puts every image of a person and its captions at one point agrees fully
    tight = people[person_of_image] / np.linalg.norm(people[person_of_image], axis=1, keepdims=True)
    assert neighbourhood_scores(torch.from_numpy(tight[own]).float(), torch.from_numpy(tight).float(),
                                torch.from_numpy(own), k=1)["nbr-agree"] == pytest.approx(100.0)
