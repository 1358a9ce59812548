"""The training run, for the weak ITC baseline and for CPCL.

:func:`train` sequences the epochs: (CPCL) pseudo labels from features extracted in a fixed order
(:func:`label_epoch`), :func:`train_one_epoch` on shuffled pairs (order from ``(seed, epoch)``), evaluation on
**val** (:func:`validate`), the best-on-val and last checkpoints (atomic writes, resolved config inside). At
the end, **test** metrics of both, next to the zero-shot model and a random ranking.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, RandomSampler
from tqdm import tqdm

from cpcl.clustering.pseudo_labels import LABELS_DIR
from cpcl.clustering.quality import label_free_quality
from cpcl.config import Config, TrainConfig, config_yaml
from cpcl.data.datasets import TrainPairs
from cpcl.data.samplers import PseudoIdentitySampler
from cpcl.engine.distributed import (
    DistInfo,
    ShardedBatchSampler,
    all_reduce_sum,
    barrier,
    broadcast_module,
    broadcast_object,
    init_distributed,
    on_main_first,
)
from cpcl.engine.inputs import TrainData, check_same_data, claim_run_dir, load_train_data, recorded_paths
from cpcl.engine.objective import Objective
from cpcl.engine.optim import build_optimizer, build_scheduler
from cpcl.engine.pseudo import EpochLabels, Labeller
from cpcl.engine.seeding import epoch_generator, seed_everything, seed_rank_streams
from cpcl.engine.state import RunState, gather_rng_states, read_resume_state
from cpcl.engine.steps import forward_backward
from cpcl.engine.tensorboard import TensorBoardLog, require_tensorboard
from cpcl.evaluation.evaluate import EvalSplit
from cpcl.evaluation.label_free import cluster_scores, neighbourhood_scores, pair_scores
from cpcl.evaluation.metrics import chance_metrics
from cpcl.io import atomic_write_text, exclusive
from cpcl.model.backbone import check_model_spec
from cpcl.model.checkpoint import (
    build_model,
    checkpoint_config,
    load_checkpoint,
    read_checkpoint,
    resolve_activation,
    save_checkpoint,
)
from cpcl.timing import phase
from cpcl.views.report import epoch_summary, plot_curves, results_table

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    out_dir: Path
    best_epoch: int | None  # the epoch of best.pt (chosen on val or label-free, as train.select_on resolved)
    test: dict[str, dict[str, Any]] = field(default_factory=dict)  # row name -> metrics
    best_val: dict[str, Any] | None = None  # val metrics of the best-on-val epoch
    # the label-free choice: {"epoch", "score", "name"} (None without held-out pairs)
    label_free: dict[str, Any] | None = None
    select_on: str | None = None  # "val", "label-free", or None (no held-out data: last.pt only)


@dataclass
class EpochRow:
    """One epoch's row of ``metrics.jsonl``."""

    epoch: int
    losses: dict[str, float]  # mean per step of each loss term and of the total ("loss")
    lr: float
    pairs_per_s: float
    time: dict[str, float]
    pseudo: dict[str, Any] | None = None
    val: dict[str, Any] | None = None
    label_free: dict[str, float] | None = None  # every label-free score of the epoch (evaluation.label_free)
    backed_off: dict[str, Any] | None = None  # set on the epoch after which the run left the pseudo labels

    def as_dict(self) -> dict[str, Any]:
        row = {"epoch": self.epoch, **self.losses, "lr": self.lr, "pairs_per_s": self.pairs_per_s, "time": self.time}
        if self.pseudo is not None:
            row["pseudo"] = self.pseudo
        if self.val is not None:
            row["val"] = self.val
        if self.label_free is not None:
            row["label_free"] = self.label_free
        if self.backed_off is not None:
            row["backed_off"] = self.backed_off
        return row


