"""SynthPedes: a synthetic pedestrian benchmark with captions, written in the CUHK-PEDES format.

An identity is a set of attributes (gender, hair, garments and their colours and patterns, shoes,
bag, headwear, glasses, build, skin tone). Each image draws that person from a per-image viewpoint
(front / back / side: a backpack shows from the back, a face and glasses from the front) with pose,
scale and crop jitter, a cluttered background, lighting change, partial occlusion and noise. Each
image gets captions from different "annotators": varied templates and synonyms, a subset of the
attributes visible from that viewpoint, occasional colour confusion (navy written as black).

Everything is a pure function of ``(seed, identity, image index)``, so generation is deterministic
whatever the number of worker processes.

Two drawing styles: ``classic`` (``render``: eye-level street or indoor scenes) and ``cctv`` (``cctv``: a
high surveillance camera over a plaza, other body shapes and palette); the captions are the same.

Modules: ``identity`` (attributes, near-duplicates), ``render`` and ``cctv`` (drawing), ``captions`` (annotators),
``writer`` (the dataset on disk).
"""

from cpcl.data.synth.captions import regional_words, write_caption
from cpcl.data.synth.identity import Identity, near_duplicate, random_identity
from cpcl.data.synth.render import render_image
from cpcl.data.synth.writer import DOMAINS, GENERATOR_VERSION, STYLES, generate_synthpedes, save_montage

__all__ = ["DOMAINS", "GENERATOR_VERSION", "STYLES", "Identity", "generate_synthpedes", "near_duplicate",
           "random_identity", "regional_words", "render_image", "save_montage", "write_caption"]
