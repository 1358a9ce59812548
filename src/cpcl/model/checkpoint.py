"""cpcl checkpoints: model weights with the resolved config (and so the preprocessing) inside.

Writes are atomic: a run killed mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
from pathlib import Path
from typing import Any

import torch

from cpcl.config import Config, ModelConfig, config_from_dict
from cpcl.errors import CpclError
from cpcl.io import atomic_write_bytes, check_archive, claim_output_file
from cpcl.model.backbone import (
    WEIGHTS_RECORD,
    build_clip,
    build_tokenizer,
    recorded_quick_gelu,
    uses_quick_gelu,
    weights_record,
)
from cpcl.model.preprocess import Preprocess
from cpcl.model.retrieval_model import RetrievalModel

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "cpcl-checkpoint"
CHECKPOINT_VERSION = 1


class CheckpointError(CpclError, RuntimeError):
    """A file is not a readable cpcl checkpoint, or does not fit the model it describes."""


def save_checkpoint(path: str | Path, model: RetrievalModel, config: Config, **extra: Any) -> None:
    """Write ``model``'s weights with ``config`` (its activation recorded from ``model``) atomically."""
    config = resolve_activation(config, model)
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
    if not check_archive(path, "a checkpoint"):  # a damaged or cut archive is said so, naming the file
        raise CheckpointError(f"{path} is not a checkpoint (not a PyTorch archive); {what}")
    try:
        # tensors and plain containers only: nothing in the file can run code
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # the loader's own text suggests unsafe loading: never pass it on
        raise CheckpointError(f"{path} is not a cpcl checkpoint (a damaged archive, or one that holds more than "
                              f"tensors); {what}") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a cpcl checkpoint (for raw CLIP weights use model.pretrained)")
    missing = [key for key in ("model", "config") if not isinstance(payload.get(key), dict)]
    if missing:
        raise CheckpointError(f"{path}: a cpcl checkpoint without its {' and '.join(missing)} entry (written by "
                              f"something else, or edited); {what}")
    return payload


def build_model(model: ModelConfig, pretrained: str | None | bool = True) -> RetrievalModel:
    """The retrieval model ``model`` describes; ``pretrained=False`` skips loading its weights.

    The activation is ``model.quick_gelu``; where that is None, the one ``model.pretrained`` was trained with
    (:func:`~cpcl.model.backbone.weights_quick_gelu`), also when the weights are not loaded."""
    weights = model.pretrained if pretrained is True else (pretrained or None)
    quick_gelu = model.quick_gelu
    if quick_gelu is None and not weights:
        quick_gelu = recorded_quick_gelu(dataclasses.asdict(model))[0]
    record = weights_record(weights) if weights else None
    if record and record.get("resize", model.resize) != model.resize:
        log.warning("%s was trained with images resized %s, and this model resizes %s (model.resize): set "
                    "model.resize=%s to preprocess as its training did", weights, record["resize"], model.resize,
                    record["resize"])
    return RetrievalModel(build_clip(model.arch, model.image_size, weights, quick_gelu=quick_gelu))


def resolve_activation(config: Config, model: RetrievalModel) -> Config:
    """``config`` with ``model.quick_gelu`` set to the activation ``model`` was built with (what a run records)."""
    model_cfg = dataclasses.replace(config.model, quick_gelu=uses_quick_gelu(model.clip))
    return dataclasses.replace(config, model=model_cfg)


_told_unrecorded: set[str] = set()


def checkpoint_config(payload: dict[str, Any], path: str | Path) -> Config:
    """The config of a checkpoint, with the activation its model was trained with.

    A checkpoint written before cpcl recorded ``model.quick_gelu`` gets it from the weights spec in its
    config (said once per file); where that spec no longer makes it certain, GELU, with a warning."""
    config = config_from_dict(payload["config"])
    if config.model.quick_gelu is not None:
        return config
    quick_gelu, certain = recorded_quick_gelu(payload["config"].get("model", {}))
    name = "QuickGELU" if quick_gelu else "GELU"
    if str(path) not in _told_unrecorded:
        _told_unrecorded.add(str(path))
        if certain:
            log.info("%s was written before cpcl recorded the activation: %s, from its weights spec "
                     "(model.pretrained=%s)", path, name, config.model.pretrained)
        else:
            log.warning("%s was written before cpcl recorded the activation, and its weights file %s is not on "
                        "disk to tell: assuming GELU (if it was trained from OpenAI's archive, put that file back "
                        "at that path)", path, config.model.pretrained)
    return dataclasses.replace(config, model=dataclasses.replace(config.model, quick_gelu=quick_gelu))


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu"):
    """Rebuild the model of a checkpoint -> ``(model, tokenizer, preprocess, config, payload)``.

    The model is the network that was trained: architecture, input size and activation from the
    checkpoint's config (:func:`checkpoint_config`)."""
    payload = read_checkpoint(path)
    config = checkpoint_config(payload, path)
    model = build_model(config.model, pretrained=False)
    missing, unexpected = model.load_state_dict(payload["model"], strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not match {config.model.arch} "
                              f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
    model.to(device).eval()
    tokenizer = build_tokenizer(config.model.arch, config.model.context_length)
    return model, tokenizer, Preprocess.of(config.model), config, payload


def export_clip_weights(checkpoint: str | Path, out: str | Path, half: bool = True, overwrite: bool = False) -> Path:
    """Write a checkpoint's CLIP weights as an open_clip checkpoint (fp16 by default): ``{"state_dict": weights,
    "cpcl_weights": record}``, which ``open_clip.load_checkpoint`` reads as it is, and whose record — the
    architecture, input size, activation and resize the network was trained with — makes a run started from
    the file (``model.pretrained``) build the same network (:func:`~cpcl.model.backbone.weights_quick_gelu`).
    An existing ``out`` is replaced only with ``overwrite``."""
    claim_output_file(out, overwrite=overwrite, holds="a weights file")
    payload = read_checkpoint(checkpoint)
    model_cfg = checkpoint_config(payload, checkpoint).model
    state = {k.removeprefix("clip."): (v.half() if half and v.is_floating_point() else v)
             for k, v in payload["model"].items()}
    record = {"arch": model_cfg.arch, "image_size": list(model_cfg.image_size), "quick_gelu": model_cfg.quick_gelu,
              "resize": model_cfg.resize, "context_length": model_cfg.context_length, "from": str(checkpoint)}
    buf = io.BytesIO()
    torch.save({"state_dict": state, WEIGHTS_RECORD: record}, buf)
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
    # what else shapes an embedding, named only where it differs from what every earlier model had (so the
    # fingerprints of those, and the indexes that store them, stay as they were)
    shape.update({k: model_cfg[k] for k, usual in (("quick_gelu", False), ("resize", "bicubic"))
                  if model_cfg.get(k, usual) not in (usual, None)})
    h.update(json.dumps(shape, sort_keys=True).encode())
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]
