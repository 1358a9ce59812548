"""Where CPCL helps: the ITC baseline, CPCL and the supervised bound on several SynthPedes regimes.

A regime is a SynthPedes generated with other settings (drawing style, images and captions per identity,
look-alike persons, caption noise, size); each rung is a shipped config with only ``data.root`` and
``data.synth.*`` changed, run for every seed; every checkpoint is chosen on val. Reported per regime:
test Rank-1 of each rung (mean ± std over seeds), CPCL's gain over ITC, the share of the ITC ->
supervised gap it closes, whether it is above ITC on every seed by more than two of ITC's standard
deviations, the ratio of the seed spreads, and the pseudo labels' pair precision and recall (from the
held-out identities, for the report only) at CPCL's best epoch, next to the label-free signs a run can see
itself (stability of the clusters between epochs, agreement of the image and caption clusters).

    python benchmarks/regimes.py --seeds 0 1 2

writes benchmarks/results/regimes.{json,md}; runs under --runs/<regime>/<config>-seed<N> (the default
regime's are the ablation ladder's, under runs/ablation, and are reused when finished: --reuse).
``--epochs 5 10 20`` runs the rungs at several budgets (``train.epochs``) on the regimes given.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
from report import command, machine, markdown_table, train_or_reuse, write_results

from cpcl.config import load_config, resolve_config_path

# name -> (what differs, overrides of data.*); the default is the demo's data
REGIMES: dict[str, tuple[str, list[str]]] = {
    "default": ("the demo's SynthPedes: classic drawing, ~3 images and 2 captions per identity, 15 % look-alikes",
                []),
    "cctv": ("the same persons drawn by the second style (a high surveillance camera, other bodies and palette)",
             ["data.root=data/regimes/cctv", "data.synth.style=cctv"]),
    "sparse": ("2 images per identity on average, 1 caption per image",
               ["data.root=data/regimes/sparse", "data.synth.images_per_id=2.0", "data.synth.captions_per_image=1"]),
    "lookalike": ("half the identities differ from another in one attribute; annotators confuse colours 25 % of "
                  "the time", ["data.root=data/regimes/lookalike", "data.synth.near_duplicate_fraction=0.5",
                               "data.synth.caption_noise=0.25"]),
    "cameras": ("every image taken by one of 6 fixed cameras, each with its own scene and strong colour cast that "
                "no caption mentions (persons sharing a camera look alike); otherwise the default",
                ["data.root=data/regimes/cameras", "data.synth.cameras=6"]),
    "uniforms": ("half the persons wear the outfit (clothes, shoes, bag) of an earlier one, told apart only by hair, "
                 "skin, build, headwear and glasses; otherwise the default",
                 ["data.root=data/regimes/uniforms", "data.synth.uniform_fraction=0.5"]),
    "views": ("5 images per person, each from one of 6 fixed cameras with its own scene and colour cast, and one "
              "caption per image: a person's images differ more than an image's captions do, so what CPCL adds is "
              "mostly identity-level (a caption near its person's other images)",
              ["data.root=data/regimes/views", "data.synth.cameras=6", "data.synth.images_per_id=5.0",
               "data.synth.captions_per_image=1"]),
    "large": ("2300 identities (2000 train), otherwise the default",
              ["data.root=data/regimes/large", "data.synth.num_ids=2300"]),
}
RUNGS = {"synthpedes_itc": "ITC", "synthpedes_pmm": "PMM", "synthpedes_hcm": "HCM", "synthpedes_cpcl": "CPCL",
         "synthpedes_cpcl_backoff": "CPCL + back-off", "synthpedes_supervised": "supervised"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--regimes", nargs="+", default=["default", "cctv", "sparse", "lookalike"],
                        choices=list(REGIMES))
    parser.add_argument("--rungs", nargs="+", default=["synthpedes_itc", "synthpedes_cpcl", "synthpedes_supervised"],
                        choices=list(RUNGS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, nargs="+", default=[5], help="train.epochs budgets to run")
    parser.add_argument("--runs", default="runs/regimes")
    parser.add_argument("--reuse", action="store_true", help="take finished runs of the same config")
    parser.add_argument("--name", default="regimes", help="results file stem")
    parser.add_argument("--selection", action="append", default=[], metavar="REGIME=SWEEP_DIR",
                        help="also run the pseudo-label rungs of REGIME with the settings `cpcl sweep` chose on "
                             "that regime's val (SWEEP_DIR/selection.json), as rows of their own")
    args = parser.parse_args()
    args.chosen = dict(_chosen_settings(item) for item in args.selection)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("cpcl").setLevel(logging.INFO)

    rows = []
    for regime in args.regimes:
        for epochs in args.epochs:
            for rung in args.rungs:
                for seed in args.seeds:
                    rows.append(run_one(regime, rung, seed, epochs, args))
            for rung in (r for r in args.rungs if r != "synthpedes_itc" and args.chosen.get(regime)):
                for seed in args.seeds:
                    rows.append(run_one(regime, rung, seed, epochs, args, args.chosen[regime]))
    results = {"command": command(), "machine": machine(), "runs": rows}
    write_results(args.name, results, report(rows, args))


def _chosen_settings(item: str) -> tuple[str, tuple[str, ...]]:
    """``REGIME=SWEEP_DIR`` -> the regime and the overrides its selection chose (refused if it chose another
    config, e.g. the baseline: then there are no CPCL settings to run)."""
    regime, _, sweep = item.partition("=")
    if regime not in REGIMES:
        raise SystemExit(f"--selection {item}: unknown regime {regime!r}")
    saved = json.loads((Path(sweep) / "selection.json").read_text())
    chosen = next(t for t in saved["trials"] if t["number"] == saved["chosen"])
    if chosen.get("config"):
        raise SystemExit(f"--selection {item}: the selection chose {chosen['config']} as it is, not CPCL settings")
    return regime, tuple(chosen["overrides"])


def run_one(regime: str, rung: str, seed: int, epochs: int, args: argparse.Namespace,
            chosen: tuple[str, ...] | None = None) -> dict:
    overrides = [*REGIMES[regime][1], *(chosen or ()), f"train.seed={seed}", f"train.epochs={epochs}"]
    config = load_config(resolve_config_path(rung), overrides)
    stem = f"{rung}-seed{seed}" + (f"-e{epochs}" if epochs != 5 else "")
    shipped = regime == "default" and epochs == 5 and chosen is None
    out = Path("runs/ablation" if shipped else args.runs) / (
        "" if shipped else regime + ("-selected" if chosen is not None else "")) / stem
    done = train_or_reuse(out, config, args.reuse)
    row = {"regime": regime, "settings": "chosen on its val" if chosen is not None else "shipped",
           "overrides": list(chosen or ()), "rung": rung, "seed": seed, "epochs": epochs,
           "best_epoch": done["best_epoch"],
           "wall_s": done["wall_s"], "test": done["test"]["best-on-val"], "zero_shot": done["test"]["zero-shot"],
           "pseudo": _pseudo_at(out / "metrics.jsonl", done["best_epoch"])}
    print(f"{regime} e{epochs} {rung} seed {seed}: R1 {row['test']['rank1']:.2f} ({row['wall_s']:.0f}s)", flush=True)
    return row


def _pseudo_at(metrics: Path, epoch: int | None) -> dict:
    """The pseudo-label statistics of ``epoch`` (the labels that epoch trained on), or {}."""
    for line in metrics.read_text().splitlines():
        row = json.loads(line)
        if row.get("epoch") == epoch:
            return row.get("pseudo", {})
    return {}


def _r1(rows: list[dict]) -> np.ndarray:
    return np.array([r["test"]["rank1"] for r in sorted(rows, key=lambda r: r["seed"])])


def _std(x: np.ndarray) -> float:
    return float(x.std(ddof=1)) if len(x) > 1 else 0.0


def report(rows: list[dict], args: argparse.Namespace) -> str:
    """One line per regime and budget: the rungs' test R1, CPCL against ITC and the aim, pseudo-label quality."""
    lines = [f"Command: `{command()}`  ", f"Machine: {machine()}  ",
             f"Seeds {args.seeds}; test Rank-1 of the best-on-val checkpoint, mean ± sample std over seeds. "
             "*gap closed*: (CPCL − ITC) / (supervised − ITC). *aim*: CPCL above ITC on every seed by more than "
             "two of ITC's standard deviations, closing ≥ 85 % of the gap, with a seed spread no wider than "
             "ITC's (only where supervised is clearly above ITC). Pair precision/recall: CPCL's pseudo labels at "
             "its best epoch against the held-out training identities (a report; nothing reads them).", ""]
    header = ["regime", "settings", "epochs", "zero-shot", *[RUNGS[r] for r in args.rungs]]
    full = {"synthpedes_itc", "synthpedes_cpcl", "synthpedes_supervised"} <= set(args.rungs)
    if full:
        header += ["CPCL − ITC", "gap closed", "aim", "pair P img / txt", "pair R img / txt", "stability img / txt",
                   "agreement"]
    table = []
    for regime, settings, epochs in dict.fromkeys((r["regime"], r["settings"], r["epochs"]) for r in rows):
        sel = [r for r in rows if r["regime"] == regime and r["epochs"] == epochs
               and (r["settings"] == settings or r["rung"] == "synthpedes_itc")]  # ITC has no settings to choose
        by = {rung: [r for r in sel if r["rung"] == rung] for rung in args.rungs}
        cells = [regime, settings, epochs, f"{sel[0]['zero_shot']['rank1']:.2f}"]
        cells += [f"{_r1(by[r]).mean():.2f} ± {_std(_r1(by[r])):.2f}" for r in args.rungs]
        if full:
            cells += _verdict(_r1(by["synthpedes_itc"]), _r1(by["synthpedes_cpcl"]),
                              _r1(by["synthpedes_supervised"]), by["synthpedes_cpcl"])
        table.append(cells)
    lines.append(markdown_table(header, table, "lllr" + "r" * (len(header) - 4)))
    lines += ["", "Regimes:"] + [f"- `{r}`: {REGIMES[r][0]}" for r in args.regimes]
    kept = [r for r, overrides in getattr(args, "chosen", {}).items() if not overrides]
    if kept:
        lines += ["", "Selected on their own val, the shipped settings won (no rows of their own): "
                  + ", ".join(f"`{r}`" for r in kept) + "."]
    return "\n".join(lines)


