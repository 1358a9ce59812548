"""SynthPedes: a synthetic pedestrian benchmark with captions, written in the CUHK-PEDES format.

An identity is a set of attributes (gender, hair, garments and their colours and patterns, shoes,
bag, headwear, glasses, build, skin tone). Each image draws that person from a per-image viewpoint
(front / back / side: a backpack shows from the back, a face and glasses from the front) with pose,
scale and crop jitter, a cluttered background, lighting change, partial occlusion and noise. Each
image gets captions from different "annotators": varied templates and synonyms, a subset of the
attributes visible from that viewpoint, occasional colour confusion (navy written as black).

Everything is a pure function of ``(seed, identity, image index)``, so generation is deterministic
whatever the number of worker processes.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from cpcl.data.io import atomic_save, atomic_write_text

log = logging.getLogger(__name__)

GENERATOR_VERSION = 2

COLOURS: dict[str, tuple[int, int, int]] = {
    "black": (25, 25, 28),
    "white": (235, 235, 230),
    "grey": (128, 128, 132),
    "red": (200, 30, 35),
    "blue": (40, 80, 200),
    "navy": (25, 35, 85),
    "green": (40, 140, 60),
    "yellow": (235, 205, 40),
    "orange": (240, 130, 30),
    "pink": (240, 150, 190),
    "purple": (120, 50, 150),
    "brown": (115, 75, 40),
    "beige": (215, 195, 155),
}
# colours an annotator may write instead of the true one
CONFUSIONS = {
    "navy": ["black", "blue"],
    "black": ["navy", "dark grey"],
    "grey": ["white", "silver"],
    "white": ["grey", "cream"],
    "beige": ["white", "khaki"],
    "pink": ["red", "light red"],
    "purple": ["blue", "violet"],
    "orange": ["red", "yellow"],
    "brown": ["black", "dark"],
    "blue": ["navy", "light blue"],
    "red": ["orange", "pink"],
    "green": ["dark green", "olive"],
    "yellow": ["orange", "gold"],
}
HAIR_COLOURS = {
    "black": (20, 18, 18),
    "brown": (95, 60, 30),
    "blonde": (220, 190, 110),
    "grey": (160, 160, 160),
    "red": (160, 60, 25),
}
SKIN_TONES = [(240, 205, 180), (220, 175, 140), (180, 130, 95), (120, 80, 55)]
UPPER_TYPES = ["t-shirt", "shirt", "jacket", "coat", "hoodie", "vest"]
PATTERNS = ["plain", "plain", "striped", "checked", "logo"]
LOWER_TYPES = ["trousers", "jeans", "shorts", "skirt", "long skirt"]
SHOE_COLOURS = ["black", "white", "brown", "red", "grey", "blue"]
BAGS = ["none", "backpack", "handbag", "shoulder bag"]
HEADWEAR = ["none", "none", "none", "cap", "hat", "beanie"]
VIEWS = ["front", "back", "side"]
DOMAINS = ("street", "indoor")
GARMENT_COLOURS = list(COLOURS)


@dataclass(frozen=True)
class Identity:
    """The attributes that define one synthetic person."""

    gender: str
    hair_length: str
    hair_colour: str
    skin: int
    build: float
    upper_type: str
    upper_colour: str
    upper_pattern: str
    inner_colour: str
    lower_type: str
    lower_colour: str
    shoes: str
    bag: str
    bag_colour: str
    headwear: str
    headwear_colour: str
    glasses: bool


def _choice(rng: np.random.Generator, options: list) -> object:
    return options[int(rng.integers(len(options)))]


def random_identity(rng: np.random.Generator) -> Identity:
    gender = "woman" if rng.random() < 0.45 else "man"
    hair_length = ("long" if rng.random() < 0.7 else "short") if gender == "woman" else (
        "long" if rng.random() < 0.1 else "short"
    )
    lower_types = LOWER_TYPES if gender == "woman" else ["trousers", "jeans", "shorts"]
    lower_type = str(_choice(rng, lower_types))
    lower_colour = "blue" if lower_type == "jeans" and rng.random() < 0.7 else str(_choice(rng, GARMENT_COLOURS))
    upper_colour = str(_choice(rng, GARMENT_COLOURS))
    return Identity(
        gender=gender,
        hair_length=hair_length,
        hair_colour=str(_choice(rng, list(HAIR_COLOURS))),
        skin=int(rng.integers(len(SKIN_TONES))),
        build=float(rng.uniform(0.85, 1.2)),
        upper_type=str(_choice(rng, UPPER_TYPES)),
        upper_colour=upper_colour,
        upper_pattern=str(_choice(rng, PATTERNS)),
        inner_colour=str(_choice(rng, [c for c in GARMENT_COLOURS if c != upper_colour])),
        lower_type=lower_type,
        lower_colour=lower_colour,
        shoes=str(_choice(rng, SHOE_COLOURS)),
        bag=str(_choice(rng, BAGS)),
        bag_colour=str(_choice(rng, GARMENT_COLOURS)),
        headwear=str(_choice(rng, HEADWEAR)),
        headwear_colour=str(_choice(rng, GARMENT_COLOURS)),
        glasses=bool(rng.random() < 0.2),
    )


_MUTABLE = ["upper_colour", "lower_colour", "bag", "shoes", "headwear", "upper_pattern", "hair_colour", "bag_colour"]


def near_duplicate(base: Identity, rng: np.random.Generator) -> Identity:
    """A different person who shares every attribute of ``base`` but one, as in real crowds."""
    attrs = asdict(base)
    name = str(_choice(rng, _MUTABLE))
    options = {
        "upper_colour": GARMENT_COLOURS,
        "lower_colour": GARMENT_COLOURS,
        "bag": BAGS,
        "shoes": SHOE_COLOURS,
        "headwear": ["none", "cap", "hat", "beanie"],
        "upper_pattern": ["plain", "striped", "checked", "logo"],
        "hair_colour": list(HAIR_COLOURS),
        "bag_colour": GARMENT_COLOURS,
    }[name]
    attrs[name] = str(_choice(rng, [o for o in options if o != attrs[name]]))
    if name == "bag_colour" and attrs["bag"] == "none":
        attrs["bag"] = "backpack"
    return Identity(**attrs)


# --------------------------------------------------------------------------------------------- drawing


def _shade(colour: tuple[int, int, int], factor: float) -> tuple[int, int, int]:
    return tuple(int(max(0, min(255, c * factor))) for c in colour)  # type: ignore[return-value]


def _background(rng: np.random.Generator, w: int, h: int, domain: str) -> Image.Image:
    if domain == "indoor":
        base = rng.integers(150, 235, size=3)
        floor = rng.integers(90, 180, size=3)
    else:
        base = rng.integers(60, 200, size=3)
        floor = rng.integers(70, 140, size=1).repeat(3) + rng.integers(-10, 10, size=3)
    horizon = int(h * rng.uniform(0.55, 0.8))
    grad = np.linspace(0.85, 1.15, h)[:, None, None]
    arr = np.empty((h, w, 3), np.float32)
    arr[:horizon] = base
    arr[horizon:] = floor
    arr *= grad
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    # clutter: buildings / shelves, windows, poles, street lines
    for _ in range(int(rng.integers(3, 9))):
        x0 = int(rng.integers(-w // 4, w))
        y0 = int(rng.integers(-h // 4, horizon))
        x1 = x0 + int(rng.integers(w // 8, w // 2))
        y1 = y0 + int(rng.integers(h // 10, h // 2))
        colour = tuple(int(c) for c in rng.integers(30, 230, size=3))
        draw.rectangle([x0, y0, x1, y1], fill=colour)
        if rng.random() < 0.5:
            win = _shade(colour, 1.4 if domain == "indoor" else 0.6)
            step = max(3, (x1 - x0) // 3)
            for wx in range(x0 + 2, x1 - 2, step):
                draw.rectangle([wx, y0 + 2, wx + step // 2, y0 + 2 + step // 2], fill=win)
    for _ in range(int(rng.integers(0, 3))):
        px = int(rng.integers(0, w))
        draw.line([px, 0, px, horizon + 4], fill=tuple(int(c) for c in rng.integers(20, 120, size=3)), width=2)
    if domain != "indoor":
        for _ in range(int(rng.integers(0, 3))):
            y = int(rng.integers(horizon, h))
            draw.line([0, y, w, y + int(rng.integers(-6, 6))], fill=(200, 200, 190), width=1)
    return img


def _draw_person(draw: ImageDraw.ImageDraw, p: Identity, view: str, rng: np.random.Generator,
                 cx: float, top: float, fh: float) -> None:
    """Draw the figure of height ``fh`` whose head top is at ``top`` and centre line at ``cx``."""
    skin = SKIN_TONES[p.skin]
    hair = HAIR_COLOURS[p.hair_colour]
    upper = COLOURS[p.upper_colour]
    lower = COLOURS[p.lower_colour]
    shoes = COLOURS[p.shoes]
    bag = COLOURS[p.bag_colour]
    side = view == "side"
    facing = -1 if rng.random() < 0.5 else 1  # which way a side view looks
    half_w = fh * 0.15 * p.build * (0.6 if side else 1.0)
    y_head = top + fh * 0.075
    r_head = fh * 0.065
    y_sh = top + fh * 0.15  # shoulders
    y_waist = top + fh * 0.47
    y_foot = top + fh * 0.95
    stride = fh * rng.uniform(0.0, 0.09 if side else 0.04)
    swing = fh * rng.uniform(-0.05, 0.05)

    # backpack behind the body in the side view
    if p.bag == "backpack" and side:
        bx = cx - facing * half_w
        draw.rectangle([bx - fh * 0.08, y_sh + fh * 0.02, bx + fh * 0.08, y_sh + fh * 0.26], fill=bag)
    # long hair falls behind the shoulders in front view
    if p.hair_length == "long" and view == "front":
        draw.rectangle([cx - r_head * 1.15, y_head, cx + r_head * 1.15, y_sh + fh * 0.1], fill=hair)

    # legs
    upper_len = 0.70 if p.upper_type == "coat" else 0.47
    leg_w = half_w * (0.42 if not side else 0.7)
    for k, sgn in enumerate((-1, 1)):
        lx = cx + sgn * (half_w * 0.45 if not side else 0.0)
        foot_x = lx + (sgn * stride if side else sgn * stride * 0.5) + (swing * 0.3 if k else -swing * 0.3)
        covered = {"trousers": 1.0, "jeans": 1.0, "shorts": 0.33, "skirt": 0.0, "long skirt": 0.0}[p.lower_type]
        knee_y = y_waist + (y_foot - y_waist) * covered
        draw.polygon([(lx - leg_w, y_waist), (lx + leg_w, y_waist), (foot_x + leg_w * 0.8, y_foot),
                      (foot_x - leg_w * 0.8, y_foot)], fill=skin)
        if covered > 0:
            t = covered
            draw.polygon([(lx - leg_w, y_waist), (lx + leg_w, y_waist),
                          (lx + (foot_x - lx) * t + leg_w * (1 - 0.2 * t), knee_y),
                          (lx + (foot_x - lx) * t - leg_w * (1 - 0.2 * t), knee_y)], fill=lower)
        shoe_dx = facing * fh * 0.04 if side else 0.0
        draw.ellipse([foot_x - leg_w * 1.1 + min(0, shoe_dx), y_foot - fh * 0.025,
                      foot_x + leg_w * 1.1 + max(0, shoe_dx), y_foot + fh * 0.02], fill=shoes)
    if p.lower_type in ("skirt", "long skirt"):
        hem = y_waist + (y_foot - y_waist) * (0.35 if p.lower_type == "skirt" else 0.75)
        flare = half_w * (1.35 if not side else 1.2)
        draw.polygon([(cx - half_w * 0.95, y_waist - fh * 0.01), (cx + half_w * 0.95, y_waist - fh * 0.01),
                      (cx + flare, hem), (cx - flare, hem)], fill=lower)
    if p.lower_type in ("trousers", "jeans", "shorts") and not side:
        draw.rectangle([cx - half_w * 0.95, y_waist - fh * 0.01, cx + half_w * 0.95, y_waist + fh * 0.05],
                       fill=lower)

    # arms (behind the torso edges)
    sleeve = {"t-shirt": 0.45, "vest": 0.0, "shirt": 1.0, "jacket": 1.0, "coat": 1.0, "hoodie": 1.0}[p.upper_type]
    arm_w = fh * 0.035
    hand_pts = []
    arm_sides = (facing,) if side else (-1, 1)
    for sgn in arm_sides:
        ax = cx + sgn * half_w * (0.95 if not side else 0.2)
        hx = ax + sgn * fh * 0.02 + (swing if sgn > 0 else -swing) * (1.5 if side else 0.5)
        hy = y_waist + fh * 0.04
        draw.polygon([(ax - arm_w, y_sh + fh * 0.02), (ax + arm_w, y_sh + fh * 0.02),
                      (hx + arm_w, hy), (hx - arm_w, hy)], fill=skin)
        if sleeve > 0:
            sy = y_sh + (hy - y_sh) * sleeve
            sx = ax + (hx - ax) * sleeve
            draw.polygon([(ax - arm_w * 1.15, y_sh + fh * 0.01), (ax + arm_w * 1.15, y_sh + fh * 0.01),
                          (sx + arm_w * 1.1, sy), (sx - arm_w * 1.1, sy)], fill=upper)
        hand_pts.append((hx, hy))

    # torso
    torso_bottom = top + fh * upper_len
    torso = [cx - half_w, y_sh, cx + half_w, torso_bottom]
    draw.rounded_rectangle(torso, radius=max(1, int(fh * 0.03)), fill=upper)
    if p.upper_pattern == "striped":
        dark = _shade(upper, 0.45) if sum(upper) > 200 else _shade((200, 200, 200), 1.0)
        step = fh * 0.045
        y = y_sh + step
        while y < torso_bottom - 1:
            draw.line([torso[0] + 1, y, torso[2] - 1, y], fill=dark, width=max(1, int(fh * 0.015)))
            y += step
    elif p.upper_pattern == "checked":
        dark = _shade(upper, 0.5) if sum(upper) > 200 else (180, 180, 180)
        step = fh * 0.05
        y = y_sh + step
        while y < torso_bottom - 1:
            draw.line([torso[0] + 1, y, torso[2] - 1, y], fill=dark, width=1)
            y += step
        x = torso[0] + step / 2
        while x < torso[2] - 1:
            draw.line([x, y_sh + 1, x, torso_bottom - 1], fill=dark, width=1)
            x += step
    elif p.upper_pattern == "logo" and view == "front":
        logo = (250, 250, 250) if sum(upper) < 380 else (20, 20, 20)
        draw.ellipse([cx - fh * 0.045, y_sh + fh * 0.08, cx + fh * 0.045, y_sh + fh * 0.17], fill=logo)
    if p.upper_type in ("jacket", "coat") and view == "front":
        draw.rectangle([cx - half_w * 0.25, y_sh + fh * 0.01, cx + half_w * 0.25, torso_bottom],
                       fill=COLOURS[p.inner_colour])
    if p.upper_type == "hoodie" and view == "back":
        draw.ellipse([cx - half_w * 0.6, y_sh - fh * 0.02, cx + half_w * 0.6, y_sh + fh * 0.12],
                     fill=_shade(upper, 0.8))

    # bags
    if p.bag == "backpack" and view == "back":
        draw.rounded_rectangle([cx - half_w * 0.75, y_sh + fh * 0.03, cx + half_w * 0.75, y_sh + fh * 0.27],
                               radius=max(1, int(fh * 0.02)), fill=bag)
    elif p.bag == "backpack" and view == "front":
        for sgn in (-1, 1):
            draw.line([cx + sgn * half_w * 0.55, y_sh, cx + sgn * half_w * 0.6, y_sh + fh * 0.2],
                      fill=bag, width=max(1, int(fh * 0.02)))
    elif p.bag == "shoulder bag":
        sgn = 1 if view != "side" else facing
        draw.line([cx - sgn * half_w * 0.7, y_sh, cx + sgn * half_w * 0.9, y_waist - fh * 0.02],
                  fill=_shade(bag, 0.8), width=max(1, int(fh * 0.015)))
        bx = cx + sgn * half_w * 1.05
        draw.rectangle([bx - fh * 0.06, y_waist - fh * 0.06, bx + fh * 0.06, y_waist + fh * 0.04], fill=bag)
    elif p.bag == "handbag" and hand_pts:
        hx, hy = hand_pts[-1]
        draw.rectangle([hx - fh * 0.045, hy, hx + fh * 0.045, hy + fh * 0.08], fill=bag)

    # head, face and hair
    draw.rectangle([cx - fh * 0.02, y_head + r_head * 0.5, cx + fh * 0.02, y_sh + 1], fill=skin)
    draw.ellipse([cx - r_head, y_head - r_head, cx + r_head, y_head + r_head], fill=skin)
    if view == "back":
        draw.ellipse([cx - r_head * 1.05, y_head - r_head * 1.05, cx + r_head * 1.05, y_head + r_head * 1.05],
                     fill=hair)
        if p.hair_length == "long":
            draw.rectangle([cx - r_head * 1.05, y_head, cx + r_head * 1.05, y_sh + fh * 0.12], fill=hair)
    else:
        draw.chord([cx - r_head * 1.05, y_head - r_head * 1.1, cx + r_head * 1.05, y_head + r_head * 0.6],
                   start=180, end=360, fill=hair)
        if side:
            back_x = cx - facing * r_head * 0.5
            draw.ellipse([back_x - r_head * 0.6, y_head - r_head, back_x + r_head * 0.6, y_head + r_head * 0.6],
                         fill=hair)
            if p.hair_length == "long":
                draw.rectangle([back_x - r_head * 0.5, y_head, back_x + r_head * 0.5, y_sh + fh * 0.1], fill=hair)
        eye_y = y_head - r_head * 0.05
        eye_dx = r_head * 0.4
        eyes = [cx + facing * r_head * 0.45] if side else [cx - eye_dx, cx + eye_dx]
        for ex in eyes:
            draw.point([ex, eye_y], fill=(20, 20, 20))
        if p.glasses:
            gx0 = min(eyes) - r_head * 0.3
            gx1 = max(eyes) + r_head * 0.3
            draw.rectangle([gx0, eye_y - r_head * 0.2, gx1, eye_y + r_head * 0.2], outline=(10, 10, 10),
                           width=max(1, int(fh * 0.01)))
    if p.headwear != "none":
        hc = COLOURS[p.headwear_colour]
        crown = [cx - r_head * 1.05, y_head - r_head * 1.25, cx + r_head * 1.05, y_head + r_head * 0.2]
        draw.chord(crown, start=180, end=360, fill=hc)
        if p.headwear == "cap":
            bx = cx + (facing * r_head * 0.9 if side else 0)
            bw = r_head * (0.9 if side else 1.1)
            if view != "back":
                draw.rectangle([bx - bw, y_head - r_head * 0.5, bx + bw, y_head - r_head * 0.3], fill=_shade(hc, 0.7))
        elif p.headwear == "hat":
            draw.rectangle([cx - r_head * 1.7, y_head - r_head * 0.55, cx + r_head * 1.7, y_head - r_head * 0.35],
                           fill=_shade(hc, 0.8))
        else:  # beanie
            draw.ellipse([cx - r_head * 0.3, y_head - r_head * 1.5, cx + r_head * 0.3, y_head - r_head * 0.95],
                         fill=hc)


def render_image(person: Identity, rng: np.random.Generator, height: int = 128, width: int = 64,
                 domain: str = "street") -> tuple[Image.Image, str]:
    """Draw one image of ``person``; returns the image and the viewpoint drawn."""
    ss = 2  # supersampling for anti-aliased edges
    w, h = width * ss, height * ss
    img = _background(rng, w, h, domain)
    draw = ImageDraw.Draw(img)
    view = str(_choice(rng, VIEWS))
    # pedestrians in the way, behind the subject
    if rng.random() < 0.3:
        other = random_identity(rng)
        ofh = h * rng.uniform(0.6, 0.85)
        ocx = w * (rng.uniform(-0.1, 0.15) if rng.random() < 0.5 else rng.uniform(0.85, 1.1))
        _draw_person(draw, other, str(_choice(rng, VIEWS)), rng, ocx, h * rng.uniform(0.0, 0.15), ofh)
    fh = h * rng.uniform(0.82, 0.98)
    cx = w * 0.5 + w * rng.uniform(-0.08, 0.08)
    top = (h - fh) * rng.uniform(0.1, 0.9)
    _draw_person(draw, person, view, rng, cx, top, fh)
    # partial occlusion by an object in front (bin, car, sign)
    if rng.random() < 0.2:
        colour = tuple(int(c) for c in rng.integers(20, 220, size=3))
        if rng.random() < 0.6:
            oh = h * rng.uniform(0.1, 0.3)
            ox = w * rng.uniform(-0.3, 0.5)
            draw.rectangle([ox, h - oh, ox + w * rng.uniform(0.4, 0.9), h], fill=colour)
        else:
            ow = w * rng.uniform(0.12, 0.3)
            ox = 0 if rng.random() < 0.5 else w - ow
            draw.rectangle([ox, h * rng.uniform(0.2, 0.6), ox + ow, h], fill=colour)
    img = img.resize((width, height), Image.BILINEAR)
    arr = np.asarray(img, dtype=np.float32)
    # lighting: brightness, contrast and a colour cast; then sensor noise
    gain = rng.uniform(0.65, 1.3) * rng.uniform(0.9, 1.1, size=3)
    contrast = rng.uniform(0.75, 1.2)
    mean = arr.mean()
    arr = ((arr - mean) * contrast + mean) * gain
    arr += rng.normal(0.0, rng.uniform(2.0, 9.0), size=arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)), view


# -------------------------------------------------------------------------------------------- captions

_SYN = {
    "man": ["man", "man", "male", "guy", "gentleman", "young man"],
    "woman": ["woman", "woman", "female", "lady", "girl", "young woman"],
    "t-shirt": ["t-shirt", "tee", "short-sleeved shirt", "t shirt"],
    "shirt": ["shirt", "long-sleeved shirt", "long sleeve top", "top"],
    "jacket": ["jacket", "jacket", "zip-up jacket"],
    "coat": ["coat", "long coat", "overcoat"],
    "hoodie": ["hoodie", "hooded sweatshirt", "hoody"],
    "vest": ["tank top", "sleeveless top", "vest"],
    "trousers": ["trousers", "pants", "slacks", "long pants"],
    "jeans": ["jeans", "denim pants", "jeans"],
    "shorts": ["shorts", "short pants"],
    "skirt": ["skirt", "short skirt", "mini skirt"],
    "long skirt": ["long skirt", "maxi skirt", "long dress skirt"],
    "shoes": ["shoes", "sneakers", "shoes", "footwear"],
    "backpack": ["backpack", "backpack", "rucksack", "school bag"],
    "handbag": ["handbag", "purse", "hand bag"],
    "shoulder bag": ["shoulder bag", "bag over the shoulder", "crossbody bag"],
    "cap": ["cap", "baseball cap"],
    "hat": ["hat", "wide-brimmed hat"],
    "beanie": ["beanie", "knit hat", "woolly hat"],
    "striped": ["striped", "stripy", "striped"],
    "checked": ["checked", "plaid", "checkered"],
}


# The annotators of the "street" domain also use their own words for colours and garments. With the
# scene style this makes the domain gap between a pretraining pool (indoor) and a target set (street):
# words the pretrained model never saw, which only fine-tuning on the target pairs can align.
STREET_VOCABULARY = {
    "red": ["crimson", "scarlet", "maroon"], "blue": ["cobalt", "azure"], "green": ["emerald", "olive green"],
    "yellow": ["mustard", "lemon"], "black": ["jet black", "ebony"], "white": ["ivory", "snow white"],
    "grey": ["charcoal", "ash grey"], "navy": ["midnight blue"], "pink": ["rose", "salmon"],
    "purple": ["lilac", "plum"], "brown": ["chocolate", "tan"], "orange": ["tangerine", "rust"],
    "beige": ["sand", "camel"], "t-shirt": ["jersey"], "tee": ["jersey"], "shirt": ["blouse", "button-up"],
    "jacket": ["windbreaker", "blazer"], "coat": ["parka", "trench coat"], "hoodie": ["sweater"],
    "trousers": ["chinos"], "pants": ["chinos"], "jeans": ["denims"], "shorts": ["bermudas"],
    "sneakers": ["trainers"], "shoes": ["trainers", "loafers"], "backpack": ["knapsack"],
    "handbag": ["tote", "clutch"], "cap": ["snapback"], "hat": ["fedora"], "skirt": ["sarong"],
}
_STREET_PATTERN = re.compile(r"\b(" + "|".join(sorted(map(re.escape, STREET_VOCABULARY), key=len, reverse=True))
                             + r")\b", re.IGNORECASE)


def regional_words(caption: str, rng: np.random.Generator, rate: float = 0.6) -> str:
    """Replace words by the street annotators' own (each occurrence with probability ``rate``)."""

    def swap(match: re.Match) -> str:
        if rng.random() >= rate:
            return match.group(0)
        return str(_choice(rng, STREET_VOCABULARY[match.group(0).lower()]))

    text = _STREET_PATTERN.sub(swap, caption)
    # "a" / "an" before the (possibly replaced) next word
    return re.sub(r"\b(a|an|A|An) (\w)", lambda m: (m.group(1)[0] + ("n" if m.group(2).lower() in "aeiou" else ""))
                  + " " + m.group(2), text)


