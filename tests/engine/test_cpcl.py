"""End-to-end CPCL runs on a tiny SynthPedes, and the proof that identity labels do not reach training."""

import json

import pytest
import torch

from cpcl.engine.trainer import train
from cpcl.model.checkpoint import read_checkpoint
from tests.conftest import permuted_copy, tiny_config

CPCL = ("cluster.enabled=true", "cluster.k1=6", "cluster.k2=2", "cluster.eps=0.6", "cluster.min_samples=2",
        "cluster.fuse_modalities=true", "oplm.enabled=true", "loss.many_to_many=true", "loss.intra_weight=1.0",
        "loss.cross_weight=0.5", "train.epochs=2", "train.max_steps_per_epoch=3")


PROTOTYPE_TERMS = ("intra_image", "intra_text", "cross_image", "cross_text")


def _rows(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_two_cpcl_epochs(tiny_synth, tmp_path):
    run = tmp_path / "cpcl"
    result = train(tiny_config(tiny_synth, *CPCL), run, progress=False)
    rows = _rows(run)[1:]
    assert len(rows) == 2
    for row in rows:
        pseudo = row["pseudo"]
        assert pseudo["image_clusters"] > 0 and pseudo["text_clusters"] > 0
        for key in ("image_outliers", "image_recovered", "image_nmi", "image_ari", "image_pair_precision",
                    "text_pair_recall"):
            assert key in pseudo, key
        assert {"extract", "cluster", "train", "forward_backward", "eval"} <= set(row["time"])
        for modality in ("image", "text"):
            if pseudo[f"{modality}_recovered"]:
                assert 0.0 <= pseudo[f"{modality}_recovered_purity"] <= 1.0
    for row in rows:  # the CPCL terms trained, every epoch: not a silent fall-back to the baseline
        assert "sdm" in row and "itc" not in row
        for term in PROTOTYPE_TERMS:
            assert row[term] > 0, term
    assert "best-on-val" in result.test


def test_identity_labels_do_not_reach_weakly_supervised_training(tiny_synth, tmp_path):
    """Permuting the training identities changes the diagnostics, and not one bit of the model."""
    permuted = permuted_copy(tiny_synth, tmp_path / "permuted", shift=3, split_first_images=True)

    train(tiny_config(tiny_synth, *CPCL), tmp_path / "a", progress=False)
    train(tiny_config(permuted, *CPCL), tmp_path / "b", progress=False)
    a = read_checkpoint(tmp_path / "a" / "last.pt")["model"]
    b = read_checkpoint(tmp_path / "b" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    for run in ("a", "b"):  # both runs trained on pseudo labels (the comparison is not vacuous)
        assert all(row[term] > 0 for row in _rows(tmp_path / run)[1:] for term in PROTOTYPE_TERMS)
    pa, pb = _rows(tmp_path / "a")[1]["pseudo"], _rows(tmp_path / "b")[1]["pseudo"]
    assert pa["image_clusters"] == pb["image_clusters"]
    assert pa["image_nmi"] != pb["image_nmi"]  # the report does read the (now scrambled) identities


def test_supervised_upper_bound_needs_explicit_consent(tiny_synth, tmp_path):
    cfg = tiny_config(tiny_synth, "train.supervised=true", "loss.intra_weight=1.0", "train.max_steps_per_epoch=2")
    with pytest.raises(ValueError, match="--supervised-upper-bound"):
        train(cfg, tmp_path / "s", progress=False)
    train(cfg, tmp_path / "s", progress=False, allow_identity_labels=True)
    pseudo = _rows(tmp_path / "s")[1]["pseudo"]
    assert pseudo["image_pair_precision"] == 1.0 and pseudo["image_outliers"] == 0.0


def test_degenerate_clustering_falls_back_to_the_instance_loss(tiny_synth, tmp_path, caplog):
    # eps so large that everything merges into one cluster
    cfg = tiny_config(tiny_synth, "cluster.enabled=true", "cluster.distance=cosine", "cluster.eps=1.9",
                      "cluster.k1=40", "cluster.min_samples=2", "loss.intra_weight=1.0",
                      "train.max_steps_per_epoch=2")
    train(cfg, tmp_path / "d", progress=False)
    row = _rows(tmp_path / "d")[1]
    assert "degenerate" in row["pseudo"] and "intra_image" not in row
    assert "instance loss only" in caplog.text


def test_collapsed_features_skip_the_epoch_s_clustering_with_a_warning(caplog):
    """A collapsed model's features: the epoch trains the instance loss, and the warning says what was seen."""
    import numpy as np

    from cpcl.config import ClusterConfig, OplmConfig
    from cpcl.engine.pseudo import _cluster

    rng = np.random.default_rng(0)
    x = rng.normal(size=(1500, 32)).astype(np.float32)
    collapsed = torch.nn.functional.normalize(torch.from_numpy(x[:1] + 0.01 * x), dim=1)
    owner = torch.arange(1500).repeat_interleave(2)
    captions = collapsed[owner]
    labels = _cluster(collapsed, captions, owner, ClusterConfig(enabled=True, k1=30, k2=6), OplmConfig(enabled=True),
                      None, None)
    assert not labels.usable and "hub-dominated" in labels.stats["degenerate"]
    assert "clustering skipped for this epoch" in caplog.text and "share one neighbour" in caplog.text


def test_every_labelling_phase_says_what_it_does_and_how_long_it_took(tiny_synth, tmp_path, caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="cpcl"):
        train(tiny_config(tiny_synth, *CPCL, "train.epochs=1"), tmp_path / "run", progress=False)
    for name in ("extract images (52)", "extract captions (104)", "image k-NN (52 samples)", "image jaccard distances",
                 "image DBSCAN", "text k-NN (104 samples)", "OPLM", "memories"):
        assert f"{name} ..." in caplog.text, name
        assert any(r.getMessage().startswith(f"{name}: ") and r.getMessage().endswith("s") for r in caplog.records)
    phases = _rows(tmp_path / "run")[1]["time"]["phases"]
    assert {"image DBSCAN", "OPLM", "memories"} <= set(phases)


def test_backing_off_restores_the_best_val_weights_and_leaves_the_pseudo_labels(tiny_synth, tmp_path, monkeypatch,
                                                                                caplog):
    """cluster.backoff_patience: val scores 10, 30, 20, 15 -> after two epochs on pseudo labels without a new
    best, epoch 2's weights come back and epoch 5 trains the instance loss alone."""
    import logging

    from cpcl.engine import trainer

    scripted = iter([10.0, 30.0, 20.0, 15.0, 40.0])
    real_validate, real_epoch = trainer.validate, trainer.train_one_epoch
    seen_at_start = {}

    def validate(*args, **kwargs):
        metrics, label_free = real_validate(*args, **kwargs)
        score = next(scripted)
        return {**metrics, "rank1": score, "mAP": score}, label_free

    def train_one_epoch(model, loader, state, cfg, epoch, *args, **kwargs):
        seen_at_start[epoch] = {k: v.clone() for k, v in state.model.state_dict().items()}
        return real_epoch(model, loader, state, cfg, epoch, *args, **kwargs)

    monkeypatch.setattr(trainer, "validate", validate)
    monkeypatch.setattr(trainer, "train_one_epoch", train_one_epoch)
    run = tmp_path / "backoff"
    config = tiny_config(tiny_synth, *CPCL, "train.epochs=5", "train.max_steps_per_epoch=2",
                         "cluster.backoff_patience=2")
    with caplog.at_level(logging.WARNING, logger="cpcl"):
        result = train(config, run, progress=False)
    rows = _rows(run)[1:]
    assert [("pseudo" in r) for r in rows] == [True, True, True, True, False]
    assert rows[3]["backed_off"] == {"restored_epoch": 2, "stale_epochs": 2}
    assert not any("backed_off" in r for r in rows[:3] + rows[4:])
    assert "sdm" in rows[3] and "itc" in rows[4] and not any(t in rows[4] for t in PROTOTYPE_TERMS)
    assert result.best_epoch == 5  # the epoch after backing off scored best (40): best.pt moved on to it
    # epoch 5 started from the weights that were best on val when the run backed off (epoch 2's)
    epoch2 = seen_at_start[3]  # the weights after epoch 2 = those epoch 3 started from
    assert all(torch.equal(seen_at_start[5][k], epoch2[k]) for k in epoch2)
    assert not all(torch.equal(seen_at_start[5][k], seen_at_start[4][k]) for k in epoch2)
    assert any("back to epoch 2's weights" in r.getMessage() for r in caplog.records)
    assert read_checkpoint(run / "last.pt")["run"]["backed_off"] == 4  # a resumed run stays backed off


def test_backing_off_needs_pseudo_labels_and_a_val_score_every_epoch(tiny_synth):
    from cpcl.config import ConfigError

    for overrides, keys in ((("cluster.backoff_patience=2",), ("cluster.backoff_patience", "cluster.enabled")),
                            ((*CPCL, "cluster.backoff_patience=2", "train.eval_every=2"),
                             ("cluster.backoff_patience", "train.eval_every"))):
        with pytest.raises(ConfigError) as err:
            tiny_config(tiny_synth, *overrides)
        assert all(k in str(err.value) for k in keys)
