"""The field's optimiser recipe (IRRA's ``solver/``): Adam, biases at a multiple of the learning rate without
weight decay, linear warm-up then cosine. Which parameters count as biases, Adam's epsilon and whether the
rate moves every step or every epoch are config fields (:class:`~cpcl.config.OptimConfig`)."""

from __future__ import annotations

import math

import torch
from torch import nn

from cpcl.config import OptimConfig


def takes_bias_recipe(name: str, param: nn.Parameter, rule: str) -> bool:
    """Whether parameter ``name`` gets the bias recipe under ``optim.bias_rule``: "name", its name contains
    "bias" (IRRA); "1d", it is a bias or any 1-D parameter (norm gains, embeddings of one vector)."""
    if rule == "name":
        return "bias" in name
    return name.endswith(".bias") or param.ndim < 2


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    weights, biases = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (biases if takes_bias_recipe(name, param, cfg.bias_rule) else weights).append(param)
    groups = [
        {"params": weights, "lr": cfg.lr, "weight_decay": cfg.weight_decay},
        {"params": biases, "lr": cfg.lr * cfg.bias_lr_factor, "weight_decay": cfg.weight_decay_bias},
    ]
    return torch.optim.Adam(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)


def lr_factor(cfg: OptimConfig, epochs: int, steps_per_epoch: int):
    """The learning-rate factor of optimiser step ``step`` (0-based): linear from ``warmup_start_factor`` to 1
    over the warm-up epochs, then cosine to ``min_lr_factor``. ``schedule: per-step`` moves it every step
    (cosine reaching its floor at the last step); ``per-epoch`` evaluates it at the step's epoch and holds it
    for the epoch (IRRA's ``LRSchedulerWithWarmup`` stepped once per epoch)."""
    unit = steps_per_epoch if cfg.schedule == "per-epoch" else 1
    warmup = cfg.warmup_epochs * steps_per_epoch // unit
    total = max(1, epochs * steps_per_epoch // unit)

    def factor(step: int) -> float:
        t = step // unit
        if t < warmup:
            return cfg.warmup_start_factor + (1 - cfg.warmup_start_factor) * t / warmup
        progress = (t - warmup) / max(1, total - warmup)
        return cfg.min_lr_factor + (1 - cfg.min_lr_factor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, epochs: int,
                    steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step ``LambdaLR`` (the trainer steps it after every optimiser step) with :func:`lr_factor`."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg, epochs, steps_per_epoch))
