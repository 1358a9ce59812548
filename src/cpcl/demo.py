"""The synthetic end-to-end demo: SynthPedes, the ITC baseline and CPCL side by side, then a searchable index
of the test gallery and a sheet of its rankings. ``cpcl demo`` calls :func:`run_demo` and prints the table."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cpcl.config import DataConfig, load_config, packaged_configs
from cpcl.data.formats import load_annotations
from cpcl.data.sources import annotation_format
from cpcl.engine.trainer import train
from cpcl.io import claim_outputs, exclusive
from cpcl.model.backbone import check_model_spec
from cpcl.retrieval.retriever import load_retriever
from cpcl.retrieval.service import build_index
from cpcl.views.rankings import write_ranking_figures

log = logging.getLogger(__name__)

DEMO_RUNS = (("ITC baseline", "synthpedes_itc"), ("CPCL", "synthpedes_cpcl"))


@dataclass
class DemoResult:
    rows: dict[str, dict[str, Any]]  # row title -> test metrics
    data_root: Path
    index_dir: Path
    rankings_dir: Path
    seconds: float


def run_demo(out: str | Path, overrides: list[str] | tuple[str, ...] = (), device: torch.device | str = "cpu",
             progress: bool = True, overwrite: bool = False) -> DemoResult:
    """Train every run of :data:`DEMO_RUNS` into ``out/<config>``, index the test gallery with the last
    (CPCL) model into ``out/index`` and draw its rankings into ``out/rankings``. An ``out`` that holds an
    earlier demo is refused, unless ``overwrite``."""
    t0 = time.perf_counter()
    with exclusive(out, "a demo run"):
        out = claim_outputs(out, (*(name for _, name in DEMO_RUNS), "index", "rankings"), overwrite=overwrite,
                            holds="a demo run", instead="choose another --out")
        # every run's config and weights before the first trains: a --set that one of them refuses stops the
        # demo now, not after the baseline has trained (and the rerun would find its folder taken)
        configs = {name: load_config(packaged_configs()[name], overrides) for _, name in DEMO_RUNS}
        for config in configs.values():
            check_model_spec(config.model.arch, config.model.pretrained)
        rows: dict[str, dict[str, Any]] = {}
        config = None
        for title, name in DEMO_RUNS:
            config = configs[name]
            log.info("demo: %s (%s)", title, name)
            result = train(config, out / name, device=device, progress=progress)
            if not rows:
                rows["chance (random ranking)"] = result.test["chance"]
                rows["zero-shot (pretrained small CLIP)"] = result.test["zero-shot"]
            rows[f"{title}, best-on-val (epoch {result.best_epoch})"] = result.test["best-on-val"]
            rows[f"{title}, last epoch"] = result.test["last"]
        index_dir, rankings = out / "index", out / "rankings"
        write_search_assets(out / DEMO_RUNS[-1][1] / "best.pt", config.data, index_dir, rankings, device)
        return DemoResult(rows, Path(config.data.root), index_dir, rankings, time.perf_counter() - t0)


def write_search_assets(checkpoint: Path, data: DataConfig, index_dir: Path, rankings: Path,
                        device: torch.device | str) -> None:
    """Index the test split's images with ``checkpoint`` and draw the ranking sheet of six of its captions,
    so that search works right after the demo (both replace what an earlier demo left there)."""
    data_format = annotation_format(data)
    records = load_annotations(data_format, data.root).split("test")
    build_index(load_retriever(checkpoint, device), [r.image_path for r in records], index_dir, root=data.root,
                overwrite=True)
    write_ranking_figures(checkpoint, data_format, data.root, rankings, queries=6, device=device, overwrite=True)
