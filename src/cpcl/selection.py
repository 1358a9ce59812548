"""Choosing settings without training identities: a grid (or a seeded random part of it) over config keys,
each trial trained and scored on the **val** split only; **test** is evaluated once, for the chosen trial.

A weakly supervised user has no identity labels for the training split, so nothing here reads them. A
trial's score is, with ``score="val"``, the val Rank-1 of its best-on-val checkpoint (val mAP breaks ties);
with ``score="label-free"``, the best label-free score of its run (``train.label_free_score`` on held-out
pairs; every trial then chooses its own ``best.pt`` label-free too), which needs no identity at all. It is
read from the run's own result, never from the pseudo-label diagnostics (a test permutes the training
identities and gets the same trials, scores and choice). Trials run with the test split switched off. A
trial whose directory already holds a finished run is read back, not retrained, so an interrupted
selection continues where it stopped.

``cpcl sweep --config synthpedes_cpcl --grid cluster.eps=0.4,0.5,0.6 --grid cluster.fuse_modalities=true,false
--out runs/sweep`` writes ``selection.md`` (every trial) and ``selection.json``.
"""

from __future__ import annotations

import itertools
import json
import logging
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from cpcl.config import Config, ConfigError, InconsistentConfig, load_config, trained_as_requested
from cpcl.engine.inputs import recorded_paths
from cpcl.engine.trainer import train
from cpcl.io import atomic_write_text, claim_outputs, exclusive
from cpcl.views.report import results_table

log = logging.getLogger(__name__)

SCORES = ("val", "label-free")  # what scores a trial: val identities, or the label-free score


@dataclass
class Trial:
    number: int
    overrides: tuple[str, ...]
    config: str = ""  # another config trained as it is (``also``); empty: the selection's config
    status: str = "done"  # done | invalid (the message says why)
    val_rank1: float | None = None
    val_mAP: float | None = None  # noqa: N815 - the field's name
    label_free: float | None = None  # the run's best label-free score (train.label_free_score)
    best_epoch: int | None = None
    seconds: float = 0.0
    message: str = ""


@dataclass
class Selection:
    trials: list[Trial]
    chosen: Trial | None
    test: dict[str, Any] | None = None  # test metrics of the chosen trial's best-on-val checkpoint
    settings: dict[str, Any] = field(default_factory=dict)


