"""Resolve ``DataConfig`` to parsed annotations, generating SynthPedes on first use."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

from cpcl.config import ConfigError, DataConfig, SynthConfig
from cpcl.data.checks import require_clean
from cpcl.data.formats import FORMATS, read_annotations
from cpcl.data.records import Annotations
from cpcl.data.synth import GENERATOR_VERSION, generate_synthpedes
from cpcl.registry import UnknownChoiceError

log = logging.getLogger(__name__)


def _synth_settings(cfg: SynthConfig) -> dict:
    return {**asdict(cfg), "version": GENERATOR_VERSION}


def prepare_synth(root: str | Path, cfg: SynthConfig, progress: bool = False) -> Path:
    """Generate SynthPedes into ``root`` unless the same settings are already there."""
    root = Path(root)
    meta_path = root / "synthpedes_meta.json"
    wanted = _synth_settings(cfg)
    if (root / "reid_raw.json").is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        defaults = _synth_settings(SynthConfig())  # what a folder written before a setting existed holds
        have = {k: meta.get(k, defaults[k]) for k in wanted}
        if have == wanted:
            return root
        diff = ", ".join(f"{k}: {have[k]!r} on disk vs {wanted[k]!r}" for k in wanted if have[k] != wanted[k])
        raise ConfigError(f"data.root {root} holds SynthPedes made with other settings ({diff}); "
                          "set data.root to another folder or delete it")
    if root.exists() and any(root.iterdir()) and not (root / "imgs").exists():
        raise ConfigError(f"data.root {root} exists and is not a SynthPedes folder; set data.root to an empty "
                          "folder")
    log.info("data.root %s holds no SynthPedes yet: generating it there (%d identities, seed %d), once; "
             "later runs with the same settings reuse it", root, cfg.num_ids, cfg.seed)
    # every generation setting is a field of SynthConfig and a parameter of the generator, by the same name
    # (overwrite: an empty folder, or an interrupted generation)
    generate_synthpedes(root, **asdict(cfg), progress=progress, overwrite=True)
    return root


def annotation_format(cfg: DataConfig) -> str:
    """The format of a data config's annotation files on disk: SynthPedes is written as CUHK-PEDES."""
    if cfg.format == "synth":
        return "cuhk-pedes"
    if cfg.format not in FORMATS:
        raise UnknownChoiceError(f"data.format: unknown dataset format {cfg.format!r}; choose one of synth, "
                                 f"{', '.join(FORMATS.names())}")
    return cfg.format


def load_dataset(cfg: DataConfig, progress: bool = False) -> Annotations:
    """The dataset ``cfg`` names, generating SynthPedes on first use, refused with every problem that
    ``cpcl data check`` would list (records and images) before any work is done."""
    if cfg.format == "synth":
        prepare_synth(cfg.root, cfg.synth, progress)
    ann = read_annotations(annotation_format(cfg), cfg.root)
    for note in ann.notes[:10]:
        log.warning("%s", note)
    if len(ann.notes) > 10:
        log.warning("... and %d more such notes (cpcl data check lists them all)", len(ann.notes) - 10)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = lambda items, total: tqdm(items, total=total, desc="check images", disable=None, leave=False)  # noqa: E731
    ann = require_clean(ann, bar).hold_out_val(cfg.val_ids_from_train).hold_out_pairs(cfg.val_pairs_from_train)
    if cfg.val_ids_from_train:
        log.info("val: %d persons (%d images) of the training split held out (data.val_ids_from_train); they are "
                 "not trained on", cfg.val_ids_from_train, len(ann.split("val")))
    if cfg.val_pairs_from_train:
        log.info("val: %d images of the training split held out with their %d captions (data.val_pairs_from_train); "
                 "they are not trained on", cfg.val_pairs_from_train,
                 sum(len(r.captions) for r in ann.split("val")))
    return ann
