"""Can a run choose without identity labels? Every label-free candidate score against val-identity R1 and test R1.

For each SynthPedes regime, budget (``train.epochs``) and seed, the ITC baseline and CPCL are trained once with
the shipped settings. Every epoch records val-identity R1 + mAP (what the protocol chooses on today), every
label-free candidate (``evaluation.label_free``: pair-mAP, pair-R1, pair-loss on the val split's pairs with
identities ignored; agreement and stability of the pseudo labels) and — for this evidence only, never read by
any choice — test R1 of the epoch's model. Reported per regime and budget:

- Kendall τ over epochs of each candidate with val-identity R1 and with test R1 (mean over runs);
- checkpoint regret: test R1 of the epoch val identities choose minus test R1 of the epoch the candidate
  chooses (mean over runs; 0 = as good as choosing with identities);
- the choice between ITC and CPCL (the sweep of two trials, ``cpcl sweep --also synthpedes_itc``): each run's
  best candidate score decides; right when it picks the one whose label-free checkpoint has the higher test R1,
  counted where their test gap exceeds 1 R1, and its regret against the choice val identities make;
- with ``--grid KEY=V1,V2,...``: a sweep of more trials — ITC, shipped CPCL and CPCL with each grid value —
  chosen by each candidate that scores every trial (Kendall τ over the trials of their best candidate score with
  their best-on-val test R1, and the regret of the label-free trial against the trial val identities choose);
- run pairs (``pairwise``): within each regime and budget, every two runs (configs, grid values and seeds alike)
  ordered by each candidate's best score, against the order of the test R1 of their best-on-val checkpoints (a
  quality no candidate chooses), as the share ordered right among pairs whose test gap is 1-2, 2-4 and > 4 R1,
  and Kendall τ over the runs. Candidates are every score the runs record and ``COMBINATIONS`` of them.

    python benchmarks/label_free_selection.py --regimes default cctv sparse lookalike cameras uniforms --epochs 5
    python benchmarks/label_free_selection.py --regimes default cctv sparse lookalike cameras uniforms --epochs 10 \
        --name label_free_selection_e10
    python benchmarks/label_free_selection.py --regimes default --grid cluster.eps=0.3,0.5,0.6 --name label_free_sweep

writes benchmarks/results/<name>.{json,md}; runs under runs/label_free/<regime>/<config>-seed<N>-e<E>
(``epochs.json`` per run, reused when present).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import torch
from regimes import REGIMES
from report import command, machine, markdown_table, write_results
from scipy.stats import kendalltau

from cpcl.clustering.pseudo_labels import cluster_features
from cpcl.config import load_config, resolve_config_path
from cpcl.evaluation.label_free import SCORES as RECORDED
from cpcl.evaluation.label_free import neighbourhood_scores, pair_scores
from cpcl.evaluation.metrics import retrieval_metrics

CONFIGS = {"synthpedes_itc": "ITC", "synthpedes_cpcl": "CPCL"}
# fixed reference partitions of the held-out images, made once per regime by the starting (zero-shot) model:
# name -> which features are clustered. ``ref-*-mAP``: each held-out caption retrieving every image of its own
# image's reference cluster (mAP x100); the partition is the same for every run of a regime, so it compares
# runs of any config. Clustered with settings fixed before any run (below), never tuned on identities.
REFERENCES = {"ref-image-mAP": "image", "ref-text-mAP": "text", "ref-fused-mAP": "fused"}
REFERENCE_CLUSTERING = {"distance": "jaccard", "k1": 10, "k2": 3, "eps": 0.6, "min_samples": 2}
CANDIDATES = (*RECORDED, *REFERENCES)
# candidates made of other scores (each on a x100 scale): measured here before any is offered as a setting
COMBINATIONS = {"pair-mAP+nbr-agree": ("pair-mAP", "nbr-agree"), "pair-mAP+nbr-pairs": ("pair-mAP", "nbr-pairs"),
                **{f"pair-mAP+{name}": ("pair-mAP", name) for name in REFERENCES}}
HELD_OUT_VERSION = 1  # of the scores computed from a run's saved held-out features (held_out_scores.json)
GAPS = ((1.0, 2.0), (2.0, 4.0), (4.0, float("inf")))  # test R1 gaps of run pairs, by bucket (low exclusive)


def candidate_value(row: dict, name: str) -> float | None:
    """A recorded label-free score of an epoch's row, or the sum of a combination's (None where one is missing)."""
    parts = COMBINATIONS.get(name, (name,))
    values = [row["label_free"].get(part) for part in parts]
    return None if any(v is None for v in values) else float(sum(values))


def pairwise(runs: dict, groups: list[tuple[str, int]], names: list[str]) -> dict:
    """For each candidate: the share of run pairs (within a regime and budget) ordered right by the runs' best
    candidate score, by test-gap bucket, and the mean Kendall τ over each group's runs."""
    out = {}
    for name in names:
        right = {gap: 0 for gap in GAPS}
        counted = {gap: 0 for gap in GAPS}
        taus = []
        for regime, epochs in groups:
            scored = []
            for key, rows in runs.items():
                if key[0] != regime or key[3] != epochs:
                    continue
                best = _argmax(rows, lambda r, n=name: candidate_value(r, n))
                if best is not None:
                    scored.append((candidate_value(best, name), _argmax(rows, lambda r: r["val"])["test_rank1"]))
            if len(scored) >= 3:
                taus.append(kendalltau([a for a, _ in scored], [b for _, b in scored]).statistic)
            for i, (score_a, test_a) in enumerate(scored):
                for score_b, test_b in scored[i + 1:]:
                    gap = abs(test_a - test_b)
                    for low, high in GAPS:
                        if low < gap <= high:
                            counted[(low, high)] += 1
                            right[(low, high)] += (score_a - score_b) * (test_a - test_b) > 0
        out[name] = {"tau_runs": _mean(taus), **{f"right_{low:g}_{high:g}": (right[(low, high)], counted[(low, high)])
                                                 for low, high in GAPS}}
    return out