def train(config: Config, out_dir: str | Path, device: torch.device | str = "cpu", progress: bool = True,
          allow_identity_labels: bool = False, resume: bool = False, overwrite: bool = False,
          evaluate_test: bool = True) -> RunResult:
    """Train ``config`` into ``out_dir`` (created); returns test metrics of best-on-val and last.

    ``allow_identity_labels`` must be True for ``train.supervised`` (the upper bound): it is the only way
    identity labels reach training. ``resume`` continues the run in ``out_dir`` from its ``last.pt`` (the
    last completed epoch): model, optimiser, scheduler, loss scaler, memories, history and random states;
    the sampler order and the pseudo labels of the next epoch follow from these, so the resumed run ends
    where the uninterrupted one would. Otherwise ``out_dir`` must not hold a run already, unless
    ``overwrite``, which removes that run's files first. The dataset is checked (records and images)
    before any work. Started by ``torchrun``, every process trains its slice of each global batch; rank 0
    alone evaluates and writes. ``evaluate_test=False`` leaves the test split alone (a trial of a selection,
    which may look at val only).
    """
    if config.train.supervised and not allow_identity_labels:
        raise ValueError("train.supervised=true trains on identity labels (the upper bound); "
                         "pass --supervised-upper-bound to confirm")
    if config.train.tensorboard:
        require_tensorboard()
    dist, device = init_distributed(torch.device(device))
    out = Path(out_dir)
    # rank 0 holds the run folder for the whole run: a second process training, resuming or overwriting it is
    # refused before it reads anything
    with exclusive(out, "a training run") if dist.is_main else contextlib.nullcontext():
        return _train(config, out, device, dist, progress and dist.is_main, resume, overwrite, evaluate_test)


def _train(config: Config, out: Path, device: torch.device, dist: DistInfo, progress: bool, resume: bool,
           overwrite: bool, evaluate_test: bool) -> RunResult:
    saved = read_resume_state(out) if resume else None
    if saved is None:
        on_main_first(lambda: claim_run_dir(out, overwrite) if dist.is_main else None, dist)
    if saved is None:
        config = recorded_paths(config)  # config.yaml names the files this run reads, wherever it is resumed from
        check_model_spec(config.model.arch, config.model.pretrained)  # before the dataset is read and checked
    seed_everything(config.train.seed)
    data = load_train_data(config, dist, progress)  # a dataset with problems stops the run here, before any write
    if saved is not None:
        check_same_data(saved["run"].get("data"), data.fingerprint, out)
    if not evaluate_test:
        data.test = None
    steps_per_epoch = _steps_per_epoch(config.train, len(data.train_set), dist)
    if saved is not None:  # the network that was trained: its activation as last.pt records it
        config = replace(config, model=checkpoint_config(saved, out / "last.pt").model)
    model = build_model(config.model, pretrained=saved is None).to(device)
    config = resolve_activation(config, model)  # recorded in config.yaml and in every checkpoint
    seed_rank_streams(config.train.seed, dist.rank)  # the same model on every rank; augmentations of its own
    if dist.is_main:
        atomic_write_text(out / "config.yaml", config_yaml(config))  # read by --resume, on every rank
    # the instance loss uses loss.temperature: CLIP's learnable logit scale takes no part in training
    if isinstance(getattr(model.clip, "logit_scale", None), torch.nn.Parameter):
        model.clip.logit_scale.requires_grad_(False)
    state = build_run_state(config, model, steps_per_epoch, device, dist)
    train_model = _wrap_distributed(model, device, dist)
    if saved is not None:
        state.load_state_dict(saved, dist.rank, config.train.seed)
        log.info("resuming %s after epoch %d", out, state.epoch)
    else:
        state.data = data.fingerprint
        _reference_metrics(state, data, device, config.train.eval_batch_size)
    if dist.is_main:  # metrics.jsonl as of the state: rows of epochs redone now are dropped
        atomic_write_text(out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in state.metrics_rows()))
    board = TensorBoardLog(out / "tensorboard") if config.train.tensorboard and dist.is_main else None
    for epoch in range(state.epoch + 1, config.train.epochs + 1):
        row = run_epoch(config, state, train_model, data, epoch, steps_per_epoch, device, dist, progress,
                        labels_dir=out / LABELS_DIR if dist.is_main else None)
        end_epoch(config, state, row, data, out, dist, board)
    if board is not None:
        board.close()
    best_val = next((r["val"] for r in state.history if r["epoch"] == state.best["val"].epoch), None)
    chosen = state.best[data.select_on].epoch if data.select_on else None
    result = RunResult(out_dir=out, best_epoch=chosen, best_val=best_val, select_on=data.select_on,
                       label_free=label_free_choice(state, config.train.label_free_score))
    if dist.is_main:  # rank 0 alone evaluates and reports
        result.test.update(state.test_reference)
        finish(state, data, out, device, config.train.eval_batch_size, result)
    if data.select_on == "label-free" and dist.is_main:
        log.info("best.pt is the label-free choice: epoch %s, %s %.2f on held-out pairs (train.select_on)",
                 result.best_epoch, config.train.label_free_score, (result.label_free or {}).get("score", float("nan")))
    return result



