"""Writing SynthPedes: identities, splits, rendering jobs (in worker processes) and the CUHK-PEDES files."""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from cpcl.data.synth.captions import regional_words, write_caption
from cpcl.data.synth.cctv import render_cctv
from cpcl.data.synth.identity import Identity, near_duplicate, random_identity, uniformed
from cpcl.data.synth.render import Camera, make_cameras, render_image
from cpcl.io import atomic_save, atomic_write_text, claim_outputs

log = logging.getLogger(__name__)

GENERATOR_VERSION = 2
DOMAINS = ("street", "indoor")
STYLES = ("classic", "cctv")  # how persons are drawn (render.py, cctv.py); the captions do not depend on it


def _images_per_id(rng: np.random.Generator, mean: float) -> int:
    return int(min(8, 1 + rng.poisson(max(0.0, mean - 1.0))))


@dataclass(frozen=True)
class _Job:
    out_dir: str
    seed: int
    person_id: int
    identity: Identity
    num_images: int
    captions_per_image: int
    height: int
    width: int
    domain: str
    caption_noise: float
    style: str
    cameras: int = 0


@functools.lru_cache(maxsize=4)
def _cameras(seed: int, count: int, height: int, width: int, domain: str) -> tuple[Camera, ...]:
    """The dataset's cameras: drawn from its seed alone, so each rendering process makes the same ones once
    instead of receiving their scenes with every job."""
    return make_cameras(count, np.random.default_rng([seed, 4]), height, width, domain)


def _render_person(job: _Job) -> list[dict]:
    records = []
    cameras = _cameras(job.seed, job.cameras, job.height, job.width, job.domain)
    for k in range(job.num_images):
        rng = np.random.default_rng([job.seed, job.person_id, k, 1])
        camera = None
        if cameras:  # its own generator: the rest of the image is drawn as without cameras
            camera = int(np.random.default_rng([job.seed, job.person_id, k, 4]).integers(len(cameras)))
        if job.style == "cctv":
            img, view = render_cctv(job.identity, rng, job.height, job.width)
        else:
            img, view = render_image(job.identity, rng, job.height, job.width, job.domain,
                                     None if camera is None else cameras[camera])
        rel = f"synth/p{job.person_id:05d}_s{k}.png"
        img.save(Path(job.out_dir) / "imgs" / rel, compress_level=1)
        crng = np.random.default_rng([job.seed, job.person_id, k, 2])
        captions = [write_caption(job.identity, view, crng, job.caption_noise) for _ in range(job.captions_per_image)]
        if job.domain == "street":  # its own generator: the base captions stay those of every domain
            vrng = np.random.default_rng([job.seed, job.person_id, k, 3])
            captions = [regional_words(c, vrng) for c in captions]
        records.append({"id": job.person_id, "file_path": rel, "captions": captions, "view": view, "camera": camera})
    return records


