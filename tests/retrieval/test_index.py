import json

import numpy as np
import pytest

from cpcl.retrieval import index as index_module
from cpcl.retrieval.index import GalleryIndex, GalleryIndexError, ModelMismatchError, exact_top_k, list_images
from cpcl.retrieval.retriever import load_retriever
from cpcl.retrieval.service import add_images, build_index

MODEL = {"fingerprint": "abc", "checkpoint": "/nowhere/best.pt", "arch": "test", "embed_dim": 16}


def _unit(rng, n, d=16):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _files(root, n, sub=""):
    (root / sub).mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = root / sub / f"img{i:03d}.png"
        p.write_bytes(b"")
        paths.append(p)
    return paths


def _brute_force(gallery, queries, k):
    scores = queries @ gallery.T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), order


def test_exact_search_equals_brute_force_top_k(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    gallery, queries = _unit(rng, 103), _unit(rng, 9)
    paths = _files(tmp_path / "g", 103)
    index = GalleryIndex.create(tmp_path / "idx", tmp_path / "g", gallery, paths, MODEL)
    scores, items = index.search(queries, 10)
    ref_scores, ref_items = _brute_force(gallery, queries, 10)
    np.testing.assert_array_equal(items, ref_items)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-6)
    # gallery chunks smaller than k and than the gallery give the same answer
    monkeypatch.setattr(index_module, "_EXACT_CHUNK", 7)
    chunked_scores, chunked_items = exact_top_k(gallery, queries, 10)
    np.testing.assert_array_equal(chunked_items, ref_items)
    # k larger than the gallery returns the whole gallery, ranked
    assert index.search(queries[:1], 500)[1].shape == (1, 103)
    hits = index.hits(scores[0], items[0])
    assert [h.rank for h in hits] == list(range(1, 11)) and hits[0].path == paths[items[0, 0]].name


def test_save_load_add_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    root = tmp_path / "g"
    first, second = _files(root, 20, "a"), _files(root, 15, "b")
    emb = _unit(rng, 35)
    index = GalleryIndex.create(tmp_path / "idx", root, emb[:20], first, MODEL)
    # re-adding indexed images is a no-op; new ones are appended in order
    assert index.add(emb[:5], first[:5]) == 0
    assert index.add(emb[20:], second) == 15
    loaded = GalleryIndex.load(tmp_path / "idx")
    assert len(loaded) == 35 and loaded.paths[0] == "a/img000.png" and loaded.paths[20] == "b/img000.png"
    np.testing.assert_array_equal(loaded.embeddings, emb)
    assert loaded.item_of("b/img003.png") == 23 and loaded.item_of("../b/img003.png") is None
    np.testing.assert_array_equal(loaded.search(emb[:3], 5)[1], _brute_force(emb, emb[:3], 5)[1])
    # only the current generation's files remain
    assert sorted(p.name for p in (tmp_path / "idx").iterdir()) == ["embeddings.1.npy", "index.json", "paths.1.txt"]
    with pytest.raises(GalleryIndexError, match="outside the index root"):
        loaded.add(_unit(rng, 1), _files(tmp_path / "elsewhere", 1))
    with pytest.raises(GalleryIndexError, match="already holds an index"):
        GalleryIndex.create(tmp_path / "idx", root, emb[:20], first, MODEL)


def test_interrupted_add_leaves_the_previous_index(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    root = tmp_path / "g"
    paths = _files(root, 12)
    index = GalleryIndex.create(tmp_path / "idx", root, _unit(rng, 10), paths[:10], MODEL)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(index_module, "atomic_write_text", killed)
    with pytest.raises(KeyboardInterrupt):
        index.add(_unit(rng, 2), paths[10:])
    assert len(GalleryIndex.load(tmp_path / "idx")) == 10


def test_corrupt_or_foreign_directories_are_refused(tmp_path):
    with pytest.raises(GalleryIndexError, match="not an index"):
        GalleryIndex.load(tmp_path)
    (tmp_path / "index.json").write_text("{")
    with pytest.raises(GalleryIndexError, match="not valid JSON"):
        GalleryIndex.load(tmp_path)
    (tmp_path / "index.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(GalleryIndexError, match="manifest"):
        GalleryIndex.load(tmp_path)


@pytest.mark.parametrize("kind", ["ivf", "ivf-sq8"])
def test_approximate_index_probing_every_list_is_exact(tmp_path, kind):
    rng = np.random.default_rng(3)
    gallery, queries = _unit(rng, 400), _unit(rng, 5)
    index = GalleryIndex.create(tmp_path / "idx", tmp_path / "g", gallery, _files(tmp_path / "g", 400), MODEL,
                                kind=kind, nlist=8)
    ref = _brute_force(gallery, queries, 10)[1]
    items = index.search(queries, 10, nprobe=8)[1]
    if kind == "ivf":
        np.testing.assert_array_equal(items, ref)
    else:  # 8-bit codes: the same neighbours, a few may swap
        assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(items, ref, strict=True)]) >= 0.9
    loaded = GalleryIndex.load(tmp_path / "idx")
    np.testing.assert_array_equal(loaded.search(queries, 10, nprobe=8)[1], items)
    loaded.add(_unit(rng, 3), _files(tmp_path / "g", 403)[400:])
    assert GalleryIndex.load(tmp_path / "idx")._faiss.ntotal == 403


def test_list_images_from_folder_and_list_file(tmp_path):
    root = tmp_path / "crops"
    a = _files(root, 3, "cam1")
    _files(root, 2, "cam2/sub")
    (root / "notes.txt").write_text("x")
    found_root, found = list_images(root)
    assert found_root == root.resolve() and len(found) == 5 and found[0] == a[0].resolve()
    listing = tmp_path / "list.txt"
    listing.write_text("# gallery\ncrops/cam1/img000.png\n\ncrops/cam2/sub/img001.png\n")
    list_root, listed = list_images(listing)
    assert list_root == root.resolve() and [p.name for p in listed] == ["img000.png", "img001.png"]
    listing.write_text("crops/cam1/img000.png\ncrops/missing.png\n")
    with pytest.raises(GalleryIndexError, match="line 2: crops/missing.png"):
        list_images(listing)
    (tmp_path / "empty").mkdir()
    with pytest.raises(GalleryIndexError, match="no image files"):
        list_images(tmp_path / "empty")


def test_build_add_and_model_check_with_a_real_model(gallery, tiny_checkpoint, other_checkpoint, tmp_path):
    retriever = load_retriever(tiny_checkpoint)
    index = build_index(retriever, gallery[:10], tmp_path / "idx")
    assert len(index) == 10 and index.fingerprint == retriever.fingerprint
    added, skipped = add_images(retriever, index, gallery)
    assert (added, skipped) == (len(gallery) - 10, 10)
    loaded = GalleryIndex.load(tmp_path / "idx")
    np.testing.assert_allclose(loaded.embeddings, retriever.encode_images(gallery), atol=1e-6)
    with pytest.raises(ModelMismatchError, match="not comparable"):
        add_images(load_retriever(other_checkpoint), loaded, gallery)
