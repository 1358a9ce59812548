"""What cpcl wrote and someone's copy damaged: a checkpoint with bytes flipped or cut short, an index file changed,
pseudo labels cut — each refused on read, naming the file and what is wrong, instead of loading silently."""

import shutil

import pytest
import torch

from cpcl.cli import main
from cpcl.model.checkpoint import read_checkpoint
from tests.conftest import crops_folder, tiny_config


def _flip(path, at: float = 0.5, count: int = 400) -> None:
    data = bytearray(path.read_bytes())
    start = int(len(data) * at)
    for i in range(start, start + count):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_damaged_checkpoint_is_refused_wherever_it_is_read(tiny_synth, tiny_checkpoint, tmp_path, capsys):
    flipped = tmp_path / "flipped.pt"
    shutil.copy(tiny_checkpoint, flipped)
    _flip(flipped)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(tiny_checkpoint.read_bytes()[: tiny_checkpoint.stat().st_size // 2])
    split = ["--format", "cuhk-pedes", "--root", str(tiny_synth)]
    for path, said in ((flipped, "is damaged: its part"), (cut, "is truncated or damaged")):
        assert main(["eval", "--checkpoint", str(path), *split]) == 2
        err = capsys.readouterr().err
        assert f"error: {path} {said}" in err and "Traceback" not in err, err
        # as the weights a run starts from
        config = tmp_path / "cfg.yaml"
        import yaml

        config.write_text(yaml.safe_dump(tiny_config(tiny_synth, f"model.pretrained={path}").to_dict()))
        assert main(["train", "--config", str(config), "--out", str(tmp_path / "run"), "--device", "cpu"]) == 2
        assert f"{path} {said}" in capsys.readouterr().err
        assert not (tmp_path / "run").exists()


def test_a_cpcl_checkpoint_without_its_weights_is_named(tiny_checkpoint, tmp_path):
    payload = torch.load(tiny_checkpoint, weights_only=True)
    del payload["model"]
    edited = tmp_path / "edited.pt"
    torch.save(payload, edited)
    with pytest.raises(Exception, match=f"{edited}: a cpcl checkpoint without its model entry"):
        read_checkpoint(edited)


def test_a_damaged_index_file_is_refused(tiny_checkpoint, gallery, tmp_path, capsys):
    crops = crops_folder(gallery, tmp_path / "crops", 6)
    for kind in ("exact", "ivf"):
        index = tmp_path / kind
        assert main(["index", "build", "--checkpoint", str(tiny_checkpoint), "--images", str(crops), "--out",
                     str(index), "--kind", kind, "--nlist", "2", "--device", "cpu", "--workers", "0"]) == 0
        damaged = next(index.glob("embeddings.*.npy" if kind == "exact" else "faiss.*.index"))
        _flip(damaged, at=0.8, count=16)
        capsys.readouterr()
        assert main(["search", str(index), "a man in a red jacket", "--device", "cpu"]) == 2
        err = capsys.readouterr().err
        assert f"error: {damaged} is damaged: it no longer matches the checksum index.json recorded" in err, err


def test_damaged_pseudo_labels_are_refused(tiny_synth, tmp_path, capsys):
    from cpcl.engine.trainer import train

    run = tmp_path / "run"
    train(tiny_config(tiny_synth, "cluster.enabled=true", "cluster.k1=5", "cluster.k2=2", "cluster.min_samples=2",
                      "cluster.start_epoch=1", "train.max_steps_per_epoch=1"), run, progress=False)
    labels = next((run / "pseudo_labels").glob("epoch_*.npz"))
    labels.write_bytes(labels.read_bytes()[:-40])
    assert main(["clusters", str(run), "--out", str(tmp_path / "sheets")]) == 2
    assert f"error: {labels} is truncated or damaged" in capsys.readouterr().err
