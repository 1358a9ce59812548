"""A browser for the pseudo identities of a run: ``cpcl clusters RUN_DIR --epoch N``.

Reads the labels an epoch trained on (``RUN_DIR/pseudo_labels/epoch_NNN.npz``, written by every run that
clusters) and the run's training records, and draws each cluster of one modality: its images, their
captions, the members OPLM recovered from the outliers (amber frame), and — where the records carry
held-out identities, for the report only — its purity, with members of the majority person framed green
and the others red. Written: PNG sheets of ``--per-sheet`` clusters and a static ``index.html``
(thumbnails under ``thumbs/``) that opens without a server.
"""

from __future__ import annotations

import html
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cpcl.clustering.pseudo_labels import LABELS_DIR
from cpcl.config import load_config
from cpcl.data.datasets import read_image
from cpcl.data.sources import load_dataset
from cpcl.errors import CpclError
from cpcl.io import atomic_save, atomic_write_text, check_archive, claim_outputs
from cpcl.views.figures import AMBER, GREEN, GREY, RED, Cell, image_row, save_png, stack

OPLM_CLASS = ' class="oplm"'
VIEW_FILES = ("index.html", "sheet_*.png", "thumbs", "clusters.json")
ORDERS = ("largest", "impure")


class ClusterViewError(CpclError, ValueError):
    """A cluster view that cannot be drawn as asked (no such epoch, labels of other data)."""


@dataclass
class Cluster:
    label: int
    members: list[int]  # image or caption indices, in dataset order
    images: list[int]  # the image of each member
    recovered: list[bool]  # member was an outlier OPLM gave this label
    persons: list[int | None]  # held-out identity of each member's image (report only)

    @property
    def purity(self) -> float | None:
        if any(p is None for p in self.persons):
            return None
        return Counter(self.persons).most_common(1)[0][1] / len(self.persons)

    def drawing_order(self) -> list[int]:
        """Member positions as drawn: with identities, the majority person first, then the others by how many
        members they have; without, dataset order."""
        if self.purity is None:
            return list(range(len(self.members)))
        counts = Counter(self.persons)
        return sorted(range(len(self.members)), key=lambda i: (-counts[self.persons[i]], self.persons[i], i))

    def drawn(self, limit: int) -> list[int]:
        """The members drawn, in :meth:`drawing_order`: the first of each image (a text cluster holds several
        captions of one image, drawn once), at most ``limit``."""
        positions, seen = [], set()
        for i in self.drawing_order():
            if self.images[i] not in seen:
                seen.add(self.images[i])
                positions.append(i)
                if len(positions) == limit:
                    break
        return positions


def saved_epochs(run_dir: Path) -> list[int]:
    return sorted(int(p.stem.split("_")[1]) for p in (run_dir / LABELS_DIR).glob("epoch_*.npz"))


