"""The real-dataset configs train with IRRA's recipe, checked against our own transcription of IRRA's
``solver/build.py::build_optimizer``, ``solver/lr_scheduler.py::LRSchedulerWithWarmup`` (cosine mode, linear
warm-up, stepped once per epoch by ``processor/processor.py``), the defaults of ``utils/options.py`` and the
train transform of ``datasets/build.py`` (``--img_aug``). The transcription is the oracle: for every
parameter of ViT-B-16, the learning rate and weight decay at every step of the 60-epoch schedule, Adam's
hyper-parameters and random erasing's fill value must equal IRRA's."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision import transforms as T

from cpcl.config import OptimConfig, load_config, resolve_config_path
from cpcl.data.transforms import build_eval_transform, build_train_transform
from cpcl.engine.optim import build_optimizer, build_scheduler, lr_factor
from cpcl.model.checkpoint import build_model
from cpcl.model.preprocess import Preprocess

# utils/options.py defaults (run_irra.sh keeps them; it sets --img_aug, batch 64, 60 epochs)
IRRA_ARGS = dict(lr=1e-5, bias_lr_factor=2.0, weight_decay=4e-5, weight_decay_bias=0.0, alpha=0.9, beta=0.999,
                 lr_factor=5.0, num_epoch=60, warmup_factor=0.1, warmup_epochs=5, target_lr=0.0)
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
# training pairs // 64 of each dataset: the schedule's steps per epoch
STEPS_PER_EPOCH = {"cuhk_pedes": 68108 // 64, "icfg_pedes": 34674 // 64, "rstpreid": 37010 // 64}


def irra_param_groups(model: torch.nn.Module, a: dict) -> list[dict]:
    """build_optimizer: one group per trainable parameter; "cross" in the name -> lr x lr_factor, "bias" in the
    name -> lr x bias_lr_factor and weight_decay_bias, "classifier"/"mlm_head" -> lr x lr_factor."""
    groups = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        lr, decay = a["lr"], a["weight_decay"]
        if "cross" in name:
            lr = a["lr"] * a["lr_factor"]
        if "bias" in name:
            lr, decay = a["lr"] * a["bias_lr_factor"], a["weight_decay_bias"]
        if "classifier" in name or "mlm_head" in name:
            lr = a["lr"] * a["lr_factor"]
        groups.append({"name": name, "param": param, "lr": lr, "weight_decay": decay})
    return groups


def irra_lr(base_lr: float, epoch_index: int, a: dict) -> float:
    """LRSchedulerWithWarmup.get_lr at last_epoch = epoch_index (epoch 1 trains at last_epoch 0): linear warm-up
    from warmup_factor, then cosine from base_lr to target_lr over total_epochs - warmup_epochs."""
    if epoch_index < a["warmup_epochs"]:
        alpha = epoch_index / a["warmup_epochs"]
        return base_lr * (a["warmup_factor"] * (1 - alpha) + alpha)
    ratio = (epoch_index - a["warmup_epochs"]) / (a["num_epoch"] - a["warmup_epochs"])
    return a["target_lr"] + (base_lr - a["target_lr"]) * 0.5 * (1 + math.cos(math.pi * ratio))


@pytest.fixture(scope="module")
def vit_b16():
    config = load_config(resolve_config_path("cuhk_pedes_vitb16_cpcl"))
    model = build_model(config.model, pretrained=False)
    model.clip.logit_scale.requires_grad_(False)  # as the trainer does: the loss has its own temperature
    return model


@pytest.mark.parametrize("dataset", sorted(STEPS_PER_EPOCH))
def test_real_configs_train_with_irra_recipe(vit_b16, dataset):
    config = load_config(resolve_config_path(f"{dataset}_vitb16_cpcl"))
    baseline = load_config(resolve_config_path(f"{dataset}_vitb16_itc"))
    assert baseline.optim == config.optim and baseline.train.epochs == config.train.epochs
    assert config.train.epochs == IRRA_ARGS["num_epoch"] and config.train.batch_size == 64
    spe = STEPS_PER_EPOCH[dataset]
    optimizer = build_optimizer(vit_b16, config.optim)
    scheduler = build_scheduler(optimizer, config.optim, config.train.epochs, spe)
    theirs = irra_param_groups(vit_b16, IRRA_ARGS)
    group_of = {id(p): i for i, g in enumerate(optimizer.param_groups) for p in g["params"]}
    assert set(group_of) == {id(g["param"]) for g in theirs}  # the same parameters, each once
    # Adam(params, lr, betas=(alpha, beta), eps=1e-3)
    for group in optimizer.param_groups:
        assert group["betas"] == (IRRA_ARGS["alpha"], IRRA_ARGS["beta"]) and group["eps"] == 1e-3
        assert not group["amsgrad"] and not group.get("decoupled_weight_decay", False)
    # per parameter: weight decay, and the base rate whose schedule is compared below
    for g in theirs:
        ours = optimizer.param_groups[group_of[id(g["param"])]]
        assert ours["weight_decay"] == g["weight_decay"], g["name"]
        assert ours["initial_lr"] == pytest.approx(g["lr"], rel=1e-12), g["name"]
    # the rate at every step of the 60 epochs: IRRA holds epoch e's value for all its steps
    base = [g["initial_lr"] for g in optimizer.param_groups]
    for epoch_index in range(config.train.epochs):
        expected = [irra_lr(b, epoch_index, IRRA_ARGS) for b in base]
        for _ in range(spe):
            got = [g["lr"] for g in optimizer.param_groups]
            assert got == pytest.approx(expected, rel=1e-12, abs=1e-20), (dataset, epoch_index)
            optimizer.step()  # no gradients: nothing moves, but the scheduler expects a step first
            scheduler.step()
    assert scheduler.last_epoch == config.train.epochs * spe


@pytest.mark.parametrize("dataset", sorted(STEPS_PER_EPOCH))
def test_real_configs_augment_as_irra(dataset):
    """datasets/build.py with --img_aug: resize (torchvision's default, bilinear), flip 0.5, pad 10, random crop,
    normalise, RandomErasing(scale=(0.02, 0.4), value=CLIP's mean) with its default p=0.5; eval: the resize."""
    config = load_config(resolve_config_path(f"{dataset}_vitb16_cpcl"))
    steps = build_train_transform(Preprocess.of(config.model), config.augment).transforms
    kinds = [type(s).__name__ for s in steps]
    assert kinds == ["ResizeIfNeeded", "RandomHorizontalFlip", "Pad", "RandomCrop", "ToTensor", "Normalize",
                     "RandomErasing"]
    resize, flip, pad, crop, erase = steps[0], steps[1], steps[2], steps[3], steps[6]
    irra_resize = T.Resize((384, 128))
    assert resize.resize.interpolation == irra_resize.interpolation == T.InterpolationMode.BILINEAR
    assert resize.resize.antialias == irra_resize.antialias
    eval_resize = build_eval_transform(Preprocess.of(config.model)).transforms[0]
    assert eval_resize.resize.interpolation == T.InterpolationMode.BILINEAR
    assert flip.p == 0.5 and pad.padding == 10 and tuple(crop.size) == (384, 128)
    reference = T.RandomErasing(scale=(0.02, 0.4), value=CLIP_MEAN)
    assert (erase.p, erase.scale, erase.ratio) == (reference.p, reference.scale, reference.ratio)
    assert erase.value == pytest.approx(reference.value, rel=0, abs=0)
    # the fill lands in the image as IRRA's does: the same erased tensor from the same random draws
    image = torch.randn(3, 384, 128)
    torch.manual_seed(5)
    ours = T.RandomErasing(p=1.0, scale=erase.scale, value=erase.value)(image.clone())
    torch.manual_seed(5)
    theirs = T.RandomErasing(p=1.0, scale=(0.02, 0.4), value=CLIP_MEAN)(image.clone())
    assert torch.equal(ours, theirs) and not torch.equal(ours, image)


def test_per_step_schedule_is_unchanged_and_per_epoch_holds_within_an_epoch():
    """``schedule: per-step`` is the former schedule (SynthPedes keeps it); ``per-epoch`` is constant within
    an epoch and takes the per-step value at the epoch's first step."""
    step_factor = lr_factor(OptimConfig(warmup_epochs=2), 6, 10)
    epoch_factor = lr_factor(OptimConfig(warmup_epochs=2, schedule="per-epoch"), 6, 10)
    former = [0.1 + 0.9 * s / 20 if s < 20 else 0.5 * (1 + math.cos(math.pi * (s - 20) / 40)) for s in range(60)]
    assert [step_factor(s) for s in range(60)] == pytest.approx(former, rel=1e-15)
    for epoch in range(6):
        values = {epoch_factor(s) for s in range(epoch * 10, epoch * 10 + 10)}
        assert len(values) == 1
    assert epoch_factor(15) == pytest.approx(0.1 + 0.9 * 1 / 2) and epoch_factor(20) == 1.0
