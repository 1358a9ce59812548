import json

import numpy as np
import pytest

from cpcl.data.formats import load_annotations
from cpcl.data.synth import generate_synthpedes, random_identity, render_image, write_caption


def test_cuhk_format_and_identity_splits(tiny_synth):
    raw = json.loads((tiny_synth / "reid_raw.json").read_text())
    assert set(raw[0]) == {"split", "captions", "file_path", "id", "processed_tokens"}
    ann = load_annotations("cuhk-pedes", tiny_synth)
    summary = ann.summary()
    assert summary["train"]["identities"] == 18
    assert summary["val"]["identities"] == 6 and summary["test"]["identities"] == 6
    ids = {s: {r.person_id for r in ann.split(s)} for s in ("train", "val", "test")}
    assert not ids["train"] & ids["val"] and not ids["train"] & ids["test"] and not ids["val"] & ids["test"]
    assert min(r.person_id for r in ann.records) == 1  # 1-based, like CUHK-PEDES
    assert all(len(r.captions) == 2 and all(c.strip() for c in r.captions) for r in ann.records)
    assert 2.0 <= len(ann.records) / 30 <= 4.5  # ~3 images per identity


def test_deterministic_whatever_the_workers(tmp_path):
    a = generate_synthpedes(tmp_path / "a", num_ids=12, seed=5, height=64, width=32, val_ids=2, test_ids=2,
                            workers=1, montage=False)
    b = generate_synthpedes(tmp_path / "b", num_ids=12, seed=5, height=64, width=32, val_ids=2, test_ids=2,
                            workers=2, montage=True)
    assert a.read_text() == b.read_text()
    for rec in json.loads(a.read_text()):
        rel = rec["file_path"]
        assert (a.parent / "imgs" / rel).read_bytes() == (b.parent / "imgs" / rel).read_bytes()
    assert (b.parent / "montage.png").stat().st_size > 1000
    c = generate_synthpedes(tmp_path / "c", num_ids=12, seed=6, height=64, width=32, val_ids=2, test_ids=2,
                            workers=1, montage=False)
    assert c.read_text() != a.read_text()


def test_image_size_and_viewpoint_dependent_captions():
    rng = np.random.default_rng(0)
    person = random_identity(rng)
    img, view = render_image(person, rng, 384, 128)
    assert img.size == (128, 384) and view in ("front", "back", "side")
    # glasses can only be described when the face is visible
    person = person.__class__(**{**person.__dict__, "glasses": True})
    back = [write_caption(person, "back", np.random.default_rng(i)) for i in range(50)]
    front = [write_caption(person, "front", np.random.default_rng(i)) for i in range(50)]
    assert not any("glasses" in c for c in back)
    assert any("glasses" in c for c in front)
    assert len(set(front)) > 40  # annotators vary


def test_street_annotators_use_their_own_words(tmp_path):
    from cpcl.data.synth.captions import _STREET_PATTERN, STREET_VOCABULARY

    street = generate_synthpedes(tmp_path / "s", num_ids=10, seed=2, height=64, width=32, val_ids=1, test_ids=1,
                                 workers=1, montage=False, domain="street")
    indoor = generate_synthpedes(tmp_path / "i", num_ids=10, seed=2, height=64, width=32, val_ids=1, test_ids=1,
                                 workers=1, montage=False, domain="indoor")
    regional = {w for words in STREET_VOCABULARY.values() for w in words}
    s_caps = [c for r in json.loads(street.read_text()) for c in r["captions"]]
    i_caps = [c for r in json.loads(indoor.read_text()) for c in r["captions"]]
    assert sum(any(w in c.lower() for w in regional) for c in s_caps) > len(s_caps) / 2
    # the indoor captions are the street ones before the regional words: same length, and every word
    # that the street annotators keep is the indoor annotator's word
    assert len(s_caps) == len(i_caps)
    assert all(_STREET_PATTERN.search(c) for c in i_caps[:5])


def test_the_montage_is_filled_and_its_captions_are_readable(tmp_path):
    import numpy as np
    from PIL import Image

    generate_synthpedes(tmp_path / "sp", num_ids=12, seed=2, val_ids=2, test_ids=2, workers=1)
    sheet = np.asarray(Image.open(tmp_path / "sp" / "montage.png").convert("L"))
    filled_rows = np.where((sheet < 200).any(axis=1))[0]
    # the content reaches the last tenth of the sheet: no empty band below the captions
    assert filled_rows.max() > 0.9 * sheet.shape[0]


