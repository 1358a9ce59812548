"""The configuration's sections as frozen dataclasses, and the combinations of settings that are refused."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any

from cpcl.errors import CpclError


@dataclass(frozen=True)
class SynthConfig:
    """SynthPedes generation settings, used when ``data.format`` is ``synth``."""

    num_ids: int = 600
    seed: int = 0
    height: int = 128
    width: int = 64
    images_per_id: float = 3.0
    captions_per_image: int = 2
    val_ids: int = 100
    test_ids: int = 200
    near_duplicate_fraction: float = 0.15
    domain: str = "street"
    caption_noise: float = 0.08  # how often an annotator writes a confusable colour (navy as black)
    style: str = "classic"  # classic | cctv: how persons are drawn (the captions do not depend on it)
    # classic style: > 0, every image is taken by one of this many fixed cameras (its own scene and colour cast,
    # never in a caption); 0, every image has a scene and lighting of its own
    cameras: int = 0
    # the share of persons who wear the outfit of an earlier one (clothes, shoes, bag), told apart only by hair,
    # skin, build, headwear and glasses
    uniform_fraction: float = 0.0


@dataclass(frozen=True)
class DataConfig:
    format: str = "synth"  # cuhk-pedes | icfg-pedes | rstpreid | jsonl | synth
    root: str = "data/synthpedes"
    synth: SynthConfig = field(default_factory=SynthConfig)
    num_workers: int = 0
    # keep decoded training images in memory (small datasets); with num_workers > 0 every image is decoded once
    # before the first epoch, in the main process, and the workers of every epoch read that cache
    cache_images: bool = True
    # for a dataset without a val split (ICFG-PEDES): move this many persons of the training split, all their
    # images, into val (a fixed seeded draw, the same for every run); they are not trained on. 0: off
    val_ids_from_train: int = 0
    # for data without a val split whose persons are unknown (your own pairs): move this many training images,
    # with all their captions, into val (a fixed seeded draw); they are not trained on, and label-free selection
    # (train.select_on) scores on them. 0: off
    val_pairs_from_train: int = 0


@dataclass(frozen=True)
class ModelConfig:
    arch: str = "cpcl-vit-tiny"  # any open_clip model name, or one shipped in cpcl/model/archs
    pretrained: str | None = "cpcl:synthclip-tiny"  # open_clip tag, cpcl:<name>, a local file, or null
    image_size: tuple[int, int] = (128, 64)  # (height, width)
    context_length: int = 77
    # the transformer blocks' activation: QuickGELU (what OpenAI's CLIP was trained with) or GELU. null: the one
    # the weights were trained with (QuickGELU for OpenAI's archive and the tags open_clip marks so); a run
    # records the choice in config.yaml and in every checkpoint, and a model rebuilt from them uses it
    quick_gelu: bool | None = None
    # how images of another size are resized to image_size (part of the preprocessing that travels with the
    # weights): bicubic, as CLIP's own preprocessing; IRRA's transforms resize bilinearly (torchvision's default)
    resize: typing.Literal["bicubic", "bilinear"] = "bicubic"


@dataclass(frozen=True)
class AugmentConfig:
    hflip: bool = True
    pad: int = 10
    random_erasing: float = 0.5  # probability; 0 disables
    erasing_scale: tuple[float, float] = (0.02, 0.4)
    # what the erased box is filled with, per channel of the normalised image: 0 is the mean colour of CLIP's
    # pretraining data; IRRA writes CLIP's mean itself there (0.48145466, 0.4578275, 0.40821073)
    erasing_value: tuple[float, float, float] = (0.0, 0.0, 0.0)


@dataclass(frozen=True)
class OptimConfig:
    """Adam with a bias recipe, linear warm-up then cosine (IRRA's ``solver/``; the real-dataset configs set
    ``eps: 1.0e-3``, ``bias_rule: name`` and ``schedule: per-epoch``, as IRRA does)."""

    lr: float = 1e-5
    bias_lr_factor: float = 2.0
    weight_decay: float = 4e-5
    weight_decay_bias: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8  # Adam's epsilon (IRRA: 1e-3)
    # which parameters get the bias recipe (lr x bias_lr_factor, weight_decay_bias): "1d", every bias and every
    # 1-D parameter (norm gains, class embedding); "name", those whose name contains "bias" (IRRA)
    bias_rule: typing.Literal["1d", "name"] = "1d"
    warmup_epochs: int = 5
    warmup_start_factor: float = 0.1
    min_lr_factor: float = 0.0
    # how often the learning rate moves: every optimiser step, or once per epoch (IRRA: the rate of epoch e is
    # the schedule's value at e, held for the whole epoch)
    schedule: typing.Literal["per-step", "per-epoch"] = "per-step"


@dataclass(frozen=True)
class ClusterConfig:
    """Pseudo identities per modality, recomputed before every epoch (CPCL_METHOD.md §5)."""

    enabled: bool = False  # false: no clustering, the instance loss alone (the weak baseline)
    distance: str = "jaccard"  # jaccard (k-reciprocal, k1/k2) | cosine (k1 nearest neighbours)
    k1: int = 30
    k2: int = 6
    # k-reciprocal sets from the point itself and k1 others (Zhong et al.'s re_ranking), or from a k1-wide
    # neighbour table that includes the point, i.e. k1 - 1 others (cluster-contrast's compute_jaccard_distance,
    # which the field's weakly supervised code copies)
    knn_convention: typing.Literal["zhong", "field"] = "zhong"
    eps: float = 0.6
    min_samples: int = 4
    fuse_modalities: bool = False  # cluster images on image + mean-caption features, captions on caption + image
    max_cluster_fraction: float = 0.5  # a cluster above this share of samples counts as degenerate
    start_epoch: int = 1  # epochs before this one train the instance loss only (warm-up)
    # back off when the pseudo labels stop helping: after this many epochs in a row trained on pseudo labels
    # without a new best score (cluster.backoff_on), that best epoch's weights are restored and the remaining
    # epochs train the instance loss alone (0: never)
    backoff_patience: int = 0
    # what "no new best" counts in for the back-off: "auto", the score that chooses best.pt (train.select_on as
    # resolved: so a label-free choice backs off label-free and reads no identity); "val", val identities;
    # "label-free", the label-free score (train.label_free_score). "val" under label-free selection is refused
    backoff_on: typing.Literal["auto", "val", "label-free"] = "auto"


@dataclass(frozen=True)
class OplmConfig:
    """Outlier pseudo-label mining (§6)."""

    enabled: bool = False
    threshold: float | None = None  # minimum cosine to the borrowed neighbour


@dataclass(frozen=True)
class MemoryConfig:
    """Prototype memories (§7)."""

    momentum: float = 0.2
    hard: bool = False
    temperature: float = 0.05


@dataclass(frozen=True)
class LossConfig:
    """Weights of the loss terms (§8); a weight of 0 disables a term."""

    temperature: float = 0.02  # instance level (ITC / SDM)
    many_to_many: bool = False  # SDM whose positives share a pseudo label, instead of ITC on pairs
    # SDM's positives besides the pair itself: the same image pseudo label and/or the same caption pseudo label
    # ("union": either; "pair": none, SDM on pairs). The paper does not say which.
    sdm_positives: typing.Literal["union", "image-label", "text-label", "pair"] = "union"
    intra_weight: float = 0.0  # CE(v M_img, y_img) + CE(t M_txt, y_txt)
    cross_weight: float = 0.0  # CE(v M_txt, y_txt) + CE(t M_img, y_img)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 60
    batch_size: int = 64
    eval_batch_size: int = 256
    seed: int = 0
    eval_every: int = 1
    max_steps_per_epoch: int | None = None  # for smoke tests
    sampler_instances: int = 0  # 0: random pairs; K > 0: P x K batches of pairs sharing a pseudo label
    # autocast precision of forward and backward; weights, optimiser and losses stay fp32 (fp16 adds loss scaling)
    precision: typing.Literal["fp32", "bf16", "fp16"] = "fp32"
    # run each batch as this many micro-batches with gradient caching: less memory, same result
    accumulate: int = 1
    # distributed: the instance loss of each rank uses the features of all ranks as negatives
    gather_negatives: bool = True
    # the supervised upper bound: true identities replace the clusters. Also needs
    # `cpcl train --supervised-upper-bound`, so that no weakly supervised run can turn it on by accident.
    supervised: bool = False
    # what chooses best.pt: "val", val Rank-1 + mAP over held-out persons (needs val identities); "label-free",
    # train.label_free_score on held-out pairs, no identity read; "auto": val where the val split has identities,
    # else label-free where there are held-out pairs (a val split without identities, data.val_pairs_from_train)
    select_on: typing.Literal["auto", "val", "label-free"] = "auto"
    # the label-free score: "pair-mAP" / "pair-R1", each held-out caption retrieving its own image among the
    # held-out images; "pair-loss", minus the contrastive loss of the held-out pairs (loss.temperature); and,
    # for runs with pseudo labels only, "agreement" (image vs caption clusters) and "stability" (vs the last epoch)
    label_free_score: typing.Literal["pair-mAP", "pair-R1", "pair-loss", "agreement", "stability"] = "pair-mAP"
    # also write each epoch's row (losses, val metrics, pseudo-label statistics, phase times) as TensorBoard
    # scalars under RUN_DIR/tensorboard (needs the tensorboard package: pip install 'cpcl[tensorboard]')
    tensorboard: bool = False


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    oplm: OplmConfig = field(default_factory=OplmConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    loss: LossConfig = field(default_factory=LossConfig)

    def __post_init__(self) -> None:
        wrong = out_of_range(self)
        if wrong:
            raise ConfigError("; ".join(wrong))
        problems = inconsistencies(self)
        if problems:
            raise InconsistentConfig("; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(dataclasses.asdict(self))

    @property
    def uses_pseudo_labels(self) -> bool:
        """Whether training reads per-epoch labels: clusters, or the true identities of the upper bound."""
        return self.cluster.enabled or self.train.supervised


def trained_as_requested(recorded: Config, requested: Config) -> bool:
    """Whether a run's recorded config (its ``config.yaml``) is what ``requested`` asks for. A run records what
    it resolved (``model.quick_gelu``, chosen from the weights when null): such a key counts only where
    ``requested`` sets it."""
    if requested.model.quick_gelu is None:
        recorded = dataclasses.replace(recorded, model=dataclasses.replace(recorded.model, quick_gelu=None))
    return recorded.to_dict() == requested.to_dict()


class ConfigError(CpclError, ValueError):
    """A configuration file or override is invalid; the message names the key at fault."""


class InconsistentConfig(ConfigError):
    """Every key is valid, but together they cannot do what they say (the message names every key involved)."""


def inconsistencies(config: Config) -> list[str]:
    """Every combination of settings in ``config`` that cannot do what it says, each naming its keys."""
    c, t, loss = config.cluster, config.train, config.loss
    out = []
    labels = c.enabled or t.supervised
    needs_labels = [f"{key}={value}" for key, value, used in (
        ("loss.intra_weight", loss.intra_weight, loss.intra_weight != 0),
        ("loss.cross_weight", loss.cross_weight, loss.cross_weight != 0),
        ("loss.many_to_many", "true", loss.many_to_many),
        ("train.sampler_instances", t.sampler_instances, t.sampler_instances != 0),
        ("oplm.enabled", "true", config.oplm.enabled)) if used]
    if loss.sdm_positives != "union" and not loss.many_to_many:
        out.append(f"loss.sdm_positives={loss.sdm_positives} has no effect while loss.many_to_many is false")
    if needs_labels and not labels:
        out.append(f"{', '.join(needs_labels)} need(s) pseudo labels, but cluster.enabled is false "
                   "(set cluster.enabled=true, or turn those off)")
    if config.oplm.enabled and t.supervised:
        out.append("oplm.enabled=true with train.supervised=true: the true identities have no outliers to mine "
                   "(set oplm.enabled=false)")
    if config.oplm.threshold is not None and not config.oplm.enabled:
        out.append(f"oplm.threshold={config.oplm.threshold} has no effect while oplm.enabled is false")
    if c.fuse_modalities and not c.enabled:
        out.append("cluster.fuse_modalities=true has no effect while cluster.enabled is false")
    if c.backoff_patience and not labels:
        out.append(f"cluster.backoff_patience={c.backoff_patience} has no effect while cluster.enabled is false "
                   "(no pseudo labels to back off from)")
    if c.backoff_patience and t.eval_every != 1:
        out.append(f"cluster.backoff_patience={c.backoff_patience} counts epochs scored on val, but "
                   f"train.eval_every={t.eval_every} scores only some (set train.eval_every=1)")
    if config.data.synth.cameras and config.data.synth.style != "classic":
        out.append(f"data.synth.cameras={config.data.synth.cameras} applies to the classic style, not "
                   f"data.synth.style={config.data.synth.style}")
    if t.label_free_score in ("agreement", "stability") and not c.enabled:
        out.append(f"train.label_free_score={t.label_free_score} reads the pseudo labels, but cluster.enabled is "
                   "false (choose pair-mAP, pair-R1 or pair-loss)")
    if config.memory.hard and loss.intra_weight == 0 and loss.cross_weight == 0:
        out.append("memory.hard=true has no effect while loss.intra_weight and loss.cross_weight are both 0 "
                   "(no term reads the memories)")
    if labels and c.start_epoch > t.epochs:
        out.append(f"cluster.start_epoch={c.start_epoch} is after the last epoch (train.epochs={t.epochs}): "
                   "no epoch would use pseudo labels")
    if t.sampler_instances > t.batch_size:
        out.append(f"train.sampler_instances={t.sampler_instances} exceeds train.batch_size={t.batch_size}")
    if t.accumulate >= 1 and t.batch_size % t.accumulate:
        out.append(f"train.batch_size={t.batch_size} does not split into train.accumulate={t.accumulate} "
                   "equal micro-batches")
    return out


def out_of_range(config: Config) -> list[str]:
    """Every setting whose value no config can use (a count below its minimum, a temperature not above 0, a
    share outside [0, 1]), each naming its key: wrong on its own, whatever the other settings are."""
    c, t, loss = config.cluster, config.train, config.loss
    out = []
    if t.accumulate < 1:
        out.append(f"train.accumulate must be at least 1, got {t.accumulate}")
    for key, value, low in (("train.epochs", t.epochs, 1), ("train.batch_size", t.batch_size, 1),
                            ("train.eval_batch_size", t.eval_batch_size, 1), ("train.eval_every", t.eval_every, 1),
                            ("cluster.k1", c.k1, 1), ("cluster.k2", c.k2, 1), ("cluster.min_samples", c.min_samples, 1),
                            ("cluster.backoff_patience", c.backoff_patience, 0),
                            ("data.num_workers", config.data.num_workers, 0),
                            ("data.val_ids_from_train", config.data.val_ids_from_train, 0),
                            ("data.val_pairs_from_train", config.data.val_pairs_from_train, 0),
                            ("data.synth.cameras", config.data.synth.cameras, 0)):
        if value < low:
            out.append(f"{key} must be at least {low}, got {value}")
    if t.max_steps_per_epoch is not None and t.max_steps_per_epoch < 1:
        out.append(f"train.max_steps_per_epoch must be at least 1, got {t.max_steps_per_epoch} (null: no limit)")
    for key, value in (("loss.temperature", loss.temperature), ("memory.temperature", config.memory.temperature),
                       ("cluster.eps", c.eps), ("optim.lr", config.optim.lr), ("optim.eps", config.optim.eps)):
        if value <= 0:
            out.append(f"{key} must be positive, got {value}")
    for key, value in (("memory.momentum", config.memory.momentum),
                       ("cluster.max_cluster_fraction", c.max_cluster_fraction)):
        if not 0 <= value <= 1:
            out.append(f"{key} must be between 0 and 1, got {value}")
    return out


def _to_plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    return value
