"""A query encoder on ONNX Runtime: the text tower that ``cpcl export onnx`` wrote, for search on a CPU.

>>> retriever = load_retriever("best.pt", text_encoder="export/text_encoder.int8.onnx")

The graph takes token ids cut after the batch's last end token (a dynamic length), so a short caption
costs what its tokens cost. The export's ``export.json`` holds the fingerprint of the model it came from;
a retriever refuses a text encoder of another model, as an index does.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from cpcl.errors import CpclError


class TextEncoderError(CpclError, RuntimeError):
    """An ONNX text encoder that cannot be read, or does not belong to the model it is used with."""


class OnnxTextEncoder:
    """``tokens`` (B, L) int64 CLIP ids -> (B, D) float32 unit rows, on onnxruntime's CPU provider."""

    def __init__(self, path: str | Path, threads: int | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise TextEncoderError(f"text encoder {self.path} not found; write one with `cpcl export onnx "
                                   "--checkpoint best.pt --out DIR [--int8]` and pass DIR/text_encoder.onnx")
        manifest = self.path.parent / "export.json"
        try:
            export = json.loads(manifest.read_text())
            self.fingerprint = export["fingerprint"]
        except (OSError, ValueError, KeyError):
            raise TextEncoderError(f"{manifest} (written next to the encoder by `cpcl export onnx`) is missing, "
                                   "unreadable or has no model fingerprint; export the checkpoint again") from None
        self.dynamic_length = bool(export.get("text_input", {}).get("dynamic_length", False))
        try:
            import onnxruntime as ort
        except ImportError:
            raise TextEncoderError("an ONNX text encoder needs onnxruntime: pip install 'cpcl[onnx]'") from None
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for a bad file
            raise TextEncoderError(f"{self.path}: not a readable ONNX model ({str(exc).splitlines()[0]})") from None
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, tokens: np.ndarray) -> np.ndarray:
        tokens = np.asarray(tokens, dtype=np.int64)
        if self.dynamic_length:  # as cpcl.model.retrieval_model.cut_after_last_end (not imported: it loads torch)
            tokens = tokens[:, :int(tokens.argmax(axis=1).max()) + 1]
        return self.session.run(None, {self.input_name: np.ascontiguousarray(tokens)})[0].astype(np.float32)
