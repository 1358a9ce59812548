"""Load test of `cpcl serve`: N search requests at a fixed concurrency over loopback HTTP.

Starts `cpcl serve INDEX` in its own process (as a user would), waits for it, then sends the requests from
a pool of client threads, each with its own keep-alive connection. Each server mode is a separate server:
``batched`` (the default `cpcl serve`: concurrent queries encoded and searched as one batch) and
``unbatched`` (``--max-batch 1``: one query at a time). Queries are real captions of the
SynthPedes test split (k = 10), cycled. Reports the error count (any non-200 or failed connection), latency
percentiles as seen by the client, and throughput.

    python benchmarks/load_test.py --index runs/demo/index --requests 1000 --concurrency 1 16

writes benchmarks/results/load_test.{json,md}.
"""

from __future__ import annotations

import argparse
import http.client
import json
import threading
import time
import urllib.parse
from pathlib import Path

import numpy as np
from report import command, machine, markdown_table, write_results

from cpcl.retrieval.launch import serve_in_subprocess

MODES = {"unbatched": ("--max-batch", "1"), "batched": ()}  # server mode -> `cpcl serve` options


def _captions(annotations: Path, limit: int = 500) -> list[str]:
    records = json.loads(annotations.read_text())
    return [c for r in records if r.get("split") == "test" for c in r["captions"]][:limit]


def run_load(port: int, queries: list[str], requests: int, concurrency: int, k: int) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    counter = iter(range(requests))

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                break
            path = f"/api/search?q={urllib.parse.quote(queries[i % len(queries)])}&k={k}"
            t0 = time.perf_counter()
            try:
                conn.request("GET", path)
                response = conn.getresponse()
                body = response.read()
                ok = response.status == 200 and len(json.loads(body)["hits"]) == k
                problem = None if ok else f"HTTP {response.status}: {body[:200]!r}"
            except (OSError, http.client.HTTPException, ValueError) as exc:
                problem = f"{type(exc).__name__}: {exc}"
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            elapsed = time.perf_counter() - t0
            with lock:
                latencies.append(elapsed)
                if problem:
                    errors.append(problem)
        conn.close()

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ms = np.asarray(latencies) * 1e3
    return {"requests": requests, "concurrency": concurrency, "k": k, "errors": len(errors),
            "first_errors": errors[:5], "wall_s": wall, "requests_per_s": requests / wall,
            **{f"p{p}_ms": float(np.percentile(ms, p)) for p in (50, 90, 99)}, "max_ms": float(ms.max())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", default="runs/demo/index")
    parser.add_argument("--annotations", default="data/synthpedes-demo/reid_raw.json",
                        help="CUHK-PEDES-format file whose test captions are the queries")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16])
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    args = parser.parse_args()

    queries = _captions(Path(args.annotations))
    results = []
    for mode in args.modes:
        with serve_in_subprocess(args.index, *MODES[mode]) as server:
            run_load(server.port, queries, 20, 4, args.k)  # warm-up
            results += [{"mode": mode, **run_load(server.port, queries, args.requests, c, args.k)}
                        for c in args.concurrency]
    index_info = json.loads((Path(args.index) / "index.json").read_text())
    info = {"index": args.index, "gallery": index_info["count"], "kind": index_info["kind"],
            "arch": index_info["model"]["arch"], "machine": machine()}
    table = markdown_table(
        ["server", "requests", "concurrency", "errors", "p50", "p90", "p99", "max", "throughput"],
        [[r["mode"], r["requests"], r["concurrency"], r["errors"], f"{r['p50_ms']:.1f} ms", f"{r['p90_ms']:.1f} ms",
          f"{r['p99_ms']:.1f} ms", f"{r['max_ms']:.1f} ms", f"{r['requests_per_s']:.1f} req/s"] for r in results])
    write_results("load_test", {**info, "runs": results},
                  f"# Load test of `cpcl serve`\n\n`{command()}`: {info['gallery']} images ({info['kind']}, "
                  f"{info['arch']}), k = {args.k}, client and server on the same machine ({info['machine']}).\n\n"
                  + table)
    for r in results:
        if r["errors"]:
            print(f"{r['mode']}, concurrency {r['concurrency']}, first errors:", *r["first_errors"], sep="\n  ")


if __name__ == "__main__":
    main()
