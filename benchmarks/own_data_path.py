"""The practitioner's path, rehearsed end to end: own crops and captions without any identity, to a search
page, a Milvus server and a second model.

Writes a dataset the way people's own data arrives — a JSONL of ``{"image", "caption"}`` lines, no
``person_id`` and no split at all, several captions per image (one line each), some images in sub-folders,
one caption written for two images, UTF-8 captions with non-ASCII words — from SynthPedes images (the test
persons' images become a second folder, ``later/``, that arrives after the index is built). Then runs, as the
README's "your own crops" lines say, each as its own ``cpcl`` process:

1. ``data check``;
2. ``sweep --score label-free``: CPCL at two values of ``cluster.eps`` and the ITC baseline, every trial
   chosen and scored on held-out pairs (``data.val_pairs_from_train``);
3. ``train`` with ``data.val_pairs_from_train``;
4. ``index build`` into files and into a Milvus server (started here: the ``milvus-server`` extra; built with
   ``--root`` at the folder that will hold ``later/`` too, as a collection keeps its root), ``index add`` of
   ``later/`` to both;
5. ``search`` of both, and ``serve`` of the file index (one HTTP query);
6. ``export weights`` and a second run started from that file.

It checks: every step exits 0; the file index, the Milvus collection and the served page give the same top-10
paths; the second run rebuilds the trained network (its zero-shot features equal the first run's best.pt up to
the fp16 export); and no identity is read anywhere: the sweep and the training run again on the same JSONL
with person_id added (true, two persons merged at random, images split off at random) choose the same trials
with the same scores and write the same best.pt.

    python benchmarks/own_data_path.py            # SynthPedes of 240 persons, the shipped small CLIP, 5 epochs

writes benchmarks/results/own_data_path.{json,md}. ``tests/test_own_data_path.py`` runs it on a tiny dataset
with a random micro CLIP (``--set`` overrides) in about a minute.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

NON_ASCII = [("coat", "coat (café-au-lait)"), ("jacket", "jacket — naïve print"), ("shoes", "shoes, Müller brand"),
             ("bag", "bag 👜")]
QUERY = "a man in a grey hoodie and black shorts with a red backpack"


def write_own_data(out: Path, num_ids: int, seed: int = 0, height: int = 128, width: int = 64) -> dict:
    """SynthPedes images of ``num_ids`` persons as a practitioner's folder ``out``: ``annotations.jsonl`` (one
    line per caption, no person_id, no split), ``crops/`` (a few images in sub-folders) and ``later/`` (the
    test persons' images, not annotated) -> the true person of every annotated image, for the identity runs."""
    from cpcl.data.synth import generate_synthpedes

    source = Path(tempfile.mkdtemp(prefix="synth-"))
    generate_synthpedes(source, num_ids=num_ids, seed=seed, height=height, width=width, val_ids=0,
                        test_ids=max(2, num_ids // 10), workers=1, montage=False)
    records = json.loads((source / "reid_raw.json").read_text())
    rng = random.Random(seed)
    lines, persons = [], {}
    (out / "crops").mkdir(parents=True)
    (out / "later").mkdir()
    for i, r in enumerate(records):
        image = source / "imgs" / r["file_path"]
        if r["split"] == "test":
            shutil.copy(image, out / "later" / image.name)
            continue
        relative = f"crops/{'cam2/' if i % 7 == 0 else ''}{image.name}"
        (out / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(image, out / relative)
        persons[relative] = r["id"]
        for caption in r["captions"]:
            for word, accented in NON_ASCII:
                if word in caption and rng.random() < 0.1:
                    caption = caption.replace(word, accented, 1)
            lines.append({"image": relative, "caption": caption})
    shared = lines[0]["caption"]  # one caption written for a second image too (people describe alike)
    lines.append({"image": next(x["image"] for x in lines if x["image"] != lines[0]["image"]), "caption": shared})
    _write_jsonl(out / "annotations.jsonl", lines)
    shutil.rmtree(source)
    return {"lines": lines, "persons": persons}


def _write_jsonl(path: Path, lines: list[dict]) -> None:
    path.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines), encoding="utf-8")


def identity_variants(lines: list[dict], persons: dict[str, int], seed: int = 0) -> dict[str, list[dict]]:
    """The same lines with person_id added: the true persons; pairs of persons merged at random; a third of the
    images split off into persons of their own at random."""
    rng = random.Random(seed)
    ids = sorted(set(persons.values()))
    shuffled = ids[:]
    rng.shuffle(shuffled)
    merged = {person: person for person in ids}
    merged.update({b: a for a, b in zip(shuffled[0::2], shuffled[1::2], strict=False)})
    split = {image: 10_000 + n for n, image in enumerate(sorted(persons)) if rng.random() < 1 / 3}
    assign = {"true": lambda image: persons[image], "merged": lambda image: merged[persons[image]],
              "split": lambda image: split.get(image, persons[image])}
    return {name: [{**x, "person_id": f(x["image"])} for x in lines] for name, f in assign.items()}


class Steps:
    """Runs ``cpcl`` commands in ``workdir``, timing each; a failure stops the rehearsal. Each is a process of its
    own, as a user runs them; ``in_process``: the same arguments through ``cpcl.cli.main`` in this process (the
    test suite's fast variant, which would otherwise pay a PyTorch start-up per step)."""

    def __init__(self, workdir: Path, log: Path, in_process: bool = False):
        self.workdir, self.log, self.in_process, self.seconds = workdir, log, in_process, {}

    def __call__(self, name: str, *args: str) -> str:
        t0 = time.perf_counter()
        code, out, err = self._run(list(args))
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0
        with self.log.open("a") as fh:
            fh.write(f"$ cpcl {' '.join(args)}\n{out}{err}\n")
        if code != 0:
            raise RuntimeError(f"step {name} (cpcl {' '.join(args)}) exited {code}:\n{err[-3000:]}")
        return out

    def _run(self, args: list[str]) -> tuple[int, str, str]:
        if not self.in_process:
            done = subprocess.run([sys.executable, "-m", "cpcl", *args], cwd=self.workdir, capture_output=True,
                                  text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
            return done.returncode, done.stdout, done.stderr
        import contextlib
        import io

        from cpcl.cli import main

        out, err = io.StringIO(), io.StringIO()
        with contextlib.chdir(self.workdir), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(args)
        return code, out.getvalue(), err.getvalue()


def choose(steps: Steps, tag: str, sets: list[str], held_out: int, grid: str) -> dict:
    """The label-free sweep and the training run of the README -> what they chose and the best.pt weights."""
    data = ["--set", "data.format=jsonl", "--set", "data.root=my-data/annotations.jsonl", "--set",
            f"data.val_pairs_from_train={held_out}", *[a for s in sets for a in ("--set", s)]]
    steps(f"sweep{tag}", "sweep", "--config", "synthpedes_cpcl", "--also", "synthpedes_itc", "--score", "label-free",
          "--grid", grid, "--out", f"runs/sweep{tag}", "--no-progress", *data)
    steps(f"train{tag}", "train", "--config", "synthpedes_cpcl", "--out", f"runs/mine{tag}", "--no-progress", *data)
    sweep = json.loads((steps.workdir / f"runs/sweep{tag}/selection.json").read_text())
    run = json.loads((steps.workdir / f"runs/mine{tag}/results.json").read_text())
    return {"trials": [(t["overrides"], t["config"], t["label_free"], t["best_epoch"]) for t in sweep["trials"]],
            "chosen": sweep["chosen"], "selection": run["selection"],
            "best.pt": _weights_digest(steps.workdir / f"runs/mine{tag}/best.pt")}


def _weights_digest(checkpoint: Path) -> str:
    import hashlib

    from cpcl.model.checkpoint import read_checkpoint

    h = hashlib.sha256()
    for name, tensor in sorted(read_checkpoint(checkpoint)["model"].items()):
        h.update(name.encode())
        h.update(tensor.contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def served_top10(workdir: Path, serve_args: list[str], query: str) -> list[str]:
    """``cpcl serve ...`` (``serve_args``, from ``serve``; the port its ``--port`` names, else the default 8000) as a
    process of its own; one HTTP query of the JSON API -> the top-10 paths; the server stopped."""
    port = int(serve_args[serve_args.index("--port") + 1]) if "--port" in serve_args else 8000
    server = subprocess.Popen([sys.executable, "-m", "cpcl", *serve_args], cwd=workdir, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/api/search?" + urllib.parse.urlencode({"q": query, "k": 10})
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=10) as response:
                    return [h["path"] for h in json.loads(response.read())["hits"]]
            except OSError:
                if server.poll() is not None:
                    output = server.stdout.read()[-2000:]
                    raise RuntimeError(f"cpcl serve exited {server.returncode}: {output}") from None
                time.sleep(0.5)
        raise RuntimeError("cpcl serve did not answer within 120 s")
    finally:
        server.terminate()
        server.wait(timeout=30)


def rehearse(workdir: Path, num_ids: int, sets: list[str], held_out: int, grid: str, milvus_uri: str | None,
             identity_runs: tuple[str, ...] = ("true", "merged", "split"), in_process: bool = False) -> dict:
    t_start = time.perf_counter()
    workdir.mkdir(parents=True, exist_ok=True)
    own = write_own_data(workdir / "my-data", num_ids)
    steps = Steps(workdir, workdir / "steps.log", in_process)
    steps("data check", "data", "check", "--format", "jsonl", "--root", "my-data/annotations.jsonl")
    chosen = choose(steps, "", sets, held_out, grid)

    steps("index build", "index", "build", "--checkpoint", "runs/mine/best.pt", "--images", "my-data/crops", "--out",
          "runs/mine-index", "--workers", "0")
    steps("index add", "index", "add", "runs/mine-index", "--images", "my-data/later", "--workers", "0")
    files = json.loads(steps("search", "search", "runs/mine-index", QUERY, "-k", "10", "--json"))["results"][0]
    files_top = [h["path"] for h in files["hits"]]
    served = served_top10(workdir, ["serve", "runs/mine-index", "--port", str(_free_port())], QUERY)
    milvus_top = None
    if milvus_uri is not None:
        milvus = ["--backend", "milvus", "--uri", milvus_uri]
        steps("index build (Milvus)", "index", "build", "--checkpoint", "runs/mine/best.pt", "--images",
              "my-data/crops", "--root", "my-data", "--out", "mine", "--workers", "0", "--overwrite", *milvus)
        steps("index add (Milvus)", "index", "add", "mine", "--images", "my-data/later", "--workers", "0", *milvus)
        found = json.loads(steps("search (Milvus)", "search", "mine", QUERY, "-k", "10", "--json", *milvus))
        milvus_top = [h["path"] for h in found["results"][0]["hits"]]

    steps("export weights", "export", "weights", "--checkpoint", "runs/mine/best.pt", "--out", "runs/mine-weights.pt")
    steps("train from the export", "train", "--config", "synthpedes_itc", "--out", "runs/second", "--no-progress",
          "--set", "data.format=jsonl", "--set", "data.root=my-data/annotations.jsonl", "--set",
          f"data.val_pairs_from_train={held_out}", "--set", "model.pretrained=runs/mine-weights.pt",
          "--set", "train.epochs=1", *[a for s in sets if not s.startswith("model.pretrained") for a in ("--set", s)])
    rebuilt = _zero_shot_matches(workdir)

    identity = {}
    for name, lines in identity_variants(own["lines"], own["persons"]).items():
        if name in identity_runs:
            _write_jsonl(workdir / "my-data" / "annotations.jsonl", lines)
            identity[name] = choose(steps, f"-{name}", sets, held_out, grid)
    _write_jsonl(workdir / "my-data" / "annotations.jsonl", own["lines"])
    report = {
        "images": {"annotated": len(own["persons"]), "captions": len(own["lines"]),
                   "later": len(list((workdir / "my-data" / "later").iterdir())), "held_out": held_out},
        "sweep": {"trials": chosen["trials"], "chosen": chosen["chosen"]}, "selection": chosen["selection"],
        "top10": {"files": files_top, "served": served, "milvus": milvus_top},
        "same_top10": {"served": served == files_top,
                       "milvus": None if milvus_top is None else milvus_top == files_top},
        "second_run_max_feature_diff": rebuilt,
        "identity_runs_identical": {name: run == chosen for name, run in identity.items()},
        "seconds": {**steps.seconds, "total": time.perf_counter() - t_start},
    }
    failures = [f"{what} differs" for what, same in report["same_top10"].items() if same is False]
    failures += [f"with identities ({name}) the choices or best.pt differ" for name, same in
                 report["identity_runs_identical"].items() if not same]
    if rebuilt > 2e-2:
        failures.append(f"the run from the exported weights starts from another network (max diff {rebuilt:.2e})")
    report["failures"] = failures
    return report


def _zero_shot_matches(workdir: Path) -> float:
    """Max abs difference between the features of the first run's best.pt and the model the run from its exported
    weights built before training (the export is fp16: close, not equal)."""
    import dataclasses

    import torch

    from cpcl.config import load_config
    from cpcl.model.checkpoint import build_model, load_checkpoint

    trained = load_checkpoint(workdir / "runs/mine/best.pt")[0]
    config = load_config(workdir / "runs/second/config.yaml")  # its weights path is relative to the work folder
    rebuilt = build_model(dataclasses.replace(config.model, pretrained=str(workdir / config.model.pretrained))).eval()
    if rebuilt.clip.__class__ is not trained.clip.__class__:
        return float("inf")
    x = torch.randn(4, 3, *config.model.image_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return float((rebuilt.encode_image(x) - trained.encode_image(x)).abs().max())


def main() -> None:
    from milvus_server import MilvusServer, server_command
    from report import command, machine, markdown_table, write_results

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ids", type=int, default=240, help="SynthPedes persons (a tenth become later/)")
    parser.add_argument("--held-out", type=int, default=100, help="data.val_pairs_from_train")
    parser.add_argument("--grid", default="cluster.eps=0.5,0.6")
    parser.add_argument("--set", action="append", default=[], help="extra config overrides for every run")
    parser.add_argument("--workdir", help="default: a temporary folder, removed afterwards")
    parser.add_argument("--name", default="own_data_path")
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="own-data-"))
    server = MilvusServer(workdir / "milvus-server") if server_command() else None
    try:
        uri = server.start() if server else None
        report = rehearse(workdir, args.ids, args.set, args.held_out, args.grid, uri)
    finally:
        if server:
            server.stop()
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    rows = [[name, f"{seconds:.1f}"] for name, seconds in report["seconds"].items()]
    trials = [[str(i), " ".join(o) or (Path(c).stem if c else "synthpedes_cpcl as it is"), f"{lf:.2f}", str(ep),
               "**chosen**" if i == report["sweep"]["chosen"] else ""]
              for i, (o, c, lf, ep) in enumerate(report["sweep"]["trials"])]
    text = (f"# The practitioner's path, rehearsed\n\n`{command()}` on {machine()}.\n\n"
            f"{report['images']['annotated']} annotated images ({report['images']['captions']} caption lines, no "
            f"person_id, no split), {report['images']['held_out']} held out as pairs, "
            f"{report['images']['later']} images added later.\n\n"
            f"Sweep, label-free (pair-mAP on the held-out pairs):\n\n"
            f"{markdown_table(['trial', 'settings', 'pair-mAP', 'best epoch', ''], trials)}\n\n"
            f"Same top-10 as `search` of the files: served page {report['same_top10']['served']}, Milvus server "
            f"{report['same_top10']['milvus']}. Run from the exported weights: features within "
            f"{report['second_run_max_feature_diff']:.1e} of best.pt's (fp16 export). Identities added to the JSONL "
            f"(true, merged, split): choices and best.pt identical: {report['identity_runs_identical']}.\n\n"
            f"Failures: {report['failures'] or 'none'}.\n\n{markdown_table(['step', 'seconds'], rows)}\n")
    write_results(args.name, {"command": command(), "machine": machine(), **report}, text)
    print(text)
    if report["failures"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
