"""SynthPedes identities: the attribute set that defines a person, and near-duplicate persons."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

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


def pick(rng: np.random.Generator, options: list) -> object:
    return options[int(rng.integers(len(options)))]


def random_identity(rng: np.random.Generator) -> Identity:
    gender = "woman" if rng.random() < 0.45 else "man"
    hair_length = ("long" if rng.random() < 0.7 else "short") if gender == "woman" else (
        "long" if rng.random() < 0.1 else "short"
    )
    lower_types = LOWER_TYPES if gender == "woman" else ["trousers", "jeans", "shorts"]
    lower_type = str(pick(rng, lower_types))
    lower_colour = "blue" if lower_type == "jeans" and rng.random() < 0.7 else str(pick(rng, GARMENT_COLOURS))
    upper_colour = str(pick(rng, GARMENT_COLOURS))
    return Identity(
        gender=gender,
        hair_length=hair_length,
        hair_colour=str(pick(rng, list(HAIR_COLOURS))),
        skin=int(rng.integers(len(SKIN_TONES))),
        build=float(rng.uniform(0.85, 1.2)),
        upper_type=str(pick(rng, UPPER_TYPES)),
        upper_colour=upper_colour,
        upper_pattern=str(pick(rng, PATTERNS)),
        inner_colour=str(pick(rng, [c for c in GARMENT_COLOURS if c != upper_colour])),
        lower_type=lower_type,
        lower_colour=lower_colour,
        shoes=str(pick(rng, SHOE_COLOURS)),
        bag=str(pick(rng, BAGS)),
        bag_colour=str(pick(rng, GARMENT_COLOURS)),
        headwear=str(pick(rng, HEADWEAR)),
        headwear_colour=str(pick(rng, GARMENT_COLOURS)),
        glasses=bool(rng.random() < 0.2),
    )


_MUTABLE = ["upper_colour", "lower_colour", "bag", "shoes", "headwear", "upper_pattern", "hair_colour", "bag_colour"]


def near_duplicate(base: Identity, rng: np.random.Generator) -> Identity:
    """A different person who shares every attribute of ``base`` but one, as in real crowds."""
    attrs = asdict(base)
    name = str(pick(rng, _MUTABLE))
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
    attrs[name] = str(pick(rng, [o for o in options if o != attrs[name]]))
    if name == "bag_colour" and attrs["bag"] == "none":
        attrs["bag"] = "backpack"
    return Identity(**attrs)


_OUTFIT = ("upper_type", "upper_colour", "upper_pattern", "inner_colour", "lower_type", "lower_colour", "shoes", "bag",
           "bag_colour")


def uniformed(base: Identity, rng: np.random.Generator) -> Identity:
    """A different person in ``base``'s outfit (clothes, shoes and bag, as a uniform): the same gender, their own
    hair, skin, build, headwear and glasses."""
    while True:
        own = random_identity(rng)
        if own.gender == base.gender:
            break
    return Identity(**{**asdict(own), **{name: getattr(base, name) for name in _OUTFIT}})