def trial_config(trial: str) -> tuple[str, list[str]]:
    """``synthpedes_cpcl cluster.eps=0.5`` -> (config name, [override])."""
    name, *overrides = trial.split(" ")
    return name, overrides


def run_one(regime: str, trial: str, seed: int, epochs: int, runs: Path) -> list[dict]:
    """Train one run (or read it back) -> one row per epoch: val (R1, mAP), label-free scores, test R1."""
    config_name, overrides = trial_config(trial)
    out = runs / regime / "-".join([config_name, *overrides, f"seed{seed}", f"e{epochs}"])
    saved = out / "epochs.json"
    if not saved.is_file():
        train_one(config_name, overrides, regime, seed, epochs, out)
    rows = json.loads(saved.read_text())
    if (out / "held_out.npz").is_file():  # runs recorded before the features were kept have the recorded scores
        held_out = held_out_scores(out)
        for row in rows:
            row["label_free"] = {**held_out[row["epoch"]], **row["label_free"]}
    return rows


def finished(regime: str, trial: str, seed: int, epochs: int, runs: Path) -> bool:
    config_name, overrides = trial_config(trial)
    return (runs / regime / "-".join([config_name, *overrides, f"seed{seed}", f"e{epochs}"]) / "epochs.json").is_file()


def train_one(config_name: str, overrides: list[str], regime: str, seed: int, epochs: int, out: Path) -> None:
    """Train a run, recording test R1 and the held-out features of every epoch -> ``epochs.json``."""
    from cpcl.engine import trainer

    config = load_config(resolve_config_path(config_name),
                         [*REGIMES[regime][1], *overrides, f"train.seed={seed}", f"train.epochs={epochs}"])
    test_r1: dict[int, float] = {}
    held_out: dict[str, np.ndarray] = {}  # the val split's features per epoch (0: the starting model)
    run_epoch, validate = trainer.run_epoch, trainer.validate

    def run_epoch_and_test(config, state, train_model, data, epoch, steps_per_epoch, device, *args, **kwargs):
        if not held_out:
            _keep_features(held_out, 0, *data.val.features(state.model, device, 256), data.val)
        row = run_epoch(config, state, train_model, data, epoch, steps_per_epoch, device, *args, **kwargs)
        # the evidence only: nothing in the run reads this (and no generator moves: the evaluation loader has
        # its own)
        test_r1[epoch] = data.test.evaluate(state.model, device, 256).rank1
        return row

    def validate_and_keep(model, val, device, *args, **kwargs):
        queries, gallery = val.features(model, device, 256)
        _keep_features(held_out, len([k for k in held_out if k.startswith("text_")]), queries, gallery, val)
        return validate(model, val, device, *args, **kwargs)

    trainer.run_epoch, trainer.validate = run_epoch_and_test, validate_and_keep
    try:
        trainer.train(config, out, progress=False, overwrite=True)
    finally:
        trainer.run_epoch, trainer.validate = run_epoch, validate
    np.savez_compressed(out / "held_out.npz", **held_out)
    rows = []
    saved = out / "epochs.json"
    for line in (out / "metrics.jsonl").read_text().splitlines()[1:]:
        row = json.loads(line)
        rows.append({"epoch": row["epoch"], "val": row["val"]["rank1"] + row["val"]["mAP"],
                     "val_rank1": row["val"]["rank1"], "label_free": row["label_free"],
                     "test_rank1": test_r1[row["epoch"]]})
    saved.write_text(json.dumps(rows))


