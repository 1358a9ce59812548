"""Real-size training steps: CLIP ViT-B/16 at 384x128, a batch of 64 pairs, each precision.

Runs the trainer's own step (``forward_backward`` + the objective with the CPCL terms: SDM with
pseudo-label positives and both prototype memories, 1000 pseudo identities), the Adam step, and the
memory update, on random-weight ViT-B/16 (the compute of a pretrained one) with random images and
caption-length token rows. Reports images/s over the timed steps and peak memory (CUDA: allocator peak;
CPU: the process's peak resident size, which includes the interpreter and libraries).

    python benchmarks/train_step.py --device cuda --precisions fp32 bf16 fp16 --accumulate 1 4 --steps 20
    python benchmarks/train_step.py --device cpu --precisions fp32 --accumulate 1 4 --steps 1 --warmup 1

appends to benchmarks/results/train_step.json and rewrites train_step.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"


def run(device: torch.device, precision: str, batch: int, steps: int, warmup: int, accumulate: int) -> dict:
    from cpcl.config import config_from_dict
    from cpcl.engine.objective import Batch, BatchLabels, Objective
    from cpcl.engine.optim import build_optimizer
    from cpcl.engine.pseudo import EpochLabels
    from cpcl.engine.steps import forward_backward
    from cpcl.model.checkpoint import build_model

    config = config_from_dict({
        "model": {"arch": "ViT-B-16", "pretrained": None, "image_size": [384, 128]},
        "cluster": {"enabled": True},
        "loss": {"many_to_many": True, "intra_weight": 0.5, "cross_weight": 0.5},
        "train": {"batch_size": batch, "precision": precision, "accumulate": accumulate},
    })
    torch.manual_seed(0)
    model = build_model(config.model).to(device).train()
    model.clip.logit_scale.requires_grad_(False)
    optimizer = build_optimizer(model, config.optim)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    dim = model.embed_dim
    objective = Objective(dim, config.loss, config.memory, device)
    seeds = torch.nn.functional.normalize(torch.randn(1000, dim, device=device), dim=1)
    objective.on_labels(EpochLabels(torch.arange(1000), torch.arange(1000)), seeds, seeds)
    images = torch.randn(batch, 3, 384, 128, device=device)
    tokens = torch.zeros(batch, 77, dtype=torch.long, device=device)
    tokens[:, 0] = 49406
    tokens[:, 1:30] = torch.randint(300, 40000, (batch, 29), device=device)
    tokens[:, 30] = 49407  # 29-word captions: the field's typical length
    image_index = torch.arange(batch, device=device) // 2
    labels = BatchLabels(torch.randint(0, 1000, (batch,), device=device),
                         torch.randint(0, 1000, (batch,), device=device))
    pairs = Batch(image_index, labels)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for step in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        _, _, v, t = forward_backward(model, images, tokens, lambda v, t: objective(v, t, pairs), accumulate,
                                      precision, scaler)
        scaler.step(optimizer)
        scaler.update()
        objective.after_step(v, t, pairs)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if step >= warmup:
            times.append(time.perf_counter() - t0)
    seconds = sum(times) / len(times)
    peak = (torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
    name = (torch.cuda.get_device_name(device) if device.type == "cuda"
            else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)")
    return {"device": name, "precision": precision, "batch": batch, "accumulate": accumulate, "steps": steps,
            "seconds_per_step": seconds, "images_per_s": batch / seconds, "peak_memory_gib": peak,
            "memory_kind": "CUDA allocator peak" if device.type == "cuda" else "process peak RSS",
            "torch": torch.__version__}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16", "fp16"])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--accumulate", type=int, nargs="+", default=[1])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.child:
        print(json.dumps(run(device, args.precisions[0], args.batch, args.steps, args.warmup, args.accumulate[0])))
        return
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "train_step.json"
    rows = json.loads(path.read_text()) if path.is_file() else []
    for precision in args.precisions:
        for accumulate in args.accumulate:
            # each configuration in its own process: a process's peak resident size never goes down
            proc = subprocess.run([sys.executable, __file__, "--child", "--device", args.device, "--precisions",
                                   precision, "--accumulate", str(accumulate), "--batch", str(args.batch),
                                   "--steps", str(args.steps), "--warmup", str(args.warmup)],
                                  capture_output=True, text=True)
            if proc.returncode:
                raise SystemExit(f"{precision} x{accumulate} failed:\n{proc.stderr[-3000:]}")
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            print(json.dumps(row), flush=True)
            rows = [r for r in rows if (r["device"], r["precision"], r["batch"], r["accumulate"])
                    != (row["device"], row["precision"], row["batch"], row["accumulate"])] + [row]
            path.write_text(json.dumps(rows, indent=2) + "\n")
    lines = ["# Real-size training steps (ViT-B/16, 384x128, CPCL losses)", "",
             "`python benchmarks/train_step.py` (command per device in the script's docstring).", "",
             "| device | precision | batch | micro-batches | s/step | images/s | peak memory |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['device']} | {r['precision']} | {r['batch']} | {r['accumulate']} "
                     f"| {r['seconds_per_step']:.2f} | {r['images_per_s']:.1f} "
                     f"| {r['peak_memory_gib']:.1f} GiB ({r['memory_kind']}) |")
    (RESULTS / "train_step.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
