"""The Milvus backend, against Milvus Lite (the real engine, embedded) and a real Milvus 2.3 standalone server
started on this machine (``milvus_uri``: both; no mock)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient

from cpcl.cli import main
from cpcl.retrieval.http import build_app
from cpcl.retrieval.index import ModelMismatchError
from cpcl.retrieval.milvus import MilvusGallery
from cpcl.retrieval.retriever import load_retriever
from cpcl.retrieval.service import SearchService, add_images, build_index
from tests.retrieval.test_batching import QUERIES

pytest.importorskip("milvus_lite")


@pytest.fixture(scope="module")
def retriever(tiny_checkpoint):
    return load_retriever(tiny_checkpoint)


def _search_json(capsys, *args):
    assert main(["search", *args, "-k", "10", "--json"]) == 0
    return json.loads(capsys.readouterr().out)["results"]


def test_cli_build_info_search_serve_as_the_exact_file_index(gallery, tiny_checkpoint, tmp_path, capsys, caplog,
                                                              milvus_uri):
    db = milvus_uri
    root = str(gallery[0].parents[1])
    files = ["index", "build", "--checkpoint", str(tiny_checkpoint), "--images", root, "--workers", "0"]
    assert main([*files, "--out", str(tmp_path / "idx")]) == 0
    assert main([*files, "--out", "people", "--backend", "milvus", "--uri", db]) == 0
    # Milvus Lite's embedded server logs a traceback for each method pymilvus probes and it lacks: filtered
    assert not [r for r in caplog.records if r.name.startswith("grpc") and r.exc_info], caplog.text[-500:]
    assert main(["index", "info", "people", "--backend", "milvus", "--uri", db]) == 0
    info = capsys.readouterr().out
    count = len(list(gallery[0].parents[1].rglob("*.png")))
    assert f"Milvus collection people at {db}: {count} images" in info
    exact = _search_json(capsys, str(tmp_path / "idx"), *QUERIES[:3])
    milvus = _search_json(capsys, "people", "--backend", "milvus", "--uri", db, *QUERIES[:3])
    for a, b in zip(exact, milvus, strict=True):  # recall@10 = 1 and the same order and scores
        assert [h["path"] for h in a["hits"]] == [h["path"] for h in b["hits"]]
        np.testing.assert_allclose([h["score"] for h in a["hits"]], [h["score"] for h in b["hits"]], atol=1e-5)
    assert main([*files, "--out", "people", "--backend", "milvus", "--uri", db]) == 2  # not over a collection
    assert "--overwrite" in capsys.readouterr().err

    service = SearchService.open("people", uri=db, batch_window_ms=2)
    http = TestClient(build_app(service))
    body = http.get("/api/search", params={"q": QUERIES[0], "k": 3}).json()
    assert [h["path"] for h in body["hits"]] == [h["path"] for h in exact[0]["hits"][:3]]
    image = http.get(body["hits"][0]["url"])
    assert image.status_code == 200 and image.content == (gallery[0].parents[1] / body["hits"][0]["path"]).read_bytes()
    assert http.get("/images/not/indexed.png").status_code == 404
    service.close()


# the child: build a 3-image collection, then add the rest 4 at a time and stall in the third chunk's encoding
_ADD_THEN_STALL = """
import sys, time
from pathlib import Path
from cpcl.retrieval.retriever import load_retriever
from cpcl.retrieval.service import add_images, build_index
checkpoint, db, marker, root, *images = sys.argv[1:]
retriever = load_retriever(checkpoint)
index = build_index(retriever, [Path(p) for p in images[:3]], "g", root=root, uri=db)
real, calls = retriever.encode_images, []
def stalls_in_the_third_chunk(part, **kwargs):
    calls.append(len(part))
    if len(calls) == 3:
        Path(marker).write_text("encoding the third chunk")
        time.sleep(600)
    return real(part, **kwargs)
retriever.encode_images = stalls_in_the_third_chunk
add_images(retriever, index, [Path(p) for p in images], chunk=4)
"""


def test_add_is_idempotent_and_an_add_killed_mid_way_completes_without_duplicates(gallery, retriever,
                                                                                   tiny_checkpoint, tmp_path,
                                                                                   milvus_uri):
    db, marker = milvus_uri, tmp_path / "stalled"
    root = gallery[0].parents[1]
    child = subprocess.Popen([sys.executable, "-c", _ADD_THEN_STALL, str(tiny_checkpoint), db, str(marker),
                              str(root), *map(str, gallery)])
    deadline = time.monotonic() + 120
    while not marker.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert marker.exists(), f"the child never reached its third chunk (exit status {child.poll()})"
    child.send_signal(signal.SIGKILL)  # no handler, no flush, no close: what a killed `cpcl index add` leaves
    assert child.wait(timeout=30) == -signal.SIGKILL
    reopened = MilvusGallery.load(db, "g")
    assert len(reopened) == 3 + 8  # the two finished chunks were kept
    added, skipped = add_images(retriever, reopened, gallery, chunk=4)
    assert (added, skipped) == (len(gallery) - 11, 11)
    assert add_images(retriever, reopened, gallery) == (0, len(gallery))
    rows = reopened.client.query("g", filter="", output_fields=["path", "item"], limit=1000)
    assert len(rows) == len(gallery) == len({r["path"] for r in rows}) == len({r["item"] for r in rows})
    expected = retriever.encode_images(gallery[:1])
    hit = reopened.search_hits(expected, 1)[0][0]
    assert hit.path == gallery[0].relative_to(root).as_posix() and hit.score == pytest.approx(1.0, abs=1e-5)


def test_another_model_is_refused_and_a_folder_outside_the_root_names_the_command(gallery, retriever,
                                                                                   other_checkpoint, tmp_path,
                                                                                   milvus_uri, capsys):
    import shutil

    from cpcl.retrieval.index import GalleryIndexError

    crops, later = tmp_path / "crops", tmp_path / "later"
    for folder, part in ((crops, gallery[:4]), (later, gallery[4:6])):
        folder.mkdir()
        for p in part:
            shutil.copy(p, folder / p.name)
    index = build_index(retriever, crops, "g", uri=milvus_uri)
    with pytest.raises(ModelMismatchError, match="Milvus collection g at .* was built with model"):
        SearchService.open("g", checkpoint=other_checkpoint, uri=milvus_uri)
    # a collection keeps its root: the way to hold both folders, said exactly, and nothing written
    with pytest.raises(GalleryIndexError, match=rf"keeps its root .* `cpcl index build --root {tmp_path.resolve()} "):
        add_images(retriever, index, later)
    assert len(MilvusGallery.load(milvus_uri, "g")) == 4


def test_unreachable_or_wrong_uris_are_one_sentence(gallery, retriever, tmp_path, capsys):
    db = str(tmp_path / "g.db")
    build_index(retriever, gallery[:4], "g", uri=db)
    for args, needle in (
        (["g", "--backend", "milvus", "--uri", "http://127.0.0.1:1"], "cannot reach Milvus at http://127.0.0.1:1"),
        (["nope", "--backend", "milvus", "--uri", db], "has no collection nope (it has: g)"),
        (["g", "--backend", "milvus", "--uri", str(tmp_path / "g.txt")], "a file ending in .db"),
        (["g", "--backend", "milvus"], "--backend milvus needs --uri"),
        (["g", "--uri", db], "is for --backend milvus"),
    ):
        assert main(["search", *args, "a man in red"]) == 2
        err = capsys.readouterr().err
        assert needle in err and err.count("\n") == 1, err