def held_out_scores(out: Path) -> dict[int, dict[str, float]]:
    """Every candidate computed from a run's saved held-out features (``held_out.npz``), per epoch; cached in
    ``held_out_scores.json``. The references' bias against the held-out identities (pair precision and recall,
    for the report only) comes with them under epoch 0."""
    cache = out / "held_out_scores.json"
    if cache.is_file():
        saved = json.loads(cache.read_text())
        if saved.get("version") == HELD_OUT_VERSION:
            return {int(e): v for e, v in saved["epochs"].items()}
    with np.load(out / "held_out.npz") as kept:
        kept = dict(kept)
    own = torch.from_numpy(kept["caption_to_image"])
    references = reference_partitions(kept["text_0"], kept["image_0"], kept["caption_to_image"])
    epochs = {0: {name: pair_precision_recall(labels, kept["image_ids"]) for name, labels in references.items()}}
    for epoch in sorted(int(k.split("_")[1]) for k in kept if k.startswith("text_") and k != "text_0"):
        text = torch.from_numpy(kept[f"text_{epoch}"]).float()
        image = torch.from_numpy(kept[f"image_{epoch}"]).float()
        similarity = text @ image.t()
        scores = {**pair_scores(similarity, own), **neighbourhood_scores(text, image, own)}
        for name, labels in references.items():
            scores[name] = reference_map(similarity, own, labels)
        epochs[epoch] = scores
    cache.write_text(json.dumps({"version": HELD_OUT_VERSION, "epochs": epochs}))
    return epochs


def reference_partitions(text: np.ndarray, image: np.ndarray, caption_to_image: np.ndarray) -> dict[str, np.ndarray]:
    """Pseudo identities of the held-out images (-1: none) from the starting model's features: its image
    features, the mean of each image's caption features, or both summed (each unit-normalised)."""
    text = text.astype(np.float32)
    by_image = np.zeros((len(image), text.shape[1]), np.float32)
    np.add.at(by_image, caption_to_image, text)
    by_image /= np.linalg.norm(by_image, axis=1, keepdims=True)
    image = image.astype(np.float32)
    fused = image + by_image
    fused /= np.linalg.norm(fused, axis=1, keepdims=True)
    features = {"image": image, "text": by_image, "fused": fused}
    return {name: cluster_features(features[which], **REFERENCE_CLUSTERING).labels
            for name, which in REFERENCES.items()}


