"""Bad or unusual inputs are refused before any work, in one sentence that names what is at fault, with nothing
left on disk (issue: check everything before any work): configs, option values, image modes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from cpcl.cli import main
from cpcl.data.datasets import read_image
from cpcl.data.images import to_rgb
from tests.conftest import crops_folder


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
    (["synth", "--out", "o", "--ids", "0"], "argument --ids: must be at least 1, got 0"),
    (["synth", "--out", "o", "--caption-noise", "1.5"], "argument --caption-noise: must be at least 0 and at most 1"),
    (["synth", "--out", "o", "--images-per-id", "0"], "argument --images-per-id: must be above 0 and at most 8"),
    (["synth", "--out", "o", "--uniforms", "nan"], "argument --uniforms: must be at least 0 and at most 1"),
    (["serve", "IDX", "--batch-window-ms", "-1"], "argument --batch-window-ms: must be at least 0"),
    (["clusters", "RUN", "--epoch", "0"], "argument --epoch: must be at least 1, got 0"),
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


@pytest.mark.parametrize("grid", ["cluster.epz=0.4,0.5", "cluster.eps=0.4,abc"])
def test_a_sweep_whose_grid_cannot_be_read_trains_nothing(tmp_path, capsys, monkeypatch, grid):
    from cpcl import selection

    monkeypatch.setattr(selection, "train", lambda *a, **k: pytest.fail("a trial was trained"))
    assert main(["sweep", "--config", "synthpedes_cpcl", "--grid", grid, "--out", str(tmp_path / "sweep")]) == 2
    err = capsys.readouterr().err
    assert f"the trial {grid.split('=')[0]}=" in err and "cannot be read, so no trial is trained" in err
    assert not (tmp_path / "sweep").exists()
    with pytest.raises(SystemExit):
        main(["sweep", "--config", "synthpedes_cpcl", "--grid", "cluster.eps=0.4", "--trials", "0", "--out", "s"])


def test_index_build_refusals_leave_nothing(tiny_checkpoint, gallery, tmp_path, capsys):
    crops = crops_folder(gallery, tmp_path / "crops", 6)
    base = ["index", "build", "--checkpoint", str(tiny_checkpoint), "--images", str(crops), "--device", "cpu",
            "--workers", "0"]
    assert main([*base, "--out", str(tmp_path / "ivf"), "--kind", "ivf", "--nlist", "64"]) == 2
    assert "--nlist 64: an ivf index trains its 64 lists on the images, and 6 were found" in capsys.readouterr().err
    assert not (tmp_path / "ivf").exists()
    (tmp_path / "a-file").write_text("x")
    assert main([*base, "--out", str(tmp_path / "a-file")]) == 2
    assert "--out " + str(tmp_path / "a-file") + " is a file; name a folder to write into" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # refused by the parser, before the checkpoint is read
        main(["export", "onnx", "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "a-file")])
    assert "a-file is a file; name a folder to write into" in capsys.readouterr().err


def test_an_interrupted_index_build_says_so_and_leaves_no_empty_folder(tiny_checkpoint, gallery, tmp_path, capsys,
                                                                        monkeypatch):
    from cpcl.retrieval import service

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(service, "_encode_readable", interrupted)
    crops = crops_folder(gallery, tmp_path / "crops", 3)
    assert main(["index", "build", "--checkpoint", str(tiny_checkpoint), "--images", str(crops), "--out",
                 str(tmp_path / "idx"), "--device", "cpu", "--workers", "0"]) == 130
    err = capsys.readouterr().err
    assert "interrupted; no index was written" in err and "--resume" not in err
    assert not (tmp_path / "idx").exists()


def test_a_truncated_embeddings_file_names_the_file_and_the_index(tiny_checkpoint, gallery, tmp_path, capsys):
    crops = crops_folder(gallery, tmp_path / "crops", 4)
    index = tmp_path / "idx"
    assert main(["index", "build", "--checkpoint", str(tiny_checkpoint), "--images", str(crops), "--out", str(index),
                 "--device", "cpu", "--workers", "0"]) == 0
    embeddings = next(index.glob("embeddings.*.npy"))
    embeddings.write_bytes(embeddings.read_bytes()[:200])
    assert main(["search", str(index), "a man", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert f"{embeddings} is damaged: it no longer matches the checksum" in err and "build the index again" in err
    # an index written before cpcl recorded checksums: the reader still names the file
    manifest = json.loads((index / "index.json").read_text())
    del manifest["sha256"]
    (index / "index.json").write_text(json.dumps(manifest))
    assert main(["search", str(index), "a man", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert f"{index}: {embeddings.name} cannot be read" in err and "build it again" in err


def test_resume_of_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path / "nowhere")]) == 2
    assert "no such folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["train", "--resume", str(tmp_path / "empty")]) == 2
    assert "it holds no training run: start one with --config and --out" in capsys.readouterr().err


def test_a_folder_with_only_the_config_of_a_run_that_never_trained_is_no_run(tmp_path):
    from cpcl.engine.trainer import claim_run_dir
    from cpcl.io import OutputExistsError

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("train: {}\n")
    claim_run_dir(run)  # not refused: nothing was trained there
    assert not (run / "config.yaml").exists()
    (run / "last.pt").write_bytes(b"x")
    with pytest.raises(OutputExistsError, match="already holds a training run"):
        claim_run_dir(run)


def test_jsonl_repeated_lines_are_kept_once_and_noted(tmp_path, capsys):
    Image.fromarray(_picture(), "L").save(tmp_path / "a.png")
    line = {"image": "a.png", "caption": "a man in a red coat"}
    lines = [line, {"image": "a.png", "caption": "red coat, black shoes"}, line]
    (tmp_path / "annotations.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    from cpcl.data.formats import load_annotations

    ann = load_annotations("jsonl", tmp_path)
    assert ann.records[0].captions == ("a man in a red coat", "red coat, black shoes")
    assert main(["data", "check", "--format", "jsonl", "--root", str(tmp_path)]) == 0
    assert "annotations.jsonl:3: repeats a caption of a.png (first at" in capsys.readouterr().out


def test_16_bit_pngs_through_data_check_and_index_build(tiny_checkpoint, tmp_path, capsys):
    from cpcl.retrieval.index import GalleryIndex

    grey = _picture()
    (tmp_path / "imgs").mkdir()
    _sixteen_bit(grey).save(tmp_path / "imgs" / "deep.png")
    Image.fromarray(grey, "L").save(tmp_path / "imgs" / "flat.png")
    lines = [{"image": f"imgs/{name}.png", "caption": "a person", "split": "train"} for name in ("deep", "flat")]
    (tmp_path / "annotations.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert main(["data", "check", "--format", "jsonl", "--root", str(tmp_path)]) == 0
    assert "no problems found" in capsys.readouterr().out
    assert main(["index", "build", "--checkpoint", str(tiny_checkpoint), "--images", str(tmp_path / "imgs"), "--out",
                 str(tmp_path / "idx"), "--device", "cpu", "--workers", "0", "--no-progress"]) == 0
    index = GalleryIndex.load(tmp_path / "idx")
    deep, flat = (np.asarray(index.embeddings)[index.item_of(name)] for name in ("deep.png", "flat.png"))
    assert float(deep @ flat) > 0.9999  # was 0.20: the 16-bit picture was read as white


def test_train_into_a_folder_left_by_a_run_that_never_trained(tiny_synth, tmp_path, capsys):
    """A run stopped before its first epoch leaves config.yaml (and a metrics log) only: the next
    `cpcl train --out` there starts, instead of calling it a training run that --resume cannot continue."""
    from tests.conftest import tiny_config

    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(tiny_config(tiny_synth, "train.max_steps_per_epoch=1").to_dict()))
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("train: {}\n")
    assert main(["train", "--config", str(config), "--out", str(run), "--no-progress"]) == 0
    assert (run / "last.pt").is_file()
    assert main(["train", "--config", str(config), "--out", str(run), "--no-progress"]) == 2
    assert "already holds a training run" in capsys.readouterr().err
