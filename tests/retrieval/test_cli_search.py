import json
import shutil

import pytest
from PIL import Image

from cpcl.cli import main
from tests.conftest import crops_folder


def test_index_build_add_info_search(gallery, tiny_checkpoint, other_checkpoint, tmp_path, capsys):
    crops = tmp_path / "crops"
    (crops / "day1").mkdir(parents=True)
    (crops / "day2").mkdir()
    for p in gallery[:8]:
        shutil.copy(p, crops / "day1" / p.name)
    for p in gallery[8:12]:
        shutil.copy(p, crops / "day2" / p.name)
    index = tmp_path / "idx"
    assert main(["index", "build", "--checkpoint", str(tiny_checkpoint), "--images", str(crops / "day1"),
                 "--root", str(crops), "--out", str(index), "--device", "cpu", "--workers", "0"]) == 0
    assert "indexed 8 images" in capsys.readouterr().out
    assert main(["index", "add", str(index), "--images", str(crops), "--device", "cpu", "--workers", "0"]) == 0
    assert "added 4 images (8 already indexed)" in capsys.readouterr().out
    assert main(["index", "info", str(index)]) == 0
    assert "12 images" in capsys.readouterr().out

    grid = tmp_path / "grid.png"
    assert main(["search", str(index), "a man in a red jacket", "a woman in blue", "-k", "3", "--json",
                 "--grid", str(grid)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [len(r["hits"]) for r in out["results"]] == [3, 3]
    assert all(h["path"].startswith(("day1/", "day2/")) for r in out["results"] for h in r["hits"])
    with Image.open(grid) as im:
        assert im.width > 3 * 32 and im.height > 2 * 100

    assert main(["search", str(index), "a man", "-k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[0] == "1" and lines[2].split()[0] == "2"

    # another model's checkpoint is refused, with the way out in the message
    assert main(["search", str(index), "a man", "--checkpoint", str(other_checkpoint)]) == 2
    assert "rebuild it with `cpcl index build" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # refused by the parser, before the index is opened
        main(["search", str(index), "a man", "-k", "1000"])
    assert "argument -k: must be between 1 and 100, got 1000" in capsys.readouterr().err
    assert main(["index", "build", "--checkpoint", str(tiny_checkpoint), "--images", str(crops),
                 "--out", str(index), "--device", "cpu"]) == 2
    assert "already holds an index" in capsys.readouterr().err


def test_unreadable_crops_stop_the_build_or_are_left_out_and_named(gallery, tiny_checkpoint, tmp_path, capsys):
    crops = tmp_path / "crops"
    crops.mkdir()
    for p in gallery[:5]:
        shutil.copy(p, crops / p.name)
    (crops / "cut.png").write_bytes(gallery[5].read_bytes()[:200])  # a truncated download
    (crops / "notes.png").write_text("not an image")
    index = tmp_path / "idx"
    build = ["index", "build", "--checkpoint", str(tiny_checkpoint), "--images", str(crops), "--out", str(index),
             "--device", "cpu"]  # the default --workers 2: the files are decoded in worker processes
    assert main(build) == 2
    err = capsys.readouterr().err
    assert "\r" not in err  # stderr is not a terminal here: no progress bar
    assert err.startswith("error: cannot read image") and "cut.png" in err and "--skip-unreadable" in err, err
    assert err.count("\n") == 1 and not index.exists()  # one sentence, nothing written (no empty folder either)
    assert main([*build, "--skip-unreadable"]) == 0
    captured = capsys.readouterr()
    assert "indexed 5 images" in captured.out
    assert captured.err.strip() == (f"left out 2 image(s) that could not be read: {crops / 'cut.png'}, "
                                         f"{crops / 'notes.png'}")
    (crops / "late.png").write_bytes(gallery[6].read_bytes())
    add = ["index", "add", str(index), "--images", str(crops), "--device", "cpu"]
    assert main(add) == 2
    assert "--skip-unreadable" in capsys.readouterr().err
    assert main(["index", "info", str(index)]) == 0
    assert "5 images" in capsys.readouterr().out  # the failed add changed nothing
    assert main([*add, "--skip-unreadable"]) == 0
    captured = capsys.readouterr()
    assert "added 1 images (5 already indexed); " in captured.out and "left out 2 image(s)" in captured.err
    assert main(["search", str(index), "a man", "-k", "6", "--json"]) == 0
    paths = {h["path"] for h in json.loads(capsys.readouterr().out)["results"][0]["hits"]}
    assert paths == {p.name for p in gallery[:5]} | {"late.png"}


def test_search_names_a_missing_checkpoint(gallery, tiny_checkpoint, tmp_path, capsys):
    ckpt = tmp_path / "moved.pt"
    shutil.copy(tiny_checkpoint, ckpt)
    assert main(["index", "build", "--checkpoint", str(ckpt), "--images", str(gallery[0].parent),
                 "--out", str(tmp_path / "idx"), "--device", "cpu", "--workers", "0"]) == 0
    ckpt.unlink()
    assert main(["search", str(tmp_path / "idx"), "a man"]) == 2
    err = capsys.readouterr().err
    assert "moved.pt" in err and "--checkpoint" in err
    # a copy of the same weights elsewhere is the same model
    assert main(["search", str(tmp_path / "idx"), "a man", "--checkpoint", str(tiny_checkpoint)]) == 0


def test_visualize_writes_one_png_per_query_and_a_sheet(tiny_synth, tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "vis"
    assert main(["visualize", "--checkpoint", str(tiny_checkpoint), "--format", "cuhk-pedes", "--root",
                 str(tiny_synth), "--queries", "3", "-k", "5", "--out", str(out), "--device", "cpu"]) == 0
    assert len(list(out.glob("query_*.png"))) == 3
    with Image.open(out / "sheet.png") as sheet:
        assert sheet.height > 3 * 64
    assert "rank 1 correct for" in capsys.readouterr().out


def test_demo_indexes_its_test_gallery_and_draws_rankings(tiny_synth, tiny_checkpoint, tmp_path, capsys):
    from cpcl.demo import write_search_assets
    from tests.conftest import tiny_config

    config = tiny_config(tiny_synth, "data.format=synth")
    write_search_assets(tiny_checkpoint, config.data, tmp_path / "index", tmp_path / "rankings", "cpu")
    write_search_assets(tiny_checkpoint, config.data, tmp_path / "index", tmp_path / "rankings", "cpu")  # rerun
    assert (tmp_path / "rankings" / "sheet.png").is_file()
    assert main(["search", str(tmp_path / "index"), "a man in a red jacket", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["results"][0]["hits"]) == 10


def test_a_second_folder_beside_the_first_is_added_and_searched(gallery, tiny_checkpoint, tmp_path, capsys):
    """`index build --images crops1` then `index add --images crops2` (a sibling, no --root at build): the index
    root moves up to the folder holding both, every earlier path keeps its image, and search finds images of
    both folders. An add that fails leaves the index as it was."""
    import numpy as np

    from cpcl.retrieval.index import GalleryIndex

    crops1, crops2, crops3 = tmp_path / "crops1", tmp_path / "later" / "crops2", tmp_path / "bad"
    for folder, part in ((crops1, gallery[:6]), (crops2, gallery[6:10]), (crops3, gallery[10:11])):
        (folder / "sub").mkdir(parents=True)
        for i, p in enumerate(part):
            shutil.copy(p, folder / ("sub" if i % 2 else "") / p.name)
    (crops3 / "cut.png").write_bytes(gallery[11].read_bytes()[:100])
    index = tmp_path / "idx"
    enc = ["--device", "cpu", "--workers", "0"]
    assert main(["index", "build", "--checkpoint", str(tiny_checkpoint), "--images", str(crops1), "--out",
                 str(index), *enc]) == 0
    before = GalleryIndex.load(index)
    first = {p: before.embeddings[i].copy() for i, p in enumerate(before.paths)}
    assert before.root == crops1.resolve() and all(not p.startswith("crops1/") for p in before.paths)
    capsys.readouterr()

    assert main(["index", "add", str(index), "--images", str(crops3), *enc]) == 2  # an unreadable image
    assert "cut.png" in capsys.readouterr().err
    unchanged = GalleryIndex.load(index)
    assert unchanged.root == crops1.resolve() and unchanged.paths == before.paths

    assert main(["index", "add", str(index), "--images", str(crops2), *enc]) == 0
    assert "added 4 images (0 already indexed)" in capsys.readouterr().out
    after = GalleryIndex.load(index)
    assert after.root == tmp_path.resolve() and len(after) == 10
    for path, embedding in first.items():  # the same images under their new names
        item = after.item_of(f"crops1/{path}")
        assert item is not None and np.array_equal(after.embeddings[item], embedding)
        assert after.absolute_path(item) == crops1.resolve() / path
    assert {p.split("/")[0] for p in after.paths} == {"crops1", "later"}
    assert main(["index", "info", str(index)]) == 0
    assert f"10 images under {tmp_path.resolve()}" in capsys.readouterr().out
    own = gallery[7]  # an image of the second folder finds itself
    from cpcl.retrieval.retriever import load_retriever

    hit = after.search_hits(load_retriever(tiny_checkpoint).encode_images([own]), 1)[0][0]
    assert after.absolute_path(hit.item) == (crops2 / "sub" / own.name).resolve()


def test_queries_without_a_word_are_refused_naming_which(gallery, tiny_checkpoint, tmp_path, capsys):
    """Punctuation, an emoji, a zero-width space, bytes that are not UTF-8: no word to encode, so no ranking (they
    all ranked alike); among several queries the message says which one."""
    import os

    crops = crops_folder(gallery, tmp_path / "crops", 3)
    index = tmp_path / "idx"
    assert main(["index", "build", "--checkpoint", str(tiny_checkpoint), "--images", str(crops), "--out",
                 str(index), "--device", "cpu", "--workers", "0"]) == 0
    capsys.readouterr()
    not_utf8 = os.fsdecode(b"\xff\xfe a man")  # how a non-UTF-8 argument reaches Python
    for query, said in (("...", "has no word"), ("\U0001F600", "has no word"), ("\u200b", "has no word"),
                        (not_utf8, "is not valid UTF-8 text")):
        assert main(["search", str(index), query, "--device", "cpu"]) == 2
        err = capsys.readouterr().err
        assert said in err and "Traceback" not in err, err
    assert main(["search", str(index), "a man in red", "!!!", "a woman", "--device", "cpu"]) == 2
    assert "query 2 of 3: the query '!!!' has no word" in capsys.readouterr().err