def _syn(rng: np.random.Generator, word: str) -> str:
    return str(_choice(rng, _SYN.get(word, [word])))


def _colour_word(rng: np.random.Generator, colour: str, confusion: float) -> str:
    if rng.random() < confusion and colour in CONFUSIONS:
        return str(_choice(rng, CONFUSIONS[colour]))
    return colour


def _article(phrase: str) -> str:
    return ("an " if phrase[:1].lower() in "aeiou" else "a ") + phrase


def visible_phrases(p: Identity, view: str, rng: np.random.Generator, confusion: float) -> dict[str, str]:
    """Noun phrases for the attributes an annotator can see from ``view``."""
    col = lambda c: _colour_word(rng, c, confusion)  # noqa: E731
    out: dict[str, str] = {}
    pattern = "" if p.upper_pattern in ("plain", "logo") else _syn(rng, p.upper_pattern) + " "
    upper = f"{col(p.upper_colour)} {pattern}{_syn(rng, p.upper_type)}"
    if p.upper_pattern == "logo" and view == "front" and rng.random() < 0.6:
        upper += " with a logo on the front"
    if p.upper_type in ("jacket", "coat") and view == "front" and rng.random() < 0.5:
        upper += f" over a {col(p.inner_colour)} top"
    out["upper"] = _article(upper)
    lower = _syn(rng, p.lower_type)
    lower_phrase = f"{col(p.lower_colour)} {lower}"
    out["lower"] = lower_phrase if lower.endswith("s") else _article(lower_phrase)
    out["shoes"] = f"{col(p.shoes)} {_syn(rng, 'shoes')}"
    hair = f"{p.hair_length} {p.hair_colour if rng.random() > confusion else 'dark'} hair"
    out["hair"] = hair
    if p.bag != "none" and (p.bag != "backpack" or view != "front" or rng.random() < 0.5):
        out["bag"] = _article(f"{col(p.bag_colour)} {_syn(rng, p.bag)}")
    if p.headwear != "none":
        out["headwear"] = _article(f"{col(p.headwear_colour)} {_syn(rng, p.headwear)}")
    if p.glasses and view != "back":
        out["glasses"] = "glasses"
    return out


