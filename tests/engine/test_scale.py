"""Distributed training, mixed precision, gradient caching and exact resume, on the CPU."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from cpcl import io as io_module
from cpcl.cli import main
from cpcl.config import ConfigError
from cpcl.engine import state as state_module
from cpcl.engine.distributed import SINGLE, DistInfo, ShardedBatchSampler, gather_in_order
from cpcl.engine.objective import Batch, BatchLabels, Objective
from cpcl.engine.pseudo import EpochLabels
from cpcl.engine.steps import forward_backward
from cpcl.engine.trainer import train
from cpcl.model.checkpoint import build_model, read_checkpoint
from tests.conftest import tiny_config
from tests.engine.test_cpcl import CPCL
from tests.support.collectives import backend_devices, check_collective_devices, checked_env

NO_AUGMENT = ("augment.hflip=false", "augment.pad=0", "augment.random_erasing=0")


def _rows(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _max_weight_difference(a: dict, b: dict) -> float:
    """Largest difference of two state dicts, leaving out the attention key biases: their true gradient is
    exactly zero (softmax ignores a shift shared by all keys), so float noise is all they get, and Adam
    scales any noise up to a learning-rate-sized step."""
    diffs = []
    for name, x in a.items():
        y = b[name]
        if name.endswith("attn.in_proj_bias"):
            third = len(x) // 3
            x, y = torch.cat([x[:third], x[2 * third:]]), torch.cat([y[:third], y[2 * third:]])
        diffs.append(float((x - y).abs().max()))
    return max(diffs)


def test_sharded_batches_partition_the_global_batches():
    order = list(range(40))
    single = list(ShardedBatchSampler(order, 8, SINGLE))
    ranks = [list(ShardedBatchSampler(order, 8, DistInfo(r, 2))) for r in range(2)]
    assert single == [order[i:i + 8] for i in range(0, 40, 8)]
    assert [a + b for a, b in zip(*ranks, strict=True)] == single
    assert len(list(ShardedBatchSampler(order, 8, SINGLE, max_batches=2))) == 2
    # the last partial batch is dropped (docs/REPRODUCTION.md, row 14d), and the length says so
    partial = ShardedBatchSampler(list(range(43)), 8, SINGLE)
    assert list(partial) == single and len(partial) == 5
    with pytest.raises(ValueError, match="multiple of the 3 processes"):
        ShardedBatchSampler(order, 8, DistInfo(0, 3))
    rows = torch.randn(5, 3)
    assert torch.equal(gather_in_order(rows[[4, 0, 2]], torch.tensor([4, 0, 2]), 5, SINGLE)[[0, 2, 4]],
                       rows[[0, 2, 4]])


def _batch(seed=0, n=8):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 3, 64, 32, generator=g)
    tokens = torch.randint(1, 400, (n, 12), generator=g)
    tokens[:, 0] = 49406
    tokens[torch.arange(n), torch.randint(3, 12, (n,), generator=g)] = 49407
    tokens = tokens * (torch.arange(12)[None] <= tokens.argmax(dim=1, keepdim=True))
    return images, tokens


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("with_labels", [False, True])
def test_gradient_caching_equals_the_full_batch(tiny_synth, with_labels):
    config = tiny_config(tiny_synth, *CPCL)
    torch.manual_seed(0)
    model = build_model(config.model, pretrained=False)
    images, tokens = _batch()
    image_index = torch.tensor([0, 0, 1, 2, 3, 3, 4, 5])
    objective = Objective(model.embed_dim, config.loss, config.memory, torch.device("cpu"))
    labels = None
    if with_labels:
        labels = BatchLabels(torch.tensor([0, 0, 1, -1, 2, 2, 1, 0]), torch.tensor([0, 1, 1, -1, 2, -1, 1, 0]))
        feats = torch.nn.functional.normalize(torch.randn(3, model.embed_dim), dim=1)
        objective.on_labels(EpochLabels(torch.arange(3), torch.arange(3)), feats, feats.flip(0))
    batch = Batch(image_index, labels)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    results = {}
    for chunks in (1, 4):
        model.zero_grad()
        loss, _, v, _ = forward_backward(model, images, tokens, lambda v, t: objective(v, t, batch), chunks, "fp32",
                                         scaler)
        results[chunks] = (float(loss), _grads(model), v)
    assert results[1][0] == pytest.approx(results[4][0], abs=1e-5)
    torch.testing.assert_close(results[1][2], results[4][2], atol=1e-5, rtol=0)
    for name, grad in results[1][1].items():  # same up to float summation order: 1e-5 of the largest entry
        assert float((results[4][1][name] - grad).abs().max()) <= 1e-5 * max(1.0, float(grad.abs().max())), name


def test_accumulate_does_not_change_training(tiny_synth, tmp_path):
    a = train(tiny_config(tiny_synth, *CPCL, *NO_AUGMENT), tmp_path / "a", progress=False)
    b = train(tiny_config(tiny_synth, *CPCL, *NO_AUGMENT, "train.accumulate=4"), tmp_path / "b", progress=False)
    wa = read_checkpoint(tmp_path / "a" / "last.pt")["model"]
    wb = read_checkpoint(tmp_path / "b" / "last.pt")["model"]
    assert _max_weight_difference(wa, wb) < 1e-5
    losses = [[r["loss"] for r in _rows(tmp_path / run)[1:]] for run in ("a", "b")]
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    assert a.test["last"] == b.test["last"]
    with pytest.raises(ValueError, match="train.accumulate=3"):
        train(tiny_config(tiny_synth, "train.accumulate=3"), tmp_path / "c", progress=False)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains(tiny_synth, tmp_path, precision, monkeypatch):
    """Training forwards run under autocast in the asked precision (evaluation in fp32); weights stay fp32;
    only fp16 scales the loss."""
    from cpcl.model.retrieval_model import RetrievalModel

    seen = []
    real_forward = RetrievalModel.forward

    def forward(self, images, tokens):
        seen.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)
        return real_forward(self, images, tokens)

    monkeypatch.setattr(RetrievalModel, "forward", forward)
    train(tiny_config(tiny_synth, *CPCL, f"train.precision={precision}", "train.epochs=1"), tmp_path / precision,
          progress=False)
    want = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    assert seen and all(dtype == want for dtype in seen), seen
    row = _rows(tmp_path / precision)[1]
    assert torch.isfinite(torch.tensor(row["loss"]))
    ckpt = read_checkpoint(tmp_path / precision / "last.pt")
    assert all(v.dtype == torch.float32 for v in ckpt["model"].values() if v.is_floating_point())  # weights fp32
    if precision == "fp16":
        assert ckpt["scaler"]["scale"] > 0
    else:
        assert ckpt["scaler"] == {}  # bf16 needs no loss scaling: the scaler is off


def test_unknown_precision_is_refused(tiny_synth):
    with pytest.raises(ConfigError, match="train.precision: expected one of fp32, bf16, fp16"):
        tiny_config(tiny_synth, "train.precision=fp8")


def test_resume_after_a_kill_during_a_checkpoint_write_is_exact(tiny_synth, tmp_path, monkeypatch):
    """Stopped while writing epoch 2's last.pt, resumed: the same model, bit for bit, as a run never stopped."""
    config = tiny_config(tiny_synth, *CPCL, "train.epochs=3")
    full = train(config, tmp_path / "full", progress=False)

    real_write = state_module.save_checkpoint
    writes = {"last": 0}

    def die(*args):
        raise KeyboardInterrupt

    def dying_write(path, *args, **kwargs):
        if path.name == "last.pt":
            writes["last"] += 1
            if writes["last"] == 2:  # the process dies after writing the bytes, before the rename
                monkeypatch.setattr(io_module.os, "replace", die)
        return real_write(path, *args, **kwargs)

    monkeypatch.setattr(state_module, "save_checkpoint", dying_write)
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "stopped", progress=False)
    monkeypatch.undo()
    assert read_checkpoint(tmp_path / "stopped" / "last.pt")["epoch"] == 1
    resumed = train(config, tmp_path / "stopped", progress=False, resume=True)

    a = read_checkpoint(tmp_path / "full" / "last.pt")
    b = read_checkpoint(tmp_path / "stopped" / "last.pt")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert torch.equal(a["run"]["memory_image"], b["run"]["memory_image"])
    assert resumed.test == full.test and resumed.best_epoch == full.best_epoch
    strip = [{k: v for k, v in r.items() if k not in ("time", "pairs_per_s")} for r in _rows(tmp_path / "full")]
    assert [{k: v for k, v in r.items() if k not in ("time", "pairs_per_s")}
            for r in _rows(tmp_path / "stopped")] == strip


