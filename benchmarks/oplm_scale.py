"""OPLM at CUHK-PEDES scale: 34,054 images and 68,108 captions (512-d), one cluster of each modality holding
40 % of its samples, the rest in small clusters, 15 % outliers per modality.

Times ``mine_outliers`` as it is against the former per-outlier implementation (read from git at
``--baseline``), checks that both give the same labels, and writes benchmarks/results/oplm_scale.{json,md}.

    python benchmarks/oplm_scale.py --baseline b5a6fd5
"""

from __future__ import annotations

import argparse
import subprocess
import time
import types
from pathlib import Path

import numpy as np
from report import command, machine, markdown_table, write_results

REPO = Path(__file__).resolve().parents[1]


def former_module(commit: str) -> types.ModuleType:
    """``cpcl.clustering.outliers`` as it was at ``commit``."""
    source = subprocess.run(["git", "show", f"{commit}:src/cpcl/clustering/outliers.py"], cwd=REPO, check=True,
                            capture_output=True, text=True).stdout
    module = types.ModuleType("former_outliers")
    exec(compile(source, f"{commit}:outliers.py", "exec"), module.__dict__)
    return module


def labels(n: int, giant: float, outliers: float, rng: np.random.Generator) -> np.ndarray:
    """``giant`` of the samples in cluster 0, ``outliers`` at -1, the rest in clusters of 2-12."""
    out = np.full(n, -1, dtype=np.int64)
    order = rng.permutation(n)
    n_giant, n_out = int(giant * n), int(outliers * n)
    out[order[:n_giant]] = 0
    rest = order[n_giant + n_out:]
    sizes = rng.integers(2, 13, len(rest))
    out[rest] = 1 + np.repeat(np.arange(len(rest)), sizes)[:len(rest)]
    return out


def make_case(images: int, captions_per_image: int, dim: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    owner = np.repeat(np.arange(images), captions_per_image)
    f_img = rng.standard_normal((images, dim)).astype(np.float32)
    f_img /= np.linalg.norm(f_img, axis=1, keepdims=True)
    f_txt = f_img[owner] + 0.5 * rng.standard_normal((len(owner), dim)).astype(np.float32)
    f_txt /= np.linalg.norm(f_txt, axis=1, keepdims=True)
    return labels(images, 0.4, 0.15, rng), labels(len(owner), 0.4, 0.15, rng), f_img, f_txt, owner


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--baseline", default="b5a6fd5", help="commit of the former implementation")
    p.add_argument("--images", type=int, default=34054)
    p.add_argument("--captions-per-image", type=int, default=2)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--name", default="oplm_scale")
    args = p.parse_args()
    import torch

    from cpcl.clustering.outliers import mine_outliers

    case = make_case(args.images, args.captions_per_image, args.dim)
    y_img, y_txt = case[0], case[1]
    rows, timings = [], {}
    for name, mine in (("vectorised (now)", mine_outliers), (f"per outlier ({args.baseline})",
                                                              former_module(args.baseline).mine_outliers)):
        t0 = time.perf_counter()
        result = mine(*case)
        timings[name] = (time.perf_counter() - t0, result)
        print(f"{name}: {timings[name][0]:.2f} s", flush=True)
    (now_s, now), (before_s, before) = timings.values()
    same = (np.array_equal(now.image_labels, before.image_labels) and np.array_equal(now.text_labels,
                                                                                     before.text_labels))
    for name, (seconds, result) in timings.items():
        rows.append([name, f"{seconds:.2f}", result.image_recovered.size, result.text_recovered.size])
    data = {"images": args.images, "captions": len(case[4]), "dim": args.dim, "torch_threads": torch.get_num_threads(),
            "image_outliers": int((y_img < 0).sum()), "caption_outliers": int((y_txt < 0).sum()),
            "seconds": {k: v[0] for k, v in timings.items()}, "speed-up": before_s / now_s, "same_labels": same,
            "machine": machine(), "command": command(), "date": time.strftime("%Y-%m-%d")}
    text = "\n".join([
        f"# OPLM at CUHK-PEDES scale: {args.images} images, {len(case[4])} captions, {args.dim}-d, one cluster "
        "of each modality with 40 % of its samples, 15 % outliers", "",
        f"`{data['command']}` — {data['machine']}, {data['date']}", "",
        markdown_table(["implementation", "seconds", "images recovered", "captions recovered"], rows, "lrrr"), "",
        f"speed-up {data['speed-up']:.1f}x; same labels: {same}"])
    write_results(args.name, data, text)


if __name__ == "__main__":
    main()
