"""SynthPedes captions: annotator styles, synonyms, visible attributes, colour confusion, and the street
annotators' own vocabulary."""

from __future__ import annotations

import re

import numpy as np

from cpcl.data.synth.identity import CONFUSIONS, Identity, pick

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
        return str(pick(rng, STREET_VOCABULARY[match.group(0).lower()]))

    text = _STREET_PATTERN.sub(swap, caption)
    # "a" / "an" before the (possibly replaced) next word
    return re.sub(r"\b(a|an|A|An) (\w)", lambda m: (m.group(1)[0] + ("n" if m.group(2).lower() in "aeiou" else ""))
                  + " " + m.group(2), text)


def _syn(rng: np.random.Generator, word: str) -> str:
    return str(pick(rng, _SYN.get(word, [word])))


def _colour_word(rng: np.random.Generator, colour: str, confusion: float) -> str:
    if rng.random() < confusion and colour in CONFUSIONS:
        return str(pick(rng, CONFUSIONS[colour]))
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