def test_a_missing_synthetic_root_says_it_is_generated_there_once(tmp_path, caplog):
    import logging

    from cpcl.config import SynthConfig
    from cpcl.data.sources import prepare_synth

    settings = SynthConfig(num_ids=8, val_ids=2, test_ids=2, height=64, width=32)
    with caplog.at_level(logging.INFO, logger="cpcl"):
        prepare_synth(tmp_path / "new", settings)
        prepare_synth(tmp_path / "new", settings)  # the second run reuses it, silently
    said = [r.getMessage() for r in caplog.records if "generating it there" in r.getMessage()]
    assert len(said) == 1 and str(tmp_path / "new") in said[0]


def test_caption_noise_changes_captions_only_and_old_folders_stay_usable(tmp_path):
    import json

    from cpcl.config import SynthConfig
    from cpcl.data.sources import prepare_synth

    common = dict(num_ids=10, seed=4, val_ids=2, test_ids=2, height=64, width=32, workers=1, montage=False)
    generate_synthpedes(tmp_path / "quiet", caption_noise=0.0, **common)
    generate_synthpedes(tmp_path / "noisy", caption_noise=0.6, **common)
    quiet = json.loads((tmp_path / "quiet" / "reid_raw.json").read_text())
    noisy = json.loads((tmp_path / "noisy" / "reid_raw.json").read_text())
    assert [r["file_path"] for r in quiet] == [r["file_path"] for r in noisy]
    assert [r["captions"] for r in quiet] != [r["captions"] for r in noisy]
    first = quiet[0]["file_path"]
    assert (tmp_path / "quiet" / "imgs" / first).read_bytes() == (tmp_path / "noisy" / "imgs" / first).read_bytes()
    # a folder written before the setting existed holds its default
    meta_path = tmp_path / "quiet" / "synthpedes_meta.json"
    meta = json.loads(meta_path.read_text())
    meta.pop("caption_noise")
    meta_path.write_text(json.dumps(meta))
    settings = SynthConfig(num_ids=10, seed=4, val_ids=2, test_ids=2, height=64, width=32, caption_noise=0.08)
    assert prepare_synth(tmp_path / "quiet", settings) == tmp_path / "quiet"


def test_the_cctv_style_draws_other_images_of_the_same_persons_with_the_same_captions(tmp_path):
    from PIL import Image

    from cpcl.config import ConfigError, SynthConfig
    from cpcl.data.sources import prepare_synth

    common = dict(num_ids=10, seed=3, val_ids=2, test_ids=2, height=64, width=32, montage=False)
    classic = generate_synthpedes(tmp_path / "classic", workers=1, **common)
    cctv = generate_synthpedes(tmp_path / "cctv", style="cctv", workers=1, **common)
    again = generate_synthpedes(tmp_path / "cctv2", style="cctv", workers=2, **common)
    a, b = json.loads(classic.read_text()), json.loads(cctv.read_text())
    # the same persons in the same splits, drawn otherwise (each image's viewpoint is drawn anew, and its
    # captions describe what that viewpoint shows)
    assert [(r["id"], r["split"], r["file_path"]) for r in a] == [(r["id"], r["split"], r["file_path"]) for r in b]
    assert cctv.read_text() == again.read_text()
    meta = [json.loads((p.parent / "synthpedes_meta.json").read_text()) for p in (classic, cctv)]
    assert meta[0]["identities"] == meta[1]["identities"]
    assert (meta[0]["style"], meta[1]["style"]) == ("classic", "cctv")
    for rec in b:
        if meta[1]["views"][rec["file_path"]] == "back":
            assert not any("glasses" in c for c in rec["captions"])
    differ = 0
    for rec in b:
        img = tmp_path / "cctv" / "imgs" / rec["file_path"]
        assert img.read_bytes() == (tmp_path / "cctv2" / "imgs" / rec["file_path"]).read_bytes()
        assert Image.open(img).size == (32, 64)
        x = np.asarray(Image.open(img), np.float32)
        y = np.asarray(Image.open(tmp_path / "classic" / "imgs" / rec["file_path"]), np.float32)
        differ += np.abs(x - y).mean() > 20
    assert differ == len(b)
    # a folder of one style is not taken for the other
    settings = SynthConfig(num_ids=10, seed=3, val_ids=2, test_ids=2, height=64, width=32)
    assert prepare_synth(tmp_path / "classic", settings) == tmp_path / "classic"
    try:
        prepare_synth(tmp_path / "classic", SynthConfig(**{**settings.__dict__, "style": "cctv"}))
    except ConfigError as exc:
        assert "style: 'classic' on disk vs 'cctv'" in str(exc)
    else:
        raise AssertionError("a classic folder was taken for a cctv one")
    try:
        generate_synthpedes(tmp_path / "bad", style="anime", **common)
    except ValueError as exc:
        assert "style 'anime'" in str(exc) and "classic, cctv" in str(exc)
    else:
        raise AssertionError("an unknown style was accepted")


