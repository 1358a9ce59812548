"""What CPCL's wrong pseudo-label pairs look like on SynthPedes: how many attributes two *different* persons
put in one image cluster differ in, against two different persons drawn at random (and, on SynthPedes drawn
with ``cameras``, how often the two share a camera).

Reads the last epoch's image pseudo labels from each run's ``last.pt`` and the identities' attributes from
``synthpedes_meta.json`` — held-out information, for this report only (nothing here feeds training).

    python benchmarks/cluster_errors.py runs/ablation/synthpedes_cpcl-seed0 runs/regimes/cctv/synthpedes_cpcl-seed0

writes benchmarks/results/cluster_errors.{json,md}.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from report import command, machine, markdown_table, write_results

from cpcl.config import load_config
from cpcl.data.formats import load_annotations
from cpcl.data.sources import annotation_format
from cpcl.model.checkpoint import read_checkpoint

ATTRIBUTES = ("gender", "hair_length", "hair_colour", "upper_type", "upper_colour", "lower_type", "lower_colour",
              "shoes", "bag", "headwear")


def analyse(run: Path, epoch: int | None = None, random_pairs: int = 20000) -> dict:
    config = load_config(run / "config.yaml")
    if epoch is None:  # the last epoch's, as the checkpoint holds them
        labels = read_checkpoint(run / "last.pt")["run"]["labels"]["image"].numpy()
    else:
        labels = np.load(run / "pseudo_labels" / f"epoch_{epoch:03d}.npz")["image"]
    records = load_annotations(annotation_format(config.data), config.data.root).split("train")
    person = np.array([r.person_id for r in records])  # TrainPairs' image order: one record per image
    meta = json.loads((Path(config.data.root) / "synthpedes_meta.json").read_text())
    table = np.array([[meta["identities"][str(p)][a] for a in ATTRIBUTES] for p in person])
    camera_of = meta.get("camera_of")  # data.synth.cameras: which camera took each image
    camera = None if camera_of is None else np.array(
        [camera_of[r.image_path.relative_to(Path(config.data.root) / "imgs").as_posix()] for r in records])

    def differing(i: np.ndarray, j: np.ndarray) -> np.ndarray:
        return (table[i] != table[j]).sum(axis=1)

    same_i, same_j = [], []
    for cluster in np.unique(labels[labels >= 0]):
        members = np.where(labels == cluster)[0]
        i, j = np.triu_indices(len(members), k=1)
        same_i.append(members[i])
        same_j.append(members[j])
    i, j = np.concatenate(same_i), np.concatenate(same_j)
    correct = person[i] == person[j]
    rng = np.random.default_rng(0)
    ri, rj = rng.integers(len(person), size=(2, random_pairs))
    keep = person[ri] != person[rj]
    wrong_diff, random_diff = differing(i[~correct], j[~correct]), differing(ri[keep], rj[keep])
    return {"run": str(run), "pairs": int(len(i)), "pair_precision": float(correct.mean()),
            "wrong_pairs_differing": float(wrong_diff.mean()), "random_pairs_differing": float(random_diff.mean()),
            "wrong_pairs_sharing_upper_colour": float((table[i[~correct], 4] == table[j[~correct], 4]).mean()),
            "random_pairs_sharing_upper_colour": float((table[ri[keep], 4] == table[rj[keep], 4]).mean()),
            **({} if camera is None else {
                "wrong_pairs_sharing_camera": float((camera[i[~correct]] == camera[j[~correct]]).mean()),
                "random_pairs_sharing_camera": float((camera[ri[keep]] == camera[rj[keep]]).mean())})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="CPCL run directories (their last.pt)")
    parser.add_argument("--epoch", type=int, help="the labels an epoch trained on (RUN/pseudo_labels/epoch_NNN.npz) "
                                                  "instead of the last epoch's")
    parser.add_argument("--name", default="cluster_errors", help="results file stem")
    args = parser.parse_args()
    results = [analyse(run, args.epoch) for run in args.runs]
    rows = [[r["run"], r["pairs"], f"{100 * r['pair_precision']:.0f}%",
             f"{r['wrong_pairs_differing']:.2f}", f"{r['random_pairs_differing']:.2f}",
             f"{100 * r['wrong_pairs_sharing_upper_colour']:.0f}%",
             f"{100 * r['random_pairs_sharing_upper_colour']:.0f}%",
             *(f"{100 * r[key]:.0f}%" if key in r else "-"
               for key in ("wrong_pairs_sharing_camera", "random_pairs_sharing_camera"))]
            for r in results]
    labels = "last epoch's" if args.epoch is None else f"epoch {args.epoch}'s"
    text = "\n".join([f"`{command()}`  ", f"{machine()}; {labels} image pseudo labels; {len(ATTRIBUTES)} "
                      "attributes compared (" + ", ".join(ATTRIBUTES) + ").", "",
                      markdown_table(["run", "same-cluster pairs", "pair precision",
                                      "attributes differing: wrong pairs", "random different persons",
                                      "same upper colour: wrong pairs", "random different persons",
                                      "same camera: wrong pairs", "random different persons"],
                                     rows, "lrrrrrrrr")])
    write_results(args.name, {"command": command(), "results": results}, text)


if __name__ == "__main__":
    main()
