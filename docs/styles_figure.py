"""Regenerates docs/synthpedes_styles.png: eight SynthPedes persons, each drawn in the classic style (left)
and the cctv style (right).

    python docs/styles_figure.py
"""

from pathlib import Path

import numpy as np
from PIL import Image

from cpcl.data.synth import random_identity, render_image
from cpcl.data.synth.cctv import render_cctv


def main() -> None:
    rng = np.random.default_rng(3)
    sheet = Image.new("RGB", (64 * 16, 128))
    for i in range(8):
        person = random_identity(rng)
        classic, _ = render_image(person, np.random.default_rng([i, 1]))
        cctv, _ = render_cctv(person, np.random.default_rng([i, 1]))
        sheet.paste(classic, (128 * i, 0))
        sheet.paste(cctv, (128 * i + 64, 0))
    out = Path(__file__).parent / "synthpedes_styles.png"
    sheet.quantize(256).save(out, optimize=True)  # a palette keeps the file small
    print(out)


if __name__ == "__main__":
    main()
