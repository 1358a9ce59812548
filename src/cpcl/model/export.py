"""ONNX export of a checkpoint's two encoders, checked against PyTorch with onnxruntime.

``image_encoder.onnx``: ``images`` (B, 3, H, W) float32, normalised as ``export.json`` says ->
``features`` (B, D) unit rows. ``text_encoder.onnx``: ``tokens`` (B, L) int64 CLIP BPE ids, L ≤ the
context length -> ``features`` (B, D) unit rows. L is dynamic: pass all context positions, or — as
cpcl's own query encoder does, several times faster for short captions — the ids cut after the batch's
last end token (the causal mask makes both give the same features; tested). With ``int8``, also
``text_encoder.int8.onnx``: the same graph with its matrix weights dynamically quantized to 8 bits
(onnxruntime), a fast query encoder for search on a CPU. ``export.json`` records the model's
fingerprint, which the search commands check against the index's.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cpcl.io import atomic_write_text, claim_outputs, exclusive
from cpcl.model.checkpoint import load_checkpoint, model_fingerprint
from cpcl.model.retrieval_model import RetrievalModel, cut_after_last_end

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
    def __init__(self, model: RetrievalModel, context_length: int):
        super().__init__()
        self.model = model
        self.context_length = context_length

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.model.truncate_text:
            return self.model.encode_text_prefix(tokens)
        return F.normalize(self.model.clip.encode_text(tokens), dim=-1)

    def example(self, tokens: torch.Tensor) -> torch.Tensor:
        """Traced with a cut batch when the length is dynamic, with every position otherwise."""
        return cut_after_last_end(tokens) if self.model.truncate_text else tokens

    def dynamic_shapes(self) -> dict:
        if not self.model.truncate_text:
            return {0: torch.export.Dim("batch")}
        return {0: torch.export.Dim("batch"), 1: torch.export.Dim("length", min=2, max=self.context_length)}


def _export(module: nn.Module, example: torch.Tensor, path: Path, input_name: str, opset: int,
            dynamic: dict) -> None:
    """torch.export-based ONNX export with dynamic dimensions, into one file (weights inside)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with contextlib.redirect_stdout(io.StringIO()):  # the exporter prints its progress
        torch.onnx.export(module, (example,), str(tmp), input_names=[input_name], output_names=["features"],
                          dynamic_shapes=(dynamic,), opset_version=opset, dynamo=True,
                          external_data=False, verbose=False)
    written = _opset_of(tmp)
    if written != opset:
        tmp.unlink()
        raise ValueError(f"--opset {opset}: the exporter wrote opset {written} instead; choose an opset it writes "
                         "(18 or above)")
    tmp.replace(path)


