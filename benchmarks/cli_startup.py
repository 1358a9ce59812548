"""Start-up time of light commands (`cpcl --help`, `cpcl configs`, `cpcl index info`), before and after a change.

Each command runs as its own process (`python -m cpcl ...`, the source tree on PYTHONPATH) several times in
a row, alternating the trees so that both see the same machine; the first run of each is reported apart
(cold file cache), the median of the others is the figure. Target: each under 1.5 s on the 2-core machine.

    python benchmarks/cli_startup.py --baseline e195079 --index runs/demo/index --repeat 7

writes benchmarks/results/cli_startup.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from report import command, machine, markdown_table, write_results

ROOT = Path(__file__).resolve().parents[1]


def _time(src: Path, argv: list[str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "cpcl", *argv], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(src)})
    elapsed = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"cpcl {' '.join(argv)} failed ({src}):\n{proc.stderr[-2000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", help="git revision to compare with (checked out into a temporary worktree)")
    parser.add_argument("--index", default="runs/demo/index", help="an index for `cpcl index info`")
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    commands = [["--help"], ["configs"], ["index", "info", args.index]]
    with tempfile.TemporaryDirectory() as tmp:
        trees = [("this tree", ROOT / "src")]
        if args.baseline:
            subprocess.run(["git", "worktree", "add", "--detach", f"{tmp}/baseline", args.baseline], cwd=ROOT,
                           check=True, capture_output=True)
            trees.insert(0, (f"before ({args.baseline})", Path(tmp) / "baseline" / "src"))
        try:
            times = {(name, i): [] for name, _ in trees for i in range(len(commands))}
            for _ in range(args.repeat):
                for i, argv in enumerate(commands):
                    for name, src in trees:
                        times[name, i].append(_time(src, argv))
        finally:
            if args.baseline:
                subprocess.run(["git", "worktree", "remove", "--force", f"{tmp}/baseline"], cwd=ROOT,
                               capture_output=True)
    rows = [{"tree": name, "command": "cpcl " + " ".join(commands[i]).replace(args.index, "INDEX"),
             "first_s": t[0], "median_s": statistics.median(t[1:]), "runs": t} for (name, i), t in times.items()]
    rows.sort(key=lambda r: (r["command"], r["tree"]))
    table = markdown_table(["command", "tree", "median (s)", "first run (s)"],
                           [[f"`{r['command']}`", r["tree"], f"{r['median_s']:.2f}", f"{r['first_s']:.2f}"]
                            for r in rows], "llrr")
    write_results("cli_startup", {"command": command(), "machine": machine(), "rows": rows},
                  f"# Start-up time of light commands\n\n`{command()}`  \n{machine()}; median of "
                  f"{args.repeat - 1} runs after the first, each a new process.\n\n" + table)


if __name__ == "__main__":
    main()
