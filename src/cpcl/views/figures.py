"""Ranking figures: a query's caption above its top-k gallery crops, with ranks, scores and optional
green (correct) / red (wrong) frames -- the figure every paper of this field shows. The same row, with
other labels and frames, draws a pseudo-identity cluster (``cpcl clusters``)."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from cpcl.data.datasets import read_image
from cpcl.io import atomic_save

GREEN = (22, 163, 74)
RED = (220, 38, 38)
GREY = (190, 190, 190)
AMBER = (217, 119, 6)
THUMB_HEIGHT = 160
FRAME = 5
GAP = 8
MARGIN = 12


@dataclass(frozen=True)
class RankedImage:
    path: Path
    score: float
    correct: bool | None = None  # None: no ground truth (plain search)


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


@dataclass(frozen=True)
class Cell:
    path: Path
    label: str  # drawn under the crop
    colour: tuple[int, int, int] = GREY  # of the frame


def ranking_row(title: str, ranked: Sequence[RankedImage], thumb_height: int = THUMB_HEIGHT) -> Image.Image:
    """One query: its text on top, then the ranked crops left to right with ``#rank score`` under each."""
    return image_row(title, [Cell(item.path, f"#{rank} {item.score:.3f}",
                                  GREY if item.correct is None else (GREEN if item.correct else RED))
                             for rank, item in enumerate(ranked, 1)], thumb_height)


def image_row(title: str, cells: Sequence[Cell], thumb_height: int = THUMB_HEIGHT) -> Image.Image:
    """A title on top (wrapped, up to four lines), then the crops left to right, framed, a label under each."""
    thumbs = []
    for item in cells:
        image = read_image(Path(item.path))
        width = max(1, round(image.width * thumb_height / image.height))
        thumbs.append(image.resize((width, thumb_height), Image.Resampling.BICUBIC))
    cell_w = max((t.width for t in thumbs), default=thumb_height // 2) + 2 * FRAME
    width = MARGIN * 2 + max(1, len(thumbs)) * (cell_w + GAP) - GAP
    font, small = _font(15), _font(13)
    chars = max(20, int(width / 8))
    lines = textwrap.wrap(title, chars)[:4] or [""]
    text_h = 20 * len(lines) + 6
    label_h = 20
    height = MARGIN + text_h + thumb_height + 2 * FRAME + label_h + MARGIN
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(lines):
        draw.text((MARGIN, MARGIN + 20 * i), line, fill="black", font=font)
    top = MARGIN + text_h
    for position, (item, thumb) in enumerate(zip(cells, thumbs, strict=True)):
        left = MARGIN + position * (cell_w + GAP)
        draw.rectangle([left, top, left + cell_w - 1, top + thumb_height + 2 * FRAME - 1], fill=item.colour)
        canvas.paste(thumb, (left + (cell_w - thumb.width) // 2, top + FRAME))
        draw.text((left, top + thumb_height + 2 * FRAME + 3), item.label, fill="black", font=small)
    return canvas


def stack(rows: Sequence[Image.Image]) -> Image.Image:
    """Rows one under another on a white sheet, separated by a thin rule."""
    width = max(r.width for r in rows)
    sheet = Image.new("RGB", (width, sum(r.height for r in rows) + (len(rows) - 1)), "white")
    draw = ImageDraw.Draw(sheet)
    y = 0
    for i, row in enumerate(rows):
        if i:
            draw.line([(0, y), (width, y)], fill=GREY)
            y += 1
        sheet.paste(row, (0, y))
        y += row.height
    return sheet


def save_png(image: Image.Image, path: str | Path) -> Path:
    atomic_save(path, lambda f: image.save(f, format="PNG", optimize=True))
    return Path(path)