def _opset_of(path: Path) -> int:
    """The default-domain opset an ONNX file was written with."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def _quantize_int8(source: Path, path: Path) -> None:
    """``source`` with its MatMul/Gemm weights as 8-bit integers (activations quantized at run time)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = path.with_name(f".{path.name}.tmp")
    logging.disable(logging.WARNING)  # the quantizer advises, on the root logger, a pre-processing for CNNs
    try:
        quantize_dynamic(str(source), str(tmp), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"])
    finally:
        logging.disable(logging.NOTSET)
    tmp.replace(path)


EXPORT_FILES = ("image_encoder.onnx", "text_encoder.onnx", "text_encoder.int8.onnx", "export.json")


def export_onnx(checkpoint: str | Path, out_dir: str | Path, opset: int = 18, seed: int = 0,
                overwrite: bool = False, int8: bool = False) -> dict:
    """Export both encoders to ``out_dir`` and compare them with PyTorch on random images and real captions.

    Returns the report also written to ``out_dir/export.json``: files, preprocessing, the model's
    fingerprint, and the maximum absolute difference of the embeddings for each encoder (batch sizes 1 and
    3, not the traced 2; the text encoder both cut and at full length). With ``int8`` also the quantized
    text encoder, whose report is the smallest cosine between its features and PyTorch's.
    ``out_dir`` must not hold an export already, unless ``overwrite``.
    """

    model, tokenizer, preprocess, config, _ = load_checkpoint(checkpoint, "cpu")  # a bad file fails first
    with exclusive(out_dir, "an ONNX export"):
        out = claim_outputs(out_dir, EXPORT_FILES, overwrite=overwrite, holds="an ONNX export",
                            instead="choose another --out")
        try:
            return _write_export(model, tokenizer, preprocess, config, str(checkpoint), out, opset, seed, int8)
        except BaseException:
            for name in EXPORT_FILES:  # every one of them this call wrote (claim_outputs removed the old ones)
                (out / name).unlink(missing_ok=True)
            raise


def _write_export(model, tokenizer, preprocess, config, checkpoint: str, out: Path, opset: int, seed: int,
                  int8: bool) -> dict:
    fingerprint = model_fingerprint(model, config.to_dict())  # of the model as loaded, like the index's
    model = model.float().eval()
    height, width = preprocess.image_size
    gen = torch.Generator().manual_seed(seed)
    image_encoder = ImageEncoder(model).eval()
    text_encoder = TextEncoder(model, config.model.context_length).eval()
    _export(image_encoder, torch.randn(2, 3, height, width, generator=gen), out / "image_encoder.onnx", "images",
            opset, {0: torch.export.Dim("batch")})
    _export(text_encoder, text_encoder.example(tokenizer(PARITY_SENTENCES[:2]).long()), out / "text_encoder.onnx",
            "tokens", opset, text_encoder.dynamic_shapes())
    files = {"image_encoder": "image_encoder.onnx", "text_encoder": "text_encoder.onnx"}
    if int8:
        _quantize_int8(out / "text_encoder.onnx", out / "text_encoder.int8.onnx")
        files["text_encoder_int8"] = "text_encoder.int8.onnx"

    texts = [tokenizer(PARITY_SENTENCES[:1]).long(), tokenizer(PARITY_SENTENCES[1:]).long()]
    texts += [text_encoder.example(t) for t in texts]
    checks = [("image_encoder", image_encoder, [torch.randn(n, 3, height, width, generator=gen) for n in (1, 3)]),
              ("text_encoder", model.encode_text, texts)]
    parity = {name: float(np.abs(got - expected).max()) for name, got, expected in _run_checks(out, checks)}
    if int8:
        parity["text_encoder_int8_min_cosine"] = min(
            float((got * expected).sum(axis=1).min()) for _, got, expected in
            _run_checks(out, [("text_encoder.int8", model.encode_text, texts)]))
    report = {"checkpoint": str(checkpoint), "fingerprint": fingerprint, "arch": config.model.arch,
              "embed_dim": model.embed_dim, "files": files,
              "image_input": {"shape": ["batch", 3, height, width], "mean": list(preprocess.mean),
                              "std": list(preprocess.std), "resize": f"{preprocess.resize} to (height, width)"},
              "text_input": {"shape": ["batch", "length"], "max_length": config.model.context_length,
                             "tokenizer": "open_clip SimpleTokenizer (CLIP BPE), int64 ids, end-of-text id is the "
                                          "row's maximum; the ids may be cut after the batch's last end token",
                             "dynamic_length": bool(model.truncate_text)},
              "opset": opset, "max_abs_diff_vs_pytorch": parity}
    atomic_write_text(out / "export.json", json.dumps(report, indent=2) + "\n")
    return report


def _run_checks(out: Path, checks) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``(file stem, PyTorch function, inputs)`` -> ``(stem, onnxruntime output, PyTorch output)`` per input."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    results = []
    for stem, function, inputs in checks:
        try:
            session = ort.InferenceSession(str(out / f"{stem}.onnx"), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # an opset newer than this onnxruntime, above all
            raise ValueError(f"onnxruntime {ort.__version__} cannot load the exported {stem}.onnx "
                             f"({str(exc).splitlines()[0][:300]}); choose an --opset it loads") from None
        input_name = session.get_inputs()[0].name
        for x in inputs:
            with torch.no_grad():
                expected = function(x).numpy()
            results.append((stem, session.run(None, {input_name: x.numpy()})[0], expected))
    return results
