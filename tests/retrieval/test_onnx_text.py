"""Queries encoded by the ONNX text tower (fp32 and int8) rank the gallery as PyTorch does."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cpcl.cli import main
from cpcl.model.export import export_onnx
from cpcl.retrieval.onnx_text import TextEncoderError
from cpcl.retrieval.retriever import load_retriever
from cpcl.retrieval.service import SearchService, build_index
from tests.retrieval.test_batching import QUERIES


@pytest.fixture(scope="module")
def exported(tiny_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx")
    export_onnx(tiny_checkpoint, out, int8=True)
    return out


@pytest.fixture(scope="module")
def index(gallery, tiny_checkpoint, tmp_path_factory):
    return build_index(load_retriever(tiny_checkpoint), gallery, tmp_path_factory.mktemp("idx") / "idx")


def test_onnx_query_encoder_equals_pytorch_and_int8_approximates_it(tiny_checkpoint, exported, index):
    torch_retriever = load_retriever(tiny_checkpoint)
    fp32 = load_retriever(tiny_checkpoint, text_encoder=exported / "text_encoder.onnx")
    int8 = load_retriever(tiny_checkpoint, text_encoder=exported / "text_encoder.int8.onnx")
    # batches mixing short and long captions: each row is cut at its own end token, whatever the batch
    for texts in (QUERIES[:1], QUERIES[:7], ["red", QUERIES[3] + " and a very long description " * 3]):
        expected = torch_retriever.encode_text(texts)
        np.testing.assert_allclose(fp32.encode_text(texts), expected, atol=1e-5)
        np.testing.assert_allclose(fp32.encode_text(texts, batch_size=2), expected, atol=1e-5)
        assert (int8.encode_text(texts) * expected).sum(axis=1).min() > 0.95
    k = 10
    _, exact = index.search(torch_retriever.encode_text(QUERIES), k)
    _, onnx = index.search(fp32.encode_text(QUERIES), k)
    _, quant = index.search(int8.encode_text(QUERIES), k)
    assert (onnx == exact).all()
    recall = np.mean([len(set(a) & set(b)) / k for a, b in zip(quant, exact, strict=True)])
    assert recall > 0.8, recall


def test_search_and_serve_take_the_text_encoder(tiny_checkpoint, exported, index, capsys):
    query = ["search", str(index.directory), QUERIES[0], "-k", "5", "--json"]
    assert main(query) == 0
    expected = json.loads(capsys.readouterr().out)["results"][0]["hits"]
    assert main([*query, "--text-encoder", str(exported / "text_encoder.onnx")]) == 0
    got = json.loads(capsys.readouterr().out)["results"][0]["hits"]
    assert [h["path"] for h in got] == [h["path"] for h in expected]
    service = SearchService.open(index.directory, text_encoder=exported / "text_encoder.int8.onnx",
                                 batch_window_ms=2)
    assert len(service.search(QUERIES[1], 3).hits) == 3
    service.close()


def test_a_text_encoder_of_another_model_or_without_its_manifest_is_refused(other_checkpoint, exported, index,
                                                                           tmp_path, capsys):
    with pytest.raises(TextEncoderError, match="was exported from model .* is model"):
        load_retriever(other_checkpoint, text_encoder=exported / "text_encoder.onnx")
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "text_encoder.onnx").write_bytes((exported / "text_encoder.onnx").read_bytes())
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "export.json").write_text((exported / "export.json").read_text())
    (garbage / "text_encoder.onnx").write_bytes(b"not a model")
    for path, needle in ((lone / "text_encoder.onnx", "export.json"),
                         (garbage / "text_encoder.onnx", "not a readable ONNX model"),
                         (tmp_path / "missing.onnx", "not found")):
        assert main(["search", str(index.directory), "a man", "--text-encoder", str(path)]) == 2
        err = capsys.readouterr().err
        assert needle in err and err.count("\n") == 1, err  # one sentence, no traceback
