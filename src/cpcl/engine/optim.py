"""The field's optimiser recipe: Adam, biases at a multiple of the learning rate, linear warm-up then cosine."""

from __future__ import annotations

import math

import torch
from torch import nn

from cpcl.config import OptimConfig


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    weights, biases = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        # biases and 1-d parameters (norm gains, embeddings of one vector) get the bias recipe
        (biases if name.endswith(".bias") or param.ndim < 2 else weights).append(param)
    groups = [
        {"params": weights, "lr": cfg.lr, "weight_decay": cfg.weight_decay},
        {"params": biases, "lr": cfg.lr * cfg.bias_lr_factor, "weight_decay": cfg.weight_decay_bias},
    ]
    return torch.optim.Adam(groups, lr=cfg.lr, betas=cfg.betas)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, epochs: int,
                    steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step factor: linear from ``warmup_start_factor`` to 1 over the warm-up epochs, then cosine to
    ``min_lr_factor`` at the last step."""
    warmup = cfg.warmup_epochs * steps_per_epoch
    total = max(1, epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warmup:
            return cfg.warmup_start_factor + (1 - cfg.warmup_start_factor) * step / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return cfg.min_lr_factor + (1 - cfg.min_lr_factor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
