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