def reference_map(similarity: torch.Tensor, own: torch.Tensor, labels: np.ndarray) -> float:
    """mAP (x100) of each caption retrieving its own image and every image of that image's reference cluster."""
    ids = torch.from_numpy(labels).long()
    ids = torch.where(ids < 0, ids.max() + 1 + torch.arange(len(ids)), ids)  # an outlier is a cluster of its own
    return retrieval_metrics(similarity, ids[own], ids).mAP


def pair_precision_recall(labels: np.ndarray, ids: np.ndarray) -> dict[str, float]:
    """Of the image pairs a partition puts together, the share of one person (precision), and of the pairs of one
    person, the share it puts together (recall): the reference's bias, for the report."""
    same_cluster = (labels[:, None] == labels[None, :]) & (labels[:, None] >= 0)
    same_person = ids[:, None] == ids[None, :]
    off_diagonal = ~np.eye(len(ids), dtype=bool)
    together, person = same_cluster & off_diagonal, same_person & off_diagonal
    return {"precision": float((together & person).sum() / max(together.sum(), 1)),
            "recall": float((together & person).sum() / max(person.sum(), 1)),
            "clustered": float((labels >= 0).mean())}


def measure_cost(sizes: tuple[int, ...] = (1000, 10000), dim: int = 512, repeats: int = 3) -> dict:
    """Seconds per evaluation of each candidate family at ``sizes`` held-out captions (two per image), on unit
    features with a person structure (4 images a person, each image and caption near its person's centre): the
    pair scores, the three neighbourhood scores together, and a reference — built once per run (clustering the
    starting model's held-out images) — then its mAP every evaluation. Best of ``repeats`` (the first call
    compiles the clustering's kernels)."""
    rng = np.random.default_rng(0)
    return {captions: _cost_at(captions, dim, repeats, rng) for captions in sizes}


