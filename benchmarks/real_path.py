"""The researcher's real path, rehearsed end to end on format-true artefacts.

Builds a random-weight OpenAI-format TorchScript archive of ViT-B-16 (OpenAI's state-dict names and shapes,
fp16, the ``input_resolution`` / ``context_length`` / ``vocab_size`` entries ``clip.load`` drops) and a
CUHK-PEDES folder (``reid_raw.json`` with the real keys, JPEGs at pedestrian sizes), then runs the shipped
``configs/cuhk_pedes_vitb16_cpcl.yaml`` — only the data root, the weights path, epochs and batch size
overridden — under ``torchrun`` (gloo on the CPU, every collective checked as NCCL would see it; NCCL with
``--device cuda``), clustering on, then ``cpcl eval``, ``index build``, ``search``, ``export onnx`` and
``train --resume``. It checks that the network every one of them runs is the one that was trained:

- the features of the model as the trainer held it when it wrote ``best.pt`` equal (1e-5) those of
  ``best.pt`` rebuilt by ``load_checkpoint``, of the index built from it and of its ONNX export;
- the best-on-val test row of ``results.json`` equals ``cpcl eval`` of ``best.pt``;
- ``--resume`` rebuilds the same network and recipe: the resumed run's test rows equal the first run's, its
  config records QuickGELU and its optimiser IRRA's epsilon.

    python benchmarks/real_path.py                              # ViT-B-16, 2 ranks, CPU (the README's figure)
    python benchmarks/real_path.py --device cuda --nproc 1 --precision bf16  # benchmarks/gpu_check.sh

writes benchmarks/results/real_path{,_cuda}.{json,md}. ``tests/test_real_path.py`` runs the same rehearsal
with an archive of a small width and depth (same names) in seconds.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
COLOURS = {"red": (200, 30, 40), "blue": (40, 60, 190), "black": (25, 25, 25), "white": (235, 235, 235),
           "green": (40, 150, 60), "yellow": (230, 200, 40), "grey": (128, 128, 128), "brown": (120, 80, 40)}
GARMENTS = [("jacket", "jeans"), ("t-shirt", "shorts"), ("coat", "trousers"), ("hoodie", "skirt")]
TOLERANCE = 1e-5


def write_openai_archive(path: Path, arch: str = "ViT-B-16", seed: int = 0) -> Path:
    """A random-weight CLIP ``arch`` saved as OpenAI distributes CLIP: a TorchScript archive at the square input
    size the architecture was pretrained at, QuickGELU, fp16 weights, whose state dict holds OpenAI's names
    plus ``input_resolution``, ``context_length`` and ``vocab_size``."""
    import torch

    from cpcl.model.backbone import build_clip

    torch.manual_seed(seed)
    clip = build_clip(arch, _square_size(arch), quick_gelu=True).eval().half()

    class OpenAIArchive(torch.nn.Module):
        def __init__(self):
            super().__init__()
            for name, child in clip.named_children():
                self.add_module(name, child)
            for name, param in clip.named_parameters(recurse=False):
                self.register_parameter(name, param)
            size = clip.visual.image_size
            self.register_buffer("input_resolution", torch.tensor(size[0] if isinstance(size, tuple) else size))
            self.register_buffer("context_length", torch.tensor(clip.context_length))
            self.register_buffer("vocab_size", torch.tensor(clip.vocab_size))

        def forward(self, x):
            return x

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.trace(OpenAIArchive(), torch.zeros(1)).save(str(path))
    return path


def _square_size(arch: str) -> tuple[int, int]:
    """The square input an architecture's checkpoints are made at: its config's height (224 for ViT-B-16)."""
    import open_clip

    from cpcl.model.backbone import list_archs

    list_archs()  # registers cpcl's own archs with open_clip
    size = open_clip.get_model_config(arch)["vision_cfg"]["image_size"]
    side = size[0] if isinstance(size, (list, tuple)) else size
    return side, side


def write_cuhk_pedes(root: Path, train_ids: int = 8, images_per_id: int = 4, eval_ids: int = 3,
                     seed: int = 0) -> Path:
    """``root/CUHK-PEDES`` as distributed: ``reid_raw.json`` (``split``, ``captions``, ``file_path``, ``id`` 1-based,
    ``processed_tokens``) and JPEGs of persons at pedestrian sizes under ``imgs/`` (two captions each).
    ``train_ids * images_per_id`` training images; val and test ``eval_ids`` persons of 2 images each. The
    test images sit in ``imgs/test/``, a folder an index can be built from."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    folder = root / "CUHK-PEDES"
    names = list(COLOURS)
    records, person = [], 0
    for split, ids, per_id in (("train", train_ids, images_per_id), ("val", eval_ids, 2), ("test", eval_ids, 2)):
        for _ in range(ids):
            person += 1
            upper, lower = rng.choice(names, 2, replace=False)
            top, bottom = GARMENTS[person % len(GARMENTS)]
            for shot in range(per_id):
                width = int(rng.integers(48, 130))
                height = int(width * rng.uniform(2.3, 3.2))
                image = Image.new("RGB", (width, height), tuple(int(c) for c in rng.integers(60, 200, 3)))
                draw = ImageDraw.Draw(image)
                x0, x1 = int(width * rng.uniform(0.15, 0.3)), int(width * rng.uniform(0.7, 0.85))
                draw.ellipse([width * 0.38, height * 0.03, width * 0.62, height * 0.15], fill=(224, 172, 140))
                draw.rectangle([x0, height * 0.15, x1, height * 0.52], fill=COLOURS[upper])
                draw.rectangle([x0 + 3, height * 0.52, x1 - 3, height * 0.95], fill=COLOURS[lower])
                relative = f"{'test' if split == 'test' else 'cam_a'}/{person:04d}_{shot}.jpg"
                (folder / "imgs" / relative).parent.mkdir(parents=True, exist_ok=True)
                image.save(folder / "imgs" / relative, quality=90)
                captions = [f"A person in a {upper} {top} and {lower} {bottom}.",
                            f"The pedestrian wears {lower} {bottom} with a {upper} {top} on top."]
                records.append({"split": split, "captions": captions, "file_path": relative, "id": person,
                                "processed_tokens": [c.lower().rstrip(".").split() for c in captions]})
    (folder / "reid_raw.json").write_text(json.dumps(records))
    return folder