def _join(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def write_caption(p: Identity, view: str, rng: np.random.Generator, confusion: float = 0.08) -> str:
    """One caption by a randomly drawn annotator style, mentioning a subset of visible attributes."""
    ph = visible_phrases(p, view, rng, confusion)
    noun = _syn(rng, p.gender)
    pron = "she" if p.gender == "woman" else "he"
    poss = "her" if p.gender == "woman" else "his"
    # a subset: clothing is almost always described, accessories often, the rest sometimes
    keep = {k for k in ph if rng.random() < {"upper": 0.95, "lower": 0.9, "shoes": 0.55, "hair": 0.6,
                                                 "bag": 0.85, "headwear": 0.8, "glasses": 0.7}[k]}
    if not keep & {"upper", "lower"}:
        keep.add("upper")
    wear = [ph[k] for k in ("upper", "lower", "shoes") if k in keep]
    order = rng.permutation(len(wear))
    if rng.random() < 0.5:
        wear = [wear[i] for i in order]
    style = int(rng.integers(6))
    if style == 0:
        s = f"A {noun}"
        if "hair" in keep:
            s += f" with {ph['hair']}"
        s += f" is wearing {_join(wear)}."
        if "bag" in keep:
            s += f" {pron.capitalize()} is carrying {ph['bag']}."
        if "headwear" in keep:
            s += f" {pron.capitalize()} has {ph['headwear']} on {poss} head."
        if "glasses" in keep:
            s += f" {pron.capitalize()} wears glasses."
    elif style == 1:
        s = f"The {noun} wears {_join(wear)}"
        extra = [ph[k] for k in ("bag", "headwear") if k in keep]
        s += (f" and has {_join(extra)}." if extra else ".")
        if "hair" in keep:
            s += f" {poss.capitalize()} hair is {ph['hair'].replace(' hair', '')}."
    elif style == 2:
        s = f"This {noun} is dressed in {_join(wear)}"
        if "bag" in keep:
            s += f", carrying {ph['bag']}"
        s += "."
        if "glasses" in keep or "headwear" in keep:
            acc = [ph[k] for k in ("headwear", "glasses") if k in keep]
            s += f" {pron.capitalize()} also has {_join(acc)}."
    elif style == 3:
        parts = [f"{noun}"] + [x for x in wear]
        parts += [ph[k] for k in ("bag", "headwear", "hair") if k in keep]
        s = ", ".join(parts) + "."
        s = s[0].upper() + s[1:]
    elif style == 4:
        where = {"front": "walking towards the camera", "back": "walking away from the camera",
                 "side": "walking to the side"}[view]
        s = f"A {noun} {where} in {_join(wear)}."
        if "bag" in keep:
            s += f" {pron.capitalize()} has {ph['bag']}."
        if "hair" in keep:
            s += f" {pron.capitalize()} has {ph['hair']}."
    else:
        acc = [ph[k] for k in ("bag", "headwear", "glasses") if k in keep]
        s = f"{_article(noun).capitalize()} wearing {_join(wear)}"
        s += (f" with {_join(acc)}." if acc else ".")
    if rng.random() < 0.3:
        s = s.lower()
    return s


# ------------------------------------------------------------------------------------------- the dataset


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


def _render_person(job: _Job) -> list[dict]:
    records = []
    for k in range(job.num_images):
        rng = np.random.default_rng([job.seed, job.person_id, k, 1])
        img, view = render_image(job.identity, rng, job.height, job.width, job.domain)
        rel = f"synth/p{job.person_id:05d}_s{k}.png"
        img.save(Path(job.out_dir) / "imgs" / rel, compress_level=1)
        crng = np.random.default_rng([job.seed, job.person_id, k, 2])
        captions = [write_caption(job.identity, view, crng) for _ in range(job.captions_per_image)]
        if job.domain == "street":  # its own generator: the base captions stay those of every domain
            vrng = np.random.default_rng([job.seed, job.person_id, k, 3])
            captions = [regional_words(c, vrng) for c in captions]
        records.append({"id": job.person_id, "file_path": rel, "captions": captions, "view": view})
    return records


def generate_synthpedes(out: str | Path, num_ids: int = 600, seed: int = 0, *, height: int = 128,
                        width: int = 64, images_per_id: float = 3.0, captions_per_image: int = 2,
                        val_ids: int = 100, test_ids: int = 200, near_duplicate_fraction: float = 0.15,
                        domain: str = "street", workers: int | None = None, montage: bool = True,
                        progress: bool = False) -> Path:
    """Write SynthPedes to ``out`` in the CUHK-PEDES format (``reid_raw.json`` + ``imgs/``).

    Identities are split into train / val / test (``val_ids`` and ``test_ids`` persons held out).
    Person ids are 1-based like CUHK-PEDES. Returns the path of ``reid_raw.json``.
    """
    if domain not in DOMAINS:
        raise ValueError(f"unknown SynthPedes domain {domain!r}; choose one of {', '.join(DOMAINS)}")
    if num_ids <= val_ids + test_ids:
        raise ValueError(f"num_ids={num_ids} leaves no training identities after {val_ids} val + {test_ids} test")
    out = Path(out)
    (out / "imgs" / "synth").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 0])
    identities: list[Identity] = []
    for _ in range(num_ids):
        if identities and rng.random() < near_duplicate_fraction:
            identities.append(near_duplicate(identities[int(rng.integers(len(identities)))], rng))
        else:
            identities.append(random_identity(rng))
    order = rng.permutation(num_ids)
    split_of = {}
    for rank, idx in enumerate(order):
        split_of[int(idx)] = "test" if rank < test_ids else "val" if rank < test_ids + val_ids else "train"
    jobs = [
        _Job(str(out), seed, i + 1, ident, _images_per_id(rng, images_per_id), captions_per_image, height, width,
             domain)
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
        "near_duplicate_fraction": near_duplicate_fraction, "domain": domain,
        "identities": {str(i + 1): asdict(ident) for i, ident in enumerate(identities)},
        "views": {r["file_path"]: r["view"] for recs in results for r in recs},
    }
    atomic_write_text(out / "synthpedes_meta.json", json.dumps(meta))
    if montage:
        save_montage(records, out / "imgs", out / "montage.png")
    log.info("SynthPedes: %d identities, %d images written to %s", num_ids, len(records), out)
    return ann


