"""Each rank of a distributed run augments from a stream of its own, and the ranks' shares of a step are
still the single-process run's global batch. Two gloo processes train a tiny model on a copy of the tiny
SynthPedes whose training images are all one picture: two ranks that drew the same flips, crops and erasing
boxes would hold identical tensors at the same batch position."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cpcl.engine.seeding import rank_seed
from tests.support.collectives import checked_env

# runs under torchrun: records each rank's first batch of every epoch, then trains as `cpcl train` does
RECORDER = '''
import sys, torch
from pathlib import Path
from cpcl.cli import main
from cpcl.engine import trainer

out = Path(sys.argv[1])
loader_of_epoch = trainer._loader

def recording_loader(train_set, objective, config, epoch, steps, device, dist):
    loader = loader_of_epoch(train_set, objective, config, epoch, steps, device, dist)

    class Recorder:
        def __len__(self):
            return len(loader)

        def __iter__(self):
            for step, item in enumerate(loader):
                if step == 0:
                    torch.save({"image": item["image"], "index": item["index"]},
                               out / f"epoch{epoch}_rank{dist.rank}.pt")
                yield item

    return Recorder()

trainer._loader = recording_loader
sys.exit(main(sys.argv[2:]))
'''


def _one_picture_copy(root: Path, out: Path) -> Path:
    shutil.copytree(root, out)
    records = json.loads((out / "reid_raw.json").read_text())
    train = [out / "imgs" / r["file_path"] for r in records if r["split"] == "train"]
    for path in train[1:]:
        shutil.copyfile(train[0], path)
    return out


def _run(tmp_path: Path, data: Path, name: str, nproc: int, workers: int) -> Path:
    record = tmp_path / f"record-{name}"
    record.mkdir()
    script = tmp_path / "recorder.py"
    script.write_text(RECORDER)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({
        "data": {"format": "cuhk-pedes", "root": str(data), "num_workers": workers, "cache_images": False},
        "model": {"arch": "cpcl-vit-micro", "pretrained": None, "image_size": [64, 32]},
        "optim": {"lr": 1e-3, "warmup_epochs": 0},
        "augment": {"random_erasing": 1.0},
        "train": {"epochs": 2, "batch_size": 8, "eval_batch_size": 64, "max_steps_per_epoch": 1}}))
    env = checked_env("cuda", {**os.environ, "OMP_NUM_THREADS": "1"})
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    done = subprocess.run([*launcher, str(script), str(record), "train", "--config", str(config), "--out",
                           str(tmp_path / f"run-{name}"), "--no-progress"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return record


@pytest.mark.parametrize("workers", [0, 2])
def test_ranks_augment_differently_and_share_the_global_batch(tiny_synth, tmp_path, workers):
    data = _one_picture_copy(tiny_synth, tmp_path / "data")
    single = _run(tmp_path, data, "one", 1, workers)
    two = _run(tmp_path, data, "two", 2, workers)
    for epoch in (1, 2):
        whole = torch.load(single / f"epoch{epoch}_rank0.pt")
        ranks = [torch.load(two / f"epoch{epoch}_rank{r}.pt") for r in (0, 1)]
        # the ranks' samples for the step together are the single-process run's global batch
        assert torch.equal(torch.cat([r["index"] for r in ranks]), whole["index"])
        # one picture everywhere: equal tensors at a batch position would mean equal augmentations
        first, second = ranks[0]["image"], ranks[1]["image"]
        same = [torch.equal(first[i], second[i]) for i in range(len(first))]
        assert not any(same), f"epoch {epoch}: rank 0 and rank 1 augmented positions {same} alike"
        # rank 0 draws from the single-process run's stream: its share of the run's first step is augmented
        # alike (later steps differ: the single process has drawn for the other rank's samples too)
        if workers == 0 and epoch == 1:
            assert torch.equal(first, whole["image"][:len(first)])
    # and a rank's augmentations move on between epochs
    assert not torch.equal(torch.load(two / "epoch1_rank1.pt")["image"], torch.load(two / "epoch2_rank1.pt")["image"])


def test_rank_seeds():
    assert rank_seed(7, 0) == 7 and len({rank_seed(7, r) for r in range(8)}) == 8
    assert rank_seed(7, 1) != rank_seed(8, 1)


def test_last_pt_restores_each_rank_its_own_stream(tiny_synth, tmp_path):
    """``last.pt`` holds every rank's random states; a resumed rank continues its own, and a rank the run did
    not have gets a stream of its own rather than rank 0's."""
    from cpcl.engine.distributed import SINGLE
    from cpcl.engine.state import rng_state
    from cpcl.engine.trainer import build_run_state
    from cpcl.model.checkpoint import build_model, read_checkpoint
    from tests.conftest import tiny_config

    config = tiny_config(tiny_synth)
    state = build_run_state(config, build_model(config.model, pretrained=False), 4, torch.device("cpu"), SINGLE)
    streams = []
    for seed in (rank_seed(0, 0), rank_seed(0, 1)):
        torch.manual_seed(seed)
        streams.append(rng_state())
    state.save(tmp_path / "last.pt", config, val=None, rank_rngs=streams)
    payload = read_checkpoint(tmp_path / "last.pt")
    draws = []
    for rank in (0, 1, 2, 3):
        state.load_state_dict(payload, rank, seed=0)
        draws.append(torch.rand(4))
    for rank in (0, 1):
        torch.manual_seed(rank_seed(0, rank))
        assert torch.equal(draws[rank], torch.rand(4))
    assert not any(torch.equal(draws[new], draws[old]) for new in (2, 3) for old in range(new))
    # a new rank's stream follows the run's train.seed: another seed, another stream (it followed the epoch alone)
    state.load_state_dict(payload, 2, seed=1)
    assert not torch.equal(torch.rand(4), draws[2])
