import json

import pytest
from PIL import Image

from cpcl.data.formats import load_annotations, read_annotations
from cpcl.data.records import DatasetError


def _img(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 24), (10, 20, 30)).save(path)


def _write_list_dataset(root, folder, filename, path_key, records):
    base = root / folder
    for rec in records:
        if isinstance(rec, dict) and isinstance(rec.get(path_key), str):
            _img(base / "imgs" / rec[path_key])
    base.mkdir(parents=True, exist_ok=True)
    (base / filename).write_text(json.dumps(records))
    return base


GOOD = [
    {"split": "train", "captions": ["a man in red", "red shirt man"], "id": 1},
    {"split": "val", "captions": ["a woman in blue"], "id": 7},
    {"split": "test", "captions": ["a child"], "id": 1000},
    {"split": "query", "captions": ["odd split name"], "id": 3},  # anything else -> val
]


@pytest.mark.parametrize("fmt, folder, filename, key", [
    ("cuhk-pedes", "CUHK-PEDES", "reid_raw.json", "file_path"),
    ("icfg-pedes", "ICFG-PEDES", "ICFG-PEDES.json", "file_path"),
    ("icfg-pedes", "ICFG-PEDES", "ICFG_PEDES.json", "file_path"),
    ("rstpreid", "RSTPReid", "data_captions.json", "img_path"),
])
def test_public_formats(tmp_path, fmt, folder, filename, key):
    records = [{**r, key: f"cam/{i}.jpg"} for i, r in enumerate(GOOD)]
    if fmt == "cuhk-pedes":
        records = [{**r, "processed_tokens": [["a"]]} for r in records]
    base = _write_list_dataset(tmp_path, folder, filename, key, records)
    for root in (tmp_path, base):  # the data root or the dataset folder itself
        ann = load_annotations(fmt, root)
        assert [r.split for r in ann.records] == ["train", "val", "test", "val"]
        assert ann.records[0].captions == ("a man in red", "red shirt man")
        assert ann.records[2].person_id == 1000  # ids need not be contiguous
        assert ann.records[0].image_path == base / "imgs" / "cam/0.jpg"
        assert ann.summary()["val"] == {"images": 2, "captions": 2, "identities": 2}


def test_every_bad_record_is_reported_with_file_and_index(tmp_path):
    records = [
        {"split": "train", "captions": ["ok"], "file_path": "a.jpg", "id": 1},
        {"split": "train", "captions": ["ok"], "id": 2},                          # missing key
        {"split": "train", "captions": [""], "file_path": "c.jpg", "id": 3},      # empty caption
        {"split": "train", "captions": "fine", "file_path": "d.jpg", "id": "x"},  # wrong type
        {"split": "train", "captions": ["ok"], "file_path": "e.jpg", "id": 5},    # image missing
        "not a record",
    ]
    base = _write_list_dataset(tmp_path, "CUHK-PEDES", "reid_raw.json", "file_path", records[:4])
    (base / "reid_raw.json").write_text(json.dumps(records))
    ann = read_annotations("cuhk-pedes", tmp_path)
    messages = [str(p) for p in ann.problems]
    assert len(messages) == 5
    for index, needle in [(1, "missing key(s): file_path"), (2, "caption 0 is empty"), (3, "'id' must be"),
                          (4, "image not found"), (5, "not an object")]:
        assert any(f"reid_raw.json#{index}: " in m and needle in m for m in messages), (index, messages)
    with pytest.raises(DatasetError, match="reid_raw.json#1"):
        load_annotations("cuhk-pedes", tmp_path)


def test_missing_annotation_file_names_what_was_tried(tmp_path):
    with pytest.raises(DatasetError, match="ICFG-PEDES.json"):
        load_annotations("icfg-pedes", tmp_path)


def test_invalid_json(tmp_path):
    (tmp_path / "data_captions.json").write_text("[{")
    with pytest.raises(DatasetError, match="invalid JSON"):
        load_annotations("rstpreid", tmp_path)


def test_jsonl_generic_format(tmp_path):
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        _img(tmp_path / "photos" / name)
    lines = [
        {"image": "photos/a.jpg", "caption": "a man with a bag"},
        {"image": "photos/a.jpg", "caption": "man carrying a bag"},
        {"image": "photos/b.jpg", "caption": "a woman", "person_id": 12, "split": "test"},
        {"image": "photos/c.jpg", "captions": ["someone", "a person"], "person_id": 40, "split": "val"},
    ]
    (tmp_path / "annotations.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    ann = load_annotations("jsonl", tmp_path)
    by_name = {r.image_path.name: r for r in ann.records}
    assert by_name["a.jpg"].captions == ("a man with a bag", "man carrying a bag")
    assert by_name["a.jpg"].person_id is None and by_name["a.jpg"].split == "train"
    assert by_name["b.jpg"].person_id == 12 and by_name["b.jpg"].split == "test"
    assert by_name["c.jpg"].split == "val"
    assert load_annotations("jsonl", tmp_path / "annotations.jsonl").summary() == ann.summary()


def test_jsonl_problems_name_the_line(tmp_path):
    _img(tmp_path / "a.jpg")
    text = "\n".join([
        json.dumps({"image": "a.jpg", "caption": "fine"}),
        "{broken",
        json.dumps({"image": "a.jpg", "caption": "x", "person_id": 3}),  # conflicts with line 1
        json.dumps({"caption": "no image"}),
        json.dumps({"image": "zzz.jpg", "caption": "gone"}),
        json.dumps({"image": "a.jpg", "caption": "x", "colour": "red"}),
    ])
    (tmp_path / "annotations.jsonl").write_text(text)
    problems = [str(p) for p in read_annotations("jsonl", tmp_path).problems]
    assert any("annotations.jsonl:2" in p and "invalid JSON" in p for p in problems)
    assert any("annotations.jsonl:3" in p and "another person_id" in p for p in problems)
    assert any("annotations.jsonl:4" in p and "'image'" in p for p in problems)
    assert any("annotations.jsonl:5" in p and "image not found" in p for p in problems)
    assert any("annotations.jsonl:6" in p and "unknown key" in p for p in problems)
