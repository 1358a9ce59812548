"""cpcl checkpoints: model weights with the resolved config (and so the preprocessing) inside.

Writes are atomic: a run killed mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import torch

from cpcl.config import Config, ModelConfig, config_from_dict
from cpcl.data.transforms import Preprocess
from cpcl.errors import CpclError
from cpcl.io import atomic_write_bytes, claim_output_file
from cpcl.model.backbone import build_clip, build_tokenizer
from cpcl.model.retrieval_model import RetrievalModel

CHECKPOINT_FORMAT = "cpcl-checkpoint"
CHECKPOINT_VERSION = 1


class CheckpointError(CpclError, RuntimeError):
    """A file is not a readable cpcl checkpoint, or does not fit the model it describes."""


def save_checkpoint(path: str | Path, model: RetrievalModel, config: Config, **extra: Any) -> None:
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "config": config.to_dict(),
               "model": {k: v.detach().cpu() for k, v in model.state_dict().items()}, **extra}
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write_bytes(path, buf.getvalue())


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    what = "a cpcl checkpoint is the best.pt or last.pt file that `cpcl train` writes"
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path} is not a checkpoint (not a PyTorch archive); {what}")
    try:
        # tensors and plain containers only: nothing in the file can run code
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # the loader's own text suggests unsafe loading: never pass it on
        raise CheckpointError(f"{path} is not a cpcl checkpoint (a damaged archive, or one that holds more than "
                              f"tensors); {what}") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a cpcl checkpoint (for raw CLIP weights use model.pretrained)")
    return payload


def build_model(model: ModelConfig, pretrained: str | None | bool = True) -> RetrievalModel:
    """The retrieval model ``model`` describes; ``pretrained=False`` skips loading its weights."""
    weights = model.pretrained if pretrained is True else (pretrained or None)
    return RetrievalModel(build_clip(model.arch, model.image_size, weights))


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu"):
    """Rebuild the model of a checkpoint -> ``(model, tokenizer, preprocess, config, payload)``."""
    payload = read_checkpoint(path)
    config = config_from_dict(payload["config"])
    model = build_model(config.model, pretrained=False)
    missing, unexpected = model.load_state_dict(payload["model"], strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not match {config.model.arch} "
                              f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
    model.to(device).eval()
    tokenizer = build_tokenizer(config.model.arch, config.model.context_length)
    return model, tokenizer, Preprocess.of(config.model), config, payload


def export_clip_weights(checkpoint: str | Path, out: str | Path, half: bool = True, overwrite: bool = False) -> Path:
    """Write a checkpoint's CLIP weights as a plain open_clip state dict (fp16 by default); an existing
    ``out`` is replaced only with ``overwrite``."""
    claim_output_file(out, overwrite=overwrite, holds="a weights file")
    payload = read_checkpoint(checkpoint)
    state = {k.removeprefix("clip."): (v.half() if half and v.is_floating_point() else v)
             for k, v in payload["model"].items()}
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(out, buf.getvalue())
    return Path(out)


def model_fingerprint(model: torch.nn.Module, config_dict: dict) -> str:
    """A short hash of the weights and of everything that shapes an embedding (arch, input size, context).

    Two checkpoints with the same fingerprint produce the same embeddings; an index stores the fingerprint
    of the model that built it and refuses any other.
    """
    h = hashlib.sha256()
    model_cfg = config_dict.get("model", {})
    shape = {k: model_cfg.get(k) for k in ("arch", "image_size", "context_length")}
    h.update(json.dumps(shape, sort_keys=True).encode())
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]
