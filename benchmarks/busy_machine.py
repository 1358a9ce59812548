"""A demo training step on a quiet machine and on one shared with other work, before and after a change.

Runs `cpcl train` (the demo's CPCL config, one epoch of N steps, on the CPU) as a user would, once per
variant and background load: the load is K processes that spin in a Python loop for the whole run, so
that with K = 3 on 2 cores the load average is about 3 plus the training. Each variant is a source tree
(the current one, or a git revision checked out into a temporary worktree) and environment variables.
Reports seconds per training step (the step loop only), and the feature extraction and clustering times.

    python benchmarks/busy_machine.py --baseline e195079 --loads 0 3 --steps 12

writes benchmarks/results/busy_machine.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from report import command, machine, markdown_table, write_results

ROOT = Path(__file__).resolve().parents[1]


def _busy(count: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


def _measure(src: Path, env: dict[str, str], steps: int, data_root: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "cpcl", "train", "--config", "synthpedes_cpcl", "--out", f"{tmp}/run",
               "--device", "cpu", "--no-progress", "--set", "train.epochs=1",
               "--set", f"train.max_steps_per_epoch={steps}", "--set", f"data.root={data_root}"]
        full_env = {**os.environ, "PYTHONPATH": str(src), **env}
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=full_env, cwd=ROOT)
        wall = time.perf_counter() - t0
        if proc.returncode:
            raise SystemExit(f"{cmd} failed:\n{proc.stderr[-3000:]}")
        row = [json.loads(line) for line in Path(f"{tmp}/run/metrics.jsonl").read_text().splitlines()][1]
    t = row["time"]
    return {"s_per_step": t["train"] / steps, "extract_s": t.get("extract"), "cluster_s": t.get("cluster"),
            "loss": row["loss"], "wall_s": wall}


def _baseline_tree(rev: str, tmp: str) -> Path:
    path = Path(tmp) / "baseline"
    subprocess.run(["git", "worktree", "add", "--detach", str(path), rev], cwd=ROOT, check=True,
                   capture_output=True)
    return path / "src"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", help="git revision to compare with (checked out into a temporary worktree)")
    parser.add_argument("--loads", type=int, nargs="+", default=[0, 3], help="busy background processes")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--data-root", default="data/synthpedes-demo")
    args = parser.parse_args()
    variants = [("this tree", ROOT / "src", {}),
                ("this tree, OMP_WAIT_POLICY=PASSIVE", ROOT / "src", {"OMP_WAIT_POLICY": "PASSIVE"}),
                ("this tree, OMP_NUM_THREADS=1", ROOT / "src", {"OMP_NUM_THREADS": "1"})]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.baseline:
            before = _baseline_tree(args.baseline, tmp)
            variants[:0] = [(f"before ({args.baseline})", before, {}),
                            (f"before ({args.baseline}), OMP_NUM_THREADS=1", before, {"OMP_NUM_THREADS": "1"})]
        try:
            for load in args.loads:
                for name, src, env in variants:
                    busy = _busy(load)
                    try:
                        time.sleep(2 if load else 0)
                        result = _measure(src, env, args.steps, args.data_root)
                    finally:
                        for p in busy:
                            p.kill()
                    rows.append({"variant": name, "load": load, **result})
                    print(json.dumps(rows[-1]), flush=True)
        finally:
            if args.baseline:
                subprocess.run(["git", "worktree", "remove", "--force", str(Path(tmp) / "baseline")], cwd=ROOT,
                               capture_output=True)
    quiet = {r["variant"]: r["s_per_step"] for r in rows if r["load"] == 0}
    table = markdown_table(
        ["variant", "busy processes", "s/step", "vs. quiet", "extract (s)", "cluster (s)", "loss"],
        [[r["variant"], r["load"], f"{r['s_per_step']:.3f}",
          f"{r['s_per_step'] / quiet[r['variant']]:.1f}x" if r["variant"] in quiet else "",
          f"{r['extract_s']:.1f}", f"{r['cluster_s']:.1f}", f"{r['loss']:.4f}"] for r in rows], "lrrrrrr")
    write_results("busy_machine", {"command": command(), "machine": machine(), "steps": args.steps, "rows": rows},
                  f"# A demo training step on a quiet and on a busy machine\n\n`{command()}`  \n{machine()}; "
                  f"{args.steps} steps of `synthpedes_cpcl` (batch 64) through `cpcl train`; busy processes spin "
                  "in a Python loop during the whole run.\n\n" + table)


if __name__ == "__main__":
    main()
