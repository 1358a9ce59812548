"""The ablation ladder on SynthPedes: baseline -> +PMM -> +HCM -> +OPLM (CPCL) -> supervised upper bound.

Every rung is a packaged config (same data, budget and schedule); each runs for every seed. Reported:
test metrics of the best-on-val checkpoint, mean ± std over seeds, and the share of the baseline ->
supervised Rank-1 gap that each rung closes. Nothing here reads the test split to choose anything: the
checkpoint of each run is chosen on val.

    python benchmarks/ablation.py --seeds 0 1 2

writes benchmarks/results/ablation.{json,md}; each run's directory is kept under --runs.
`--report-only` rewrites the Markdown table from the JSON of an earlier run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
from pathlib import Path

import numpy as np
from report import train_or_reuse

from cpcl.config import load_config, resolve_config_path

RESULTS = Path(__file__).parent / "results"
LADDER = [
    ("ITC baseline", "synthpedes_itc"),
    ("+ PMM (intra-modal prototypes)", "synthpedes_pmm"),
    ("+ HCM (cross-modal prototypes, many-to-many SDM)", "synthpedes_hcm"),
    ("+ OPLM = CPCL", "synthpedes_cpcl"),
    ("CPCL, each modality clustered on its own", "synthpedes_cpcl_per_modality"),
    ("CPCL, SDM on pairs only (no pseudo-label positives)", "synthpedes_cpcl_sdm_pairs"),
    ("supervised upper bound (true identities)", "synthpedes_supervised"),
]
METRICS = ("rank1", "rank5", "rank10", "mAP", "mINP")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rungs", nargs="+", default=[name for _, name in LADDER])
    parser.add_argument("--runs", default="runs/ablation")
    parser.add_argument("--set", action="append", default=[], help="override applied to every rung")
    parser.add_argument("--name", default="ablation", help="results file stem")
    parser.add_argument("--report-only", action="store_true", help="rewrite the table from the saved JSON")
    parser.add_argument("--reuse", action="store_true",
                        help="take a run whose directory already holds results.json for the same config "
                             "instead of training it again (an interrupted ladder continues)")
    args = parser.parse_args()
    if args.report_only:
        saved = json.loads((RESULTS / f"{args.name}.json").read_text())
        write_tables(saved["results"], args, saved["command"])
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger().setLevel(logging.WARNING)
    logging.getLogger("cpcl").setLevel(logging.INFO)

    results: dict[str, list[dict]] = {}
    for _, name in LADDER:
        if name not in args.rungs:
            continue
        for seed in args.seeds:
            config = load_config(resolve_config_path(name), [*args.set, f"train.seed={seed}"])
            out = Path(args.runs) / f"{name}-seed{seed}"
            row = train_or_reuse(out, config, args.reuse)
            row = {"seed": seed, "best_epoch": row["best_epoch"], "wall_s": row["wall_s"],
                   "test_best": row["test"]["best-on-val"], "test_last": row["test"]["last"],
                   "zero_shot": row["test"]["zero-shot"], "chance": row["test"]["chance"]}
            results.setdefault(name, []).append(row)
            print(f"{name} seed {seed}: R1 {row['test_best']['rank1']:.2f} mAP {row['test_best']['mAP']:.2f} "
                  f"({row['wall_s']:.0f}s)", flush=True)
    write_tables(results, args)


def _mean_std(rows: list[dict], key: str, metric: str) -> tuple[float, float]:
    values = np.array([r[key][metric] for r in rows])
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def write_tables(results: dict[str, list[dict]], args: argparse.Namespace, command: str | None = None) -> None:
    RESULTS.mkdir(exist_ok=True)
    command = command or "python benchmarks/ablation.py " + " ".join(sys.argv[1:])
    lines = [f"Command: `{command}`  ",
             f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
             f"seeds {sorted({r['seed'] for rows in results.values() for r in rows})}; test split, best-on-val "
             "checkpoint, mean ± std (sample std) over seeds; chance and zero-shot rows from the first seed. "
             "Checkpoints chosen on **val**; nothing chosen on test (see docs/training.md on how the settings "
             "were picked).", "",
             "| rung | config | R1 | R5 | R10 | mAP | mINP | gap closed (R1) |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    base = results.get("synthpedes_itc")
    sup = results.get("synthpedes_supervised")
    first = next(iter(results.values()), None)
    if first:
        for label, key in (("chance (random ranking)", "chance"), ("zero-shot (pretrained, no fine-tuning)",
                                                                     "zero_shot")):
            cells = " | ".join(f"{_mean_std(first, key, m)[0]:.2f}" for m in METRICS)
            lines.append(f"| {label} | - | {cells} | |")
    for title, name in LADDER:
        rows = results.get(name)
        if not rows:
            continue
        cells = []
        for m in METRICS:
            mean, std = _mean_std(rows, "test_best", m)
            cells.append(f"{mean:.2f} ± {std:.2f}")
        gap = ""
        if base and sup and name not in ("synthpedes_itc",):
            b = _mean_std(base, "test_best", "rank1")[0]
            s = _mean_std(sup, "test_best", "rank1")[0]
            r = _mean_std(rows, "test_best", "rank1")[0]
            gap = f"{100 * (r - b) / (s - b):.0f}%" if s != b else ""
        lines.append(f"| {title} | `{name}` | " + " | ".join(cells) + f" | {gap} |")
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    (RESULTS / f"{args.name}.json").write_text(json.dumps({"command": command, "results": results}, indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