def test_inputs(data_root: Path):
    """The test split's image paths and captions, in dataset order."""
    from cpcl.data.formats import load_annotations

    records = load_annotations("cuhk-pedes", data_root).split("test")
    return [r.image_path for r in records], [c for r in records for c in r.captions]


def held_features(model, config, data_root: Path) -> dict[str, np.ndarray]:
    """Features of the test images and captions from ``model`` as it is, in float32 on the CPU (a copy, so
    the trainer's model and random states are untouched)."""
    import torch

    from cpcl.data.datasets import ImageSet, tokenize_all
    from cpcl.data.transforms import build_eval_transform
    from cpcl.model.backbone import build_tokenizer
    from cpcl.model.encode import encode_images, encode_texts
    from cpcl.model.preprocess import Preprocess

    paths, captions = test_inputs(data_root)
    with torch.random.fork_rng(devices=[]):
        copy_ = copy.deepcopy(model).float().cpu().eval()
        images = ImageSet(paths, build_eval_transform(Preprocess.of(config.model)))
        tokens = tokenize_all(build_tokenizer(config.model.arch, config.model.context_length), captions)
        cpu = torch.device("cpu")
        return {"images": encode_images(copy_, images, cpu, 16).numpy(),
                "texts": encode_texts(copy_, tokens, cpu, 16).numpy()}


def worker(features_dir: Path, data_root: Path, cli_args: list[str]) -> int:
    """``cpcl`` run by torchrun, with one addition: whenever rank 0 writes ``best.pt``, the features of the
    model it writes (the trainer's own, in memory) go to ``features_dir/held_best.npz``."""
    from cpcl.cli import main
    from cpcl.engine import trainer

    save = trainer.save_checkpoint

    def save_and_hold(path, model, config, **extra):
        save(path, model, config, **extra)
        if Path(path).name == "best.pt":
            features_dir.mkdir(parents=True, exist_ok=True)
            np.savez(features_dir / "held_best.npz", **held_features(model, config, data_root))

    trainer.save_checkpoint = save_and_hold
    return main(cli_args)


def _cpcl(*args: str, env: dict, log: Path) -> float:
    """Run ``python -m cpcl ARGS`` (or, starting with "torchrun", a torchrun command); -> seconds. Raises with
    the log's end on failure."""
    t0 = time.perf_counter()
    command = list(args[1:]) if args[0] == "torchrun" else [sys.executable, "-m", "cpcl", *args]
    with log.open("a") as fh:
        fh.write(f"$ {' '.join(command)}\n")
        fh.flush()
        done = subprocess.run(command, env=env, stdout=fh, stderr=subprocess.STDOUT, cwd=REPO)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n" + log.read_text()[-4000:])
    return time.perf_counter() - t0


def _max_difference(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max())