def test_resume_needs_a_completed_epoch(tiny_synth, tmp_path):
    with pytest.raises(FileNotFoundError, match="no last.pt"):
        train(tiny_config(tiny_synth), tmp_path / "nothing", progress=False, resume=True)


def test_two_gloo_processes_match_one_process(tiny_synth, tmp_path):
    """`cpcl train --nproc 2` (torchrun), 2 processes on the CPU (gloo), 2 CPCL epochs, each process's batch
    in 2 micro-batches: the same clusters, losses, val metrics and weights (1e-5, see _max_weight_difference)
    as one process with the same global batch; augmentation is off because its random draws differ per
    process. Every collective is checked against the backends a CUDA run would have (NCCL has no CPU
    collectives: an NCCL-only group fails this test)."""
    values = tiny_config(tiny_synth, *CPCL, *NO_AUGMENT).to_dict()
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(values))
    # every collective refuses a tensor that a CUDA run's process group would have no backend for
    env = checked_env("cuda", {**os.environ, "OMP_NUM_THREADS": "1"})
    # --nproc 2 relaunches under torchrun; its micro-batches (accumulate 2) exercise DDP's no_sync as well
    for name, nproc, accumulate in (("one", "1", "1"), ("two", "2", "2")):
        cmd = [sys.executable, "-m", "cpcl", "train", "--nproc", nproc, "--config", str(cfg), "--out",
               str(tmp_path / name), "--set", f"train.accumulate={accumulate}", "--device", "cpu", "--no-progress"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        # under torchrun (OMP_NUM_THREADS=1) rank 0 still labels on every core this machine gives it
        threads = len(os.sched_getaffinity(0)) if nproc == "2" else 1
        assert f"labelling on {threads} thread(s)" in proc.stderr, proc.stderr[-2000:]
    one = read_checkpoint(tmp_path / "one" / "last.pt")
    two = read_checkpoint(tmp_path / "two" / "last.pt")
    diff = _max_weight_difference(one["model"], two["model"])
    assert diff < 1e-5, diff
    rows_one, rows_two = _rows(tmp_path / "one"), _rows(tmp_path / "two")
    clusters = [[r["pseudo"]["image_clusters"] for r in rows[1:]] for rows in (rows_one, rows_two)]
    assert clusters[0] == clusters[1]
    assert [r["loss"] for r in rows_one[1:]] == pytest.approx([r["loss"] for r in rows_two[1:]], rel=1e-5)
    assert [r["val"] for r in rows_one[1:]] == [r["val"] for r in rows_two[1:]]


def test_resume_from_the_command_line(tiny_synth, tmp_path, capsys):
    from cpcl.cli import main

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(tiny_synth, "train.epochs=1").to_dict()))
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "run"), "--device", "cpu",
                 "--no-progress"]) == 0
    capsys.readouterr()
    # the run is complete: resuming it trains no further epoch and reports the same test metrics
    assert main(["train", "--resume", str(tmp_path / "run"), "--device", "cpu", "--no-progress"]) == 0
    assert "test metrics" in capsys.readouterr().out
    assert len(_rows(tmp_path / "run")) == 2
    assert main(["train", "--resume", str(tmp_path / "nothing")]) == 2  # a usage error
    assert "nothing: no such folder" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path / "run"), "--config", str(cfg)]) == 2
    assert "drop --config" in capsys.readouterr().err