def generate_synthpedes(out: str | Path, num_ids: int = 600, seed: int = 0, *, height: int = 128,
                        width: int = 64, images_per_id: float = 3.0, captions_per_image: int = 2,
                        val_ids: int = 100, test_ids: int = 200, near_duplicate_fraction: float = 0.15,
                        domain: str = "street", caption_noise: float = 0.08, style: str = "classic",
                        cameras: int = 0, uniform_fraction: float = 0.0, workers: int | None = None,
                        montage: bool = True, progress: bool = False, overwrite: bool = False) -> Path:
    """Write SynthPedes to ``out`` in the CUHK-PEDES format (``reid_raw.json`` + ``imgs/``).

    Identities are split into train / val / test (``val_ids`` and ``test_ids`` persons held out). ``style``
    is the drawing (``classic`` or ``cctv``); ``domain`` the classic style's scenes and, in both styles, the
    annotators' vocabulary (``street`` annotators also use their own words). ``cameras`` > 0 (classic style):
    every image is taken by one of that many fixed cameras, each with its own scene and colour cast, which
    no caption mentions; 0: every image has a scene and lighting of its own. ``uniform_fraction``: the share
    of persons who wear the outfit of an earlier one (clothes, shoes and bag), telling them apart only by
    hair, skin, build, headwear and glasses.
    Person ids are 1-based like CUHK-PEDES. Returns the path of ``reid_raw.json``. An ``out`` that holds a
    dataset already is refused, unless ``overwrite``.
    """
    if domain not in DOMAINS:
        raise ValueError(f"unknown SynthPedes domain {domain!r}; choose one of {', '.join(DOMAINS)}")
    if style not in STYLES:
        raise ValueError(f"unknown SynthPedes style {style!r}; choose one of {', '.join(STYLES)}")
    if not 0 <= uniform_fraction < 1:
        raise ValueError(f"uniform_fraction={uniform_fraction}: expected a share in [0, 1)")
    if cameras < 0 or (cameras and style != "classic"):
        raise ValueError(f"cameras={cameras}: expected 0, or a number of cameras with the classic style")
    if num_ids <= val_ids + test_ids:
        raise ValueError(f"num_ids={num_ids} leaves no training identities after {val_ids} val + {test_ids} test")
    out = claim_outputs(out, ("reid_raw.json", "synthpedes_meta.json", "imgs", "montage.png"), overwrite=overwrite,
                        holds="a dataset", instead="choose another --out")
    (out / "imgs" / "synth").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 0])
    identities: list[Identity] = []
    for _ in range(num_ids):
        if identities and rng.random() < near_duplicate_fraction:
            identities.append(near_duplicate(identities[int(rng.integers(len(identities)))], rng))
        elif identities and uniform_fraction and rng.random() < uniform_fraction:
            identities.append(uniformed(identities[int(rng.integers(len(identities)))], rng))
        else:
            identities.append(random_identity(rng))
    order = rng.permutation(num_ids)
    split_of = {}
    for rank, idx in enumerate(order):
        split_of[int(idx)] = "test" if rank < test_ids else "val" if rank < test_ids + val_ids else "train"
    jobs = [
        _Job(str(out), seed, i + 1, ident, _images_per_id(rng, images_per_id), captions_per_image, height, width,
             domain, caption_noise, style, cameras)
        for i, ident in enumerate(identities)
    ]
    workers = workers if workers is not None else min(4, os.cpu_count() or 1)
    results = _map(jobs, workers, progress)
    records = []
    for job, recs in zip(jobs, results, strict=True):
        for r in recs:
            records.append({"split": split_of[job.person_id - 1], "captions": r["captions"],
                            "file_path": r["file_path"], "id": r["id"], "processed_tokens": []})
    ann = out / "reid_raw.json"
    atomic_write_text(ann, json.dumps(records))
    meta = {
        "generator": "SynthPedes", "version": GENERATOR_VERSION, "seed": seed, "num_ids": num_ids,
        "height": height, "width": width, "images_per_id": images_per_id,
        "captions_per_image": captions_per_image, "val_ids": val_ids, "test_ids": test_ids,
        "near_duplicate_fraction": near_duplicate_fraction, "domain": domain, "caption_noise": caption_noise,
        "style": style, "cameras": cameras, "uniform_fraction": uniform_fraction,
        "identities": {str(i + 1): asdict(ident) for i, ident in enumerate(identities)},
        "views": {r["file_path"]: r["view"] for recs in results for r in recs},
        **({"camera_of": {r["file_path"]: r["camera"] for recs in results for r in recs}} if cameras else {}),
    }
    atomic_write_text(out / "synthpedes_meta.json", json.dumps(meta))
    if montage:
        save_montage(records, out / "imgs", out / "montage.png")
    log.info("SynthPedes: %d identities, %d images written to %s", num_ids, len(records), out)
    return ann


def _map(jobs: list[_Job], workers: int, progress: bool) -> list[list[dict]]:
    from tqdm import tqdm

    bar = dict(total=len(jobs), desc="render", unit="id", disable=None if progress else True, leave=False)
    if workers <= 1:
        return [_render_person(j) for j in tqdm(jobs, **bar)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(tqdm(pool.map(_render_person, jobs, chunksize=16), **bar))


def save_montage(records: Iterable[dict], image_root: Path, path: Path, count: int = 8, columns: int = 4) -> None:
    """A PNG of ``count`` sample images, each with its identity and captions beside it, for a person to read."""
    import textwrap

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = list(records)[: count * 7 : 7][:count]
    rows = -(-len(records) // columns)
    image_h, image_w, text_w, gap, font = 2.4, 1.2, 2.3, 0.25, 8.5  # inches, points
    texts = ["\n\n".join(textwrap.fill(c, 34) for c in rec["captions"]) for rec in records]
    line_h = font * 1.25 / 72
    cell_h = max(image_h, max(t.count("\n") + 1 for t in texts) * line_h) + 0.35  # + the identity line
    cell_w = image_w + 0.1 + text_w
    width, height = columns * cell_w + (columns + 1) * gap, rows * cell_h + (rows + 1) * gap
    fig = plt.figure(figsize=(width, height))
    for i, (rec, text) in enumerate(zip(records, texts, strict=True)):
        row, col = divmod(i, columns)
        left = gap + col * (cell_w + gap)
        top = height - gap - row * (cell_h + gap)
        ax = fig.add_axes([left / width, (top - 0.3 - image_h) / height, image_w / width, image_h / height])
        ax.imshow(Image.open(image_root / rec["file_path"]))
        ax.set_axis_off()
        fig.text(left / width, (top - 0.2) / height, f"id {rec['id']}", fontsize=font + 1, weight="bold")
        fig.text((left + image_w + 0.1) / width, (top - 0.3) / height, text, fontsize=font, va="top")
    atomic_save(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)