def end_epoch(config: Config, state: RunState, row: EpochRow, data: TrainData, out: Path, dist: DistInfo,
              board: TensorBoardLog | None) -> None:
    """After an epoch: the best checkpoints it improved, the back-off (which may restore the best weights),
    then ``last.pt`` with every rank's random states and the epoch's row; rank 0 writes."""
    epoch = row.epoch
    if dist.is_main:
        for criterion in improved_criteria(state, row, config.train.label_free_score):
            save_checkpoint(out / best_file(criterion, data.select_on), state.model, config, epoch=epoch,
                            val=row.val, label_free=row.label_free)
    if data.backoff_on and epoch < config.train.epochs:  # at the last epoch nothing is left to train without labels
        back_off_if_stale(config.cluster.backoff_patience, data.backoff_on, state, row,
                          out / best_file(data.backoff_on, data.select_on), dist)
    rank_rngs = gather_rng_states(dist)  # each rank's own streams, for --resume
    if dist.is_main:
        state.save(out / "last.pt", config, val=row.val, rank_rngs=rank_rngs)
        with (out / "metrics.jsonl").open("a") as fh:
            fh.write(json.dumps(row.as_dict()) + "\n")
        if board is not None:
            board.write(row.as_dict())
    barrier(dist)
    log.info("%s", epoch_summary(row.as_dict()))