def test_resume_reads_the_config_from_config_yaml_and_last_pt_once(tiny_synth, tmp_path, monkeypatch, capsys):
    """`--resume` takes the run's config from config.yaml: last.pt (weights and Adam state) is loaded once, by the
    trainer; a run folder without config.yaml still resumes from the config inside last.pt."""
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(tiny_synth, "train.epochs=1").to_dict()))
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "run"), "--device", "cpu",
                 "--no-progress"]) == 0
    capsys.readouterr()
    loads, torch_load = [], torch.load
    monkeypatch.setattr(torch, "load", lambda f, *a, **kw: loads.append(Path(f).name) or torch_load(f, *a, **kw))
    assert main(["train", "--resume", str(tmp_path / "run"), "--device", "cpu", "--no-progress"]) == 0
    assert loads.count("last.pt") == 1, loads
    rows = capsys.readouterr().out.split("\n", 1)[1]  # the title line holds the wall time
    (tmp_path / "run" / "config.yaml").unlink()
    assert main(["train", "--resume", str(tmp_path / "run"), "--device", "cpu", "--no-progress"]) == 0
    assert capsys.readouterr().out.split("\n", 1)[1] == rows  # the same run, the same test rows


def test_collectives_refuse_tensors_the_run_has_no_backend_for(monkeypatch):
    from cpcl.engine import distributed

    assert backend_devices(distributed.backend_for(torch.device("cuda"))) == {"cpu", "cuda"}
    assert backend_devices(distributed.backend_for(torch.device("cpu"))) == {"cpu"}
    assert backend_devices("nccl") == {"cuda"}  # what a CUDA run joined before: no CPU collectives
    calls = []
    monkeypatch.setattr(distributed.dist, "all_reduce", lambda tensor, **kw: calls.append(tensor))
    check_collective_devices({"cuda"}, "cuda")
    with pytest.raises(RuntimeError, match="dist.all_reduce got a cpu tensor .* has no backend for it"):
        distributed.dist.all_reduce(torch.zeros(3))
    assert not calls
    check_collective_devices({"cpu", "cuda"}, "cuda")  # already checked: not wrapped twice
    assert distributed.dist.all_reduce.cpcl_checked.__name__ == "<lambda>"


