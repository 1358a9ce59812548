"""Val persons held out of the training split, for datasets published without a val split (ICFG-PEDES)."""

import json

import pytest
from PIL import Image

from cpcl.cli import main
from cpcl.config import ConfigError
from cpcl.data.formats import load_annotations
from cpcl.data.sources import load_dataset
from cpcl.engine.trainer import train
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def no_val(tiny_synth, tmp_path_factory):
    """The tiny SynthPedes with its val persons moved into train: a dataset without a val split."""
    root = tmp_path_factory.mktemp("no-val")
    records = json.loads((tiny_synth / "reid_raw.json").read_text())
    for r in records:
        r["split"] = "train" if r["split"] == "val" else r["split"]
    (root / "reid_raw.json").write_text(json.dumps(records))
    (root / "imgs").symlink_to(tiny_synth / "imgs")
    return root


def test_whole_persons_move_to_val_the_same_ones_every_time(no_val):
    ann = load_annotations("cuhk-pedes", no_val)
    held = ann.hold_out_val(5)
    train_ids = {r.person_id for r in held.split("train")}
    val_ids = {r.person_id for r in held.split("val")}
    assert len(val_ids) == 5 and not val_ids & train_ids  # no person on both sides
    assert val_ids | train_ids == {r.person_id for r in ann.split("train")}
    assert len(held.split("val")) == sum(r.person_id in val_ids for r in ann.split("train"))  # every image of each
    assert held.split("test") == ann.split("test")
    assert not ann.split("val")  # the original is unchanged
    again = load_annotations("cuhk-pedes", no_val).hold_out_val(5)
    assert [r.image_path for r in again.split("val")] == [r.image_path for r in held.split("val")]
    assert ann.hold_out_val(0) is ann


def test_what_cannot_be_held_out_is_one_sentence(tiny_synth, no_val):
    with pytest.raises(ConfigError, match=r"data.val_ids_from_train=3: .*reid_raw.json already has a val split "
                                          r"\(\d+ images\); set it to 0"):
        load_annotations("cuhk-pedes", tiny_synth).hold_out_val(3)
    persons = len({r.person_id for r in load_annotations("cuhk-pedes", no_val).split("train")})
    with pytest.raises(ConfigError, match=f"the training split of .* has only {persons} persons"):
        load_annotations("cuhk-pedes", no_val).hold_out_val(persons)
    with pytest.raises(ConfigError, match="at least 0"):
        load_annotations("cuhk-pedes", no_val).hold_out_val(-1)
    with pytest.raises(ConfigError, match="data.val_ids_from_train must be at least 0, got -2"):
        tiny_config(no_val, "data.val_ids_from_train=-2")


def test_a_record_without_a_person_id_is_refused(tmp_path):
    root = tmp_path / "d"
    (root / "imgs").mkdir(parents=True)
    for name in ("a", "b"):
        Image.new("RGB", (8, 16)).save(root / "imgs" / f"{name}.png")
    lines = [{"image": "imgs/a.png", "caption": "a man", "person_id": 1}, {"image": "imgs/b.png", "caption": "a man"}]
    (root / "annotations.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    ann = load_annotations("jsonl", root)
    with pytest.raises(ConfigError, match="needs a person id on every training record; 1 in .* have none"):
        ann.hold_out_val(1)


def test_a_run_without_a_val_split_chooses_its_checkpoint_on_held_out_persons(no_val, tmp_path, capsys):
    cfg = tiny_config(no_val, "train.epochs=1", "data.val_ids_from_train=4")
    ann = load_dataset(cfg.data)
    val_paths = {r.image_path for r in ann.split("val")}
    assert len({r.person_id for r in ann.split("val")}) == 4
    result = train(cfg, tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "best.pt").is_file() and "best-on-val" in result.test
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert "rank1" in rows[-1]["val"]
    trained_on = set(load_dataset(cfg.data).split("train"))
    assert trained_on and not {r.image_path for r in trained_on} & val_paths

    # cpcl eval ranks the same val split when told how many persons the run held out, and says so when not
    base = ["eval", "--checkpoint", str(tmp_path / "run" / "best.pt"), "--format", "cuhk-pedes", "--root",
            str(no_val), "--split", "val", "--device", "cpu"]
    assert main([*base, "--json", str(tmp_path / "val.json"), "--val-ids-from-train", "4"]) == 0
    epoch = next(r for r in rows if r["epoch"] == json.loads((tmp_path / "val.json").read_text())["epoch"])
    assert json.loads((tmp_path / "val.json").read_text())["rank1"] == pytest.approx(epoch["val"]["rank1"])
    capsys.readouterr()
    assert main(base) == 2
    assert "pass --val-ids-from-train 4" in capsys.readouterr().err