def _map(jobs: list[_Job], workers: int, progress: bool) -> list[list[dict]]:
    from tqdm import tqdm

    bar = dict(total=len(jobs), desc="render", unit="id", disable=not progress, leave=False)
    if workers <= 1:
        return [_render_person(j) for j in tqdm(jobs, **bar)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(tqdm(pool.map(_render_person, jobs, chunksize=16), **bar))


def save_montage(records: Iterable[dict], image_root: Path, path: Path, count: int = 8) -> None:
    """A PNG of ``count`` sample images with their captions, for a person to look at."""
    import matplotlib

    matplotlib.use("Agg")
    import textwrap

    import matplotlib.pyplot as plt

    records = list(records)[: count * 7 : 7][:count]
    fig, axes = plt.subplots(1, len(records), figsize=(2.4 * len(records), 5.6))
    for ax, rec in zip(np.atleast_1d(axes), records, strict=False):
        ax.imshow(Image.open(image_root / rec["file_path"]))
        ax.set_axis_off()
        text = "\n\n".join(textwrap.fill(c, 30) for c in rec["captions"])
        ax.set_title(f"id {rec['id']}", fontsize=9)
        ax.text(0.0, -0.03, text, transform=ax.transAxes, fontsize=6.5, va="top", ha="left")
    fig.subplots_adjust(left=0.01, right=0.99, top=0.95, bottom=0.42, wspace=0.15)
    atomic_save(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)

