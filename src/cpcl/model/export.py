"""ONNX export of a checkpoint's two encoders, checked against PyTorch with onnxruntime.

``image_encoder.onnx``: ``images`` (B, 3, H, W) float32, normalised as ``export.json`` says ->
``features`` (B, D) unit rows. ``text_encoder.onnx``: ``tokens`` (B, context_length) int64 CLIP BPE ids
-> ``features`` (B, D) unit rows. The text graph runs every context position (the truncation of the
PyTorch model depends on the data and cannot be traced); its output is the same (tested).
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cpcl.io import atomic_write_text, claim_outputs
from cpcl.model.checkpoint import load_checkpoint
from cpcl.model.retrieval_model import RetrievalModel

PARITY_SENTENCES = ["a man in a black jacket and blue jeans",
                    "The woman wears a long red coat, black boots and carries a white handbag on her left arm.",
                    "child, yellow t-shirt", "an older man with grey hair in a beige coat walking with a cane"]


class ImageEncoder(nn.Module):
    def __init__(self, model: RetrievalModel):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(images)


class TextEncoder(nn.Module):
    def __init__(self, model: RetrievalModel):
        super().__init__()
        self.clip = model.clip

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.clip.encode_text(tokens), dim=-1)


def _export(module: nn.Module, example: torch.Tensor, path: Path, input_name: str, opset: int) -> None:
    """torch.export-based ONNX export with a dynamic batch dimension, into one file (weights inside)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with contextlib.redirect_stdout(io.StringIO()):  # the exporter prints its progress
        torch.onnx.export(module, (example,), str(tmp), input_names=[input_name], output_names=["features"],
                          dynamic_shapes=({0: torch.export.Dim("batch")},), opset_version=opset, dynamo=True,
                          external_data=False, verbose=False)
    tmp.replace(path)


EXPORT_FILES = ("image_encoder.onnx", "text_encoder.onnx", "export.json")


def export_onnx(checkpoint: str | Path, out_dir: str | Path, opset: int = 18, seed: int = 0,
                overwrite: bool = False) -> dict:
    """Export both encoders to ``out_dir`` and compare them with PyTorch on random images and real captions.

    Returns the report also written to ``out_dir/export.json``: files, preprocessing, and the maximum
    absolute difference of the embeddings for each encoder (batch sizes 1 and 3, not the traced 2).
    ``out_dir`` must not hold an export already, unless ``overwrite``.
    """
    import onnxruntime as ort

    model, tokenizer, preprocess, config, _ = load_checkpoint(checkpoint, "cpu")  # a bad file fails first
    out = claim_outputs(out_dir, EXPORT_FILES, overwrite=overwrite, holds="an ONNX export",
                        instead="choose another --out")
    model = model.float().eval()
    height, width = preprocess.image_size
    gen = torch.Generator().manual_seed(seed)
    image_encoder, text_encoder = ImageEncoder(model).eval(), TextEncoder(model).eval()
    _export(image_encoder, torch.randn(2, 3, height, width, generator=gen), out / "image_encoder.onnx", "images",
            opset)
    _export(text_encoder, tokenizer(PARITY_SENTENCES[:2]).long(), out / "text_encoder.onnx", "tokens", opset)

    parity = {}
    options = ort.SessionOptions()
    options.log_severity_level = 3
    for name, module, inputs in (
        ("image_encoder", image_encoder, [torch.randn(n, 3, height, width, generator=gen) for n in (1, 3)]),
        ("text_encoder", text_encoder, [tokenizer(PARITY_SENTENCES[:1]).long(),
                                        tokenizer(PARITY_SENTENCES[1:]).long()]),
    ):
        session = ort.InferenceSession(str(out / f"{name}.onnx"), options, providers=["CPUExecutionProvider"])
        input_name = session.get_inputs()[0].name
        diffs = []
        for x in inputs:
            with torch.no_grad():
                expected = module(x).numpy()
            got = session.run(None, {input_name: x.numpy()})[0]
            diffs.append(float(np.abs(got - expected).max()))
        parity[name] = max(diffs)
    # the traced text graph (all positions) also equals the truncated text tower used for search
    tokens = tokenizer(PARITY_SENTENCES).long()
    with torch.no_grad():
        parity["text_truncation"] = float((text_encoder(tokens) - model.encode_text(tokens)).abs().max())
    report = {"checkpoint": str(checkpoint), "arch": config.model.arch, "embed_dim": model.embed_dim,
              "files": {"image_encoder": "image_encoder.onnx", "text_encoder": "text_encoder.onnx"},
              "image_input": {"shape": ["batch", 3, height, width], "mean": list(preprocess.mean),
                              "std": list(preprocess.std), "resize": "bicubic to (height, width)"},
              "text_input": {"shape": ["batch", config.model.context_length], "tokenizer": "open_clip SimpleTokenizer "
                             "(CLIP BPE), int64 ids, end-of-text id is the row's maximum"},
              "opset": opset, "max_abs_diff_vs_pytorch": parity}
    atomic_write_text(out / "export.json", json.dumps(report, indent=2) + "\n")
    return report
