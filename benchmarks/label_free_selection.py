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
from regimes import REGIMES
from report import command, machine, markdown_table, write_results
from scipy.stats import kendalltau

from cpcl.config import load_config, resolve_config_path
from cpcl.evaluation.label_free import SCORES as CANDIDATES

CONFIGS = {"synthpedes_itc": "ITC", "synthpedes_cpcl": "CPCL"}
# candidates made of recorded scores (each on a x100 scale): measured here before any is offered as a setting
COMBINATIONS = {"pair-mAP+nbr-agree": ("pair-mAP", "nbr-agree"), "pair-mAP+nbr-pairs": ("pair-mAP", "nbr-pairs")}
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
    if saved.is_file():
        return json.loads(saved.read_text())
    from cpcl.engine import trainer

    config = load_config(resolve_config_path(config_name),
                         [*REGIMES[regime][1], *overrides, f"train.seed={seed}", f"train.epochs={epochs}"])
    test_r1: dict[int, float] = {}
    run_epoch = trainer.run_epoch

    def run_epoch_and_test(config, state, train_model, data, epoch, steps_per_epoch, device, *args, **kwargs):
        row = run_epoch(config, state, train_model, data, epoch, steps_per_epoch, device, *args, **kwargs)
        # the evidence only: nothing in the run reads this (and no generator moves: the evaluation loader has
        # its own)
        test_r1[epoch] = data.test.evaluate(state.model, device, 256).rank1
        return row

    trainer.run_epoch = run_epoch_and_test
    try:
        trainer.train(config, out, progress=False, overwrite=True)
    finally:
        trainer.run_epoch = run_epoch
    rows = []
    for line in (out / "metrics.jsonl").read_text().splitlines()[1:]:
        row = json.loads(line)
        rows.append({"epoch": row["epoch"], "val": row["val"]["rank1"] + row["val"]["mAP"],
                     "val_rank1": row["val"]["rank1"], "label_free": row["label_free"],
                     "test_rank1": test_r1[row["epoch"]]})
    saved.write_text(json.dumps(rows))
    return rows


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


def report(analyses: list[dict], sweeps: list[dict], args: argparse.Namespace, pairs: dict | None = None) -> str:
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
        markdown_table(header, rows, "lrlrrrrrrl"), *sweep_report(sweeps), *pairwise_report(pairs or {})])


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
    args = parser.parse_args()
    grid = [f"synthpedes_cpcl {key}={value}" for key, values in (g.split("=", 1) for g in args.grid)
            for value in values.split(",")]
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    runs, analyses, sweeps = {}, [], []
    for regime in args.regimes:
        for epochs in args.epochs:
            for config in [*CONFIGS, *grid]:
                for seed in args.seeds:
                    runs[(regime, config, seed, epochs)] = run_one(regime, config, seed, epochs, args.runs)
                    print(f"{regime} {config} seed {seed} e{epochs}: done", flush=True)
            analyses.append(analyse(runs, regime, epochs, args.seeds))
            if grid:
                sweeps.append(sweep(runs, regime, epochs, args.seeds, [*CONFIGS, *grid]))
    pairs = pairwise(runs, [(r, e) for r in args.regimes for e in args.epochs], [*CANDIDATES, *COMBINATIONS])
    write_results(args.name, {"command": command(), "machine": machine(), "analyses": analyses,
                              "sweeps": sweeps, "pairwise": pairs,
                              "runs": {"|".join(map(str, k)): v for k, v in runs.items()}},
                  report(analyses, sweeps, args, pairs))


if __name__ == "__main__":
    main()
