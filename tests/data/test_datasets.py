import dataclasses

import torch

from cpcl.data.datasets import TrainPairs, eval_split
from cpcl.data.formats import load_annotations
from cpcl.data.transforms import Preprocess, build_eval_transform
from cpcl.model.backbone import build_tokenizer


def _pairs(records):
    return TrainPairs(records, build_tokenizer("cpcl-vit-micro"), build_eval_transform(Preprocess((64, 32))))


def test_training_items_carry_no_identity(tiny_synth):
    records = load_annotations("cuhk-pedes", tiny_synth).split("train")
    ds = _pairs(records)
    assert len(ds) == sum(len(r.captions) for r in records)
    item = ds[3]
    assert set(item) == {"image", "tokens", "index", "image_index"}
    # the proof: shuffling the identity labels of the records changes nothing the dataset yields
    ids = [r.person_id for r in records]
    shuffled = [dataclasses.replace(r, person_id=ids[(i + 5) % len(ids)] + 1000) for i, r in enumerate(records)]
    other = _pairs(shuffled)
    for i in range(len(ds)):
        a, b = ds[i], other[i]
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["tokens"], b["tokens"])
        assert a["image_index"] == b["image_index"] and a["index"] == b["index"] == i
    assert not any("person" in name or name == "ids" for name in vars(ds))


def test_caption_to_image_follows_records(tiny_synth):
    records = load_annotations("cuhk-pedes", tiny_synth).split("train")
    ds = _pairs(records)
    for pair, img in enumerate(ds.caption_to_image.tolist()):
        assert ds.captions[pair] in records[img].captions


def test_eval_split_layout(tiny_synth):
    records = load_annotations("cuhk-pedes", tiny_synth).split("test")
    paths, gallery_ids, captions, query_ids = eval_split(records)
    assert len(paths) == len(records) == len(gallery_ids)
    assert len(captions) == len(query_ids) == 2 * len(records)
    assert set(query_ids.tolist()) == set(gallery_ids.tolist())
