"""SynthPedes drawing: a cluttered scene, the person from a per-image viewpoint, passers-by, occluders,
lighting and sensor noise."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from cpcl.data.synth.identity import COLOURS, HAIR_COLOURS, SKIN_TONES, VIEWS, Identity, pick, random_identity

_SUPERSAMPLE = 2  # drawn at twice the size, then downsampled: anti-aliased edges


def shade(colour: tuple[int, int, int], factor: float) -> tuple[int, int, int]:
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
            win = shade(colour, 1.4 if domain == "indoor" else 0.6)
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


@dataclass(frozen=True)
class Camera:
    """A fixed camera: every image it takes shows the same scene under the same colour cast, whoever is in it.

    Captions never mention it, so images of different persons that share a camera look alike in ways no
    caption describes (the nuisance real re-identification data has: several persons per camera)."""

    background: np.ndarray  # (H, W, 3) uint8 at the drawing's supersampled size
    gain: tuple[float, float, float]  # per channel: the camera's colour cast
    contrast: float
    noise: float  # sensor noise (std of added Gaussian noise)


def make_cameras(count: int, rng: np.random.Generator, height: int, width: int, domain: str) -> tuple[Camera, ...]:
    """``count`` cameras, each with its own scene and a strong colour cast."""
    ss = _SUPERSAMPLE
    return tuple(Camera(np.asarray(_background(rng, width * ss, height * ss, domain)),
                        tuple(float(g) for g in rng.uniform(0.55, 1.45, size=3)),  # type: ignore[arg-type]
                        float(rng.uniform(0.75, 1.2)), float(rng.uniform(2.0, 9.0)))
                 for _ in range(count))


@dataclass(frozen=True)
class _Figure:
    """Where the parts of one drawn person go: a figure of height ``fh`` whose head top is at ``top`` and
    centre line at ``cx``, seen from ``view``."""

    p: Identity
    view: str
    facing: int  # which way a side view looks
    cx: float
    top: float
    fh: float
    stride: float
    swing: float

    @property
    def side(self) -> bool:
        return self.view == "side"

    @property
    def half_w(self) -> float:
        return self.fh * 0.15 * self.p.build * (0.6 if self.side else 1.0)

    @property
    def y_head(self) -> float:
        return self.top + self.fh * 0.075

    @property
    def r_head(self) -> float:
        return self.fh * 0.065

    @property
    def y_sh(self) -> float:  # shoulders
        return self.top + self.fh * 0.15

    @property
    def y_waist(self) -> float:
        return self.top + self.fh * 0.47

    @property
    def y_foot(self) -> float:
        return self.top + self.fh * 0.95


def _draw_person(draw: ImageDraw.ImageDraw, p: Identity, view: str, rng: np.random.Generator,
                 cx: float, top: float, fh: float) -> None:
    """Draw the figure of height ``fh`` whose head top is at ``top`` and centre line at ``cx``, back to front."""
    side = view == "side"
    facing = -1 if rng.random() < 0.5 else 1
    stride = fh * rng.uniform(0.0, 0.09 if side else 0.04)
    swing = fh * rng.uniform(-0.05, 0.05)
    f = _Figure(p, view, facing, cx, top, fh, stride, swing)
    _draw_behind(draw, f)
    _draw_legs(draw, f)
    hand_pts = _draw_arms(draw, f)
    _draw_torso(draw, f)
    _draw_bag(draw, f, hand_pts)
    _draw_head(draw, f)
    _draw_headwear(draw, f)


def _draw_behind(draw: ImageDraw.ImageDraw, f: _Figure) -> None:
    p, cx, fh, half_w, y_sh = f.p, f.cx, f.fh, f.half_w, f.y_sh
    # backpack behind the body in the side view
    if p.bag == "backpack" and f.side:
        bx = cx - f.facing * half_w
        draw.rectangle([bx - fh * 0.08, y_sh + fh * 0.02, bx + fh * 0.08, y_sh + fh * 0.26], fill=COLOURS[p.bag_colour])
    # long hair falls behind the shoulders in front view
    if p.hair_length == "long" and f.view == "front":
        r_head = f.r_head
        draw.rectangle([cx - r_head * 1.15, f.y_head, cx + r_head * 1.15, y_sh + fh * 0.1],
                       fill=HAIR_COLOURS[p.hair_colour])


def _draw_legs(draw: ImageDraw.ImageDraw, f: _Figure) -> None:
    p, cx, fh, side, half_w = f.p, f.cx, f.fh, f.side, f.half_w
    y_waist, y_foot, stride, swing = f.y_waist, f.y_foot, f.stride, f.swing
    skin, lower = SKIN_TONES[p.skin], COLOURS[p.lower_colour]
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
        shoe_dx = f.facing * fh * 0.04 if side else 0.0
        draw.ellipse([foot_x - leg_w * 1.1 + min(0, shoe_dx), y_foot - fh * 0.025,
                      foot_x + leg_w * 1.1 + max(0, shoe_dx), y_foot + fh * 0.02], fill=COLOURS[p.shoes])
    if p.lower_type in ("skirt", "long skirt"):
        hem = y_waist + (y_foot - y_waist) * (0.35 if p.lower_type == "skirt" else 0.75)
        flare = half_w * (1.35 if not side else 1.2)
        draw.polygon([(cx - half_w * 0.95, y_waist - fh * 0.01), (cx + half_w * 0.95, y_waist - fh * 0.01),
                      (cx + flare, hem), (cx - flare, hem)], fill=lower)
    if p.lower_type in ("trousers", "jeans", "shorts") and not side:
        draw.rectangle([cx - half_w * 0.95, y_waist - fh * 0.01, cx + half_w * 0.95, y_waist + fh * 0.05],
                       fill=lower)


def _draw_arms(draw: ImageDraw.ImageDraw, f: _Figure) -> list[tuple[float, float]]:
    """Arms (behind the torso edges) -> the hand positions."""
    p, cx, fh, side, half_w, y_sh, swing = f.p, f.cx, f.fh, f.side, f.half_w, f.y_sh, f.swing
    skin, upper = SKIN_TONES[p.skin], COLOURS[p.upper_colour]
    sleeve = {"t-shirt": 0.45, "vest": 0.0, "shirt": 1.0, "jacket": 1.0, "coat": 1.0, "hoodie": 1.0}[p.upper_type]
    arm_w = fh * 0.035
    hand_pts = []
    arm_sides = (f.facing,) if side else (-1, 1)
    for sgn in arm_sides:
        ax = cx + sgn * half_w * (0.95 if not side else 0.2)
        hx = ax + sgn * fh * 0.02 + (swing if sgn > 0 else -swing) * (1.5 if side else 0.5)
        hy = f.y_waist + fh * 0.04
        draw.polygon([(ax - arm_w, y_sh + fh * 0.02), (ax + arm_w, y_sh + fh * 0.02),
                      (hx + arm_w, hy), (hx - arm_w, hy)], fill=skin)
        if sleeve > 0:
            sy = y_sh + (hy - y_sh) * sleeve
            sx = ax + (hx - ax) * sleeve
            draw.polygon([(ax - arm_w * 1.15, y_sh + fh * 0.01), (ax + arm_w * 1.15, y_sh + fh * 0.01),
                          (sx + arm_w * 1.1, sy), (sx - arm_w * 1.1, sy)], fill=upper)
        hand_pts.append((hx, hy))
    return hand_pts


def _draw_torso(draw: ImageDraw.ImageDraw, f: _Figure) -> None:
    p, cx, fh, half_w, y_sh, view = f.p, f.cx, f.fh, f.half_w, f.y_sh, f.view
    upper = COLOURS[p.upper_colour]
    upper_len = 0.70 if p.upper_type == "coat" else 0.47
    torso_bottom = f.top + fh * upper_len
    torso = [cx - half_w, y_sh, cx + half_w, torso_bottom]
    draw.rounded_rectangle(torso, radius=max(1, int(fh * 0.03)), fill=upper)
    if p.upper_pattern == "striped":
        dark = shade(upper, 0.45) if sum(upper) > 200 else shade((200, 200, 200), 1.0)
        step = fh * 0.045
        y = y_sh + step
        while y < torso_bottom - 1:
            draw.line([torso[0] + 1, y, torso[2] - 1, y], fill=dark, width=max(1, int(fh * 0.015)))
            y += step
    elif p.upper_pattern == "checked":
        dark = shade(upper, 0.5) if sum(upper) > 200 else (180, 180, 180)
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
                     fill=shade(upper, 0.8))


def _draw_bag(draw: ImageDraw.ImageDraw, f: _Figure, hand_pts: list[tuple[float, float]]) -> None:
    p, cx, fh, half_w, y_sh, y_waist, view = f.p, f.cx, f.fh, f.half_w, f.y_sh, f.y_waist, f.view
    bag = COLOURS[p.bag_colour]
    if p.bag == "backpack" and view == "back":
        draw.rounded_rectangle([cx - half_w * 0.75, y_sh + fh * 0.03, cx + half_w * 0.75, y_sh + fh * 0.27],
                               radius=max(1, int(fh * 0.02)), fill=bag)
    elif p.bag == "backpack" and view == "front":
        for sgn in (-1, 1):
            draw.line([cx + sgn * half_w * 0.55, y_sh, cx + sgn * half_w * 0.6, y_sh + fh * 0.2],
                      fill=bag, width=max(1, int(fh * 0.02)))
    elif p.bag == "shoulder bag":
        sgn = 1 if view != "side" else f.facing
        draw.line([cx - sgn * half_w * 0.7, y_sh, cx + sgn * half_w * 0.9, y_waist - fh * 0.02],
                  fill=shade(bag, 0.8), width=max(1, int(fh * 0.015)))
        bx = cx + sgn * half_w * 1.05
        draw.rectangle([bx - fh * 0.06, y_waist - fh * 0.06, bx + fh * 0.06, y_waist + fh * 0.04], fill=bag)
    elif p.bag == "handbag" and hand_pts:
        hx, hy = hand_pts[-1]
        draw.rectangle([hx - fh * 0.045, hy, hx + fh * 0.045, hy + fh * 0.08], fill=bag)


def _draw_head(draw: ImageDraw.ImageDraw, f: _Figure) -> None:
    """Neck, head, face and hair."""
    p, cx, fh, y_head, r_head, y_sh, facing = f.p, f.cx, f.fh, f.y_head, f.r_head, f.y_sh, f.facing
    skin, hair = SKIN_TONES[p.skin], HAIR_COLOURS[p.hair_colour]
    draw.rectangle([cx - fh * 0.02, y_head + r_head * 0.5, cx + fh * 0.02, y_sh + 1], fill=skin)
    draw.ellipse([cx - r_head, y_head - r_head, cx + r_head, y_head + r_head], fill=skin)
    if f.view == "back":
        draw.ellipse([cx - r_head * 1.05, y_head - r_head * 1.05, cx + r_head * 1.05, y_head + r_head * 1.05],
                     fill=hair)
        if p.hair_length == "long":
            draw.rectangle([cx - r_head * 1.05, y_head, cx + r_head * 1.05, y_sh + fh * 0.12], fill=hair)
        return
    draw.chord([cx - r_head * 1.05, y_head - r_head * 1.1, cx + r_head * 1.05, y_head + r_head * 0.6],
               start=180, end=360, fill=hair)
    if f.side:
        back_x = cx - facing * r_head * 0.5
        draw.ellipse([back_x - r_head * 0.6, y_head - r_head, back_x + r_head * 0.6, y_head + r_head * 0.6],
                     fill=hair)
        if p.hair_length == "long":
            draw.rectangle([back_x - r_head * 0.5, y_head, back_x + r_head * 0.5, y_sh + fh * 0.1], fill=hair)
    eye_y = y_head - r_head * 0.05
    eye_dx = r_head * 0.4
    eyes = [cx + facing * r_head * 0.45] if f.side else [cx - eye_dx, cx + eye_dx]
    for ex in eyes:
        draw.point([ex, eye_y], fill=(20, 20, 20))
    if p.glasses:
        gx0 = min(eyes) - r_head * 0.3
        gx1 = max(eyes) + r_head * 0.3
        draw.rectangle([gx0, eye_y - r_head * 0.2, gx1, eye_y + r_head * 0.2], outline=(10, 10, 10),
                       width=max(1, int(fh * 0.01)))


def _draw_headwear(draw: ImageDraw.ImageDraw, f: _Figure) -> None:
    p, cx, y_head, r_head = f.p, f.cx, f.y_head, f.r_head
    if p.headwear == "none":
        return
    hc = COLOURS[p.headwear_colour]
    crown = [cx - r_head * 1.05, y_head - r_head * 1.25, cx + r_head * 1.05, y_head + r_head * 0.2]
    draw.chord(crown, start=180, end=360, fill=hc)
    if p.headwear == "cap":
        bx = cx + (f.facing * r_head * 0.9 if f.side else 0)
        bw = r_head * (0.9 if f.side else 1.1)
        if f.view != "back":
            draw.rectangle([bx - bw, y_head - r_head * 0.5, bx + bw, y_head - r_head * 0.3], fill=shade(hc, 0.7))
    elif p.headwear == "hat":
        draw.rectangle([cx - r_head * 1.7, y_head - r_head * 0.55, cx + r_head * 1.7, y_head - r_head * 0.35],
                       fill=shade(hc, 0.8))
    else:  # beanie
        draw.ellipse([cx - r_head * 0.3, y_head - r_head * 1.5, cx + r_head * 0.3, y_head - r_head * 0.95], fill=hc)


def render_image(person: Identity, rng: np.random.Generator, height: int = 128, width: int = 64,
                 domain: str = "street", camera: Camera | None = None) -> tuple[Image.Image, str]:
    """Draw one image of ``person``; returns the image and the viewpoint drawn. Without a ``camera`` each
    image has a scene and lighting of its own; with one, the camera's scene and colour cast."""
    ss = _SUPERSAMPLE
    w, h = width * ss, height * ss
    img = _background(rng, w, h, domain)  # drawn with a camera too: the rest (viewpoint, captions) stays the same
    if camera is not None:
        img = Image.fromarray(camera.background)
    draw = ImageDraw.Draw(img)
    view = str(pick(rng, VIEWS))
    # pedestrians in the way, behind the subject
    if rng.random() < 0.3:
        other = random_identity(rng)
        ofh = h * rng.uniform(0.6, 0.85)
        ocx = w * (rng.uniform(-0.1, 0.15) if rng.random() < 0.5 else rng.uniform(0.85, 1.1))
        _draw_person(draw, other, str(pick(rng, VIEWS)), rng, ocx, h * rng.uniform(0.0, 0.15), ofh)
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
    if camera is None:
        gain = rng.uniform(0.65, 1.3) * rng.uniform(0.9, 1.1, size=3)
        contrast, noise = rng.uniform(0.75, 1.2), rng.uniform(2.0, 9.0)
    else:  # the camera's, with a little variation from one moment to the next
        gain = np.asarray(camera.gain) * rng.uniform(0.95, 1.05)
        contrast, noise = camera.contrast, camera.noise
    mean = arr.mean()
    arr = ((arr - mean) * contrast + mean) * gain
    arr += rng.normal(0.0, noise, size=arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)), view
