"""The training loop, for the weak ITC baseline and for CPCL.

Every epoch: (CPCL) extract features in a fixed order, cluster, mine outliers and rebuild the memories;
train on shuffled pairs (order from ``(seed, epoch)``) with pseudo labels looked up by dataset index;
evaluate on **val**; keep the best-on-val and the last checkpoint (atomic writes, resolved config
inside). At the end, report **test** metrics of both, next to the zero-shot model and a random ranking.
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, RandomSampler
from tqdm import tqdm

from cpcl.config import Config, save_config
from cpcl.data.datasets import ImageSet, TrainPairs
from cpcl.data.io import atomic_save, atomic_write_text
from cpcl.data.samplers import PseudoIdentitySampler
from cpcl.data.sources import load_dataset
from cpcl.data.transforms import build_eval_transform, build_train_transform
from cpcl.engine.distributed import (
    ShardedBatchSampler,
    all_gather_tensor,
    all_reduce_sum,
    barrier,
    init_distributed,
)
from cpcl.engine.optim import build_optimizer, build_scheduler
from cpcl.engine.pseudo import make_pseudo_labels
from cpcl.engine.seeding import epoch_generator, seed_everything
from cpcl.engine.steps import BatchLabels, Memories, compute_losses, forward_backward
from cpcl.evaluation.evaluate import EvalSplit
from cpcl.evaluation.metrics import RetrievalMetrics, chance_metrics
from cpcl.memory.prototypes import PrototypeMemory
from cpcl.model.backbone import build_tokenizer
from cpcl.model.checkpoint import build_model, load_checkpoint, preprocess_of, read_checkpoint, save_checkpoint

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    out_dir: Path
    best_epoch: int | None
    test: dict[str, dict[str, Any]] = field(default_factory=dict)  # row name -> metrics


def _write_jsonl(path: Path, row: dict[str, Any]) -> None:
    with path.open("a") as fh:
        fh.write(json.dumps(row) + "\n")


def train(config: Config, out_dir: str | Path, device: torch.device | str = "cpu",
          progress: bool = True, allow_identity_labels: bool = False, resume: bool = False) -> RunResult:
    """Train ``config`` into ``out_dir`` (created); returns test metrics of best-on-val and last.

    ``allow_identity_labels`` must be True for ``train.supervised`` (the upper bound): it is the only way
    identity labels reach training. ``resume`` continues the run in ``out_dir`` from its ``last.pt`` (the
    last completed epoch): model, optimiser, scheduler, loss scaler, memories, history and random states;
    the sampler order and the pseudo labels of the next epoch follow from these, so the resumed run ends
    where the uninterrupted one would. Started by ``torchrun``, every process trains
    its slice of each global batch; rank 0 alone evaluates and writes.
    """
    if config.train.supervised and not allow_identity_labels:
        raise ValueError("train.supervised=true trains on identity labels (the upper bound); "
                         "pass --supervised-upper-bound to confirm")
    if config.train.accumulate < 1:
        raise ValueError(f"train.accumulate must be at least 1, got {config.train.accumulate}")
    dist, device = init_distributed(torch.device(device))
    if dist.enabled:
        progress = progress and dist.is_main
    out = Path(out_dir)
    metrics_path = out / "metrics.jsonl"
    state = _read_resume_state(out) if resume else None
    if dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(config, out / "config.yaml")
        if state is None:
            metrics_path.unlink(missing_ok=True)
    seed_everything(config.train.seed)

    ann = load_dataset(config.data, progress=progress)
    train_records, val_records, test_records = ann.split("train"), ann.split("val"), ann.split("test")
    if not train_records:
        raise ValueError(f"{ann.annotation_file}: no training records")
    log.info("data %s: %s", ann.annotation_file, ann.summary())

    model = build_model(config, pretrained=state is None).to(device)
    # the instance loss uses loss.temperature: CLIP's learnable logit scale takes no part in training
    if isinstance(getattr(model.clip, "logit_scale", None), torch.nn.Parameter):
        model.clip.logit_scale.requires_grad_(False)
    tokenizer = build_tokenizer(config.model.arch, config.model.context_length)
    preprocess = preprocess_of(config)
    train_set = TrainPairs(train_records, tokenizer, build_train_transform(preprocess, config.augment),
                           cache_images=config.data.cache_images)
    # identities of the training images: read for the pseudo-label report, and by the supervised upper
    # bound; never by a loss, a sampler or the mining of a weakly supervised run
    report_ids = _training_ids(train_records)
    if config.train.supervised and report_ids is None:
        raise ValueError("train.supervised=true needs a person_id on every training record")
    clustering = config.cluster.enabled or config.train.supervised
    memories = Memories(PrototypeMemory(model.embed_dim, config.memory.momentum, config.memory.hard).to(device),
                        PrototypeMemory(model.embed_dim, config.memory.momentum, config.memory.hard).to(device))
    extract_set = ImageSet(train_set.images.paths, build_eval_transform(preprocess), train_set.images)
    val = test = None
    if dist.is_main:
        val = EvalSplit(val_records, tokenizer, preprocess, config.data.cache_images) if val_records else None
        test = EvalSplit(test_records, tokenizer, preprocess) if test_records else None
        if not val_records:
            log.warning("no val split: every epoch is kept as 'last' and no best-on-val checkpoint is chosen")

    batch = config.train.batch_size
    steps_per_epoch = len(train_set) // batch
    if config.train.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, config.train.max_steps_per_epoch)
    if steps_per_epoch == 0:
        raise ValueError(f"train.batch_size={batch} exceeds the {len(train_set)} training pairs")
    if (batch // dist.world_size) % config.train.accumulate:
        raise ValueError(f"train.batch_size={batch} over {dist.world_size} process(es) does not split into "
                         f"train.accumulate={config.train.accumulate} equal micro-batches")
    optimizer = build_optimizer(model, config.optim)
    scheduler = build_scheduler(optimizer, config.optim, config.train.epochs, steps_per_epoch)
    scaler = torch.amp.GradScaler(device.type, enabled=config.train.precision == "fp16")
    train_model = model
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel

        train_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    result = RunResult(out_dir=out, best_epoch=None)
    ebs = config.train.eval_batch_size
    best_score = float("-inf")
    history: list[dict[str, Any]] = []
    first_epoch = 1
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        run = state["run"]
        memories.image.prototypes = run["memory_image"].to(device)
        memories.text.prototypes = run["memory_text"].to(device)
        # pseudo labels are not restored: each epoch recomputes them from the (restored) model first, as the
        # uninterrupted run does; last.pt keeps its epoch's labels for inspection
        best_score, result.best_epoch, history = run["best_score"], run["best_epoch"], run["history"]
        zero_shot_val = _metrics_or_none(run["zero_shot_val"])
        result.test.update(run["test_reference"])
        first_epoch = state["epoch"] + 1
        if dist.is_main:  # metrics.jsonl as of the checkpoint: rows of epochs redone now are dropped
            atomic_write_text(metrics_path, "".join(json.dumps(r) + "\n" for r in [run["zero_shot_row"], *history]))
        _set_rng_state(run["rng"])
        log.info("resuming %s after epoch %d", out, state["epoch"])
    else:
        zero_shot_val = val.evaluate(model, device, ebs) if val else None
        if dist.is_main:
            _write_jsonl(metrics_path, _zero_shot_row(zero_shot_val))
            if test is not None:
                result.test["chance"] = chance_metrics(test.query_ids, test.gallery_ids).as_dict()
                result.test["zero-shot"] = test.evaluate(model, device, ebs).as_dict()
    for epoch in range(first_epoch, config.train.epochs + 1):
        epoch_labels = None
        row_extra: dict[str, Any] = {}
        if clustering and epoch >= config.cluster.start_epoch:
            epoch_labels = make_pseudo_labels(
                model, train_set, extract_set, memories, config, device,
                supervised_ids=report_ids if config.train.supervised else None,
                report_ids=report_ids, progress=progress, dist=dist)
            row_extra["pseudo"] = dict(epoch_labels.stats)
            if not epoch_labels.usable:
                epoch_labels = None
        t0 = time.perf_counter()
        generator = epoch_generator(config.train.seed, epoch)
        if epoch_labels is not None and config.train.sampler_instances > 0:
            pair_labels = epoch_labels.image[train_set.caption_to_image].numpy()
            sampler = PseudoIdentitySampler(pair_labels, config.train.sampler_instances, generator)
        else:
            sampler = RandomSampler(train_set, generator=generator)
        loader = DataLoader(train_set, batch_sampler=ShardedBatchSampler(sampler, batch, dist, steps_per_epoch),
                            num_workers=config.data.num_workers, pin_memory=device.type == "cuda",
                            persistent_workers=False)
        train_model.train()
        totals: dict[str, float] = {}
        seen = 0
        compute_time = 0.0  # forward, loss, backward and optimiser step; the rest of "train" is data and memory
        bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch}/{config.train.epochs}", disable=not progress,
                   leave=False)
        for item in loader:
            images = item["image"].to(device, non_blocking=True)
            tokens = item["tokens"].long().to(device, non_blocking=True)
            image_index = item["image_index"].to(device)
            labels = None
            if epoch_labels is not None:
                labels = BatchLabels(epoch_labels.image[item["image_index"]].to(device),
                                     epoch_labels.text[item["index"]].to(device))
            t_step = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            terms, v, t = forward_backward(
                train_model, images, tokens,
                lambda v, t, ii=image_index, lb=labels: compute_losses(v, t, ii, lb, memories, config, dist),
                config.train.accumulate, config.train.precision, scaler)
            scale = scaler.get_scale()
            scaler.step(optimizer)
            scaler.update()
            if scaler.get_scale() >= scale:  # fp16: a step skipped for overflow does not advance the schedule
                scheduler.step()
            compute_time += time.perf_counter() - t_step
            if labels is not None:  # every rank applies the global batch, in global order
                memories.image.update(all_gather_tensor(v, dist), all_gather_tensor(labels.image, dist))
                memories.text.update(all_gather_tensor(t, dist), all_gather_tensor(labels.text, dist))
            for name, value in terms.items():
                totals[name] = totals.get(name, 0.0) + float(value.detach())
            seen += 1
            bar.set_postfix(loss=f"{float(terms['loss'].detach()):.3f}")
            bar.update()
        bar.close()
        if dist.enabled:  # each rank's terms are its share of the global batch's: report their mean
            names = sorted(totals)
            summed = all_reduce_sum(torch.tensor([totals[n] for n in names], dtype=torch.float64), dist)
            totals = {n: float(x) / dist.world_size for n, x in zip(names, summed, strict=True)}
        train_time = time.perf_counter() - t0
        row: dict[str, Any] = {"epoch": epoch, **{k: v / max(1, seen) for k, v in totals.items()},
                               "lr": optimizer.param_groups[0]["lr"],
                               "pairs_per_s": seen * batch / train_time,
                               "time": {"train": train_time, "forward_backward": compute_time}, **row_extra}
        if "pseudo" in row_extra:
            row["time"]["extract"] = row_extra["pseudo"].pop("time_extract")
            row["time"]["cluster"] = row_extra["pseudo"].pop("time_cluster")
        is_eval_epoch = epoch % config.train.eval_every == 0 or epoch == config.train.epochs
        if val is not None and is_eval_epoch:
            t1 = time.perf_counter()
            val_metrics = val.evaluate(model, device, ebs)
            row["time"]["eval"] = time.perf_counter() - t1
            row["val"] = val_metrics.as_dict()
            score = val_metrics.rank1 + val_metrics.mAP
            if score > best_score:
                best_score = score
                result.best_epoch = epoch
                save_checkpoint(out / "best.pt", model, config, epoch=epoch, val=val_metrics.as_dict())
        history.append(row)
        if dist.is_main:
            run_state = {"best_score": best_score, "best_epoch": result.best_epoch, "history": history,
                         "zero_shot_val": zero_shot_val.as_dict() if zero_shot_val else None,
                         "zero_shot_row": _zero_shot_row(zero_shot_val), "test_reference": dict(result.test),
                         "memory_image": memories.image.prototypes.cpu(), "memory_text": memories.text.prototypes.cpu(),
                         "labels": None if epoch_labels is None else {"image": epoch_labels.image,
                                                                      "text": epoch_labels.text},
                         "rng": _rng_state()}
            save_checkpoint(out / "last.pt", model, config, epoch=epoch, val=row.get("val"),
                            optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                            scaler=scaler.state_dict(), run=run_state)
            _write_jsonl(metrics_path, row)
        barrier(dist)
        log.info("epoch %d: loss %.4f, %.0f pairs/s%s%s; time %s", epoch, row["loss"], row["pairs_per_s"],
                 f", val R1 {row['val']['rank1']:.2f} mAP {row['val']['mAP']:.2f}" if "val" in row else "",
                 _pseudo_summary(row.get("pseudo")), ", ".join(f"{k} {v:.1f}s" for k, v in row["time"].items()))
    if not dist.is_main:
        return result
    plot_curves(history, zero_shot_val, out / "curves.png")

    if test is not None:
        result.test["last"] = test.evaluate(model, device, ebs).as_dict()
        if result.best_epoch is not None:
            best_model = load_checkpoint(out / "best.pt", device)[0]
            result.test["best-on-val"] = test.evaluate(best_model, device, ebs).as_dict()
    summary = {"best_epoch": result.best_epoch, "test": result.test,
               "zero_shot_val": zero_shot_val.as_dict() if zero_shot_val else None}
    atomic_write_text(out / "results.json", json.dumps(summary, indent=2))
    atomic_write_text(out / "results.md", results_table(result.test, title=f"test split, {ann.name}"))
    return result


def _zero_shot_row(zero_shot_val: RetrievalMetrics | None) -> dict[str, Any]:
    return {"epoch": 0, "val": zero_shot_val.as_dict() if zero_shot_val else None}


def _metrics_or_none(values: dict | None) -> RetrievalMetrics | None:
    return None if values is None else RetrievalMetrics(**values)


def _read_resume_state(out: Path) -> dict[str, Any]:
    path = out / "last.pt"
    if not path.is_file():
        raise FileNotFoundError(f"cannot resume {out}: no last.pt (no epoch of this run has completed)")
    state = read_checkpoint(path)
    if "run" not in state:
        raise ValueError(f"{path} holds no training state to resume from (written by an older cpcl?)")
    return state


def _rng_state() -> dict[str, Any]:
    """Every generator a run draws from, at an epoch boundary (the DataLoader seeds its workers from torch's)."""
    np_state = np.random.get_state()
    return {"python": random.getstate(), "numpy": (np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy(), *rest))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _training_ids(records) -> np.ndarray | None:
    ids = [r.person_id for r in records]
    return None if any(i is None for i in ids) else np.asarray(ids, dtype=np.int64)


def _pseudo_summary(stats: dict[str, Any] | None) -> str:
    if not stats:
        return ""
    text = (f"; clusters img {stats['image_clusters']} txt {stats['text_clusters']}, outliers img "
            f"{100 * stats['image_outliers']:.0f}% txt {100 * stats['text_outliers']:.0f}%")
    if "image_recovered" in stats:
        text += f", OPLM recovered img {stats['image_recovered']} txt {stats['text_recovered']}"
    if "image_pair_precision" in stats:
        text += (f", pair precision img {100 * stats['image_pair_precision']:.0f}% "
                 f"txt {100 * stats['text_pair_precision']:.0f}%")
    return text


def results_table(rows: dict[str, dict[str, Any]], title: str = "") -> str:
    """A Markdown table of retrieval metrics, one row per model."""
    cols = ["rank1", "rank5", "rank10", "mAP", "mINP", "rSum"]
    head = "| model | R1 | R5 | R10 | mAP | mINP | rSum |\n|---|---:|---:|---:|---:|---:|---:|\n"
    body = "".join(f"| {name} | " + " | ".join(f"{m[c]:.2f}" for c in cols) + " |\n" for name, m in rows.items())
    return (f"{title}\n\n" if title else "") + head + body


def plot_curves(history: list[dict[str, Any]], zero_shot: RetrievalMetrics | None, path: Path) -> None:
    """Loss, val R1/mAP and (when clustering) pseudo-label statistics per epoch, as a PNG."""
    if not history:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pseudo_rows = [r for r in history if r.get("pseudo") and "image_clusters" in r["pseudo"]]
    fig, axes = plt.subplots(1, 3 if pseudo_rows else 2, figsize=(15 if pseudo_rows else 10, 3.6))
    ax_loss, ax_val = axes[0], axes[1]
    epochs = [r["epoch"] for r in history]
    ax_loss.plot(epochs, [r["loss"] for r in history], marker="o")
    ax_loss.set(xlabel="epoch", ylabel="train loss", title="training loss")
    val_rows = [r for r in history if "val" in r]
    if val_rows:
        ve = [r["epoch"] for r in val_rows]
        for key in ("rank1", "mAP"):
            start = [getattr(zero_shot, key)] if zero_shot else []
            ax_val.plot(([0] if zero_shot else []) + ve, start + [r["val"][key] for r in val_rows], marker="o",
                        label=key)
        ax_val.set(xlabel="epoch", ylabel="%", title="val retrieval")
        ax_val.legend()
    if pseudo_rows:
        ax = axes[2]
        pe = [r["epoch"] for r in pseudo_rows]
        for key, style in (("image_outliers", "-"), ("text_outliers", "--"), ("image_pair_precision", "-"),
                           ("text_pair_precision", "--")):
            if key in pseudo_rows[0]["pseudo"]:
                ax.plot(pe, [100 * r["pseudo"].get(key, float("nan")) for r in pseudo_rows], style, marker="o",
                        label=key.replace("_", " "))
        ax.set(xlabel="epoch", ylabel="%", title="pseudo labels (precision: held-out ids, report only)")
        twin = ax.twinx()
        twin.plot(pe, [r["pseudo"]["image_clusters"] for r in pseudo_rows], ":", color="k", label="image clusters")
        twin.set_ylabel("clusters")
        ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    atomic_save(path, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)
