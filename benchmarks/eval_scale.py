"""Retrieval metrics at the field's size: ICFG-PEDES' test split (19,848 captions x 19,848 images, 1,000
identities), counted ranks against the former full sort of every query's gallery.

Each implementation runs in its own process on the same similarity matrix (seeded normal scores with a
boost for the query's identity), so that the peak resident size above the matrix is its own.

    python benchmarks/eval_scale.py --queries 19848 --gallery 19848 --ids 1000

writes benchmarks/results/eval_scale.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch
from report import command, machine, markdown_table, write_results

from cpcl.evaluation.metrics import retrieval_metrics


def sorted_metrics(sim: torch.Tensor, q_ids: torch.Tensor, g_ids: torch.Tensor, chunk: int = 512) -> dict:
    """The former implementation: argsort every query's whole gallery (the reference for the values)."""
    num_q, num_g = sim.shape
    hits, ap, inp = torch.zeros(3, dtype=torch.float64), 0.0, 0.0
    positions = torch.arange(1, num_g + 1, dtype=torch.float64)
    for start in range(0, num_q, chunk):
        order = torch.argsort(sim[start:start + chunk], dim=1, descending=True, stable=True)
        matches = g_ids[order] == q_ids[start:start + chunk, None]
        num_rel = matches.sum(dim=1)
        first = matches.float().argmax(dim=1)
        hits += (first[:, None] < torch.tensor([1, 5, 10])[None]).sum(dim=0).double()
        ap += float(((matches.cumsum(dim=1, dtype=torch.float64) / positions) * matches).sum(dim=1).div(num_rel).sum())
        last = num_g - 1 - matches.flip(dims=[1]).float().argmax(dim=1)
        inp += float((num_rel.double() / (last.double() + 1)).sum())
    r = (100 * hits / num_q).tolist()
    return {"rank1": r[0], "rank5": r[1], "rank10": r[2], "mAP": 100 * ap / num_q, "mINP": 100 * inp / num_q}


def _problem(queries: int, gallery: int, ids: int):
    g = torch.Generator().manual_seed(0)
    g_ids = torch.randint(0, ids, (gallery,), generator=g)
    q_ids = g_ids[torch.randint(0, gallery, (queries,), generator=g)]
    sim = torch.empty(queries, gallery)
    for start in range(0, queries, 64):  # in small blocks: the peak while building is the matrix itself
        block = torch.randn(min(64, queries - start), gallery, generator=g)
        # a model that ranks the right person high, not always first
        sim[start:start + 64] = block + 2.0 * (q_ids[start:start + 64, None] == g_ids[None, :])
    return sim, q_ids, g_ids


def _child(impl: str, queries: int, gallery: int, ids: int) -> dict:
    sim, q_ids, g_ids = _problem(queries, gallery, ids)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    values = (retrieval_metrics(sim, q_ids, g_ids).as_dict() if impl == "counted"
              else sorted_metrics(sim, q_ids, g_ids))
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"impl": impl, "seconds": seconds, "peak_above_matrix_mb": peak - before,
            "matrix_mb": sim.numel() * 4 / 2**20, "threads": torch.get_num_threads(),
            **{k: values[k] for k in ("rank1", "rank5", "rank10", "mAP", "mINP")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=19848)
    parser.add_argument("--gallery", type=int, default=19848)
    parser.add_argument("--ids", type=int, default=1000)
    parser.add_argument("--impls", nargs="+", default=["counted", "sorted"])
    parser.add_argument("--child")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.child, args.queries, args.gallery, args.ids)))
        return
    rows = []
    for impl in args.impls:
        out = subprocess.run([sys.executable, __file__, "--child", impl, "--queries", str(args.queries),
                              "--gallery", str(args.gallery), "--ids", str(args.ids)], capture_output=True, text=True)
        if out.returncode:
            raise SystemExit(out.stderr[-3000:])
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    keys = ("rank1", "rank5", "rank10", "mAP", "mINP")
    diff = max(abs(rows[0][k] - r[k]) for r in rows for k in keys)
    table = markdown_table(["implementation", "seconds", "peak memory above the matrix", "R1", "mAP", "mINP"],
                           [[r["impl"], f"{r['seconds']:.1f}", f"{r['peak_above_matrix_mb']:.0f} MB",
                             f"{r['rank1']:.4f}", f"{r['mAP']:.4f}", f"{r['mINP']:.4f}"] for r in rows], "lrrrrr")
    write_results("eval_scale", {"command": command(), "machine": machine(), "rows": rows, "max_abs_diff": diff},
                  f"# Retrieval metrics at ICFG-PEDES' test size\n\n`{command()}`  \n{machine()}; "
                  f"{args.queries} x {args.gallery} similarities ({rows[0]['matrix_mb']:.0f} MB), {args.ids} "
                  f"identities; largest difference between the implementations' values: {diff:.1e}.\n\n" + table)


if __name__ == "__main__":
    main()