def test_no_production_module_patches_torch_distributed():
    """The check above lives in the tests: the package never assigns to a ``torch.distributed`` attribute."""
    import cpcl

    root = Path(cpcl.__file__).parent
    offenders = [str(p.relative_to(root)) for p in root.rglob("*.py")
                 if re.search(r"setattr\(\s*dist\b|\bdist\.\w+\s*=[^=]", p.read_text())]
    assert not offenders, offenders


def test_a_one_rank_process_group_runs_every_collective_and_trains_the_same(tiny_synth, tmp_path):
    """`torchrun --nproc_per_node=1` with CPCL_FORCE_DISTRIBUTED=1 (what a one-GPU machine can check under
    NCCL): every collective runs, checked against the CUDA backends, and the run equals a plain one."""
    values = tiny_config(tiny_synth, *CPCL, *NO_AUGMENT, "train.epochs=1").to_dict()
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(values))
    base = [sys.executable, "-m", "cpcl", "train", "--config", str(cfg), "--device", "cpu", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    plain = subprocess.run([*base, "--out", str(tmp_path / "plain")], capture_output=True, text=True, env=env,
                           timeout=300)
    assert plain.returncode == 0, plain.stderr[-2000:]
    forced = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
                             *base[1:], "--out", str(tmp_path / "forced")], capture_output=True, text=True,
                            env=checked_env("cuda", {**env, "CPCL_FORCE_DISTRIBUTED": "1"}),
                            timeout=300)
    assert forced.returncode == 0, forced.stderr[-2000:]
    # the collectives did run: an NCCL-only group (which has no CPU backend) fails the same run
    nccl_only = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
                                *base[1:], "--out", str(tmp_path / "nccl-only")], capture_output=True, text=True,
                               env=checked_env("nccl", {**env, "CPCL_FORCE_DISTRIBUTED": "1"}),
                               timeout=300)
    assert nccl_only.returncode != 0 and "a nccl process group has no backend for it" in nccl_only.stderr
    rows = [_rows(tmp_path / name)[1] for name in ("plain", "forced")]
    assert rows[0]["loss"] == pytest.approx(rows[1]["loss"], rel=1e-6)
    assert rows[0]["pseudo"]["image_clusters"] == rows[1]["pseudo"]["image_clusters"]


def test_a_run_killed_with_sigkill_resumes_to_the_model_of_a_run_never_stopped(tiny_synth, tmp_path):
    """`cpcl train` in a process of its own, killed (no handler runs) once its first epoch is saved; `--resume`
    then finishes it with the weights, memories and rows of a run that was never stopped."""
    config = tiny_config(tiny_synth, *CPCL, "train.epochs=3")
    full = train(config, tmp_path / "full", progress=False)
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(config.to_dict()))
    run = tmp_path / "killed"
    # the child computes with this process's thread count (an OMP_NUM_THREADS it inherited would sum in
    # another order, and the weights would differ in their last bits)
    child = subprocess.Popen([sys.executable, "-m", "cpcl", "train", "--config", str(tmp_path / "exp.yaml"),
                              "--out", str(run), "--device", "cpu", "--no-progress"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env={**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())})
    deadline = time.monotonic() + 300
    while child.poll() is None and time.monotonic() < deadline:
        if (run / "metrics.jsonl").is_file() and any(r["epoch"] == 1 for r in _rows(run)):
            break  # epoch 1 is in last.pt (its row is written after it): epoch 2 is under way
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    assert child.wait(timeout=30) == -signal.SIGKILL, "the run ended before it could be killed"
    assert read_checkpoint(run / "last.pt")["epoch"] < 3
    assert main(["train", "--resume", str(run), "--device", "cpu", "--no-progress"]) == 0

    a, b = read_checkpoint(tmp_path / "full" / "last.pt"), read_checkpoint(run / "last.pt")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert torch.equal(a["run"]["memory_image"], b["run"]["memory_image"])
    assert json.loads((run / "results.json").read_text())["best_epoch"] == full.best_epoch
    strip = [{k: v for k, v in r.items() if k not in ("time", "pairs_per_s")} for r in _rows(tmp_path / "full")]
    assert [{k: v for k, v in r.items() if k not in ("time", "pairs_per_s")} for r in _rows(run)] == strip
