"""The one funnel through which CLIP models are built and weights are loaded.

Architectures come from open_clip (``ViT-B-16`` ...) or from the small configs shipped in
``cpcl/model/archs``. Weights come from one of:

- ``None``: random initialisation;
- an open_clip pretrained tag (``openai``, ``laion2b_s34b_b88k`` ...), fetched by open_clip into its cache;
- ``cpcl:<name>``: a checkpoint shipped inside this package (the SynthPedes-pretrained small CLIPs);
- a local file: OpenAI's TorchScript archive as distributed (``ViT-B-16.pt``), an open_clip state dict
  (``.pt``/``.bin``/``.safetensors``), or a cpcl checkpoint.

Non-square inputs (384x128) resize the visual position grid bilinearly, keeping the class position.
Every key that does not fit is reported: a mismatch raises :class:`WeightsError` instead of silently
training a half-random model.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
import zipfile
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from torch import nn

from cpcl.errors import CpclError
from cpcl.io import check_archive

log = logging.getLogger(__name__)

ARCH_DIR = Path(__file__).parent / "archs"
ASSET_DIR = Path(__file__).resolve().parents[1] / "assets"
BUILTIN_WEIGHTS = {
    "synthclip-tiny": ("cpcl-vit-tiny", ASSET_DIR / "synthclip_tiny.pt"),
}
_JIT_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")
# the key of the record `cpcl export weights` writes beside the state dict: how the network was built
WEIGHTS_RECORD = "cpcl_weights"

_archs_registered = False


class WeightsError(CpclError, RuntimeError):
    """Weights could not be loaded into the requested architecture."""


def _register_archs() -> None:
    global _archs_registered
    if not _archs_registered:
        open_clip.add_model_config(ARCH_DIR)
        _archs_registered = True


def list_archs() -> list[str]:
    _register_archs()
    return open_clip.list_models()


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(n.endswith("constants.pkl") or "/code/" in n for n in zf.namelist())


def read_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], bool]:
    """Read weights from a file; returns the CLIP state dict and whether it was an OpenAI JIT archive."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    unreadable = WeightsError(f"{path} is not a weights file cpcl can read: expected OpenAI's CLIP archive, an "
                              "open_clip state dict (.pt, .bin, .safetensors) or a cpcl checkpoint")
    if path.suffix != ".safetensors":
        check_archive(path, "a weights archive")  # cut or damaged: said so, not "not a weights file"
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu"), False
        if _is_torchscript(path):
            with warnings.catch_warnings():  # TorchScript is deprecated, but it is how OpenAI ships CLIP
                warnings.simplefilter("ignore", FutureWarning)
                archive = torch.jit.load(str(path), map_location="cpu")
            state = {k: v for k, v in archive.state_dict().items() if k not in _JIT_EXTRA_KEYS}
            return state, True
        # tensors and plain containers only: nothing in the file can run code
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # the loaders' own text suggests unsafe loading or shows internals: never pass it on
        raise unreadable from None
    if isinstance(obj, dict) and "model" in obj and "config" in obj:  # a cpcl checkpoint
        obj = {k.removeprefix("clip."): v for k, v in obj["model"].items()}
    elif isinstance(obj, dict) and "state_dict" in obj:
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: expected a state dict of tensors")
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj, False


