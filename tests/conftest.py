"""Shared fixtures: a tiny SynthPedes on disk, a tiny model config and tiny checkpoints (random-init micro
CLIP), built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from cpcl.config import config_from_dict
from cpcl.data.synth import generate_synthpedes
from cpcl.model.checkpoint import build_model, save_checkpoint

torch.set_num_threads(2)


@pytest.fixture(scope="session", autouse=True)
def _cache_in_tmp(tmp_path_factory):
    """The image-check cache of the tests stays out of the user's home (subprocesses inherit it)."""
    old = os.environ.get("CPCL_CACHE_DIR")
    os.environ["CPCL_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if old is None:
        os.environ.pop("CPCL_CACHE_DIR", None)
    else:
        os.environ["CPCL_CACHE_DIR"] = old


@pytest.fixture(scope="session")
def tiny_synth(tmp_path_factory) -> Path:
    """30 identities at 64x32 in the CUHK-PEDES format: 18 train, 6 val, 6 test."""
    root = tmp_path_factory.mktemp("synth")
    generate_synthpedes(root, num_ids=30, seed=3, height=64, width=32, val_ids=6, test_ids=6, workers=1,
                        montage=False)
    return root


def crops_folder(gallery: list[Path], folder: Path, count: int) -> Path:
    """``folder`` (created) holding copies of the first ``count`` gallery images: a practitioner's crops."""
    folder.mkdir(parents=True)
    for path in gallery[:count]:
        (folder / path.name).write_bytes(path.read_bytes())
    return folder


def tiny_config(root: Path, *overrides: str):
    return config_from_dict({
        "data": {"format": "cuhk-pedes", "root": str(root)},
        "model": {"arch": "cpcl-vit-micro", "pretrained": None, "image_size": [64, 32]},
        "optim": {"lr": 1e-3, "warmup_epochs": 0},
        "train": {"epochs": 1, "batch_size": 16, "eval_batch_size": 64},
    }, overrides)


@pytest.fixture(scope="session")
def gallery(tiny_synth) -> list[Path]:
    """Image paths of the tiny SynthPedes test split."""
    from cpcl.data.formats import load_annotations

    return [r.image_path for r in load_annotations("cuhk-pedes", tiny_synth).split("test")]


def _checkpoint(root: Path, out: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    config = tiny_config(root)
    save_checkpoint(out, build_model(config.model, pretrained=False), config, epoch=0)
    return out


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_synth, tmp_path_factory) -> Path:
    return _checkpoint(tiny_synth, tmp_path_factory.mktemp("ckpt") / "best.pt", seed=0)


@pytest.fixture(scope="session")
def other_checkpoint(tiny_synth, tmp_path_factory) -> Path:
    """Same architecture, other weights: a different model for the index."""
    return _checkpoint(tiny_synth, tmp_path_factory.mktemp("ckpt-other") / "best.pt", seed=1)



def permuted_copy(root: Path, out: Path, shift: int, split_first_images: bool = False) -> Path:
    """A copy of a CUHK-PEDES-format dataset whose training identities are permuted (shifted by ``shift``;
    ``split_first_images`` also gives every identity's first image an identity of its own): a weakly
    supervised run must train the same model on it."""
    import json
    import shutil

    shutil.copytree(root, out)
    records = json.loads((out / "reid_raw.json").read_text())
    train_ids = sorted({r["id"] for r in records if r["split"] == "train"})
    mapping = dict(zip(train_ids, train_ids[shift:] + train_ids[:shift], strict=True))
    for r in records:
        if r["split"] == "train":
            r["id"] = mapping[r["id"]] + 1000 * (split_first_images and r["file_path"].endswith("_s0.png"))
    (out / "reid_raw.json").write_text(json.dumps(records))
    return out


def identity_variant(root: Path, out: Path, how: str, splits: tuple[str, ...] = ("train", "val")) -> Path:
    """A copy of a CUHK-PEDES-format dataset in which other images share a person, in the splits ``splits``:
    ``how="merge"`` makes every two persons one, ``"one"`` every person one, ``"split"`` every image a person of
    its own. Unlike a one-to-one relabelling, this changes every identity metric (with ``"one"``, val R1 and mAP
    are 100 at every epoch): a choice that reads no identity is unchanged."""
    import json
    import shutil

    shutil.copytree(root, out)
    records = json.loads((out / "reid_raw.json").read_text())
    ids = sorted({r["id"] for r in records if r["split"] in splits})
    for i, r in enumerate(records):
        if r["split"] in splits:
            r["id"] = {"merge": ids[ids.index(r["id"]) // 2 * 2], "one": ids[0], "split": 100_000 + i}[how]
    (out / "reid_raw.json").write_text(json.dumps(records))
    return out



@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory):
    """A real Milvus 2.3 standalone server on this machine (the ``milvus-server`` extra), started once (~10-40 s)
    and stopped at the end (SIGTERM, then SIGKILL after a bound). Skipped where it is not installed, unless
    CPCL_REQUIRE_MILVUS_SERVER is set (CI), where that fails."""
    from benchmarks.milvus_server import MilvusServer, server_command

    if server_command() is None:
        if os.environ.get("CPCL_REQUIRE_MILVUS_SERVER"):
            pytest.fail("CPCL_REQUIRE_MILVUS_SERVER is set, and milvus-server is not installed "
                        "(pip install 'cpcl[milvus-server]')")
        pytest.skip("milvus-server is not installed (pip install 'cpcl[milvus-server]')")
    server = MilvusServer(tmp_path_factory.mktemp("milvus-server"), stop_timeout=10)
    server.start()
    yield server
    server.stop()


@pytest.fixture(params=["lite", "server"])
def milvus_uri(request, tmp_path) -> str:
    """Where a Milvus gallery lives: a Milvus Lite file, or the server (emptied of collections first)."""
    if request.param == "lite":
        return str(tmp_path / "gallery.db")
    from pymilvus import MilvusClient

    uri = request.getfixturevalue("milvus_server").uri
    client = MilvusClient(uri=uri, timeout=10)
    for name in client.list_collections():
        client.drop_collection(name)
    client.close()
    return uri
