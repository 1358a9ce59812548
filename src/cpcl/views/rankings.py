"""Top-k ranking sheets for an evaluation split: each query caption with its best gallery images,
correct matches (same person id; in a split of pairs without identities, the caption's own image) framed
green, the others red."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cpcl.io import claim_outputs
from cpcl.views.figures import RankedImage, ranking_row, save_png, stack


def pick_queries(num_captions: int, count: int, seed: int = 0) -> list[int]:
    """``count`` distinct caption indices, drawn reproducibly, in increasing order."""
    count = min(count, num_captions)
    return sorted(np.random.default_rng(seed).choice(num_captions, count, replace=False).tolist())


def ranking_rows(similarity: torch.Tensor, captions: Sequence[str], gallery_paths: Sequence[Path],
                 query_ids: torch.Tensor, gallery_ids: torch.Tensor, queries: Sequence[int],
                 k: int = 10) -> list[tuple[int, Image.Image, bool]]:
    """For each chosen query: ``(query index, figure row, whether rank 1 is correct)``.

    ``similarity`` is ``(num_captions, num_images)``; ids are the evaluation labels (never used in training).
    """
    rows = []
    for q in queries:
        scores, items = similarity[q].topk(min(k, similarity.shape[1]))
        ranked = [RankedImage(Path(gallery_paths[i]), float(s), bool(gallery_ids[i] == query_ids[q]))
                  for s, i in zip(scores.tolist(), items.tolist(), strict=True)]
        rows.append((q, ranking_row(f"Q{q}: {captions[q]}", ranked), ranked[0].correct))
    return rows


def write_ranking_figures(checkpoint: str | Path, data_format: str, root: str | Path, out: str | Path,
                          split: str = "test", queries: int = 8, seed: int = 0, k: int = 10,
                          device: torch.device | str = "cpu", batch_size: int = 256,
                          progress: bool = False, overwrite: bool = False, val_ids_from_train: int = 0) -> dict:
    """Rank a split with a checkpoint and write ``query_<i>.png`` per chosen query and ``sheet.png`` into
    ``out`` (which must not hold such figures already, unless ``overwrite``)."""
    from cpcl.evaluation.evaluate import load_eval_split

    device = torch.device(device)
    model, data, _ = load_eval_split(checkpoint, data_format, root, split, device, val_ids_from_train)
    claim_outputs(out, ("query_*.png", "sheet.png"), overwrite=overwrite, holds="ranking figures",
                  instead="choose another --out")
    similarity = data.similarity(model, device, batch_size, progress=progress)
    chosen = pick_queries(len(data.captions), queries, seed)
    # without identities the one right match of a caption is its own image: its column is its "person"
    query_ids, gallery_ids = ((data.query_ids, data.gallery_ids) if data.has_ids else
                              (data.caption_to_image, torch.arange(len(data.images))))
    rows = ranking_rows(similarity, data.captions, data.images.store.paths, query_ids, gallery_ids, chosen, k=k)
    out = Path(out)
    for q, row, _ in rows:
        save_png(row, out / f"query_{q:05d}.png")
    sheet = save_png(stack([row for _, row, _ in rows]), out / "sheet.png")
    return {"queries": len(rows), "rank1_correct": sum(c for _, _, c in rows), "captions": len(data.captions),
            "images": len(data.images), "sheet": sheet,
            "correct_means": "same person" if data.has_ids else "the caption's own image (no person_id)"}