def load_epoch_labels(run_dir: Path, epoch: int | None) -> tuple[int, dict[str, np.ndarray]]:
    """``(epoch, arrays)`` of ``epoch`` (None: the last saved one), refused in one sentence if it is missing."""
    epochs = saved_epochs(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise ClusterViewError(f"{run_dir}: not a run directory (no config.yaml); pass the --out of a `cpcl train`")
    if not epochs:
        raise ClusterViewError(f"{run_dir} has no saved pseudo labels ({LABELS_DIR}/epoch_NNN.npz): the run did not "
                               "cluster (a baseline, the supervised bound) or was trained by an older cpcl")
    epoch = epochs[-1] if epoch is None else epoch
    if epoch not in epochs:
        raise ClusterViewError(f"{run_dir}: epoch {epoch} has no saved pseudo labels; epochs with labels: "
                               f"{_ranges(epochs)}")
    labels = run_dir / LABELS_DIR / f"epoch_{epoch:03d}.npz"
    check_archive(labels, "pseudo labels")
    with np.load(labels) as data:
        return epoch, {k: data[k] for k in data.files}


def _ranges(values: list[int]) -> str:
    parts, start = [], values[0]
    for prev, cur in zip(values, [*values[1:], None], strict=True):
        if cur != prev + 1:
            parts.append(f"{start}" if start == prev else f"{start}-{prev}")
            start = cur
    return ", ".join(parts)


def build_clusters(labels: dict[str, np.ndarray], owner: np.ndarray, persons: list[int | None],
                   modality: str) -> tuple[list[Cluster], int]:
    """Clusters of ``modality`` (``image`` or ``text``) -> (clusters, outliers)."""
    y = labels[modality]
    recovered = set(labels[f"{modality}_recovered"].tolist())
    image_of = np.arange(len(labels["image"])) if modality == "image" else owner
    clusters = []
    for label in np.unique(y[y >= 0]):
        members = np.flatnonzero(y == label).tolist()
        images = [int(image_of[m]) for m in members]
        clusters.append(Cluster(int(label), members, images, [m in recovered for m in members],
                                [persons[i] for i in images]))
    return clusters, int((y < 0).sum())


def render_clusters(run_dir: str | Path, epoch: int | None = None, out: str | Path | None = None,
                    modality: str = "image", order: str = "largest", clusters: int = 40, per_cluster: int = 10,
                    per_sheet: int = 10, overwrite: bool = False) -> dict:
    """Draw the ``clusters`` first clusters of an epoch (``order``: ``largest`` or ``impure``, the least pure
    first, where identities exist) -> a summary, also written to ``OUT/clusters.json``."""
    run_dir = Path(run_dir)
    if modality not in ("image", "text"):
        raise ClusterViewError(f"--modality {modality}: choose image or text")
    if order not in ORDERS:
        raise ClusterViewError(f"--order {order}: choose one of {', '.join(ORDERS)}")
    if min(clusters, per_cluster, per_sheet) < 1:
        raise ClusterViewError(f"--clusters and --per-cluster must be at least 1, got {clusters} and {per_cluster}")
    epoch, labels = load_epoch_labels(run_dir, epoch)
    config = load_config(run_dir / "config.yaml")
    records = load_dataset(config.data).split("train")
    captions = [c for r in records for c in r.captions]
    owner = np.array([i for i, r in enumerate(records) for _ in r.captions], dtype=np.int64)
    if (len(records), len(captions)) != (len(labels["image"]), len(labels["text"])):
        raise ClusterViewError(
            f"{run_dir}: epoch {epoch} labelled {len(labels['image'])} images and {len(labels['text'])} captions, "
            f"but {config.data.root} now holds {len(records)} and {len(captions)} training ones: the data changed")
    persons = [r.person_id for r in records]
    found, outliers = build_clusters(labels, owner, persons, modality)
    has_ids = all(p is not None for p in persons)
    if order == "impure" and not has_ids:
        raise ClusterViewError("--order impure needs identities on the training records (held out, for the report); "
                               "these records have none: use --order largest")
    if order == "impure":
        found.sort(key=lambda c: (c.purity, -len(c.members), c.label))
    else:
        found.sort(key=lambda c: (-len(c.members), c.label))
    shown = found[:clusters]
    target = claim_outputs(Path(out) if out else run_dir / "clusters" / f"epoch_{epoch:03d}_{modality}", VIEW_FILES,
                           overwrite=overwrite, holds="a cluster view", instead="choose another --out")

    rows = [image_row(_title(c, modality), _cells(c, records, per_cluster)) for c in shown]
    sheets = [save_png(stack(rows[i:i + per_sheet]), target / f"sheet_{i // per_sheet + 1:02d}.png").name
              for i in range(0, len(rows), per_sheet)]
    _write_page(target, run_dir, epoch, modality, order, shown, len(found), outliers, records, captions, owner,
                per_cluster)
    summary = {"run": str(run_dir), "epoch": epoch, "modality": modality, "order": order, "clusters": len(found),
               "shown": len(shown), "outliers": outliers, "recovered": int(sum(sum(c.recovered) for c in found)),
               "mean_purity": (float(np.mean([c.purity for c in found])) if has_ids and found else None),
               "sheets": sheets, "page": "index.html",
               "table": [{"label": c.label, "size": len(c.members), "purity": c.purity,
                          "recovered": int(sum(c.recovered))} for c in shown]}
    atomic_write_text(target / "clusters.json", json.dumps(summary, indent=2) + "\n")
    summary["out"] = str(target)
    return summary


def _title(c: Cluster, modality: str) -> str:
    unit = "images" if modality == "image" else "captions"
    parts = [f"cluster {c.label}: {len(c.members)} {unit}"]
    if c.purity is not None:
        parts.append(f"purity {100 * c.purity:.0f}% ({len(set(c.persons))} persons)")
    if any(c.recovered):
        parts.append(f"{sum(c.recovered)} recovered by OPLM (amber)")
    return ", ".join(parts)


def _cells(c: Cluster, records, limit: int) -> list[Cell]:
    majority = Counter(c.persons).most_common(1)[0][0] if c.purity is not None else None
    cells = []
    for i in c.drawn(limit):
        image, person, recovered = c.images[i], c.persons[i], c.recovered[i]
        colour = AMBER if recovered else GREY if majority is None else GREEN if person == majority else RED
        cells.append(Cell(records[image].image_path, f"id {person}" if person is not None else f"#{image}", colour))
    return cells


def _write_page(target: Path, run_dir: Path, epoch: int, modality: str, order: str, shown: list[Cluster],
                total: int, outliers: int, records, captions: list[str], owner: np.ndarray, limit: int) -> None:
    thumbs = target / "thumbs"
    thumbs.mkdir(exist_ok=True)
    by_image: dict[int, list[int]] = {}
    for caption, image in enumerate(owner.tolist()):
        by_image.setdefault(image, []).append(caption)
    sections = []
    for c in shown:
        figures = []
        members_of = {}
        for member, image, recovered in zip(c.members, c.images, c.recovered, strict=True):
            members_of.setdefault(image, []).append((member, recovered))
        for i in c.drawn(limit):
            image, person = c.images[i], c.persons[i]
            name = f"{image}.png"
            if not (thumbs / name).is_file():
                thumb = read_image(records[image].image_path)
                thumb.thumbnail((96, 192))
                atomic_save(thumbs / name, lambda f, t=thumb: t.save(f, format="PNG"))
            texts = members_of[image] if modality == "text" else [(t, False) for t in by_image.get(image, [])]
            lines = "".join(f"<li{OPLM_CLASS if rec else ''}>{html.escape(captions[t])}</li>" for t, rec in texts)
            flags = " oplm" if modality == "image" and any(r for _, r in members_of[image]) else ""
            who = f"id {person}" if person is not None else f"image {image}"
            figures.append(f'<figure class="member{flags}"><img src="thumbs/{name}" alt="{html.escape(who)}">'
                           f"<figcaption>{html.escape(who)}<ul>{lines}</ul></figcaption></figure>")
        sections.append(f'<section id="c{c.label}"><h2>{html.escape(_title(c, modality))}</h2>{"".join(figures)}'
                        "</section>")
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>clusters of {html.escape(run_dir.name)}, epoch {epoch}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5rem; color: #1f2937; }}
section {{ border-top: 1px solid #d1d5db; padding: .5rem 0; }}
h2 {{ font-size: 1rem; }}
figure {{ display: inline-block; vertical-align: top; width: 11rem; margin: 0 .5rem .5rem 0; }}
figure img {{ border: 4px solid #bebebe; max-height: 192px; }}
figure.oplm img, li.oplm {{ border-color: #d97706; color: #b45309; }}
figcaption {{ font-size: .75rem; }}
ul {{ padding-left: 1rem; margin: .2rem 0; }}
</style></head><body>
<h1>Pseudo identities of {html.escape(str(run_dir))}, epoch {epoch} ({modality} clusters)</h1>
<p>{total} clusters and {outliers} outliers; the {len(shown)} {"largest" if order == "largest" else "least pure"}
shown, up to {limit} images each. Amber: recovered from the outliers by OPLM.
Identities (where the records hold them) are for this report only; training never reads them.</p>
{"".join(sections)}
</body></html>
"""
    atomic_write_text(target / "index.html", page)
