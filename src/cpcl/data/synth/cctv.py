"""SynthPedes' second drawing style, ``cctv``: the same persons seen by a high, wide-angle surveillance camera.

What differs from the ``classic`` style (``render.py``), so that a model tuned on one is not tuned on the
other: the **camera** looks down (a bigger head, legs shortened and converging, the figure small in a tall
frame, a tilt of a few degrees, a cast shadow, low resolution and blur); the **body** is built from
ellipses and tapered limbs with its own proportions; the **palette** is a cheap sensor's (every colour
name has other RGB values: desaturated, shifted hues, a green cast), so colour words mean other pixels;
the **scene** is a paved plaza seen from above (tiles in perspective, planters, benches, painted lines),
with no sky, buildings or passers-by drawn the classic way. Captions are the same annotators' (the text
side is unchanged): only the images change.

The same attribute is visible from the same viewpoint as in the classic style (a backpack from the back,
glasses and a logo from the front), so the captions stay true to the images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from cpcl.data.synth.identity import VIEWS, Identity, pick
from cpcl.data.synth.render import shade

# the colour names of identity.COLOURS as this camera records them
PALETTE: dict[str, tuple[int, int, int]] = {
    "black": (48, 52, 50),
    "white": (205, 214, 200),
    "grey": (122, 130, 120),
    "red": (168, 62, 70),
    "blue": (70, 98, 170),
    "navy": (44, 56, 92),
    "green": (72, 150, 96),
    "yellow": (200, 196, 86),
    "orange": (206, 128, 70),
    "pink": (206, 150, 172),
    "purple": (122, 76, 140),
    "brown": (112, 90, 64),
    "beige": (186, 180, 148),
}
HAIR = {"black": (40, 40, 38), "brown": (96, 74, 50), "blonde": (190, 176, 120), "grey": (150, 154, 148),
        "red": (140, 78, 50)}
SKIN = [(214, 192, 170), (196, 166, 138), (160, 128, 100), (108, 86, 66)]


def _plaza(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    """Paving seen from above: a base tone, tile lines converging towards the top, planters and benches."""
    tone = rng.integers(95, 175)
    base = np.array([tone, tone + rng.integers(-8, 8), tone + rng.integers(-12, 4)], np.float32)
    arr = np.broadcast_to(base, (h, w, 3)).copy()
    arr += rng.normal(0.0, 6.0, size=(h // 4 + 1, w // 4 + 1, 1)).repeat(4, 0).repeat(4, 1)[:h, :w]
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    line = shade(tuple(int(c) for c in base), 0.8)
    vanish_x, spread = w * rng.uniform(0.2, 0.8), rng.uniform(1.5, 3.0)
    for k in range(-4, 5):  # lines converging to a point above the frame
        x_bottom = w / 2 + k * w * 0.22 * spread
        draw.line([vanish_x + (x_bottom - vanish_x) * 0.3, 0, x_bottom, h], fill=line, width=1)
    y, step = h * rng.uniform(0.0, 0.1), h * rng.uniform(0.05, 0.08)
    while y < h:  # cross lines, further apart nearer the camera
        draw.line([0, y, w, y], fill=line, width=1)
        y += step
        step *= 1.12
    for _ in range(int(rng.integers(1, 4))):  # planters and benches
        x0, y0 = int(rng.integers(-w // 3, w)), int(rng.integers(-h // 6, h))
        x1, y1 = x0 + int(rng.integers(w // 5, w // 2)), y0 + int(rng.integers(h // 20, h // 6))
        colour = tuple(int(c) for c in rng.integers(50, 170, size=3))
        draw.rectangle([x0, y0, x1, y1], fill=colour, outline=shade(colour, 0.6))
        if rng.random() < 0.5:  # a planter's shrub
            draw.ellipse([x0, y0 - (y1 - y0), x1, y1], fill=(60 + int(rng.integers(0, 40)), 110, 60))
    if rng.random() < 0.5:  # a painted line
        y = int(rng.integers(0, h))
        draw.line([0, y, w, y + int(rng.integers(-h // 5, h // 5))], fill=(214, 206, 150), width=2)
    return img


@dataclass(frozen=True)
class _Body:
    """A figure seen from above: head top at ``top``, centre line ``cx``, height ``fh``."""

    p: Identity
    view: str
    facing: int
    cx: float
    top: float
    fh: float
    stride: float

    @property
    def side(self) -> bool:
        return self.view == "side"

    @property
    def r_head(self) -> float:  # seen from above the head is large
        return self.fh * 0.095

    @property
    def y_head(self) -> float:
        return self.top + self.r_head

    @property
    def y_sh(self) -> float:
        return self.top + self.fh * 0.22

    @property
    def y_waist(self) -> float:
        return self.top + self.fh * 0.56

    @property
    def y_foot(self) -> float:
        return self.top + self.fh

    @property
    def half_w(self) -> float:
        return self.fh * 0.19 * self.p.build * (0.62 if self.side else 1.0)


def _legs(draw: ImageDraw.ImageDraw, b: _Body) -> None:
    p, skin, lower = b.p, SKIN[b.p.skin], PALETTE[b.p.lower_colour]
    covered = {"trousers": 1.0, "jeans": 1.0, "shorts": 0.3, "skirt": 0.0, "long skirt": 0.0}[p.lower_type]
    top_w, foot_w = b.half_w * 0.42, b.half_w * 0.22  # legs narrow towards the far-away feet
    for sgn in (-1, 1):
        hip = b.cx + sgn * (0 if b.side else b.half_w * 0.45)
        foot = b.cx + sgn * (b.stride if b.side else b.half_w * 0.25)
        leg = [(hip - top_w, b.y_waist), (hip + top_w, b.y_waist), (foot + foot_w, b.y_foot), (foot - foot_w, b.y_foot)]
        draw.polygon(leg, fill=skin)
        if covered:
            knee = b.y_waist + (b.y_foot - b.y_waist) * covered
            mid = hip + (foot - hip) * covered
            width = top_w + (foot_w - top_w) * covered
            draw.polygon([leg[0], leg[1], (mid + width, knee), (mid - width, knee)], fill=lower)
        draw.ellipse([foot - foot_w * 1.6, b.y_foot - b.fh * 0.03, foot + foot_w * 1.6, b.y_foot + b.fh * 0.015],
                     fill=PALETTE[p.shoes])
    if p.lower_type in ("skirt", "long skirt"):
        hem = b.y_waist + (b.y_foot - b.y_waist) * (0.4 if p.lower_type == "skirt" else 0.8)
        waist = b.y_waist - b.fh * 0.02
        draw.polygon([(b.cx - b.half_w * 0.8, waist), (b.cx + b.half_w * 0.8, waist),
                      (b.cx + b.half_w * 0.95, hem), (b.cx - b.half_w * 0.95, hem)], fill=lower)


def _torso_and_arms(draw: ImageDraw.ImageDraw, b: _Body) -> tuple[float, float]:
    """Arms, then an elliptical torso over them; returns the hand that may hold a bag."""
    p, upper, skin = b.p, PALETTE[b.p.upper_colour], SKIN[b.p.skin]
    sleeve = {"t-shirt": 0.4, "vest": 0.0, "shirt": 1.0, "jacket": 1.0, "coat": 1.0, "hoodie": 1.0}[p.upper_type]
    width = max(1, int(b.fh * 0.05))
    hand = (b.cx, b.y_waist)
    for sgn in ((b.facing,) if b.side else (-1, 1)):
        shoulder = (b.cx + sgn * b.half_w * (0.2 if b.side else 0.9), b.y_sh + b.fh * 0.03)
        hand = (shoulder[0] + sgn * b.fh * 0.03, b.y_waist + b.fh * 0.02)
        draw.line([shoulder, hand], fill=skin, width=width)
        if sleeve:
            end = (shoulder[0] + (hand[0] - shoulder[0]) * sleeve, shoulder[1] + (hand[1] - shoulder[1]) * sleeve)
            draw.line([shoulder, end], fill=upper, width=width + 1)
    bottom = b.top + b.fh * (0.78 if p.upper_type == "coat" else 0.6)
    box = [b.cx - b.half_w, b.y_sh - b.fh * 0.03, b.cx + b.half_w, bottom]
    draw.ellipse(box, fill=upper)
    _pattern(draw, b, box, upper)
    if p.upper_type in ("jacket", "coat") and b.view == "front":
        draw.ellipse([b.cx - b.half_w * 0.22, b.y_sh, b.cx + b.half_w * 0.22, bottom - b.fh * 0.03],
                     fill=PALETTE[p.inner_colour])
    if p.upper_type == "hoodie" and b.view == "back":
        draw.pieslice([b.cx - b.half_w * 0.7, b.y_sh - b.fh * 0.08, b.cx + b.half_w * 0.7, b.y_sh + b.fh * 0.14],
                      start=0, end=180, fill=shade(upper, 0.75))
    return hand


def _pattern(draw: ImageDraw.ImageDraw, b: _Body, box: list[float], upper: tuple[int, int, int]) -> None:
    p = b.p
    mark = shade(upper, 0.55) if sum(upper) > 240 else (190, 196, 186)
    if p.upper_pattern == "striped":  # diagonal stripes (the classic style draws them level)
        x = box[0] - (box[3] - box[1])
        while x < box[2]:
            draw.line([x, box[3], x + (box[3] - box[1]), box[1]], fill=mark, width=max(1, int(b.fh * 0.02)))
            x += b.fh * 0.07
    elif p.upper_pattern == "checked":  # dots
        for gx in np.arange(box[0] + b.fh * 0.04, box[2], b.fh * 0.06):
            for gy in np.arange(box[1] + b.fh * 0.05, box[3] - b.fh * 0.02, b.fh * 0.06):
                draw.point([float(gx), float(gy)], fill=mark)
    elif p.upper_pattern == "logo" and b.view == "front":
        size = b.fh * 0.05
        draw.rectangle([b.cx - size, b.y_sh + b.fh * 0.08, b.cx + size, b.y_sh + b.fh * 0.08 + size * 1.4],
                       fill=(240, 240, 236) if sum(upper) < 380 else (30, 30, 30))


def _bag(draw: ImageDraw.ImageDraw, b: _Body, hand: tuple[float, float]) -> None:
    p, bag = b.p, PALETTE[b.p.bag_colour]
    if p.bag == "backpack" and b.view == "back":
        draw.ellipse([b.cx - b.half_w * 0.7, b.y_sh, b.cx + b.half_w * 0.7, b.y_sh + b.fh * 0.3], fill=bag)
    elif p.bag == "backpack" and b.side:
        x = b.cx - b.facing * b.half_w * 1.1
        draw.ellipse([x - b.fh * 0.07, b.y_sh, x + b.fh * 0.07, b.y_sh + b.fh * 0.28], fill=bag)
    elif p.bag == "backpack":  # straps from the front
        for sgn in (-1, 1):
            draw.line([b.cx + sgn * b.half_w * 0.5, b.y_sh, b.cx + sgn * b.half_w * 0.45, b.y_sh + b.fh * 0.22],
                      fill=bag, width=max(1, int(b.fh * 0.025)))
    elif p.bag == "shoulder bag":
        sgn = b.facing if b.side else 1
        x = b.cx + sgn * b.half_w * 1.0
        draw.line([b.cx - sgn * b.half_w * 0.5, b.y_sh, x, b.y_waist], fill=shade(bag, 0.7), width=1)
        draw.ellipse([x - b.fh * 0.07, b.y_waist - b.fh * 0.07, x + b.fh * 0.07, b.y_waist + b.fh * 0.05], fill=bag)
    elif p.bag == "handbag":
        draw.rectangle([hand[0] - b.fh * 0.05, hand[1], hand[0] + b.fh * 0.05, hand[1] + b.fh * 0.07], fill=bag)


def _head(draw: ImageDraw.ImageDraw, b: _Body) -> None:
    p, r, cx, cy = b.p, b.r_head, b.cx, b.y_head
    hair = HAIR[p.hair_colour]
    if p.hair_length == "long" and b.view != "front":
        draw.ellipse([cx - r * 1.1, cy - r * 0.2, cx + r * 1.1, b.y_sh + b.fh * 0.12], fill=hair)
    draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=SKIN[p.skin])
    if b.view == "back":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=hair)
    else:  # from above the hair covers most of the head; a crescent of face shows below it
        face_shift = b.facing * r * 0.35 if b.side else 0.0
        draw.ellipse([cx - r - face_shift, cy - r * 1.05, cx + r - face_shift, cy + r * 0.35], fill=hair)
        if p.glasses:
            gx = cx + face_shift
            draw.line([gx - r * 0.6, cy + r * 0.5, gx + r * 0.6, cy + r * 0.5], fill=(15, 15, 15),
                      width=max(1, int(b.fh * 0.015)))
    if p.headwear == "none":
        return
    hc = PALETTE[p.headwear_colour]
    if p.headwear == "hat":  # a brim all round, seen from above
        draw.ellipse([cx - r * 1.6, cy - r * 1.3, cx + r * 1.6, cy + r * 0.9], fill=shade(hc, 0.85))
    draw.ellipse([cx - r * 0.95, cy - r * 1.05, cx + r * 0.95, cy + r * 0.5], fill=hc)
    if p.headwear == "cap" and b.view != "back":
        peak = cx + (b.facing * r * 0.9 if b.side else 0.0)
        draw.ellipse([peak - r * 0.7, cy + r * 0.1, peak + r * 0.7, cy + r * 0.7], fill=shade(hc, 0.7))
    elif p.headwear == "beanie":
        draw.line([cx - r * 0.9, cy + r * 0.3, cx + r * 0.9, cy + r * 0.3], fill=shade(hc, 0.6), width=2)


def draw_figure(draw: ImageDraw.ImageDraw, p: Identity, view: str, rng: np.random.Generator,
                cx: float, top: float, fh: float) -> None:
    """One person of height ``fh`` (head top at ``top``, centre line ``cx``), with a shadow, back to front."""
    b = _Body(p, view, -1 if rng.random() < 0.5 else 1, cx, top, fh, fh * rng.uniform(0.0, 0.08))
    draw.ellipse([cx - fh * 0.22, b.y_foot - fh * 0.04, cx + fh * 0.32, b.y_foot + fh * 0.05], fill=(40, 40, 40))
    if p.bag == "backpack" and b.side:
        _bag(draw, b, (cx, b.y_waist))
    _legs(draw, b)
    hand = _torso_and_arms(draw, b)
    if not (p.bag == "backpack" and b.side):
        _bag(draw, b, hand)
    _head(draw, b)


def render_cctv(person: Identity, rng: np.random.Generator, height: int = 128,
                width: int = 64) -> tuple[Image.Image, str]:
    """Draw one ``cctv``-style image of ``person``; returns the image and the viewpoint drawn."""
    ss = 2
    w, h = width * ss, height * ss
    img = _plaza(rng, w, h)
    draw = ImageDraw.Draw(img)
    view = str(pick(rng, VIEWS))
    fh = h * rng.uniform(0.55, 0.78)
    cx = w * (0.5 + rng.uniform(-0.15, 0.15))
    top = (h - fh) * rng.uniform(0.05, 0.95)
    draw_figure(draw, person, view, rng, cx, top, fh)
    if rng.random() < 0.25:  # a pole or sign in front
        x = w * rng.uniform(0.0, 1.0)
        draw.line([x, 0, x + w * rng.uniform(-0.2, 0.2), h], fill=tuple(int(c) for c in rng.integers(30, 90, size=3)),
                  width=int(rng.integers(3, 8)))
    img = img.rotate(float(rng.uniform(-7, 7)), resample=Image.BILINEAR, fillcolor=(90, 90, 90))
    low = float(rng.uniform(0.45, 0.8))  # the camera's resolution, then its blur
    img = img.resize((max(8, int(width * low)), max(16, int(height * low))), Image.BILINEAR).resize((width, height),
                                                                                                 Image.BILINEAR)
    img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.0, 0.7))))
    arr = np.asarray(img, dtype=np.float32)
    arr = arr * rng.uniform(0.75, 1.15) + np.array([-6.0, 8.0, -4.0]) * rng.uniform(0.5, 1.5)  # gain, green cast
    arr += rng.normal(0.0, rng.uniform(3.0, 7.0), size=arr.shape[:2] + (1,))  # monochrome sensor noise
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)), view