def resize_visual_pos_embed(pos: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Resize a ``(1 + h*w, D)`` position table to ``grid`` (bilinear), keeping the class position.

    The source grid must be square (as every CLIP checkpoint's is) or already equal to ``grid``.
    """
    n = pos.shape[0] - 1
    if n == grid[0] * grid[1]:
        return pos
    side = int(round(n**0.5))
    if side * side != n:
        raise WeightsError(f"cannot resize a non-square position grid of {n} patches to {grid}")
    cls_pos, grid_pos = pos[:1], pos[1:]
    grid_pos = grid_pos.reshape(1, side, side, -1).permute(0, 3, 1, 2).float()
    grid_pos = F.interpolate(grid_pos, size=grid, mode="bilinear", align_corners=False)
    grid_pos = grid_pos.permute(0, 2, 3, 1).reshape(grid[0] * grid[1], -1).to(pos.dtype)
    return torch.cat([cls_pos, grid_pos], dim=0)


def _names_a_file(pretrained: str) -> bool:
    """Whether a weights spec is a path (it exists, or has a folder or a suffix) rather than a tag."""
    return Path(pretrained).expanduser().exists() or any(sep in pretrained for sep in "/\\") \
        or bool(Path(pretrained).suffix)


def _resolve_weights(arch: str, pretrained: str) -> tuple[Path, str]:
    """Map a weights spec to a local file and the architecture it belongs to."""
    if pretrained.startswith("cpcl:"):
        name = pretrained.removeprefix("cpcl:")
        if name not in BUILTIN_WEIGHTS:
            raise WeightsError(f"unknown built-in weights {pretrained!r}; available: "
                               + ", ".join(f"cpcl:{k}" for k in BUILTIN_WEIGHTS))
        own_arch, path = BUILTIN_WEIGHTS[name]
        if own_arch != arch:
            raise WeightsError(f"{pretrained} are weights for {own_arch}, not {arch}")
        if not path.is_file():
            raise WeightsError(f"{pretrained}: {path} is missing; recreate it with `cpcl pretrain` "
                               "(docs/getting-started.md)")
        return path, arch
    if _names_a_file(pretrained):
        return Path(pretrained).expanduser(), arch
    tags = open_clip.list_pretrained_tags_by_model(arch)
    if pretrained not in tags:
        raise WeightsError(f"{pretrained!r} is neither a file nor a pretrained tag of {arch} "
                           f"(tags: {', '.join(tags) or 'none'})")
    cfg = open_clip.get_pretrained_cfg(arch, pretrained)
    try:
        path = open_clip.download_pretrained(cfg)
    except Exception as exc:
        raise WeightsError(f"could not fetch {arch}/{pretrained} ({exc}); put the weights file on disk and "
                           "pass its path as model.pretrained instead") from None
    return Path(path), arch


def weights_quick_gelu(arch: str, pretrained: str | None) -> bool | None:
    """Whether the weights ``pretrained`` were trained with QuickGELU.

    OpenAI's archive (a file that is a TorchScript archive) and the pretrained tags open_clip marks so
    (``openai``, ``metaclip_*`` ...) -> True; a cpcl checkpoint, and weights ``cpcl export weights`` wrote ->
    the activation they record; random initialisation, ``cpcl:`` weights, other tags and plain state dicts
    (nothing in them says QuickGELU) -> False. None where the spec names a file that is not on disk, or
    nothing cpcl can read.
    """
    if not pretrained or pretrained.startswith("cpcl:"):
        return False
    candidate = Path(pretrained).expanduser()
    if candidate.is_file():
        return _file_quick_gelu(candidate)
    if _names_a_file(pretrained):
        return None
    _register_archs()
    try:
        return bool(open_clip.get_pretrained_cfg(arch, pretrained).get("quick_gelu", False))
    except Exception:  # not a tag of this architecture: build_clip names the problem
        return None


def recorded_quick_gelu(model_cfg: dict) -> tuple[bool, bool]:
    """The activation a checkpoint's model config records -> ``(quick_gelu, certain)``.

    Checkpoints written before cpcl recorded it (``quick_gelu`` absent or null) were built with QuickGELU
    exactly when their weights were OpenAI's archive or the ``openai`` tag; that is certain unless the
    weights file named in the config is no longer on disk (then GELU is assumed and ``certain`` is False).
    """
    if model_cfg.get("quick_gelu") is not None:
        return bool(model_cfg["quick_gelu"]), True
    pretrained = model_cfg.get("pretrained")
    if not pretrained or pretrained.startswith("cpcl:") or not _names_a_file(pretrained):
        return pretrained == "openai", True
    path = Path(pretrained).expanduser()
    return bool(path.is_file() and _file_quick_gelu(path)), path.is_file()


def _file_quick_gelu(path: Path) -> bool | None:
    """The activation of a weights file: QuickGELU for OpenAI's archive; what a cpcl checkpoint or an export of
    ``cpcl export weights`` records; GELU for any other state dict; None for a file that is none of these."""
    if _is_torchscript(path):
        return True
    obj = _load_plain(path)
    if obj is None:
        return None
    if isinstance(obj, dict) and "model" in obj and isinstance(obj.get("config"), dict):
        return recorded_quick_gelu(obj["config"].get("model", {}))[0]
    if isinstance(obj, dict) and isinstance(obj.get(WEIGHTS_RECORD), dict):
        return bool(obj[WEIGHTS_RECORD].get("quick_gelu", False))
    return False


def weights_record(pretrained: str) -> dict | None:
    """The record ``cpcl export weights`` keeps beside the weights (arch, image_size, quick_gelu, resize, ...)
    of the file ``pretrained`` names, or None (a tag, another kind of file, no file)."""
    if pretrained.startswith("cpcl:") or not _names_a_file(pretrained):
        return None
    path = Path(pretrained).expanduser()
    if not path.is_file() or _is_torchscript(path):
        return None
    obj = _load_plain(path)
    record = obj.get(WEIGHTS_RECORD) if isinstance(obj, dict) else None
    return record if isinstance(record, dict) else None


def _load_plain(path: Path):
    """A ``torch.save`` file of tensors and plain containers (memory-mapped), or None."""
    if path.suffix == ".safetensors" or not zipfile.is_zipfile(path):
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        return None


def uses_quick_gelu(clip: nn.Module) -> bool:
    """Whether a built CLIP's transformer blocks use QuickGELU (OpenAI's activation) rather than GELU."""
    return any(isinstance(m, open_clip.model.QuickGELU) for m in clip.modules())


def check_model_spec(arch: str, pretrained: str | None) -> None:
    """Refuse, before any data is read, an architecture open_clip does not know and weights that cannot be found:
    a file that does not exist, a built-in or pretrained tag this architecture lacks. Nothing is loaded or
    fetched (a damaged file is found when it is read)."""
    _register_archs()
    if arch not in open_clip.list_models():
        raise WeightsError(f"model.arch={arch}: unknown architecture; e.g. ViT-B-16, cpcl-vit-tiny (see `cpcl archs`)")
    if not pretrained:
        return
    if pretrained.startswith("cpcl:") or not _names_a_file(pretrained):
        if pretrained.startswith("cpcl:") or pretrained not in open_clip.list_pretrained_tags_by_model(arch):
            _resolve_weights(arch, pretrained)  # its refusal names the tag; a known open_clip tag is not fetched
        return
    path = Path(pretrained).expanduser()
    if not path.is_file():
        raise WeightsError(f"model.pretrained={pretrained}: no such file"
                           + (" (it is a folder)" if path.is_dir() else ""))


def build_clip(arch: str, image_size: tuple[int, int], pretrained: str | None = None,
               quick_gelu: bool | None = None) -> nn.Module:
    """Create an open_clip CLIP of ``arch`` at ``image_size`` (H, W) and load ``pretrained`` into it.

    ``quick_gelu`` None chooses the activation the weights were trained with (:func:`weights_quick_gelu`;
    GELU where that is not certain); :func:`uses_quick_gelu` tells which one a model has.
    """
    _register_archs()
    if arch not in open_clip.list_models():
        raise WeightsError(f"unknown architecture {arch!r}; e.g. ViT-B-16, cpcl-vit-tiny (see `cpcl archs`)")
    state = None
    if pretrained:
        path, arch = _resolve_weights(arch, pretrained)
        state, is_openai_jit = read_state_dict(path)
        if quick_gelu is None:
            quick_gelu = is_openai_jit or bool(weights_quick_gelu(arch, pretrained))
    with _quiet_root_logger():  # open_clip warns "initialized randomly" even when we load weights next
        model = open_clip.create_model(arch, pretrained=None, force_image_size=tuple(image_size),
                                       force_quick_gelu=bool(quick_gelu))
    if state is not None:
        load_clip_weights(model, state, source=str(pretrained))
    return model


@contextlib.contextmanager
def _quiet_root_logger():
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def load_clip_weights(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load a CLIP state dict, resizing the visual position grid; raise on any key that does not fit."""
    state = dict(state)
    key = "visual.positional_embedding"
    if key in state and hasattr(model.visual, "grid_size"):
        state[key] = resize_visual_pos_embed(state[key], tuple(model.visual.grid_size))
    own = model.state_dict()
    shape_errors = [f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
                    for k, v in state.items() if k in own and own[k].shape != v.shape]
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if shape_errors or missing or unexpected:
        lines = [f"weights from {source} do not fit the model:"]
        if shape_errors:
            lines.append("  shape mismatch: " + "; ".join(shape_errors[:8]))
        if missing:
            lines.append(f"  missing from file ({len(missing)}): " + ", ".join(missing[:8]))
        if unexpected:
            lines.append(f"  not in model ({len(unexpected)}): " + ", ".join(unexpected[:8]))
        raise WeightsError("\n".join(lines))
    model.load_state_dict(state, strict=True)
    log.info("loaded CLIP weights from %s", source)


def build_tokenizer(arch: str, context_length: int = 77):
    """CLIP's BPE tokenizer (offline; the vocabulary ships with open_clip). Truncation keeps the end token."""
    _register_archs()
    return open_clip.get_tokenizer(arch, context_length=context_length)
