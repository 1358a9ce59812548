"""Bad or unusual inputs are refused before any work, in one sentence that names what is at fault, with nothing
left on disk (issue: check everything before any work): configs, option values, image modes."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cpcl.cli import main
from cpcl.data.datasets import read_image
from cpcl.data.images import to_rgb


def test_a_config_with_a_section_twice_names_the_key_and_both_lines(tiny_synth, tmp_path, capsys):
    config = tmp_path / "twice.yaml"
    config.write_text("base: " + str(tmp_path / "base.yaml") + "\ntrain:\n  epochs: 3\noptim:\n  lr: 0.001\n"
                      "train:\n  batch_size: 8\n")
    (tmp_path / "base.yaml").write_text("data:\n  format: cuhk-pedes\n")
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "the key 'train' appears twice in one section (lines 2 and 6)" in err and str(config) in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("value", ["nan", ".nan", "inf", "-.inf"])
def test_non_finite_numbers_are_refused_naming_the_key(tiny_synth, tmp_path, capsys, value):
    assert main(["train", "--config", "synthpedes_itc", "--out", str(tmp_path / "run"),
                 "--set", f"optim.lr={value}"]) == 2
    assert "optim.lr: expected a finite number" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("args", "sentence"), [
    (["search", "IDX", "q", "--nprobe", "-1"], "argument --nprobe: must be at least 1, got -1"),
    (["index", "build", "--checkpoint", "c.pt", "--images", ".", "--out", "o", "--batch-size", "0"],
     "argument --batch-size: must be at least 1, got 0"),
    (["index", "build", "--checkpoint", "c.pt", "--images", ".", "--out", "o", "--nlist", "x"],
     "argument --nlist: expected a whole number, got 'x'"),
    (["eval", "--checkpoint", "c", "--format", "jsonl", "--root", ".", "--batch-size", "-3"],
     "argument --batch-size: must be at least 1, got -3"),
    (["serve", "IDX", "--port", "70000"], "argument --port: must be between 1 and 65535, got 70000"),
])
def test_option_values_are_checked_before_any_work(args, sentence, capsys):
    with pytest.raises(SystemExit) as stop:
        main(args)
    assert stop.value.code == 2 and sentence in capsys.readouterr().err


def test_index_commands_take_no_progress(tiny_checkpoint, gallery, tmp_path):
    crops = tmp_path / "crops"
    crops.mkdir()
    for path in gallery[:4]:
        (crops / path.name).write_bytes(path.read_bytes())
    assert main(["index", "build", "--checkpoint", str(tiny_checkpoint), "--images", str(crops), "--out",
                 str(tmp_path / "idx"), "--device", "cpu", "--workers", "0", "--no-progress"]) == 0
    assert main(["index", "add", str(tmp_path / "idx"), "--images", str(crops), "--device", "cpu", "--workers", "0",
                 "--no-progress"]) == 0


def _picture() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (40, 24)).astype(np.uint8)


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "YCbCr", "I;16", "I;16B", "I", "F"])
def test_every_image_mode_in_practice_reads_as_the_picture(mode, tmp_path):
    """A greyscale picture stored in each mode reads back as that picture in 8-bit RGB (within rounding; "1"
    keeps only black and white). 16-bit greyscale was read as white before."""
    grey = _picture()
    if mode == "1":
        grey = np.where(grey > 127, 255, 0).astype(np.uint8)
    base = Image.fromarray(grey, "L")
    size = (grey.shape[1], grey.shape[0])
    if mode in ("I;16", "I;16B"):
        order = "<u2" if mode == "I;16" else ">u2"
        image = Image.frombytes(mode, size, (grey.astype(np.uint16) * 257).astype(order).tobytes())
    elif mode == "I":
        image = Image.fromarray(grey.astype(np.int32) * 257)
    elif mode == "F":
        image = Image.fromarray(grey.astype(np.float32) / 255)
    else:
        image = base.convert(mode)
    rgb = np.asarray(to_rgb(image)).astype(int)
    assert rgb.shape == (40, 24, 3)
    tolerance = 2 if mode in ("CMYK", "YCbCr") else 1
    assert np.abs(rgb - grey[..., None]).max() <= tolerance, mode


def _sixteen_bit(grey: np.ndarray) -> Image.Image:
    pixels = (grey.astype(np.uint16) * 257).astype("<u2").tobytes()
    return Image.frombytes("I;16", (grey.shape[1], grey.shape[0]), pixels)


def test_a_16_bit_png_reads_as_its_8_bit_twin(tmp_path):
    grey = _picture()
    _sixteen_bit(grey).save(tmp_path / "deep.png")
    Image.fromarray(grey, "L").save(tmp_path / "flat.png")
    with Image.open(tmp_path / "deep.png") as im:
        assert im.mode.startswith("I")  # what Pillow opens a 16-bit greyscale PNG as
    assert np.array_equal(np.asarray(read_image(tmp_path / "deep.png")), np.asarray(read_image(tmp_path / "flat.png")))


def test_the_index_reads_16_bit_pngs_as_pictures(tiny_checkpoint, tmp_path):
    from cpcl.retrieval.retriever import load_retriever

    grey = _picture()
    _sixteen_bit(grey).save(tmp_path / "deep.png")
    Image.fromarray(grey, "L").save(tmp_path / "flat.png")
    retriever = load_retriever(tiny_checkpoint, "cpu")
    deep, flat = retriever.encode_images([tmp_path / "deep.png", tmp_path / "flat.png"])
    assert float(deep @ flat) > 0.9999
