"""Command-line interface: the only module that parses argv, sets up logging, picks the device and prints."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

log = logging.getLogger("cpcl")


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    quiet_rank = int(os.environ.get("RANK", "0")) != 0  # under torchrun, rank 0 alone reports progress
    logging.getLogger("cpcl").setLevel(logging.WARNING if quiet_rank else logging.DEBUG if verbose else logging.INFO)
    # open_clip logs every model creation at INFO on the root logger
    logging.getLogger().setLevel(logging.WARNING)


def _pick_device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda requested but no CUDA device is available")
    return device


# --------------------------------------------------------------------------------------------- commands


def cmd_synth(args: argparse.Namespace) -> int:
    from cpcl.data.synth import generate_synthpedes

    t0 = time.perf_counter()
    ann = generate_synthpedes(args.out, num_ids=args.ids, seed=args.seed, height=args.height, width=args.width,
                              images_per_id=args.images_per_id, val_ids=args.val_ids, test_ids=args.test_ids,
                              domain=args.domain, workers=args.workers, progress=True)
    from cpcl.data.formats import load_annotations

    summary = load_annotations("cuhk-pedes", ann.parent).summary()
    print(f"SynthPedes written to {ann.parent} in {time.perf_counter() - t0:.1f}s")
    _print_summary(summary)
    print(f"montage: {ann.parent / 'montage.png'}")
    return 0


def _print_summary(summary: dict[str, dict[str, int]]) -> None:
    print(f"{'split':<6} {'images':>8} {'captions':>9} {'identities':>11}")
    for split, row in summary.items():
        print(f"{split:<6} {row['images']:>8} {row['captions']:>9} {row['identities']:>11}")


def cmd_data_check(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from cpcl.data.formats import check_images, read_annotations
    from cpcl.data.records import DatasetError

    try:
        ann = read_annotations(args.format, args.root)
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    problems = list(ann.problems)
    if not args.skip_images:
        problems += check_images(ann, progress=lambda recs: tqdm(recs, desc="decode images", leave=False))
    print(f"{ann.name}: {ann.annotation_file}")
    _print_summary(ann.summary())
    dups = ann.duplicate_images()
    if dups:
        print(f"note: {len(dups)} images appear in more than one record (first: {dups[0]})")
    if problems:
        print(f"\n{len(problems)} problem(s):")
        for p in problems:
            print(f"  {p}")
        return 1
    print("\nno problems found")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from cpcl.config import config_from_dict, load_config, resolve_config_path
    from cpcl.engine.distributed import launched_distributed, shutdown_distributed
    from cpcl.engine.report import results_table
    from cpcl.engine.trainer import train

    if args.nproc > 1 and not launched_distributed():
        return _relaunch_with_torchrun(args.nproc, args.argv)
    if args.resume:
        if args.config or args.set or args.out:
            raise SystemExit("error: --resume RUN_DIR continues that run with its own config; "
                             "drop --config/--set/--out")
        from cpcl.model.checkpoint import read_checkpoint

        out = Path(args.resume)
        if not (out / "last.pt").is_file():
            raise SystemExit(f"error: cannot resume {out}: no last.pt (no epoch of this run has completed)")
        config = config_from_dict(read_checkpoint(out / "last.pt")["config"])
    else:
        if not args.config or not args.out:
            raise SystemExit("error: cpcl train needs --config and --out (or --resume RUN_DIR)")
        config, out = load_config(resolve_config_path(args.config), args.set or []), Path(args.out)
    device = _pick_device(args.device)
    t0 = time.perf_counter()
    try:
        result = train(config, out, device=device, progress=not args.no_progress,
                       allow_identity_labels=args.supervised_upper_bound, resume=bool(args.resume))
    finally:
        shutdown_distributed()
    if result.test:  # rank 0 (the only one when not distributed)
        print(results_table(result.test, title=f"test metrics ({out}, best epoch {result.best_epoch}, "
                                               f"{time.perf_counter() - t0:.0f}s)"))
    return 0


def _relaunch_with_torchrun(nproc: int, argv: list[str]) -> int:
    """``cpcl train --nproc N ...`` = ``torchrun --nproc_per_node N -m cpcl train ...`` on this machine."""
    import subprocess

    argv = list(argv)
    if "--nproc" in argv:
        i = argv.index("--nproc")
        del argv[i:i + 2]
    argv = [a for a in argv if not a.startswith("--nproc=")]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "cpcl", *argv]
    log.info("launching %s", " ".join(cmd))
    return subprocess.call(cmd)


def cmd_eval(args: argparse.Namespace) -> int:
    from cpcl.engine.report import results_table
    from cpcl.evaluation.evaluate import load_eval_split

    device = _pick_device(args.device)
    try:
        model, split, payload = load_eval_split(args.checkpoint, args.format, args.root, args.split, device)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    metrics = split.evaluate(model, device, args.batch_size, progress=True)
    print(results_table({Path(args.checkpoint).name: metrics.as_dict()}, title=f"{args.split} split of {args.root}"))
    if args.json:
        from cpcl.io import atomic_write_text

        atomic_write_text(args.json, json.dumps({"checkpoint": str(args.checkpoint), "split": args.split,
                                                  "epoch": payload.get("epoch"), **metrics.as_dict()}, indent=2))
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    from cpcl.config import load_config, resolve_config_path
    from cpcl.engine.trainer import train
    from cpcl.model.backbone import BUILTIN_WEIGHTS
    from cpcl.model.checkpoint import export_clip_weights

    if args.replace_packaged and args.weights_out:
        raise SystemExit("error: --replace-packaged writes the packaged weights; drop --weights-out")
    packaged = BUILTIN_WEIGHTS["synthclip-tiny"][1]
    target = packaged if args.replace_packaged else Path(args.weights_out or Path(args.out) / "synthclip_tiny.pt")
    config = load_config(resolve_config_path(args.config), args.set or [])
    device = _pick_device(args.device)
    result = train(config, args.out, device=device, progress=not args.no_progress)
    best = Path(args.out) / ("best.pt" if result.best_epoch is not None else "last.pt")
    export_clip_weights(best, target)
    print(f"pretrained weights (epoch {result.best_epoch}) written to {target}")
    if args.replace_packaged:
        print("they replace the packaged cpcl:synthclip-tiny weights: every later run that starts from "
              "cpcl:synthclip-tiny (the demo's configs included) starts from these")
    else:
        print(f"use them with --set model.pretrained={target} (cpcl:synthclip-tiny is unchanged)")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from cpcl.demo import run_demo
    from cpcl.engine.report import results_table

    device = _pick_device(args.device)
    demo = run_demo(args.out, args.set or [], device=device, progress=not args.no_progress)
    last = next(reversed(demo.rows.values()))
    print()
    print(results_table(demo.rows, title=f"SynthPedes test split: {last['num_queries']} caption queries, "
                                         f"{last['num_gallery']} images (no identity label used in training)"))
    print(f"wall time {demo.seconds:.0f}s on {device}")
    print(f"dataset montage: {demo.data_root / 'montage.png'}")
    print(f"curves, checkpoints, metrics.jsonl and results: {args.out}/<run>/")
    print(f"top-10 rankings of test queries (green = right person): {demo.rankings_dir / 'sheet.png'}")
    print(f"the test gallery is indexed for search with the CPCL model:\n"
          f"  cpcl search {demo.index_dir} \"a woman in a red coat with a black bag\" --grid top10.png\n"
          f"  cpcl serve {demo.index_dir}      # then open http://127.0.0.1:8000/")
    return 0


def cmd_export_weights(args: argparse.Namespace) -> int:
    from cpcl.model.checkpoint import export_clip_weights

    path = export_clip_weights(args.checkpoint, args.out, half=not args.fp32)
    print(f"wrote {path}")
    return 0


def cmd_index_build(args: argparse.Namespace) -> int:
    from cpcl.retrieval.retriever import load_retriever
    from cpcl.retrieval.service import build_index

    device = _pick_device(args.device)
    retriever = load_retriever(args.checkpoint, device, batch_size=args.batch_size, num_workers=args.workers)
    t0 = time.perf_counter()
    index = build_index(retriever, args.images, args.out, root=args.root, kind=args.kind, nlist=args.nlist,
                        nprobe=args.nprobe, progress=True)
    wall = time.perf_counter() - t0
    print(f"indexed {len(index)} images under {index.root} in {wall:.1f}s ({len(index) / wall:.0f} images/s) "
          f"-> {args.out} ({index.kind}, model {index.fingerprint})")
    return 0


def cmd_index_add(args: argparse.Namespace) -> int:
    from cpcl.retrieval.index import GalleryIndex
    from cpcl.retrieval.retriever import load_retriever
    from cpcl.retrieval.service import add_images

    index = GalleryIndex.load(args.index)
    device = _pick_device(args.device)
    retriever = load_retriever(index.query_checkpoint(args.checkpoint), device, batch_size=args.batch_size,
                               num_workers=args.workers)
    added, skipped = add_images(retriever, index, args.images, progress=True)
    print(f"added {added} images ({skipped} already indexed); {args.index} now holds {len(index)}")
    return 0


def cmd_index_info(args: argparse.Namespace) -> int:
    from cpcl.retrieval.index import GalleryIndex

    index = GalleryIndex.load(args.index)
    m = index.manifest
    print(f"{args.index}: {len(index)} images under {index.root}")
    print(f"kind {index.kind}" + (f" (nlist {m['nlist']}, nprobe {m['nprobe']})" if index.kind != "exact" else ""))
    print(f"model {index.fingerprint}: {m['model']['arch']}, {m['dim']}-d, built from {index.checkpoint}")
    return 0


def _open_service(args: argparse.Namespace):
    from cpcl.retrieval.service import SearchService

    return SearchService.open(args.index, args.checkpoint, _pick_device(args.device))


def cmd_search(args: argparse.Namespace) -> int:
    service = _open_service(args)
    results = [service.search(q, args.k, nprobe=args.nprobe) for q in args.query]
    if args.json:
        print(json.dumps({"index": str(args.index), "root": str(service.index.root),
                          "results": [r.as_dict() for r in results]}, indent=2))
    else:
        for r in results:
            print(f"{r.query!r}: top {len(r.hits)} of {len(service.index)} "
                  f"(encode {r.encode_ms:.1f} ms, search {r.search_ms:.1f} ms), paths under {service.index.root}")
            for h in r.hits:
                print(f"{h.rank:>4}  {h.score:.4f}  {h.path}")
    if args.grid:
        from cpcl.evaluation.figures import RankedImage, ranking_row, save_png, stack

        rows = [ranking_row(r.query, [RankedImage(service.index.absolute_path(h.item), h.score) for h in r.hits])
                for r in results]
        save_png(stack(rows), args.grid)
        if not args.json:
            print(f"grid: {args.grid}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from cpcl.retrieval.http import build_app
    from cpcl.retrieval.service import EXAMPLE_QUERIES

    service = _open_service(args)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("serving on %s: anyone who can reach this address can search the gallery and read its "
                    "images (there is no authentication)", args.host)
    app = build_app(service, examples=args.example or EXAMPLE_QUERIES)
    print(f"serving {len(service.index)} images from {args.index} on http://{args.host}:{args.port}/", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0


def cmd_visualize(args: argparse.Namespace) -> int:
    from cpcl.evaluation.visualize import write_ranking_figures

    summary = write_ranking_figures(args.checkpoint, args.format, args.root, args.out, split=args.split,
                                    queries=args.queries, seed=args.seed, k=args.k, device=_pick_device(args.device),
                                    batch_size=args.batch_size, progress=True)
    print(f"{summary['queries']} queries of the {args.split} split ({summary['captions']} captions, "
          f"{summary['images']} images): rank 1 correct for {summary['rank1_correct']}; "
          "green = same person, red = another person")
    print(f"wrote {args.out}/query_*.png and {summary['sheet']}")
    return 0

ONNX_TOLERANCE = 1e-4


def cmd_export_onnx(args: argparse.Namespace) -> int:
    try:
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise SystemExit(f"error: ONNX export needs the onnx extra ({exc.name} is missing): "
                         "pip install 'cpcl[onnx]'") from None
    from cpcl.model.export import export_onnx

    report = export_onnx(args.checkpoint, args.out, opset=args.opset)
    out = Path(args.out)
    for name, file in report["files"].items():
        print(f"{name}: {out / file} ({(out / file).stat().st_size / 2**20:.1f} MB)")
    parity = report["max_abs_diff_vs_pytorch"]
    worst = max(parity["image_encoder"], parity["text_encoder"])
    verdict = "OK" if worst < ONNX_TOLERANCE else "FAILED"
    print(f"parity with PyTorch (onnxruntime, max |difference| of unit embeddings): image "
          f"{parity['image_encoder']:.2e}, text {parity['text_encoder']:.2e} (tolerance {ONNX_TOLERANCE:g}): {verdict}")
    print(f"preprocessing and inputs: {out / 'export.json'}")
    return 0 if verdict == "OK" else 1


def cmd_configs(args: argparse.Namespace) -> int:
    from cpcl.config import packaged_configs

    for name, path in packaged_configs().items():
        first = next((line[1:].strip() for line in path.read_text().splitlines() if line.startswith("#")), "")
        print(f"{name:<28} {first}")
    return 0


def cmd_archs(args: argparse.Namespace) -> int:
    from cpcl.model.backbone import list_archs

    print("\n".join(list_archs()))
    return 0


# ----------------------------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cpcl", description="Weakly supervised text-based person re-identification: train on image-caption "
        "pairs without identity labels, evaluate, search.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_data_commands(sub)
    _add_training_commands(sub)
    _add_search_commands(sub)
    _add_export_commands(sub)
    sub.add_parser("configs", help="list packaged configs").set_defaults(func=cmd_configs)
    sub.add_parser("archs", help="list model architectures").set_defaults(func=cmd_archs)
    return parser


def _add_data_commands(sub) -> None:
    from cpcl.data.formats import FORMATS
    from cpcl.data.synth import DOMAINS

    p = sub.add_parser("synth", help="generate the SynthPedes benchmark (CUHK-PEDES format)")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ids", type=int, default=1000, help="number of identities")
    p.add_argument("--val-ids", type=int, default=100)
    p.add_argument("--test-ids", type=int, default=200)
    p.add_argument("--images-per-id", type=float, default=3.0)
    p.add_argument("--height", type=int, default=128)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--domain", default="street", choices=DOMAINS)
    p.add_argument("--workers", type=int, default=None)
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("data", help="dataset tools")
    dsub = p.add_subparsers(dest="data_command", required=True)
    c = dsub.add_parser("check", help="validate a dataset and list every problem")
    c.add_argument("--format", required=True, choices=FORMATS.names())
    c.add_argument("--root", required=True)
    c.add_argument("--skip-images", action="store_true", help="do not decode every image")
    c.set_defaults(func=cmd_data_check)


def _add_run_args(p: argparse.ArgumentParser, config_default: str | None, config_required: bool = True) -> None:
    p.add_argument("--config", required=config_required and config_default is None, default=config_default,
                   help="YAML file or packaged config name (`cpcl configs`)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (repeatable)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument("--no-progress", action="store_true")


def _add_split_args(p: argparse.ArgumentParser) -> None:
    from cpcl.data.formats import FORMATS

    p.add_argument("--checkpoint", required=True)
    p.add_argument("--format", required=True, choices=FORMATS.names())
    p.add_argument("--root", required=True)
    p.add_argument("--split", default="test", choices=["val", "test"])


def _add_training_commands(sub) -> None:
    p = sub.add_parser("train", help="train a model from a config (torchrun-ready)")
    _add_run_args(p, None, config_required=False)
    p.add_argument("--supervised-upper-bound", action="store_true",
                   help="confirm a train.supervised=true run: identity labels replace the clusters")
    p.add_argument("--out", help="run directory")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped run from its last complete epoch")
    p.add_argument("--nproc", type=int, default=1, help="processes on this machine (DDP via torchrun)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a checkpoint on a dataset split")
    _add_split_args(p)
    p.add_argument("--json", help="write the metrics to this JSON file")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("pretrain", help="pretrain the small SynthPedes CLIP and export its weights")
    _add_run_args(p, "pretrain_synthclip_tiny")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--weights-out", help="where to write the weights (default: OUT/synthclip_tiny.pt)")
    p.add_argument("--replace-packaged", action="store_true",
                   help="write them over the packaged cpcl:synthclip-tiny weights, which every later run that "
                        "names cpcl:synthclip-tiny (the demo included) then starts from")
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("demo", help="the synthetic end-to-end demo: data, fine-tuning, results table")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--set", action="append", metavar="KEY=VALUE")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("visualize", help="top-k ranking figures for queries of an evaluation split")
    _add_split_args(p)
    p.add_argument("--queries", type=int, default=8, help="how many captions to show")
    p.add_argument("--seed", type=int, default=0, help="which captions (drawn reproducibly)")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--out", required=True, help="directory for query_*.png and sheet.png")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_visualize)


def _add_encode_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--workers", type=int, default=2, help="image decoding processes")
    p.add_argument("--device", default="auto")


def _add_search_commands(sub) -> None:
    from cpcl.retrieval.kinds import INDEX_KINDS

    p = sub.add_parser("index", help="build and extend gallery indexes for search")
    isub = p.add_subparsers(dest="index_command", required=True)
    c = isub.add_parser("build", help="encode a folder or list of pedestrian crops into a new index")
    c.add_argument("--checkpoint", required=True, help="a cpcl checkpoint (best.pt / last.pt)")
    c.add_argument("--images", required=True, help="a folder (searched recursively) or a file listing image paths")
    c.add_argument("--out", required=True, help="index directory to create")
    c.add_argument("--root", help="root the stored paths are relative to (default: the folder / common parent)")
    c.add_argument("--kind", default="exact", choices=INDEX_KINDS.names(),
                   help="; ".join(f"{name}: {kind.help}" for name, kind in INDEX_KINDS.items()))
    c.add_argument("--nlist", type=int, help="inverted lists for ivf kinds (default about 4*sqrt(N))")
    c.add_argument("--nprobe", type=int, default=16, help="lists searched per query for ivf kinds")
    _add_encode_args(c)
    c.set_defaults(func=cmd_index_build)
    c = isub.add_parser("add", help="append the images of a folder or list that the index does not hold yet")
    c.add_argument("index")
    c.add_argument("--images", required=True)
    c.add_argument("--checkpoint", help="default: the checkpoint that built the index")
    _add_encode_args(c)
    c.set_defaults(func=cmd_index_add)
    c = isub.add_parser("info", help="what an index holds and which model built it")
    c.add_argument("index")
    c.set_defaults(func=cmd_index_info)

    p = sub.add_parser("search", help="search an index by text")
    p.add_argument("index")
    p.add_argument("query", nargs="+", help="one or more descriptions (quote each)")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--grid", help="write a PNG of the top-k crops with ranks and scores")
    p.add_argument("--nprobe", type=int, help="lists searched per query (ivf indexes)")
    p.add_argument("--checkpoint", help="default: the checkpoint that built the index")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("serve", help="serve an index: JSON search API and a search web page")
    p.add_argument("index")
    p.add_argument("--host", default="127.0.0.1", help="default loopback only")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--checkpoint", help="default: the checkpoint that built the index")
    p.add_argument("--device", default="cpu")
    p.add_argument("--example", action="append", help="an example query shown on the page (repeatable)")
    p.set_defaults(func=cmd_serve)


def _add_export_commands(sub) -> None:
    p = sub.add_parser("export-weights", help="write a checkpoint's CLIP weights as an open_clip state dict")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--fp32", action="store_true")
    p.set_defaults(func=cmd_export_weights)

    p = sub.add_parser("export", help="export a checkpoint for other runtimes")
    esub = p.add_subparsers(dest="export_command", required=True)
    c = esub.add_parser("onnx", help="both encoders as ONNX, checked against PyTorch with onnxruntime")
    c.add_argument("--checkpoint", required=True)
    c.add_argument("--out", required=True, help="directory for image_encoder.onnx, text_encoder.onnx, export.json")
    c.add_argument("--opset", type=int, default=18)
    c.set_defaults(func=cmd_export_onnx)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    _setup_logging(args.verbose)
    from cpcl.config import ConfigError
    from cpcl.data.records import DatasetError
    from cpcl.model.backbone import WeightsError
    from cpcl.model.checkpoint import CheckpointError
    from cpcl.retrieval.index import GalleryIndexError

    try:
        return int(args.func(args) or 0)
    except (ConfigError, DatasetError, WeightsError, CheckpointError, GalleryIndexError, ValueError,
            OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; completed checkpoints are kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
