"""What the CPCL objective means: which labels a batch gets, which memory each term reads, what a weight of 0
does, which features update which memory and when, and what the fused clustering clusters."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cpcl.config import ClusterConfig, LossConfig, MemoryConfig, OplmConfig
from cpcl.data.formats import load_annotations
from cpcl.engine import pseudo as pseudo_module
from cpcl.engine.objective import Batch, BatchLabels, Objective
from cpcl.engine.pseudo import EpochLabels, _fuse
from cpcl.engine.trainer import train
from cpcl.losses.contrastive import itc_loss, pair_positives, sdm_loss
from tests.conftest import tiny_config
from tests.engine.test_cpcl import CPCL

CPU = torch.device("cpu")
TAU = 0.05


def _unit(*shape, seed=0):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def _objective(intra=0.5, cross=0.25, many_to_many=True, momentum=0.2) -> Objective:
    """An objective whose image and text memories hold different prototypes (3 pseudo identities, 4-d)."""
    objective = Objective(4, LossConfig(intra_weight=intra, cross_weight=cross, many_to_many=many_to_many),
                          MemoryConfig(momentum=momentum, temperature=TAU), CPU)
    image_features, text_features = _unit(6, 4, seed=1), _unit(6, 4, seed=2)
    objective.on_labels(EpochLabels(torch.tensor([0, 0, 1, 1, 2, 2]), torch.tensor([0, 0, 1, 1, 2, 2])),
                        image_features, text_features)
    assert not torch.allclose(objective.image_memory.prototypes, objective.text_memory.prototypes)
    return objective


def _batch() -> Batch:
    return Batch(torch.tensor([0, 1, 2, 3]), BatchLabels(torch.tensor([0, 1, -1, 2]), torch.tensor([1, 1, 2, -1])))


def test_pseudo_labels_are_looked_up_by_dataset_index():
    """A pair's image label comes from its image, its caption label from its caption (not from its image index,
    not from its position in the batch)."""
    labels = EpochLabels(torch.tensor([10, 11, 12]), torch.tensor([20, 21, 22, 23, 24, 25]))
    index, image_index = torch.tensor([5, 0, 3]), torch.tensor([2, 0, 1])  # captions 5, 0, 3 of images 2, 0, 1
    batch = BatchLabels.lookup(labels, index, image_index, CPU)
    assert batch.image.tolist() == [12, 10, 11]
    assert batch.text.tolist() == [25, 20, 23]


def test_training_batches_carry_the_labels_of_their_own_pairs(tiny_synth, tmp_path, monkeypatch):
    """In a real run, the trainer hands the objective each pair's caption index and image index."""
    records = load_annotations("cuhk-pedes", tiny_synth).split("train")
    owner = torch.tensor([i for i, r in enumerate(records) for _ in r.captions])
    seen = []
    real_batch = Objective.batch

    def spy(self, index, image_index):
        batch = real_batch(self, index, image_index)
        seen.append((index.clone(), image_index.clone(), batch, self.labels))
        return batch

    monkeypatch.setattr(Objective, "batch", spy)
    train(tiny_config(tiny_synth, *CPCL), tmp_path / "run", progress=False)
    labelled = [s for s in seen if s[3] is not None]
    assert labelled, "no batch had pseudo labels"
    for index, image_index, batch, labels in labelled:
        assert torch.equal(owner[index], image_index)  # index is the caption (pair) index
        assert not torch.equal(index, image_index)
        assert torch.equal(batch.labels.text, labels.text[index])
        assert torch.equal(batch.labels.image, labels.image[image_index])


def test_each_term_reads_its_memory_and_the_total_weighs_them():
    objective = _objective(intra=0.5, cross=0.25)
    v, t, batch = _unit(4, 4, seed=3), _unit(4, 4, seed=4), _batch()
    loss, terms = objective(v, t, batch)
    m_img, m_txt = objective.image_memory.prototypes, objective.text_memory.prototypes
    y_img, y_txt = batch.labels.image, batch.labels.text

    def ce(features, memory, labels):
        keep = labels >= 0
        return F.cross_entropy(features[keep] @ memory.t() / TAU, labels[keep])

    torch.testing.assert_close(terms["intra_image"], ce(v, m_img, y_img))
    torch.testing.assert_close(terms["intra_text"], ce(t, m_txt, y_txt))
    torch.testing.assert_close(terms["cross_image"], ce(v, m_txt, y_txt))  # image features, text memory
    torch.testing.assert_close(terms["cross_text"], ce(t, m_img, y_img))  # text features, image memory
    positives = pair_positives(batch.image_index, y_img, y_txt)
    torch.testing.assert_close(terms["sdm"], sdm_loss(v, t, 0.02, positives))
    want = terms["sdm"] + 0.5 * (terms["intra_image"] + terms["intra_text"]) \
        + 0.25 * (terms["cross_image"] + terms["cross_text"])
    torch.testing.assert_close(loss, want)


@pytest.mark.parametrize(("intra", "cross", "many_to_many", "names"), [
    (0.0, 0.25, True, {"sdm", "cross_image", "cross_text"}),
    (0.5, 0.0, True, {"sdm", "intra_image", "intra_text"}),
    (0.0, 0.0, False, {"itc"}),
])
def test_a_zero_weight_removes_its_term(intra, cross, many_to_many, names):
    objective = _objective(intra=intra, cross=cross, many_to_many=many_to_many)
    v, t, batch = _unit(4, 4, seed=3), _unit(4, 4, seed=4), _batch()
    loss, terms = objective(v, t, batch)
    assert set(terms) == names
    if names == {"itc"}:
        torch.testing.assert_close(loss, itc_loss(v, t, 0.02, positives=pair_positives(batch.image_index)))