def rehearse(work: Path, arch: str = "ViT-B-16", nproc: int = 2, epochs: int = 2, batch_size: int = 8,
             device: str = "cpu", precision: str = "fp32", extra_sets: tuple[str, ...] = (),
             dataset: dict | None = None) -> dict:
    """Every step of the real path in ``work`` (created); -> the checks' figures and each step's seconds.
    Raises AssertionError naming every check that failed.

    Training and ``cpcl eval`` run on ``device`` (eval compares metrics with those the run computed there);
    every feature comparison runs on the CPU, so that a GPU's TF32 convolutions are not taken for another
    network. Without onnxruntime (a bare GPU machine) the ONNX step is skipped, and its checks say so."""
    import torch

    from cpcl.data.datasets import read_image
    from cpcl.data.transforms import build_eval_transform
    from cpcl.model.backbone import build_tokenizer, uses_quick_gelu
    from cpcl.model.checkpoint import load_checkpoint, read_checkpoint
    from cpcl.model.preprocess import Preprocess
    from cpcl.retrieval.index import GalleryIndex
    from cpcl.retrieval.retriever import load_retriever

    work.mkdir(parents=True, exist_ok=True)
    log = work / "rehearsal.log"
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    archive = write_openai_archive(work / f"{arch}.pt", arch)
    data_root = write_cuhk_pedes(work / "data", **(dataset or {})).parent
    seconds["artefacts"] = time.perf_counter() - t0
    # tests/support's sitecustomize checks every collective against the backends a CUDA run has
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "tests" / "support"), str(REPO / "src"),
                                                        str(REPO / "benchmarks"), os.environ.get("PYTHONPATH", "")]),
           "CPCL_CHECK_COLLECTIVES": "cuda", "PYTHONUNBUFFERED": "1"}
    if nproc == 1:
        env["CPCL_FORCE_DISTRIBUTED"] = "1"  # one rank still runs every collective through the process group
    run, features = work / "run", work / "features"
    sets = [f"data.root={data_root}", f"model.pretrained={archive}", f"train.epochs={epochs}",
            f"train.batch_size={batch_size}", f"train.precision={precision}", *extra_sets]
    train_args = ["train", "--config", "cuhk_pedes_vitb16_cpcl", "--out", str(run), "--device", device,
                  "--no-progress", *[x for s in sets for x in ("--set", s)]]
    seconds["train"] = _cpcl("torchrun", sys.executable, "-m", "torch.distributed.run", "--standalone",
                             f"--nproc_per_node={nproc}", str(Path(__file__).resolve()), "worker",
                             "--features", str(features), "--data-root", str(data_root), "--", *train_args,
                             env=env, log=log)
    results = json.loads((run / "results.json").read_text())
    held = dict(np.load(features / "held_best.npz"))
    checks: dict[str, object] = {}

    # the model rebuilt from best.pt is the network the trainer held: activation first, then its features
    model, _, _, config, _ = load_checkpoint(run / "best.pt")
    checks["best.pt records QuickGELU"] = config.model.quick_gelu is True and uses_quick_gelu(model.clip)
    retriever = load_retriever(run / "best.pt", "cpu")
    paths, captions = test_inputs(data_root)
    checks["load_checkpoint images"] = _max_difference(retriever.encode_images(paths), held["images"])
    checks["load_checkpoint texts"] = _max_difference(retriever.encode_text(captions), held["texts"])

    # cpcl eval of best.pt = the best-on-val test row the run reported
    seconds["eval"] = _cpcl("eval", "--checkpoint", str(run / "best.pt"), "--format", "cuhk-pedes", "--root",
                            str(data_root), "--split", "test", "--json", str(work / "eval.json"), "--device", device,
                            env=env, log=log)
    evaluated, reported = json.loads((work / "eval.json").read_text()), results["test"]["best-on-val"]
    checks["eval = results.json best-on-val"] = max(abs(evaluated[k] - reported[k]) for k in reported)

    # the index built from best.pt holds the held features, and search ranks by them
    index_dir = work / "index"
    seconds["index build"] = _cpcl("index", "build", "--checkpoint", str(run / "best.pt"), "--images",
                                   str(data_root / "CUHK-PEDES" / "imgs" / "test"), "--out", str(index_dir),
                                   "--device", "cpu", env=env, log=log)
    index = GalleryIndex.load(index_dir)
    order = [index.item_of(index.relative(p)) for p in paths]
    checks["index embeddings"] = _max_difference(np.asarray(index.embeddings)[order], held["images"])
    query = captions[0]
    t_search = time.perf_counter()
    found = subprocess.run([sys.executable, "-m", "cpcl", "search", str(index_dir), query, "-k", "3", "--json",
                            "--device", "cpu"],
                           env=env, cwd=REPO, capture_output=True, text=True, check=True)
    seconds["search"] = time.perf_counter() - t_search
    hits = json.loads(found.stdout)["results"][0]["hits"]
    expected_top = Path(paths[int(np.argmax(held["images"] @ held["texts"][0]))]).name
    checks["search top-1 = held ranking"] = Path(hits[0]["path"]).name == expected_top

    # the ONNX export of best.pt computes the held features
    try:
        import onnxruntime as ort
        import onnxscript  # noqa: F401 (the exporter needs it)
    except ImportError as exc:
        checks["onnx images"] = checks["onnx texts"] = f"skipped ({exc.name} not installed)"
    else:
        onnx_dir = work / "onnx"
        seconds["export onnx"] = _cpcl("export", "onnx", "--checkpoint", str(run / "best.pt"), "--out",
                                       str(onnx_dir), env=env, log=log)
        transform = build_eval_transform(Preprocess.of(config.model))
        pixels = torch.stack([transform(read_image(p)) for p in paths]).numpy()
        tokens = build_tokenizer(config.model.arch, config.model.context_length)(captions).numpy().astype(np.int64)
        sessions = {name: ort.InferenceSession(str(onnx_dir / f"{name}_encoder.onnx"),
                                               providers=["CPUExecutionProvider"]) for name in ("image", "text")}
        checks["onnx images"] = _max_difference(sessions["image"].run(None, {"images": pixels})[0], held["images"])
        checks["onnx texts"] = _max_difference(sessions["text"].run(None, {"tokens": tokens})[0], held["texts"])

    # --resume rebuilds the same network and recipe: a finished run resumed re-reports the same test rows
    before = read_checkpoint(run / "last.pt")
    checks["last.pt optimiser eps = IRRA's 1e-3"] = all(g["eps"] == 1e-3 for g in before["optimizer"]["param_groups"])
    env_single = {k: v for k, v in env.items() if k != "CPCL_FORCE_DISTRIBUTED"}
    seconds["resume"] = _cpcl("train", "--resume", str(run), "--device", device, "--no-progress", env=env_single,
                              log=log)
    resumed = json.loads((run / "results.json").read_text())
    checks["resume: same test rows"] = max(abs(resumed["test"][row][k] - v) for row in ("last", "best-on-val")
                                           for k, v in results["test"][row].items())
    import yaml

    checks["resume: config.yaml records QuickGELU"] = yaml.safe_load((run / "config.yaml").read_text())[
        "model"]["quick_gelu"] is True
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if r.get("epoch", 0) >= 1]
    figures = {"arch": arch, "nproc": nproc, "device": device, "precision": precision, "epochs": epochs,
               "batch_size": batch_size, "checks": checks, "seconds": seconds,
               "pairs_per_s": [round(r["pairs_per_s"], 2) for r in steps],
               "pseudo": [r.get("pseudo", {}).get("image_clusters") for r in steps],
               "wall_s": time.perf_counter() - t0}
    failed = [name for name, value in checks.items() if not (value is True or (isinstance(value, str) and
              value.startswith("skipped")) or (isinstance(value, float) and value <= TOLERANCE))]
    assert not failed, f"rehearsal checks failed: {failed}: {checks}"
    return figures


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        p = argparse.ArgumentParser()
        p.add_argument("worker")
        p.add_argument("--features", type=Path, required=True)
        p.add_argument("--data-root", type=Path, required=True)
        split = sys.argv.index("--")
        args = p.parse_args(sys.argv[1:split])
        sys.exit(worker(args.features, args.data_root, sys.argv[split + 1:]))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="ViT-B-16")
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32")
    p.add_argument("--work", type=Path, default=REPO / "runs" / "real_path")
    p.add_argument("--name", default=None, help="results name (default real_path, real_path_cuda on CUDA)")
    args = p.parse_args()
    import shutil

    from report import command, machine, markdown_table, write_results

    shutil.rmtree(args.work, ignore_errors=True)
    figures = rehearse(args.work, args.arch, args.nproc, args.epochs, args.batch_size, args.device, args.precision)
    figures.update(machine=machine(), command=command(), date=time.strftime("%Y-%m-%d"))
    rows = [[name, f"{value:.2e}" if isinstance(value, float) else value] for name, value in figures["checks"].items()]
    text = "\n".join([
        f"# The real path, rehearsed: {args.arch}, {args.nproc} rank(s), {args.device} {args.precision}",
        "", f"`{figures['command']}` — {figures['machine']}, {figures['date']}", "",
        markdown_table(["check (max abs difference, or passed)", "value"], rows, "lr"), "",
        markdown_table(["step", "seconds"], [[k, f"{v:.1f}"] for k, v in figures["seconds"].items()]
                       + [["all", f"{figures['wall_s']:.1f}"]], "lr"), "",
        f"training throughput per epoch (pairs/s): {figures['pairs_per_s']}; image clusters per epoch: "
        f"{figures['pseudo']}"])
    write_results(args.name or ("real_path_cuda" if args.device == "cuda" else "real_path"), figures, text)


if __name__ == "__main__":
    main()
