import dataclasses

import torch

from cpcl.data.datasets import TrainPairs, eval_split
from cpcl.data.formats import load_annotations
from cpcl.data.transforms import build_eval_transform
from cpcl.model.backbone import build_tokenizer
from cpcl.model.preprocess import Preprocess


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


def test_image_cache_holds_across_epochs_with_workers(tiny_synth, tmp_path):
    """With DataLoader workers the cache is filled once in the main process: the workers of every later epoch
    (and the feature extraction) read it, so the image files are not read again."""
    import shutil

    from cpcl.engine.distributed import SINGLE
    from cpcl.engine.objective import Objective
    from cpcl.engine.trainer import _loader, load_train_data
    from cpcl.model.checkpoint import build_model
    from cpcl.model.encode import encode_images
    from tests.conftest import tiny_config

    data = shutil.copytree(tiny_synth, tmp_path / "data")
    config = tiny_config(data, "data.num_workers=2", "data.cache_images=true", "train.max_steps_per_epoch=2")
    train_data = load_train_data(config, SINGLE, progress=False)
    shutil.rmtree(data / "imgs")  # from here on, only the cache holds the training images
    objective = Objective(64, config.loss, config.memory, torch.device("cpu"), SINGLE, True)
    for epoch in (1, 2):
        batches = list(_loader(train_data.train_set, objective, config, epoch, 2, torch.device("cpu"), SINGLE))
        assert len(batches) == 2 and batches[0]["image"].shape[1:] == (3, 64, 32)
    model = build_model(config.model, pretrained=False)
    features = encode_images(model, train_data.extract_set, torch.device("cpu"), 32, num_workers=2)
    assert features.shape[0] == len(train_data.train_set.images)


def test_filling_the_image_cache_draws_nothing_from_the_global_generator(tiny_synth):
    """``data.num_workers`` > 0 fills the cache before the model is built: a draw from the global generator there
    would change a ``pretrained: null`` initialisation with the number of workers."""
    from cpcl.data.datasets import ImageStore

    records = load_annotations("cuhk-pedes", tiny_synth).split("train")
    store = ImageStore([r.image_path for r in records[:6]], cache=True)
    torch.manual_seed(3)
    before = torch.get_rng_state()
    store.fill(num_workers=1)
    assert store.get(0) is not None
    assert torch.equal(torch.get_rng_state(), before)
