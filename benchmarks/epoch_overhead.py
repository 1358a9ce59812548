"""Share of a CPCL epoch spent outside forward/backward (extraction, clustering, mining, memory updates,
data loading, validation), on the demo config.

    python benchmarks/epoch_overhead.py --config synthpedes_cpcl --epochs 2

trains into runs/bench-overhead and writes benchmarks/results/epoch_overhead.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
from pathlib import Path

from cpcl.config import load_config, resolve_config_path
from cpcl.engine.trainer import train

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="synthpedes_cpcl")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--out", default="runs/bench-overhead")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    config = load_config(resolve_config_path(args.config), [f"train.epochs={args.epochs}"])
    train(config, args.out, progress=False, overwrite=True)  # the benchmark's own run directory
    rows = [json.loads(line) for line in (Path(args.out) / "metrics.jsonl").read_text().splitlines()][1:]
    table = []
    for row in rows:
        t = {k: v for k, v in row["time"].items() if isinstance(v, float)}  # phases are parts of cluster
        total = sum(v for k, v in t.items() if k != "forward_backward")
        table.append({"epoch": row["epoch"], "total_s": total, **{f"{k}_s": v for k, v in t.items()},
                      "outside_share": 1.0 - t["forward_backward"] / total})
    command = "python benchmarks/epoch_overhead.py " + " ".join(sys.argv[1:])
    lines = [f"Command: `{command}`  ", f"Machine: {platform.processor() or platform.machine()}, "
             f"{os.cpu_count()} cores; config `{args.config}`", "",
             "| epoch | total (s) | forward/backward (s) | rest of train loop (s) | extract (s) | cluster (s) | "
             "val (s) | outside forward/backward |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in table:
        lines.append(f"| {r['epoch']} | {r['total_s']:.1f} | {r['forward_backward_s']:.1f} | "
                     f"{r['train_s'] - r['forward_backward_s']:.1f} | {r.get('extract_s', 0):.1f} | "
                     f"{r.get('cluster_s', 0):.1f} | {r.get('eval_s', 0):.1f} | {100 * r['outside_share']:.1f}% |")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "epoch_overhead.json").write_text(json.dumps({"command": command, "epochs": table}, indent=2))
    (RESULTS / "epoch_overhead.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