def parse_grid(items: list[str] | tuple[str, ...]) -> dict[str, list[str]]:
    """``["cluster.eps=0.4,0.5", "loss.many_to_many=true,false"]`` -> ``{key: [value text, ...]}``."""
    grid: dict[str, list[str]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key.strip() or not values.strip():
            raise ConfigError(f"--grid {item!r}: expected KEY=VALUE1,VALUE2,...")
        key, parts = key.strip(), [v.strip() for v in values.split(",")]
        if key in grid:
            raise ConfigError(f"--grid {key} is given twice ({key}={','.join(grid[key])} and {item}); give all its "
                              f"values in one: --grid {key}={','.join([*grid[key], *parts])}")
        if "" in parts:
            raise ConfigError(f"--grid {item!r}: an empty value; expected KEY=VALUE1,VALUE2,...")
        repeated = sorted({v for v in parts if parts.count(v) > 1})
        if repeated:
            raise ConfigError(f"--grid {item!r}: {', '.join(repeated)} given twice (each value trains one trial)")
        grid[key] = parts
    return grid


def trial_overrides(grid: dict[str, list[str]], limit: int | None = None, seed: int = 0) -> list[tuple[str, ...]]:
    """The config as it is (no override: the incumbent, always trial 0), then every combination of the grid,
    or ``limit`` of them drawn with ``seed`` (in grid order)."""
    combos = [tuple(f"{k}={v}" for k, v in zip(grid, values, strict=True))
              for values in itertools.product(*grid.values())]
    if limit is not None and limit < len(combos):
        keep = sorted(random.Random(seed).sample(range(len(combos)), limit))
        combos = [combos[i] for i in keep]
    return [(), *combos]


def run_selection(config_path: str | Path, grid: dict[str, list[str]], out: str | Path,
                  base_overrides: list[str] | tuple[str, ...] = (), limit: int | None = None, seed: int = 0,
                  device: torch.device | str = "cpu", overwrite: bool = False, progress: bool = False,
                  also: list[str | Path] | tuple[str | Path, ...] = (), score: str = "val") -> Selection:
    """Train every trial into ``out/trial-NNN``, choose on val (``score``: "val" identities, or "label-free"),
    evaluate the choice on test once.

    ``also``: other configs, each trained as it is (with ``base_overrides``) as one more trial — the
    baseline, for instance, so that the choice is never a setting that does worse on val than it."""
    if score not in SCORES:
        raise ConfigError(f"--score {score!r}: expected one of {', '.join(SCORES)}")
    if score == "label-free":  # each trial's best.pt is its label-free choice too
        base_overrides = ["train.select_on=label-free", *base_overrides]
    plan = [(Path(config_path), overrides, "") for overrides in trial_overrides(grid, limit, seed)]
    plan += [(Path(other), (), str(other)) for other in also]
    plan = check_plan(plan, base_overrides, score)  # before anything is written or trained
    with exclusive(Path(out), "a selection"):  # one sweep writes a folder at a time
        out = Path(out)
        if (out / "selection.json").is_file() or overwrite:  # a finished one is refused; a partial one continues
            claim_outputs(out, ("selection.json", "selection.md", "trial-*"), overwrite=overwrite,
                          holds="a finished selection", instead="choose another --out")
        out.mkdir(parents=True, exist_ok=True)
        trials = []
        for number, (path, overrides, other) in enumerate(plan):
            trials.append(_run_trial(number, path, [*base_overrides, *overrides], overrides,
                                     out / f"trial-{number:03d}", device, progress, other))
            log.info("trial %d %s: %s", number, _describe(trials[-1]),
                     trials[-1].status if trials[-1].message else _scores_text(trials[-1]))
        done = [t for t in trials if t.status == "done" and _score(t, score) is not None]
        chosen = max(done, key=lambda t: (_score(t, score), t.val_mAP if score == "val" else 0.0), default=None)
        selection = Selection(trials, chosen, settings={"config": str(config_path), "grid": grid,
                                                          "base_overrides": list(base_overrides), "limit": limit,
                                                          "seed": seed, "also": [str(a) for a in also],
                                                          "score": score})
        if chosen is not None:
            config = load_config(chosen.config or config_path, [*base_overrides, *chosen.overrides])
            selection.test = _test_once(out / f"trial-{chosen.number:03d}" / "best.pt", config, device)
        _write(selection, out)
        return selection


def _plan_name(entry: tuple[Path, tuple[str, ...], str]) -> str:
    path, overrides, _ = entry
    return f"the trial {' '.join(overrides)}" if overrides else f"{path.stem} as it is"


def check_plan(plan: list[tuple[Path, tuple[str, ...], str]], base_overrides,
               score: str = "val") -> list[tuple[Path, tuple[str, ...], str]]:
    """Build every trial's config first -> the plan, each config once. A grid or ``--set`` that cannot be read
    (an unknown key, a value of the wrong type or out of its range) stops the sweep before its first trial,
    naming it, and so do trials whose scores could not be compared (:func:`check_comparable`). A combination of
    valid settings that cannot do what it says stays a trial of its own, recorded as invalid and not trained. A
    trial whose config equals an earlier one's (a grid value equal to the incumbent's; 0.4 and 0.40) is said and
    left out: it would train the same run again."""
    configs, numbers = [], []
    for number, entry in enumerate(plan):
        path, overrides, _ = entry
        try:
            configs.append((f"{_plan_name(entry)} (trial {number})", load_config(path, [*base_overrides, *overrides])))
            numbers.append(number)
        except InconsistentConfig:
            continue
        except ConfigError as exc:
            raise ConfigError(f"{_plan_name(entry)} cannot be read, so no trial is trained: {exc}") from None
    check_comparable(configs, score)
    first_of: dict[str, int] = {}
    repeated = set()
    for number, (_, config) in zip(numbers, configs, strict=True):
        first = first_of.setdefault(json.dumps(config.to_dict(), sort_keys=True), number)
        if first != number:
            repeated.add(number)
            log.warning("%s is the same config as %s: trained once", _plan_name(plan[number]),
                        _plan_name(plan[first]))
    return [entry for number, entry in enumerate(plan) if number not in repeated]


# what every trial of a sweep must share, beyond the held-out data, for its score to rank them: the settings
# each score is computed with (a prefix names a whole section)
_SCORE_SETTINGS = {"val": (), "pair-mAP": (), "pair-R1": (), "pair-loss": ("loss.temperature",),
                   "agreement": ("cluster.", "oplm."), "stability": ("cluster.", "oplm.")}
# data settings that do not change what is held out, nor the data at all
_DATA_LOGISTICS = ("data.num_workers", "data.cache_images")


def check_comparable(configs: list[tuple[str, Config]], score: str) -> None:
    """Refuse, in one sentence naming two trials and the setting, a sweep whose trials' scores could not be
    compared: scored on other held-out data (any ``data.*`` setting but the loading ones), with another score
    (``train.label_free_score``, under ``--score label-free``), with a score that a swept setting changes
    (``pair-loss`` divides by ``loss.temperature``; ``agreement`` and ``stability`` read each trial's own
    clusters), or — under ``--score label-free`` — a back-off that reads val identities."""
    flat = {what: _flatten(config.to_dict()) for what, config in configs}
    names = list(flat)
    for what, config in configs:
        if score == "label-free" and config.cluster.backoff_patience and config.cluster.backoff_on == "val":
            raise ConfigError(f"{what}: cluster.backoff_on=val reads val identities, and this sweep chooses without "
                              "any (--score label-free), so no trial is trained: set cluster.backoff_on=auto or "
                              "label-free")
    if len(names) < 2:
        return
    first = flat[names[0]]
    name = first["train.label_free_score"] if score == "label-free" else "val"
    shared = [k for k in first if k.startswith("data.") and k not in _DATA_LOGISTICS]
    if score == "label-free":
        shared.append("train.label_free_score")
    shared += [k for k in first if any(k == p or (p.endswith(".") and k.startswith(p)) for p in _SCORE_SETTINGS[name])]
    for key in shared:
        for other in names[1:]:
            if flat[other][key] != first[key]:
                why = ("they would be scored on other held-out data" if key.startswith("data.") else
                       "they would be ranked by different scores" if key == "train.label_free_score" else
                       f"the score {name} depends on it")
                raise ConfigError(f"{names[0]} and {other} differ in {key} ({first[key]} vs {flat[other][key]}), and "
                                  f"{why}: a sweep compares trials scored alike, so no trial is trained")


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _score(trial: Trial, score: str) -> float | None:
    return trial.val_rank1 if score == "val" else trial.label_free


def _scores_text(trial: Trial) -> str:
    parts = [] if trial.val_rank1 is None else [f"val R1 {trial.val_rank1:.2f}"]
    if trial.label_free is not None:
        parts.append(f"label-free {trial.label_free:.2f}")
    return ", ".join(parts)


def _describe(trial: Trial) -> str:
    if trial.config:
        return f"config {Path(trial.config).stem} as it is"
    return " ".join(trial.overrides) or "the config as it is"


def _run_trial(number: int, config_path, overrides: list[str], own: tuple[str, ...], run_dir: Path, device,
               progress: bool, other: str = "") -> Trial:
    trial = Trial(number, own, other)
    try:
        config = load_config(config_path, overrides)
    except ConfigError as exc:  # a combination that cannot do what it says: recorded, not trained
        trial.status, trial.message = "invalid", str(exc)
        return trial
    saved = run_dir / "trial.json"
    # finished before an interruption: reused when it was trained from this very config (--set included)
    if saved.is_file() and trained_as_requested(load_config(run_dir / "config.yaml"), recorded_paths(config)):
        return Trial(**{**json.loads(saved.read_text()), "number": number, "overrides": own, "config": other})
    t0 = time.perf_counter()
    result = train(config, run_dir, device=device, progress=progress, overwrite=True, evaluate_test=False)
    trial.seconds = time.perf_counter() - t0
    if result.best_val is None and result.label_free is None:
        trial.status, trial.message = "invalid", "no val split: nothing to choose on"
        return trial
    if result.best_val is not None:
        trial.val_rank1, trial.val_mAP = result.best_val["rank1"], result.best_val["mAP"]
    trial.label_free = None if result.label_free is None else result.label_free["score"]
    trial.best_epoch = result.best_epoch
    atomic_write_text(saved, json.dumps(asdict(trial)))
    return trial


def _test_once(checkpoint: Path, config: Config, device) -> dict[str, Any] | None:
    """The chosen trial's ``best.pt`` on the test split: identity metrics, or the pair scores of a test split
    without identities; None (said once) where the data has no test split."""
    from cpcl.data.formats import load_annotations
    from cpcl.data.sources import annotation_format
    from cpcl.evaluation.evaluate import EvalSplit
    from cpcl.model.checkpoint import load_checkpoint

    records = load_annotations(annotation_format(config.data), config.data.root).split("test")
    if not records:
        log.info("%s has no test split: the chosen trial is reported on val alone", config.data.root)
        return None
    device = torch.device(device)
    model, tokenizer, preprocess, _, _ = load_checkpoint(checkpoint, device)
    split = EvalSplit(records, tokenizer, preprocess)
    if not split.has_ids:
        log.info("the test split is scored on %s", split.scored_as)
    return split.report(model, device, config.train.eval_batch_size)


def _write(selection: Selection, out: Path) -> None:
    score = selection.settings.get("score", "val")
    lines = ["| trial | settings | val R1 | val mAP | label-free | best epoch | seconds | |",
             "|---:|---|---:|---:|---:|---:|---:|---|"]
    for t in selection.trials:
        mark = "**chosen**" if selection.chosen is not None and t.number == selection.chosen.number else t.message
        if t.status == "done":
            numbers = [_number(t.val_rank1), _number(t.val_mAP), _number(t.label_free), str(t.best_epoch)]
        else:
            numbers = ["-", "-", "-", t.status]
        settings = f"`{' '.join(t.overrides)}`" if t.overrides else _describe(t)
        lines.append(f"| {t.number} | {settings} | {' | '.join(numbers)} | {t.seconds:.0f} | {mark} |")
    name = Path(selection.settings["config"]).stem
    how = ("the val Rank-1 of its best-on-val checkpoint" if score == "val" else
           "the best label-free score of its run (held-out pairs, no identity read)")
    text = (f"# Selection on val (config `{name}`, score: {score})\n\nEvery trial scored by {how}; test "
            "evaluated once, for the chosen trial.\n\n" + "\n".join(lines))
    if selection.chosen is not None and selection.test is not None:
        chosen = _describe(selection.chosen)
        text += "\n\n" + results_table({f"chosen: {chosen}": selection.test},
                                       title="Test split, chosen trial (its best.pt)")
    elif selection.chosen is not None:
        text += "\n\nThe data has no test split: the chosen trial is reported on val alone."
    atomic_write_text(out / "selection.md", text + "\n")
    atomic_write_text(out / "selection.json", json.dumps({
        "settings": selection.settings, "trials": [asdict(t) for t in selection.trials],
        "chosen": selection.chosen.number if selection.chosen else None, "test": selection.test}, indent=2))


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
