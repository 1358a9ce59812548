import numpy as np
import pytest
import torch
from PIL import Image

import cpcl
from cpcl.data.formats import load_annotations
from cpcl.evaluation.evaluate import EvalSplit
from cpcl.model.checkpoint import load_checkpoint
from cpcl.model.encode import encode_images, encode_texts
from cpcl.retrieval.retriever import UnreadableImageError, load_retriever


def test_encode_api_equals_the_evaluation_path(tiny_synth, tiny_checkpoint):
    retriever = cpcl.load_retriever(tiny_checkpoint, device="cpu")
    model, tokenizer, preprocess, _, _ = load_checkpoint(tiny_checkpoint)
    split = EvalSplit(load_annotations("cuhk-pedes", tiny_synth).split("test"), tokenizer, preprocess)

    images = retriever.encode_images(split.images.store.paths)
    texts = retriever.encode_text(split.captions)
    reference_images = encode_images(model, split.images, torch.device("cpu"))
    reference_texts = encode_texts(model, split.tokens, torch.device("cpu"))

    assert isinstance(images, np.ndarray) and images.dtype == np.float32
    assert images.shape == (len(split.images), retriever.embed_dim)
    np.testing.assert_allclose(images, reference_images.numpy(), atol=1e-6)
    np.testing.assert_allclose(texts, reference_texts.numpy(), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(images, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(texts, axis=1), 1, atol=1e-5)


def test_batching_and_input_kind_do_not_change_results(gallery, tiny_checkpoint):
    retriever = load_retriever(tiny_checkpoint)
    paths = gallery[:7]
    one = retriever.encode_images(paths, batch_size=1)
    three = retriever.encode_images(paths, batch_size=3)
    pil = retriever.encode_images([Image.open(p) for p in paths], batch_size=64)
    np.testing.assert_allclose(one, three, atol=1e-5)
    np.testing.assert_allclose(one, pil, atol=1e-5)

    captions = ["a man in a red jacket", "a woman with a long blue skirt and a white handbag, black shoes", "hat"]
    np.testing.assert_allclose(retriever.encode_text(captions, batch_size=1),
                               retriever.encode_text(captions, batch_size=64), atol=1e-5)
    assert retriever.encode_text([]).shape == (0, retriever.embed_dim)


def test_bad_inputs_are_named(gallery, tiny_checkpoint, tmp_path):
    retriever = load_retriever(tiny_checkpoint)
    with pytest.raises(TypeError, match="list of strings"):
        retriever.encode_text("a man")
    with pytest.raises(TypeError, match="takes a list"):
        retriever.encode_images(gallery[0])
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    with pytest.raises(OSError, match="broken.png"):
        retriever.encode_images([gallery[0], broken])


def test_unreadable_files_are_left_out_and_named_by_position(gallery, tiny_checkpoint, tmp_path):
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(gallery[1].read_bytes()[:200])
    text = tmp_path / "text.png"
    text.write_text("not an image")
    with Image.open(gallery[3]) as im:
        pil = im.copy()
    inputs = [gallery[0], truncated, gallery[2], pil, text, gallery[4]]
    for workers in (0, 2):  # in worker processes too: one error naming the file, not a worker's traceback
        retriever = load_retriever(tiny_checkpoint, num_workers=workers)
        with pytest.raises(UnreadableImageError, match=r"^cannot read image .*truncated.png: "):
            retriever.encode_images(inputs[:3], batch_size=2)
        unreadable: list[int] = []
        kept = retriever.encode_images(inputs, batch_size=2, unreadable=unreadable)
        assert unreadable == [1, 4]
        expected = retriever.encode_images([gallery[0], gallery[2], pil, gallery[4]], batch_size=2)
        np.testing.assert_allclose(kept, expected, atol=1e-6)


def test_fingerprint_identifies_the_weights(tiny_checkpoint, other_checkpoint):
    a, b = load_retriever(tiny_checkpoint), load_retriever(tiny_checkpoint)
    assert a.fingerprint == b.fingerprint
    assert load_retriever(other_checkpoint).fingerprint != a.fingerprint
    with torch.no_grad():
        b.model.clip.logit_scale.add_(1e-3)
    b._fingerprint = None
    assert b.fingerprint != a.fingerprint
