"""Time and peak memory of pseudo-labelling (k-reciprocal Jaccard + DBSCAN) at the field's sizes.

Sparse (cpcl) at N = 10k, 34k, 68k features of dimension 512, next to a dense transcription of the
published algorithm at the sizes where it fits. Features are clustered random unit vectors (about three
samples per centre, like a person's images). Each measurement runs in a fresh process, so peak RSS is its
own (it includes the interpreter and libraries: see the `baseline` row).

    python benchmarks/clustering_scale.py --sizes 10000 34000 68000 --dense-sizes 2000 5000 10000

writes benchmarks/results/clustering_scale.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def _features(n: int, dim: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(1, n // 3), dim)).astype(np.float32)
    x = centres[rng.integers(0, centres.shape[0], n)] + 0.6 * rng.normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _measure(impl: str, n: int, dim: int, k1: int, k2: int, eps: float, min_samples: int) -> dict:
    """Runs inside the child process."""
    import numpy as np

    from cpcl.clustering.distances import dense_jaccard_reference, jaccard_distance
    from cpcl.clustering.pseudo_labels import dbscan_labels

    x = _features(n, dim)
    # warm the numba kernels on a tiny input so compilation is not timed
    jaccard_distance(_features(50, dim, seed=1), k1=5, k2=2)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    if impl == "sparse":
        graph = jaccard_distance(x, k1=k1, k2=k2, max_distance=eps + 1e-6)
        t1 = time.perf_counter()
        labels = dbscan_labels(graph, eps, min_samples)
    elif impl == "dense":
        from sklearn.cluster import DBSCAN

        dist = dense_jaccard_reference(x, k1=k1, k2=k2, dtype=np.float32)
        t1 = time.perf_counter()
        labels = DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed").fit_predict(dist)
    else:
        return {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    t2 = time.perf_counter()
    return {"distance_s": t1 - t0, "dbscan_s": t2 - t1, "total_s": t2 - t0,
            "clusters": int(labels.max() + 1), "outliers": float((labels < 0).mean()),
            "rss_before_mb": rss_before, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10000, 34000, 68000])
    parser.add_argument("--dense-sizes", type=int, nargs="*", default=[2000, 5000, 10000])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--k1", type=int, default=30)
    parser.add_argument("--k2", type=int, default=6)
    parser.add_argument("--eps", type=float, default=0.6)
    parser.add_argument("--min-samples", type=int, default=4)
    parser.add_argument("--child", nargs=2, metavar=("IMPL", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        impl, n = args.child[0], int(args.child[1])
        print(json.dumps(_measure(impl, n, args.dim, args.k1, args.k2, args.eps, args.min_samples)))
        return
    rows = []
    jobs = [("baseline", 0)] + [("sparse", n) for n in args.sizes] + [("dense", n) for n in args.dense_sizes]
    for impl, n in jobs:
        cmd = [sys.executable, __file__, "--child", impl, str(n), "--dim", str(args.dim), "--k1", str(args.k1),
               "--k2", str(args.k2), "--eps", str(args.eps), "--min-samples", str(args.min_samples)]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            rows.append({"impl": impl, "n": n, "error": out.stderr.strip().splitlines()[-1:]})
        else:
            rows.append({"impl": impl, "n": n, **json.loads(out.stdout.strip().splitlines()[-1])})
        print(rows[-1], flush=True)
    meta = {"command": "python benchmarks/clustering_scale.py " + " ".join(sys.argv[1:]),
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
            "params": {k: getattr(args, k) for k in ("dim", "k1", "k2", "eps", "min_samples")}}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "clustering_scale.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    lines = [f"Command: `{meta['command']}`  ", f"Machine: {meta['machine']}; {meta['params']}", "",
             "| implementation | N | distance (s) | DBSCAN (s) | total (s) | peak RSS (MB) | clusters | outliers |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['impl']} | {r['n']} | failed: {r['error']} | | | | | |")
        elif r["impl"] == "baseline":
            lines.append(f"| interpreter + libraries | - | - | - | - | {r['peak_rss_mb']:.0f} | - | - |")
        else:
            lines.append(f"| {r['impl']} | {r['n']} | {r['distance_s']:.1f} | {r['dbscan_s']:.1f} | "
                         f"{r['total_s']:.1f} | {r['peak_rss_mb']:.0f} | {r['clusters']} | "
                         f"{100 * r['outliers']:.0f}% |")
    (RESULTS / "clustering_scale.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