def test_without_labels_only_the_instance_loss_on_pairs_remains():
    objective = _objective()
    objective.on_labels(None)
    v, t = _unit(4, 4, seed=3), _unit(4, 4, seed=4)
    batch = objective.batch(torch.tensor([0, 1, 2, 3]), torch.tensor([0, 0, 1, 2]))
    assert batch.labels is None
    loss, terms = objective(v, t, batch)
    assert set(terms) == {"itc"}
    torch.testing.assert_close(loss, itc_loss(v, t, 0.02, torch.tensor([0, 0, 1, 2])))


def test_each_memory_moves_towards_its_own_modality():
    objective = _objective(momentum=0.5)
    before_img = objective.image_memory.prototypes.clone()
    before_txt = objective.text_memory.prototypes.clone()
    v, t = _unit(4, 4, seed=5), _unit(4, 4, seed=6)
    batch = _batch()  # image labels [0, 1, -1, 2]; text labels [1, 1, 2, -1]
    objective.after_step(v, t, batch)
    want_img = before_img.clone()
    for x, y in zip(v, batch.labels.image.tolist(), strict=True):
        if y >= 0:
            want_img[y] = F.normalize(0.5 * want_img[y] + 0.5 * x, dim=0)
    want_txt = before_txt.clone()
    for x, y in zip(t, batch.labels.text.tolist(), strict=True):
        if y >= 0:
            want_txt[y] = F.normalize(0.5 * want_txt[y] + 0.5 * x, dim=0)
    torch.testing.assert_close(objective.image_memory.prototypes, want_img)
    torch.testing.assert_close(objective.text_memory.prototypes, want_txt)


def test_memories_are_updated_after_the_optimiser_step_with_that_steps_features(tiny_synth, tmp_path, monkeypatch):
    events = []
    real_step, real_after, real_call = torch.optim.Adam.step, Objective.after_step, Objective.__call__

    def step(self, *args, **kwargs):
        events.append("optimizer.step")
        return real_step(self, *args, **kwargs)

    def call(self, v, t, batch):
        events.append(("features", v.detach().clone(), t.detach().clone()))
        return real_call(self, v, t, batch)

    def after(self, v, t, batch):
        events.append(("after_step", v.clone(), t.clone()))
        return real_after(self, v, t, batch)

    monkeypatch.setattr(torch.optim.Adam, "step", step)
    monkeypatch.setattr(Objective, "__call__", call)
    monkeypatch.setattr(Objective, "after_step", after)
    train(tiny_config(tiny_synth, *CPCL, "train.epochs=1"), tmp_path / "run", progress=False)
    kinds = [e if isinstance(e, str) else e[0] for e in events]
    assert kinds == ["features", "optimizer.step", "after_step"] * (len(kinds) // 3) and kinds
    for features, _, after_step in zip(events[0::3], events[1::3], events[2::3], strict=True):
        assert torch.equal(features[1], after_step[1]) and torch.equal(features[2], after_step[2])


def test_fused_clustering_clusters_image_plus_captions(monkeypatch):
    f_img = _unit(3, 4, seed=7)
    f_txt = _unit(6, 4, seed=8)
    owner = torch.tensor([0, 0, 1, 1, 2, 2])
    fused_img, fused_txt = _fuse(f_img, f_txt, owner)
    want_img = F.normalize(f_img + F.normalize((f_txt[0::2] + f_txt[1::2]) / 2, dim=1), dim=1)
    torch.testing.assert_close(fused_img, want_img)
    torch.testing.assert_close(fused_txt, F.normalize(f_txt + f_img[owner], dim=1))

    inputs = []

    def record(features, **kwargs):
        inputs.append(features)
        return pseudo_module.summarise(np.arange(len(features)) % 2)

    monkeypatch.setattr(pseudo_module, "cluster_features", record)
    for fuse in (False, True):
        inputs.clear()
        pseudo_module._cluster(f_img, f_txt, owner, ClusterConfig(enabled=True, fuse_modalities=fuse), OplmConfig(),
                               None, None)
        expected = (fused_img, fused_txt) if fuse else (f_img, f_txt)
        for got, want in zip(inputs, expected, strict=True):
            np.testing.assert_allclose(got, want.numpy())


@pytest.mark.parametrize(("choice", "use_image", "use_text"), [
    ("union", True, True), ("image-label", True, False), ("text-label", False, True), ("pair", False, False)])
def test_each_sdm_positive_set(choice, use_image, use_text):
    """Hand-made batch: pairs 0 and 1 share an image label, 1 and 2 a caption label, 3 is alone."""
    objective = Objective(4, LossConfig(many_to_many=True, sdm_positives=choice), MemoryConfig(), CPU)
    batch = Batch(torch.tensor([0, 1, 2, 3]), BatchLabels(torch.tensor([5, 5, 6, -1]), torch.tensor([7, 8, 8, -1])))
    v, t = _unit(4, 4, seed=9), _unit(4, 4, seed=10)
    _, terms = objective(v, t, batch)
    want = torch.eye(4, dtype=torch.bool)
    if use_image:
        want[0, 1] = want[1, 0] = True
    if use_text:
        want[1, 2] = want[2, 1] = True
    torch.testing.assert_close(terms["sdm"], sdm_loss(v, t, 0.02, want))
