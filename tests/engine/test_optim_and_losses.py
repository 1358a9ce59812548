import math

import pytest
import torch
import torch.nn.functional as F

from cpcl.config import OptimConfig
from cpcl.engine.optim import build_optimizer, build_scheduler
from cpcl.losses.contrastive import itc_loss


def test_bias_lr_factor_and_no_decay_on_biases():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    opt = build_optimizer(model, OptimConfig(lr=1e-3, bias_lr_factor=2.0, weight_decay=0.1))
    weights, biases = opt.param_groups
    assert weights["lr"] == 1e-3 and biases["lr"] == 2e-3
    assert len(weights["params"]) == 1 and len(biases["params"]) == 3
    assert biases["weight_decay"] == 0.0


def test_warmup_then_cosine():
    model = torch.nn.Linear(2, 2)
    cfg = OptimConfig(lr=1.0, warmup_epochs=2, warmup_start_factor=0.1)
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, epochs=10, steps_per_epoch=10)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.1)
    assert lrs[10] == pytest.approx(0.55)
    assert lrs[20] == pytest.approx(1.0)
    assert lrs[60] == pytest.approx(0.5, abs=0.01)  # half way through the cosine
    assert all(a >= b for a, b in zip(lrs[20:], lrs[21:], strict=False))


def test_itc_matches_the_formula_and_has_gradients():
    torch.manual_seed(0)
    v = F.normalize(torch.randn(6, 8), dim=-1).requires_grad_()
    t = F.normalize(torch.randn(6, 8), dim=-1).requires_grad_()
    loss = itc_loss(v, t, 0.02)
    logits = v @ t.t() / 0.02
    want = 0.5 * (F.cross_entropy(logits, torch.arange(6)) + F.cross_entropy(logits.t(), torch.arange(6)))
    assert torch.allclose(loss, want)
    # with distinct images, the image-index form is the same loss
    assert torch.allclose(itc_loss(v, t, 0.02, torch.arange(6) * 3), want)
    loss.backward()
    assert v.grad.abs().sum() > 0 and t.grad.abs().sum() > 0


def test_itc_two_captions_of_one_image_are_both_positives():
    torch.manual_seed(1)
    v = F.normalize(torch.randn(3, 4), dim=-1)
    t = F.normalize(torch.randn(3, 4), dim=-1)
    same_image = torch.tensor([0, 0, 1])
    targets = torch.tensor([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    logits = v @ t.t() / 0.02
    want = 0.5 * (-(targets * F.log_softmax(logits, 1)).sum(1).mean()
                  - (targets * F.log_softmax(logits.t(), 1)).sum(1).mean())
    assert torch.allclose(itc_loss(v, t, 0.02, same_image), want)
    assert not torch.allclose(itc_loss(v, t, 0.02), want)


class _Pairs(torch.nn.Module):
    """A model of one weight: image and text features from it, so a gradient can be made infinite."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.eye(4))

    def forward(self, images, tokens):
        return F.normalize(images @ self.weight, dim=-1), F.normalize(tokens.float() @ self.weight, dim=-1)


class _ItcObjective:
    def __init__(self, overflow_at: set[int]):
        self.calls, self.overflow_at = 0, overflow_at

    def batch(self, index, image_index):
        return None

    def __call__(self, v, t, batch):
        self.calls += 1
        loss = itc_loss(v, t, 0.1)
        if self.calls in self.overflow_at:  # an fp16 overflow: the scaled gradient is not finite
            loss = loss * torch.tensor(float("inf"))
        return loss, {"itc": loss.detach()}

    def after_step(self, v, t, batch):
        pass


def test_a_step_skipped_for_overflow_keeps_the_schedule_on_its_epochs():
    """fp16: the step that the loss scaler skips still takes its place in the schedule, so with ``per-epoch`` every
    epoch runs at its own rate from its first step (a skipped step once left the schedule a step behind, and the
    next epoch's first step at the previous epoch's rate)."""
    from cpcl.config import TrainConfig
    from cpcl.engine.distributed import DistInfo
    from cpcl.engine.state import RunState
    from cpcl.engine.trainer import train_one_epoch

    steps = 4
    cfg = OptimConfig(lr=1.0, warmup_epochs=0, schedule="per-epoch")
    model = _Pairs()
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg, epochs=3, steps_per_epoch=steps)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 4)
    state = RunState(model, optimizer, scheduler, scaler, _ItcObjective(overflow_at={2}))
    loader = [{"image": torch.randn(3, 4), "tokens": torch.randn(3, 4), "index": torch.arange(3),
               "image_index": torch.arange(3)} for _ in range(steps)]
    seen_lr = []
    optimizer.register_step_pre_hook(lambda opt, args, kwargs: seen_lr.append(opt.param_groups[0]["lr"]))
    train_cfg = TrainConfig(epochs=3, batch_size=3)
    for epoch in (1, 2, 3):
        train_one_epoch(model, loader, state, train_cfg, epoch, torch.device("cpu"), DistInfo(), progress=False)
    factor = [cfg.min_lr_factor + (1 - cfg.min_lr_factor) * 0.5 * (1 + math.cos(math.pi * e / 3)) for e in range(3)]
    # the skipped step (the second) makes no optimiser step; every step taken runs at its epoch's rate
    assert seen_lr == pytest.approx([factor[0]] * 3 + [factor[1]] * 4 + [factor[2]] * 4)
    assert scheduler.last_epoch == 3 * steps