def test_cameras_give_persons_sharing_one_its_scene_and_cast_and_leave_captions_alone(tmp_path):
    from PIL import Image

    from cpcl.config import ConfigError
    from tests.conftest import tiny_config

    common = dict(num_ids=24, seed=6, val_ids=2, test_ids=2, height=64, width=32, montage=False)
    plain = generate_synthpedes(tmp_path / "plain", workers=1, **common)
    cams = generate_synthpedes(tmp_path / "cams", cameras=3, workers=1, **common)
    again = generate_synthpedes(tmp_path / "cams2", cameras=3, workers=2, **common)
    assert cams.read_text() == again.read_text() == plain.read_text()  # same persons, files and captions
    meta = json.loads((cams.parent / "synthpedes_meta.json").read_text())
    assert meta["cameras"] == 3 and set(meta["camera_of"].values()) == {0, 1, 2}
    assert "camera_of" not in json.loads((plain.parent / "synthpedes_meta.json").read_text())

    def pixels(root, name):
        return np.asarray(Image.open(root / "imgs" / name), np.float32)

    names = sorted(meta["camera_of"])
    for name in names:
        assert pixels(cams.parent, name).tobytes() == pixels(again.parent, name).tobytes()
    # two images from one camera are closer in colour than two from different cameras; without cameras the
    # same pairs are not
    same, other, plain_same, plain_other = [], [], [], []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if a.split("_")[0] == b.split("_")[0]:
                continue  # one person's images: their clothes match anyway
            d = np.abs(pixels(cams.parent, a).mean((0, 1)) - pixels(cams.parent, b).mean((0, 1))).mean()
            dp = np.abs(pixels(plain.parent, a).mean((0, 1)) - pixels(plain.parent, b).mean((0, 1))).mean()
            shared = meta["camera_of"][a] == meta["camera_of"][b]
            (same if shared else other).append(d)
            (plain_same if shared else plain_other).append(dp)
    assert np.mean(same) < 0.5 * np.mean(other)
    assert np.mean(plain_same) > 0.7 * np.mean(plain_other)
    with pytest.raises(ValueError, match="cameras=2: expected 0, or a number of cameras with the classic style"):
        generate_synthpedes(tmp_path / "x", cameras=2, style="cctv", **common)
    with pytest.raises(ConfigError, match="data.synth.cameras=2 applies to the classic style"):
        tiny_config(tmp_path, "data.synth.cameras=2", "data.synth.style=cctv")


def test_uniformed_persons_share_an_outfit_and_differ_in_person(tmp_path):
    common = dict(num_ids=40, seed=7, val_ids=2, test_ids=2, height=64, width=32, montage=False, workers=1)
    plain = generate_synthpedes(tmp_path / "plain", **common)
    again = generate_synthpedes(tmp_path / "zero", uniform_fraction=0.0, **common)
    assert plain.read_text() == again.read_text()  # 0 draws nothing: the default dataset is unchanged
    uniforms = generate_synthpedes(tmp_path / "uniforms", uniform_fraction=0.5, **common)
    people = json.loads((uniforms.parent / "synthpedes_meta.json").read_text())["identities"]
    outfit = ("upper_type", "upper_colour", "upper_pattern", "inner_colour", "lower_type", "lower_colour", "shoes",
              "bag", "bag_colour")
    groups = {}
    for pid, person in people.items():
        groups.setdefault(tuple(person[a] for a in outfit), []).append(pid)
    shared = [g for g in groups.values() if len(g) > 1]
    assert sum(len(g) for g in shared) >= 10  # about half the persons wear another's outfit
    for group in shared:
        persons = [people[pid] for pid in group]
        assert len({p["gender"] for p in persons}) == 1
        own = {tuple(p[a] for a in ("hair_length", "hair_colour", "skin", "build", "headwear", "glasses"))
               for p in persons}
        assert len(own) == len(persons)  # each is a person of their own
    with pytest.raises(ValueError, match="uniform_fraction=1.0: expected a share in"):
        generate_synthpedes(tmp_path / "x", uniform_fraction=1.0, **common)
