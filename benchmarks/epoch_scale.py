"""A CUHK-PEDES-size CPCL epoch: the pseudo-labelling and a whole epoch, with CLIP ViT-B/16 at 384x128.

SynthPedes with 12,003 identities (about 30k training images and 60k captions, CUHK-PEDES' training size)
is generated once into --data. Rows:

- `labelling, ViT-B/16 random init`: the trainer's own labelling (extract images and captions in the
  training precision, k-NN, Jaccard, DBSCAN, OPLM, memories) with random-init ViT-B/16: features of an
  untrained model, nearly collinear, the case that must be detected and skipped within seconds.
- `labelling, SynthPedes-pretrained small CLIP`: the same with `cpcl:synthclip-tiny`, whose features
  group people as a pretrained model's do (256-d); its clustering phases are the pretrained-like figure.
- `pretrained-like labelling (ViT-B/16 extraction + small-CLIP clustering)`: the extraction seconds of the
  first row plus the clustering, OPLM and memory seconds of the second.
- `CPCL epoch`: `cpcl train --config cuhk_pedes_vitb16_cpcl` on the same data for one epoch, random init.

    python benchmarks/epoch_scale.py --device cuda --precision bf16        # the GPU figures (one GPU)
    python benchmarks/epoch_scale.py --device cpu --ids 400 --smoke         # a quick check that it runs

writes benchmarks/results/epoch_scale.{json,md} (rows of other devices are kept).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from report import RESULTS, command, machine, markdown_table, write_results

ROOT = Path(__file__).resolve().parents[1]


def _device_name(device: torch.device) -> str:
    import os
    import platform

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def _labelling(arch: str, pretrained: str | None, image_size, args, data_root: Path) -> dict:
    from cpcl.config import config_from_dict
    from cpcl.engine.distributed import SINGLE
    from cpcl.engine.objective import Objective
    from cpcl.engine.pseudo import Labeller
    from cpcl.engine.trainer import load_train_data
    from cpcl.model.checkpoint import build_model

    config = config_from_dict({
        "data": {"format": "synth", "root": str(data_root), "num_workers": args.workers, "cache_images": False,
                 "synth": {"num_ids": args.ids, "val_ids": args.val_ids, "test_ids": args.val_ids}},
        "model": {"arch": arch, "pretrained": pretrained, "image_size": list(image_size)},
        "cluster": {"enabled": True, "k1": 30, "k2": 6, "eps": 0.6, "min_samples": 4},
        "oplm": {"enabled": True}, "loss": {"intra_weight": 0.5, "cross_weight": 0.5, "many_to_many": True},
        "train": {"precision": args.precision, "eval_batch_size": args.batch_size}})
    device = torch.device(args.device)
    data = load_train_data(config, SINGLE, progress=False)
    torch.manual_seed(0)
    model = build_model(config.model).to(device)
    t0 = time.perf_counter()
    labeller = Labeller(config.cluster, config.oplm, args.batch_size, report_ids=data.report_ids,
                        precision=args.precision, num_workers=args.workers)
    labels, f_img, f_txt = labeller(model, data.train_set, data.extract_set, device)
    t1 = time.perf_counter()
    Objective(model.embed_dim, config.loss, config.memory, device).on_labels(labels, f_img, f_txt)
    t2 = time.perf_counter()
    stats, phases = labels.stats, labels.timings.phases
    return {"images": len(data.extract_set), "captions": len(data.train_set), "total_s": t2 - t0,
            "extract_s": labels.timings.extract, "cluster_s": labels.timings.cluster,
            "oplm_s": phases.get("OPLM", 0.0), "memories_s": t2 - t1, "phases": phases,
            "usable": labels.usable, "skipped": stats.get("degenerate"),
            "image_clusters": stats["image_clusters"], "text_clusters": stats["text_clusters"],
            "peak_gpu_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None}


def _epoch(args, data_root: Path) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "cpcl", "train", "--config", "cuhk_pedes_vitb16_cpcl", "--out", f"{tmp}/run",
               "--device", args.device, "--no-progress", "--set", "model.pretrained=null",
               "--set", "data.format=synth", "--set", f"data.root={data_root}", "--set", "train.epochs=1",
               "--set", f"train.precision={args.precision}", "--set", f"data.num_workers={args.workers}",
               "--set", f"data.synth.num_ids={args.ids}", "--set", f"data.synth.val_ids={args.val_ids}",
               "--set", f"data.synth.test_ids={args.val_ids}"]
        if args.smoke:
            cmd += ["--set", "model.arch=cpcl-vit-micro", "--set", "model.image_size=[64, 32]"]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        wall = time.perf_counter() - t0
        if proc.returncode:
            raise SystemExit(f"the epoch failed:\n{proc.stderr[-3000:]}")
        row = [json.loads(line) for line in Path(f"{tmp}/run/metrics.jsonl").read_text().splitlines()][1]
    return {"wall_s": wall, "time": row["time"], "pairs_per_s": row["pairs_per_s"],
            "skipped": row.get("pseudo", {}).get("degenerate")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="bf16" if torch.cuda.is_available() else "fp32")
    parser.add_argument("--ids", type=int, default=12003)
    parser.add_argument("--val-ids", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=512, help="extraction batch")
    parser.add_argument("--workers", type=int, default=14, help="image decoding processes")
    parser.add_argument("--data", default="runs/bench-cuhk-size", help="where the SynthPedes of --ids is kept")
    parser.add_argument("--smoke", action="store_true", help="a tiny model instead of ViT-B/16: checks the script")
    args = parser.parse_args()
    if args.smoke:
        args.val_ids = min(args.val_ids, max(2, args.ids // 10))
    data_root = Path(args.data) / f"synthpedes-{args.ids}"
    device = torch.device(args.device)
    big = ("cpcl-vit-micro", None, (64, 32)) if args.smoke else ("ViT-B-16", None, (384, 128))
    rows = {"random": _labelling(*big, args, data_root),
            "pretrained": _labelling("cpcl-vit-tiny", "cpcl:synthclip-tiny", (128, 64), args, data_root),
            "epoch": _epoch(args, data_root)}
    for name, row in rows.items():
        print(name, json.dumps(row), flush=True)
    r, p = rows["random"], rows["pretrained"]
    estimate = r["extract_s"] + p["cluster_s"] + p["oplm_s"] + p["memories_s"]
    name = _device_name(device) + (" (smoke: tiny models)" if args.smoke else "")
    new = [{"device": name, "row": "labelling, ViT-B/16 random init" if not args.smoke else "labelling, random init",
            "seconds": r["total_s"], "detail": f"extract {r['extract_s']:.1f} s, clustering {r['cluster_s']:.1f} s"
            + (f"; skipped: {r['skipped']}" if r["skipped"] else f", {r['image_clusters']} image clusters")},
           {"device": name, "row": "labelling, SynthPedes-pretrained small CLIP", "seconds": p["total_s"],
            "detail": f"extract {p['extract_s']:.1f} s, clustering {p['cluster_s']:.1f} s, OPLM {p['oplm_s']:.1f} s, "
                      f"memories {p['memories_s']:.1f} s; {p['image_clusters']} image / {p['text_clusters']} text "
                      "clusters"},
           {"device": name, "row": "pretrained-like labelling (ViT-B/16 extraction + small-CLIP clustering)",
            "seconds": estimate, "detail": f"{r['images']} images, {r['captions']} captions"},
           {"device": name, "row": f"CPCL epoch (`cpcl train`, {args.precision}, random init)",
            "seconds": rows["epoch"]["wall_s"], "detail": ", ".join(
                f"{k} {v:.0f} s" for k, v in rows["epoch"]["time"].items() if isinstance(v, float))}]
    path = RESULTS / "epoch_scale.json"
    kept = [row for row in (json.loads(path.read_text())["rows"] if path.is_file() else []) if row["device"] != name]
    table_rows = kept + new
    table = markdown_table(["device", "measure", "seconds", "detail"],
                           [[t["device"], t["row"], f"{t['seconds']:.1f}", t["detail"]] for t in table_rows], "llrl")
    write_results("epoch_scale", {"command": command(), "rows": table_rows, "raw": {name: rows}},
                  "# A CUHK-PEDES-size CPCL epoch\n\n`python benchmarks/epoch_scale.py` (command per device in its "
                  f"docstring; last run on {machine()}); targets on one H100/H200 with ViT-B/16 bf16: labelling "
                  "<= 30 s with pretrained-like features, <= 60 s with random-init features, a whole epoch <= 3 min."
                  "\n\n" + table)


if __name__ == "__main__":
    main()