def _verdict(itc: np.ndarray, cpcl: np.ndarray, sup: np.ndarray, cpcl_rows: list[dict]) -> list[str]:
    gain, gap = cpcl.mean() - itc.mean(), sup.mean() - itc.mean()
    closed = f"{100 * gain / gap:.0f}%" if gap > 0 else "-"
    if len(itc) < 2:
        aim = "n/a (one seed)"
    elif gap <= 2 * _std(itc):
        aim = "n/a (supervised not clearly above ITC)"
    else:
        margin = bool((cpcl - itc > 2 * _std(itc)).all())
        parts = [("every seed > 2σ" if margin else "not every seed > 2σ"),
                 ("≥ 85 %" if gain >= 0.85 * gap else "< 85 %"),
                 ("spread ≤ ITC's" if _std(cpcl) <= _std(itc) else "spread > ITC's")]
        met = margin and gain >= 0.85 * gap and _std(cpcl) <= _std(itc)
        aim = ("met" if met else "missed") + f" ({', '.join(parts)})"
    pseudo = [r["pseudo"] for r in cpcl_rows if r["pseudo"]]

    def mean(key: str, percent: bool = True) -> str:
        values = [p[key] for p in pseudo if key in p]
        if not values:
            return "-"
        return f"{100 * np.mean(values):.0f}%" if percent else f"{np.mean(values):.2f}"

    return [f"{gain:+.2f}", closed, aim, f"{mean('image_pair_precision')} / {mean('text_pair_precision')}",
            f"{mean('image_pair_recall')} / {mean('text_pair_recall')}",
            f"{mean('image_stability', False)} / {mean('text_stability', False)}", mean("agreement", False)]


if __name__ == "__main__":
    sys.exit(main())
