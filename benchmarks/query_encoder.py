"""The query encoder on a CPU: PyTorch, the ONNX text tower (fp32) and its int8 quantization.

1. Latency: one caption at a time (as a search does), real SynthPedes test captions, encoded by the
   ViT-B/16 text tower (random weights: the compute of trained ones) and by the demo's small model — in
   PyTorch, through onnxruntime (``cpcl export onnx``), and through the int8 export (``--int8``).
2. End to end at 1M: the same encoders in front of a 1M-image ``ivf-sq8`` index of 512-d vectors (the
   gallery of ``search_latency.py``: clustered unit vectors), p50 / p99 of encode + top-10.
3. Accuracy of int8: on the demo (its CPCL checkpoint and index of the test gallery), recall@10 of each
   encoder's top-10 against PyTorch's for every test caption, and the test Rank-1 each gives (the person of
   the top image against the caption's).

    python benchmarks/query_encoder.py

writes benchmarks/results/query_encoder.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from report import command, machine, markdown_table, write_results
from search_latency import _gallery, _percentiles

from cpcl.config import config_from_dict
from cpcl.model.checkpoint import build_model, save_checkpoint
from cpcl.model.export import export_onnx
from cpcl.retrieval.index import GalleryIndex
from cpcl.retrieval.retriever import load_retriever

ENCODERS = {"PyTorch": None, "ONNX fp32": "text_encoder.onnx", "ONNX int8": "text_encoder.int8.onnx"}


def _test_captions(annotations: Path) -> list[tuple[str, int]]:
    records = json.loads(annotations.read_text())
    return [(c, r["id"]) for r in records if r.get("split") == "test" for c in r["captions"]]


def _export(checkpoint: Path, out: Path) -> dict[str, object]:
    if not (out / "export.json").is_file():
        export_onnx(checkpoint, out, int8=True, overwrite=True)
    return {name: load_retriever(checkpoint, text_encoder=None if file is None else out / file)
            for name, file in ENCODERS.items()}


def _latency(retriever, captions: list[str], index: GalleryIndex | None = None) -> dict:
    encode, total = [], []
    for i, caption in enumerate(captions[:5] + captions):
        t0 = time.perf_counter()
        q = retriever.encode_text([caption])
        t1 = time.perf_counter()
        if index is not None:
            index.search(q, 10)
        if i >= 5:  # warm-up excluded
            encode.append(t1 - t0)
            total.append(time.perf_counter() - t0)
    return {"encode": _percentiles(encode), "total": _percentiles(total)}


def measure_latency(model: str, checkpoint: Path, export_dir: Path, captions: list[str], index) -> list[dict]:
    rows = []
    for name, retriever in _export(checkpoint, export_dir).items():
        rows.append({"model": model, "encoder": name, "queries": len(captions),
                     **_latency(retriever, captions, index)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def measure_accuracy(checkpoint: Path, export_dir: Path, index_dir: Path, annotations: Path) -> list[dict]:
    index = GalleryIndex.load(index_dir)
    captions = _test_captions(annotations)
    person_of = {"imgs/" + r["file_path"]: r["id"] for r in json.loads(annotations.read_text())}  # CUHK layout
    top = {}
    for name, retriever in _export(checkpoint, export_dir).items():
        top[name] = index.search(retriever.encode_text([c for c, _ in captions]), 10)[1]
    rows = []
    for name, items in top.items():
        recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(items, top["PyTorch"], strict=True)])
        rank1 = np.mean([person_of.get(index.paths[row[0]]) == pid for row, (_, pid) in zip(items, captions,
                                                                                            strict=True)])
        rows.append({"encoder": name, "queries": len(captions), "gallery": len(index),
                     "recall_at_10_vs_pytorch": float(recall), "test_rank1": float(100 * rank1)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="runs/demo/synthpedes_cpcl/best.pt", help="the demo's CPCL model")
    parser.add_argument("--index", default="runs/demo/index", help="the demo's index of its test gallery")
    parser.add_argument("--annotations", default="data/synthpedes-demo/reid_raw.json")
    parser.add_argument("--queries", type=int, default=200, help="captions timed one at a time")
    parser.add_argument("--gallery", type=int, default=1_000_000, help="images of the ivf-sq8 index (0: none)")
    parser.add_argument("--work", default="runs/bench-query-encoder", help="exports are kept here")
    args = parser.parse_args()
    work = Path(args.work)
    captions = [c for c, _ in _test_captions(Path(args.annotations))][:args.queries]

    accuracy = measure_accuracy(Path(args.checkpoint), work / "small", Path(args.index), Path(args.annotations))
    vitb = work / "vitb16" / "random.pt"
    if not vitb.is_file():
        config = config_from_dict({"model": {"arch": "ViT-B-16", "image_size": [384, 128], "pretrained": None}})
        vitb.parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(vitb, build_model(config.model, pretrained=False), config, epoch=0)
    index = None
    with tempfile.TemporaryDirectory() as tmp:
        if args.gallery:
            gallery, _ = _gallery(args.gallery, 512)
            names = [Path(tmp) / "g" / f"{i:07d}.png" for i in range(args.gallery)]  # names only
            index = GalleryIndex.create(Path(tmp) / "ivf", Path(tmp) / "g", gallery, names,
                                        {"fingerprint": "bench", "checkpoint": "-", "arch": "ViT-B-16",
                                         "embed_dim": 512}, kind="ivf-sq8")
            del gallery
        latency = measure_latency("ViT-B/16", vitb, work / "vitb16" / "onnx", captions, index)
    latency += measure_latency("small (demo)", Path(args.checkpoint), work / "small", captions, None)

    lat_table = markdown_table(
        ["text tower", "encoder", "encode p50 / p99", f"encode + top-10 in {args.gallery:,} ivf-sq8 p50 / p99"],
        [[r["model"], r["encoder"], f"{r['encode']['p50_ms']:.1f} / {r['encode']['p99_ms']:.1f} ms",
          f"{r['total']['p50_ms']:.1f} / {r['total']['p99_ms']:.1f} ms" if r["model"] == "ViT-B/16" and args.gallery
          else "-"] for r in latency])
    acc_table = markdown_table(
        ["encoder (demo CPCL model)", "test queries", "recall@10 vs PyTorch", "test R1"],
        [[r["encoder"], r["queries"], f"{r['recall_at_10_vs_pytorch']:.3f}", f"{r['test_rank1']:.2f}"]
         for r in accuracy])
    write_results("query_encoder", {"command": command(), "machine": machine(), "latency": latency,
                                    "accuracy": accuracy},
                  f"# Query encoder on a CPU\n\n`{command()}` on {machine()}; one caption at a time, {len(captions)} "
                  f"real test captions.\n\n{lat_table}\n\n{acc_table}\n")


if __name__ == "__main__":
    main()