def _steps_per_epoch(cfg: TrainConfig, pairs: int, dist: DistInfo) -> int:
    steps = pairs // cfg.batch_size
    if cfg.max_steps_per_epoch:
        steps = min(steps, cfg.max_steps_per_epoch)
    if steps == 0:
        raise ValueError(f"train.batch_size={cfg.batch_size} exceeds the {pairs} training pairs")
    if (cfg.batch_size // dist.world_size) % cfg.accumulate:
        raise ValueError(f"train.batch_size={cfg.batch_size} over {dist.world_size} process(es) does not split into "
                         f"train.accumulate={cfg.accumulate} equal micro-batches")
    return steps


def build_run_state(config: Config, model, steps_per_epoch: int, device: torch.device, dist: DistInfo) -> RunState:
    """A fresh run's state: optimiser, schedule, loss scaler and objective for ``model``."""
    optimizer = build_optimizer(model, config.optim)
    scheduler = build_scheduler(optimizer, config.optim, config.train.epochs, steps_per_epoch)
    scaler = torch.amp.GradScaler(device.type, enabled=config.train.precision == "fp16")
    objective = Objective(model.embed_dim, config.loss, config.memory, device, dist, config.train.gather_negatives)
    return RunState(model, optimizer, scheduler, scaler, objective)


def _wrap_distributed(model, device: torch.device, dist: DistInfo):
    if not dist.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def _reference_metrics(state: RunState, data: TrainData, device: torch.device, batch_size: int) -> None:
    """Before training: the zero-shot model on val, and the chance and zero-shot rows on test."""
    state.zero_shot_val = (data.val.evaluate(state.model, device, batch_size).as_dict()
                           if data.val is not None and data.val.has_ids else None)
    if data.test is not None:
        if data.test.has_ids:
            state.test_reference["chance"] = chance_metrics(data.test.query_ids, data.test.gallery_ids).as_dict()
        state.test_reference["zero-shot"] = data.test.report(state.model, device, batch_size)


def run_epoch(config: Config, state: RunState, train_model, data: TrainData, epoch: int, steps_per_epoch: int,
              device: torch.device, dist: DistInfo, progress: bool, labels_dir: Path | None = None) -> EpochRow:
    """Pseudo labels (when used; saved under ``labels_dir``), one epoch of training, and val (on evaluation
    epochs); advances ``state``."""
    labels = label_epoch(config, state, data, epoch, device, dist, progress, labels_dir)
    loader = _loader(data.train_set, state.objective, config, epoch, steps_per_epoch, device, dist)
    row = train_one_epoch(train_model, loader, state, config.train, epoch, device, dist, progress)
    if labels is not None:
        row.pseudo = dict(labels.stats)
        row.time.update(extract=labels.timings.extract, cluster=labels.timings.cluster,
                        phases=labels.timings.phases)  # k-NN, distances, DBSCAN, OPLM, memories
    if data.val is not None and (epoch % config.train.eval_every == 0 or epoch == config.train.epochs):
        t0 = time.perf_counter()
        row.val, row.label_free = validate(state.model, data.val, device, config.train.eval_batch_size,
                                           config.loss.temperature, row.pseudo)
        row.time["eval"] = time.perf_counter() - t0
    state.epoch = epoch
    state.history.append(row.as_dict())
    return row


def label_epoch(config: Config, state: RunState, data: TrainData, epoch: int, device: torch.device,
                dist: DistInfo, progress: bool, labels_dir: Path | None = None) -> EpochLabels | None:
    """Give the objective this epoch's pseudo labels (none before ``cluster.start_epoch``, without
    clustering, or once the run has backed off), and save them as ``labels_dir/epoch_NNN.npz`` -> the labels
    (with their statistics and timings for the report), or None."""
    if not config.uses_pseudo_labels or epoch < config.cluster.start_epoch or state.backed_off is not None:
        state.objective.on_labels(None)
        return None
    labeller = Labeller.for_run(config, data.report_ids, dist, progress)
    labels, image_features, text_features = labeller(state.model, data.train_set, data.extract_set, device)
    with phase(log, "memories", labels.timings.phases):
        state.objective.on_labels(labels, image_features, text_features)
    if labels_dir is not None:
        labels.save(labels_dir / f"epoch_{epoch:03d}.npz")
    if labels.usable and dist.is_main:  # label-free signs of quality, which rank 0 reports
        labels.stats.update(label_free_quality(labels.image.numpy(), labels.text.numpy(),
                                               data.train_set.caption_to_image.numpy(), state.previous_labels))
        state.previous_labels = (labels.image.numpy(), labels.text.numpy())
    return labels


def _loader(train_set: TrainPairs, objective: Objective, config: Config, epoch: int, steps_per_epoch: int,
            device: torch.device, dist: DistInfo) -> DataLoader:
    """This epoch's batches: random pairs, or P x K pseudo identities; the order depends on (seed, epoch)."""
    generator = epoch_generator(config.train.seed, epoch)
    if objective.labels is not None and config.train.sampler_instances > 0:
        pair_labels = objective.labels.image[train_set.caption_to_image].numpy()
        sampler = PseudoIdentitySampler(pair_labels, config.train.sampler_instances, generator)
    else:
        sampler = RandomSampler(train_set, generator=generator)
    batches = ShardedBatchSampler(sampler, config.train.batch_size, dist, steps_per_epoch)
    return DataLoader(train_set, batch_sampler=batches, num_workers=config.data.num_workers,
                      pin_memory=device.type == "cuda", persistent_workers=False)


def train_one_epoch(model, loader: DataLoader, state: RunState, cfg: TrainConfig, epoch: int,
                    device: torch.device, dist: DistInfo, progress: bool) -> EpochRow:
    """One pass over ``loader``: forward, loss, backward, optimiser step, then the memory update."""
    objective, scaler = state.objective, state.scaler
    model.train()
    t0 = time.perf_counter()
    totals: dict[str, float] = {}
    seen = 0
    compute_time = 0.0  # forward, loss, backward and optimiser step; the rest of "train" is data and memory
    bar = tqdm(total=len(loader), desc=f"epoch {epoch}/{cfg.epochs}", disable=None if progress else True, leave=False)
    for item in loader:
        images = item["image"].to(device, non_blocking=True)
        tokens = item["tokens"].long().to(device, non_blocking=True)
        batch = objective.batch(item["index"], item["image_index"])
        t_step = time.perf_counter()
        state.optimizer.zero_grad(set_to_none=True)
        loss, terms, v, t = forward_backward(model, images, tokens, lambda v, t, b=batch: objective(v, t, b),
                                             cfg.accumulate, cfg.precision, scaler)
        scaler.step(state.optimizer)
        scaler.update()
        # the schedule is a function of the step's place in the run: a step the fp16 scaler skipped for overflow
        # advances it too, so that every epoch starts at its own rate (``optim.schedule: per-epoch``)
        with warnings.catch_warnings():  # PyTorch's "scheduler stepped before the optimiser" for a first skip
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)`")
            state.scheduler.step()
        compute_time += time.perf_counter() - t_step
        objective.after_step(v, t, batch)
        for name, value in {**terms, "loss": loss}.items():
            totals[name] = totals.get(name, 0.0) + float(value)
        seen += 1
        bar.set_postfix(loss=f"{float(loss):.3f}")
        bar.update()
    bar.close()
    if dist.enabled:  # each rank's terms are its share of the global batch's: report their mean
        names = sorted(totals)
        summed = all_reduce_sum(torch.tensor([totals[n] for n in names], dtype=torch.float64), dist)
        totals = {n: float(x) / dist.world_size for n, x in zip(names, summed, strict=True)}
    train_time = time.perf_counter() - t0
    return EpochRow(epoch, {k: v / max(1, seen) for k, v in totals.items()}, state.optimizer.param_groups[0]["lr"],
                    seen * cfg.batch_size / train_time, {"train": train_time, "forward_backward": compute_time})


def validate(model, val: EvalSplit, device: torch.device, batch_size: int, temperature: float,
             pseudo: dict[str, Any] | None = None) -> tuple[dict[str, Any] | None, dict[str, float]]:
    """One encoding of the val split -> ``(identity metrics or None without val identities, label-free
    scores)``: the pair and neighbourhood scores of its held-out pairs, and the label-free signs of the epoch's
    ``pseudo`` labels."""
    queries, gallery = val.features(model, device, batch_size)
    similarity = queries @ gallery.t()
    metrics = val.metrics(similarity).as_dict() if val.has_ids else None
    return metrics, {**pair_scores(similarity, val.caption_to_image, temperature),
                     **neighbourhood_scores(queries, gallery, val.caption_to_image), **cluster_scores(pseudo)}


def best_file(criterion: str, select_on: str | None) -> str:
    """The checkpoint of a criterion's best epoch: ``best.pt`` for the one that chooses, else
    ``best-on-val.pt`` / ``best-label-free.pt`` (kept so that both choices are reported on test)."""
    return "best.pt" if criterion == select_on else {"val": "best-on-val.pt", "label-free": "best-label-free.pt"}[
        criterion]


def improved_criteria(state: RunState, row: EpochRow, score_name: str) -> list[str]:
    """The criteria whose best this epoch beats (and record it): "val" (R1 + mAP over val identities) and
    "label-free" (``score_name`` of :attr:`EpochRow.label_free`), each where the epoch has it."""
    scores = {"val": None if row.val is None else row.val["rank1"] + row.val["mAP"],
              "label-free": (row.label_free or {}).get(score_name)}
    improved = []
    for criterion, score in scores.items():
        best = state.best[criterion]
        if score is not None and score > best.score:
            best.score, best.epoch = score, row.epoch
            improved.append(criterion)
    return improved


def label_free_choice(state: RunState, score_name: str) -> dict[str, Any] | None:
    best = state.best["label-free"]
    return None if best.epoch is None else {"epoch": best.epoch, "score": best.score, "name": score_name}


def back_off_if_stale(patience: int, counted_on: str, state: RunState, row: EpochRow, best: Path,
                      dist: DistInfo) -> None:
    """``cluster.backoff_patience``: after ``patience`` epochs in a row trained on pseudo labels whose score
    (``counted_on``, ``cluster.backoff_on`` resolved: "val" identities, or "label-free") is no new best, restore
    that best's weights (on every rank) and leave the pseudo labels for the rest of the run (:func:`label_epoch`).
    The optimiser, its schedule and the epoch count go on."""
    if not patience or state.backed_off is not None:
        return
    due = False
    scored = row.val if counted_on == "val" else row.label_free
    best_epoch = state.best[counted_on].epoch
    if dist.is_main and scored is not None and state.objective.labels is not None:
        state.stale_epochs = 0 if best_epoch == row.epoch else state.stale_epochs + 1
        due = state.stale_epochs >= patience and best_epoch is not None
    if not broadcast_object(due, dist):
        return
    if dist.is_main:
        state.model.load_state_dict(read_checkpoint(best)["model"])
        row.backed_off = {"restored_epoch": best_epoch, "stale_epochs": state.stale_epochs}
        log.warning("epoch %d: %d epoch(s) on pseudo labels without a better %s score than epoch %d's: back to "
                    "epoch %d's weights, and the instance loss alone from here on (cluster.backoff_patience=%d)",
                    row.epoch, state.stale_epochs, counted_on, best_epoch, best_epoch, patience)
    broadcast_module(state.model, dist)
    state.backed_off = row.epoch
    state.objective.on_labels(None)


def finish(state: RunState, data: TrainData, out: Path, device: torch.device, batch_size: int,
           result: RunResult) -> None:
    """Curves, then test metrics of the last model and of each criterion's choice ("best-on-val",
    "best-label-free"), written as ``results.{json,md}`` with what chose ``best.pt``."""
    plot_curves(state.history, state.zero_shot_val, out / "curves.png")
    if data.test is not None:
        result.test["last"] = data.test.report(state.model, device, batch_size)
        for criterion, row in (("val", "best-on-val"), ("label-free", "best-label-free")):
            if state.best[criterion].epoch is not None:
                best_model = load_checkpoint(out / best_file(criterion, data.select_on), device)[0]
                result.test[row] = data.test.report(best_model, device, batch_size)
    selection = {"select_on": data.select_on,
                 "val": None if state.best["val"].epoch is None else {"epoch": state.best["val"].epoch,
                                                                      "score": state.best["val"].score},
                 "label-free": result.label_free}
    summary = {"best_epoch": result.best_epoch, "test": result.test, "zero_shot_val": state.zero_shot_val,
               "selection": selection}
    atomic_write_text(out / "results.json", json.dumps(summary, indent=2))
    atomic_write_text(out / "results.md", results_table(result.test, title=f"test split, {data.name}"))