def _cost_at(captions: int, dim: int, repeats: int, rng: np.random.Generator) -> dict[str, float]:
    import time

    images = captions // 2
    centres = rng.standard_normal((images // 4 + 1, dim)).astype(np.float32)
    person = np.arange(images) // 4
    image = centres[person] + 0.8 * rng.standard_normal((images, dim)).astype(np.float32)
    own = np.repeat(np.arange(images), 2)
    text = centres[person[own]] + 0.8 * rng.standard_normal((captions, dim)).astype(np.float32)
    image /= np.linalg.norm(image, axis=1, keepdims=True)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    t_image, t_text, t_own = torch.from_numpy(image), torch.from_numpy(text), torch.from_numpy(own)
    labels = reference_partitions(text, image, own)["ref-fused-mAP"]
    calls = {"pair scores": lambda: pair_scores(t_text @ t_image.t(), t_own),
             "neighbourhood scores": lambda: neighbourhood_scores(t_text, t_image, t_own),
             "reference, built once per run": lambda: reference_partitions(text, image, own),
             "reference mAP": lambda: reference_map(t_text @ t_image.t(), t_own, labels)}
    out = {}
    for name, call in calls.items():
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            call()
            times.append(time.perf_counter() - t0)
        out[name] = min(times)
    return out


def cost_report(cost: dict) -> list[str]:
    if not cost:
        return []
    sizes = list(cost)
    rows = [[name, *(f"{cost[n][name]:.3f} s" for n in sizes)] for name in cost[sizes[0]]]
    return ["", "## Cost per evaluation", "",
            f"Held-out captions (two per image), 512-d unit features with a person structure; best of 3. Machine: "
            f"{machine()} (other work may share the cores: compare within the table).", "",
            markdown_table(["candidate", *(f"{n} captions" for n in sizes)], rows, "l" + "r" * len(sizes))]


def _keep_features(kept: dict, epoch: int, queries, gallery, val) -> None:
    """The held-out features of an epoch (float16), and once the pairing and — for the analysis of a reference
    partition's bias only — the identities."""
    kept[f"text_{epoch}"] = queries.half().cpu().numpy()
    kept[f"image_{epoch}"] = gallery.half().cpu().numpy()
    kept.setdefault("caption_to_image", val.caption_to_image.numpy())
    kept.setdefault("image_ids", np.asarray(val.gallery_ids))


def _argmax(rows: list[dict], key) -> dict:
    """The first row with the highest value (the trainer keeps the first best epoch too)."""
    scored = [r for r in rows if key(r) is not None]
    return max(scored, key=key) if scored else None


def analyse(runs: dict[tuple, list[dict]], regime: str, epochs: int, seeds: list[int]) -> dict:
    """Correlations and regrets of every candidate for one regime and budget."""
    out = {"regime": regime, "epochs": epochs, "candidates": {}}
    for name in CANDIDATES:
        taus_val, taus_test, regrets = [], [], []
        for config in CONFIGS:
            for seed in seeds:
                rows = runs[(regime, config, seed, epochs)]
                scored = [r for r in rows if r["label_free"].get(name) is not None]
                if len(scored) >= 3:
                    values = [r["label_free"][name] for r in scored]
                    taus_val.append(kendalltau(values, [r["val_rank1"] for r in scored]).statistic)
                    taus_test.append(kendalltau(values, [r["test_rank1"] for r in scored]).statistic)
                chosen = _argmax(rows, lambda r, n=name: r["label_free"].get(n))
                if chosen is not None:
                    regrets.append(_argmax(rows, lambda r: r["val"])["test_rank1"] - chosen["test_rank1"])
        choice = itc_vs_cpcl(runs, regime, epochs, seeds, name)
        out["candidates"][name] = {
            "tau_val": _mean(taus_val), "tau_test": _mean(taus_test), "checkpoint_regret": _mean(regrets),
            "max_checkpoint_regret": max(regrets) if regrets else None, **choice}
    return out


def itc_vs_cpcl(runs: dict, regime: str, epochs: int, seeds: list[int], name: str) -> dict:
    """Per seed: the trial (ITC or CPCL) with the higher best ``name`` score, its label-free checkpoint's test R1,
    against the trial val identities choose (its best-on-val checkpoint's test R1)."""
    right, counted, regrets, picks = 0, 0, [], []
    for seed in seeds:
        best = {}
        for config in CONFIGS:
            rows = runs[(regime, config, seed, epochs)]
            chosen = _argmax(rows, lambda r, n=name: r["label_free"].get(n))
            best[config] = {"score": None if chosen is None else chosen["label_free"][name],
                            "label_free_test": None if chosen is None else chosen["test_rank1"],
                            "val": max(r["val"] for r in rows),
                            "val_test": _argmax(rows, lambda r: r["val"])["test_rank1"]}
        if any(b["score"] is None for b in best.values()):
            continue  # a score ITC runs do not have cannot choose between ITC and CPCL
        pick = max(best, key=lambda c: best[c]["score"])
        by_ids = max(best, key=lambda c: best[c]["val"])
        picks.append(CONFIGS[pick])
        regrets.append(best[by_ids]["val_test"] - best[pick]["label_free_test"])
        gap = best["synthpedes_cpcl"]["label_free_test"] - best["synthpedes_itc"]["label_free_test"]
        if abs(gap) > 1:
            counted += 1
            right += (gap > 0) == (pick == "synthpedes_cpcl")
    return {"choice_right": right, "choice_counted": counted, "choice_regret": _mean(regrets), "picks": picks}


def sweep(runs: dict, regime: str, epochs: int, seeds: list[int], trials: list[str]) -> dict:
    """Per seed, the sweep of every trial: the one with the highest best score of each candidate that scores
    them all, against the one val identities choose (best val over epochs)."""
    out = {"regime": regime, "epochs": epochs, "trials": trials, "candidates": {}}
    for name in CANDIDATES:
        taus, regrets, picks, by_ids = [], [], [], []
        for seed in seeds:
            best = {}
            for trial in trials:
                rows = runs[(regime, trial, seed, epochs)]
                chosen = _argmax(rows, lambda r, n=name: r["label_free"].get(n))
                if chosen is None:
                    break
                best[trial] = {"score": chosen["label_free"][name], "label_free_test": chosen["test_rank1"],
                               "val": max(r["val"] for r in rows),
                               "val_test": _argmax(rows, lambda r: r["val"])["test_rank1"]}
            else:
                pick = max(trials, key=lambda t: best[t]["score"])
                ids = max(trials, key=lambda t: best[t]["val"])
                picks.append(trials.index(pick))
                by_ids.append(trials.index(ids))
                regrets.append(best[ids]["val_test"] - best[pick]["label_free_test"])
                taus.append(kendalltau([best[t]["score"] for t in trials],
                                       [best[t]["val_test"] for t in trials]).statistic)
        if regrets:
            out["candidates"][name] = {"tau_test": _mean(taus), "regret": _mean(regrets), "worst": max(regrets),
                                       "picks": picks, "by_ids": by_ids}
    return out


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None and not np.isnan(v)]
    return float(np.mean(values)) if values else None


def _fmt(value, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def pairwise_report(pairs: dict) -> list[str]:
    def share(cell) -> str:
        right, counted = cell
        return f"{100 * right / counted:.0f} % ({right}/{counted})" if counted else "–"

    rows = []
    for name, c in pairs.items():
        cells = [c[f"right_{low:g}_{high:g}"] for low, high in GAPS]
        total = (sum(r for r, _ in cells), sum(n for _, n in cells))
        rows.append([name, *map(share, cells), share(total), _fmt(c["tau_runs"])])
    header = ["candidate", "gap 1-2 R1", "gap 2-4 R1", "gap > 4 R1", "every gap > 1", "τ over runs"]
    return ["", "## Run pairs ordered right, by test gap", "",
            "Within each regime and budget, every two runs (configs, grid values, seeds); a run's score is its best "
            "candidate score, its quality the test R1 of its best-on-val checkpoint.", "",
            markdown_table(header, rows, "lrrrrr")]


def reference_bias(regime_runs: Path) -> dict | None:
    """The reference partitions' pair precision and recall against the held-out identities (the same for every
    run of a regime: one starting model)."""
    for cache in sorted(regime_runs.glob("*/held_out_scores.json")):
        return json.loads(cache.read_text())["epochs"]["0"]
    return None


def bias_report(bias: dict) -> list[str]:
    rows = [[regime, name, *(f"{100 * b[key]:.0f} %" for key in ("precision", "recall", "clustered"))]
            for regime, names in bias.items() if names for name, b in names.items()]
    if not rows:
        return []
    return ["", "## The fixed references and their bias", "",
            f"Each regime's held-out images clustered once by the starting model ({REFERENCE_CLUSTERING}, fixed "
            "before any run); against the held-out identities (read here only): of the image pairs put together, "
            "the share of one person (precision), of one person's pairs, the share put together (recall).", "",
            markdown_table(["regime", "reference", "pair precision", "pair recall", "images clustered"], rows,
                           "llrrr")]


def report(analyses: list[dict], sweeps: list[dict], args: argparse.Namespace, pairs: dict | None = None,
           bias: dict | None = None) -> str:
    rows = []
    for a in analyses:
        for name, c in a["candidates"].items():
            choice = (f"{c['choice_right']}/{c['choice_counted']}" if c["picks"] else "–")
            rows.append([a["regime"], a["epochs"], name, _fmt(c["tau_val"]), _fmt(c["tau_test"]),
                         _fmt(c["checkpoint_regret"]), _fmt(c["max_checkpoint_regret"]), choice,
                         _fmt(c["choice_regret"]), " ".join(c["picks"]) or "–"])
    header = ["regime", "epochs", "candidate", "τ with val-id R1", "τ with test R1", "checkpoint regret (R1)",
              "worst", "ITC vs CPCL right (gap > 1)", "choice regret (R1)", "label-free picks per seed"]
    return "\n".join([
        "# Label-free selection: each candidate score against identity-based choices", "",
        f"`{command()}` — {machine()}", "",
        f"Seeds {' '.join(map(str, args.seeds))}; ITC and CPCL with the shipped settings. τ: Kendall's, over each "
        "run's epochs, mean over runs. Regrets: test R1 of the identity-based choice minus test R1 of the "
        "label-free one (mean; worst for checkpoints). Test R1 per epoch is recorded for this table only.", "",
        markdown_table(header, rows, "lrlrrrrrrl"), *sweep_report(sweeps), *pairwise_report(pairs or {}),
        *bias_report(bias or {})])


def sweep_report(sweeps: list[dict]) -> list[str]:
    if not sweeps:
        return []
    lines = ["", "## Sweeps of more trials", ""]
    for s in sweeps:
        lines.append(f"{s['regime']}, {s['epochs']} epochs — trials: "
                     + "; ".join(f"{i} `{t}`" for i, t in enumerate(s["trials"])))
    rows = [[s["regime"], s["epochs"], name, _fmt(c["tau_test"]), _fmt(c["regret"]), _fmt(c["worst"]),
             " ".join(map(str, c["picks"])), " ".join(map(str, c["by_ids"]))]
            for s in sweeps for name, c in s["candidates"].items()]
    header = ["regime", "epochs", "candidate", "τ over trials with test R1", "sweep regret (R1)", "worst",
              "label-free pick per seed", "val-identity pick per seed"]
    return [*lines, "", markdown_table(header, rows, "lrlrrrll")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--regimes", nargs="+", default=["default"], choices=list(REGIMES))
    parser.add_argument("--epochs", type=int, nargs="+", default=[5])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--runs", type=Path, default=Path("runs/label_free"))
    parser.add_argument("--name", default="label_free_selection")
    parser.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                        help="also train CPCL with each value and report the sweep of every trial")
    parser.add_argument("--cost", action="store_true", help="also time each candidate at 1k and 10k captions")
    parser.add_argument("--finished-only", action="store_true",
                        help="train nothing: analyse the runs already under --runs (a seed missing a trial is left "
                             "out of that regime and budget, and the report says so)")
    parser.add_argument("--also", nargs="+", default=[], metavar="CONFIG",
                        help="more trials: shipped configs (the ablation ladder's rungs: synthpedes_pmm ...)")
    args = parser.parse_args()
    grid = [*args.also, *(f"synthpedes_cpcl {key}={value}" for key, values in (g.split("=", 1) for g in args.grid)
                          for value in values.split(","))]
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    runs, analyses, sweeps, left_out = {}, [], [], []
    trials = [*CONFIGS, *grid]
    for regime in args.regimes:
        for epochs in args.epochs:
            seeds = args.seeds
            if args.finished_only:
                seeds = [s for s in args.seeds if all(finished(regime, t, s, epochs, args.runs) for t in trials)]
                left_out += [f"{regime}, {epochs} epochs, seed {s}" for s in args.seeds if s not in seeds]
            for config in trials:
                for seed in seeds:
                    runs[(regime, config, seed, epochs)] = run_one(regime, config, seed, epochs, args.runs)
                    print(f"{regime} {config} seed {seed} e{epochs}: done", flush=True)
            if not seeds:
                continue
            analyses.append(analyse(runs, regime, epochs, seeds))
            if grid:
                sweeps.append(sweep(runs, regime, epochs, seeds, trials))
    pairs = pairwise(runs, [(r, e) for r in args.regimes for e in args.epochs], [*CANDIDATES, *COMBINATIONS])
    bias = {regime: reference_bias(args.runs / regime) for regime in args.regimes}
    cost = measure_cost() if args.cost else {}
    write_results(args.name, {"command": command(), "machine": machine(), "analyses": analyses,
                              "sweeps": sweeps, "pairwise": pairs, "reference_bias": bias, "cost": cost,
                              "left_out": left_out,
                              "runs": {"|".join(map(str, k)): v for k, v in runs.items()}},
                  report(analyses, sweeps, args, pairs, bias) + "\n" + "\n".join(cost_report(cost))
                  + (f"\n\nLeft out (a trial not trained): {'; '.join(left_out)}\n" if left_out else ""))


if __name__ == "__main__":
    main()
