"""Command-line interface: the only module that parses argv, sets up logging, picks the device and prints.

Every command imports what it needs when it runs, so that ``cpcl --help``, ``cpcl configs`` or ``cpcl index
info`` start without loading PyTorch. Exit status: 0 done; 1 a check that ran and failed (``cpcl data check``
found problems, ONNX parity above tolerance); 2 bad usage or input (an option, a config key, a file or a
record at fault: the message names it); 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import os
import sys
import textwrap
import time
from pathlib import Path

from cpcl.errors import CpclError, UsageError
from cpcl.io import release_unused_claims
from cpcl.threads import short_spin_waits
from cpcl.version import __version__

log = logging.getLogger("cpcl")

EXIT_STATUS = ("exit status: 0 done; 1 a check that ran and found problems (cpcl data check, ONNX parity); "
               "2 bad usage or input (the message names the option, key, file or record); 130 interrupted")


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
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device {name}: not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: no CUDA device is available here (use --device cpu or auto)")
    return device


# --------------------------------------------------------------------------------------------- commands


def cmd_synth(args: argparse.Namespace) -> int:
    from cpcl.data.synth import generate_synthpedes

    t0 = time.perf_counter()
    ann = generate_synthpedes(args.out, num_ids=args.ids, seed=args.seed, height=args.height, width=args.width,
                              images_per_id=args.images_per_id, captions_per_image=args.captions_per_image,
                              val_ids=args.val_ids, test_ids=args.test_ids,
                              near_duplicate_fraction=args.near_duplicates, domain=args.domain,
                              caption_noise=args.caption_noise, style=args.style, cameras=args.cameras,
                              uniform_fraction=args.uniforms, workers=args.workers, progress=True,
                              overwrite=args.overwrite)
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

    from cpcl.data.checks import dataset_problems
    from cpcl.data.formats import read_annotations
    from cpcl.data.records import DatasetError

    try:
        ann = read_annotations(args.format, args.root)
    except DatasetError as exc:  # the check ran and found the dataset unreadable: a failed check
        print(f"error: {exc}", file=sys.stderr)
        return 1
    problems = dataset_problems(ann, decode_images=not args.skip_images,
                                progress=lambda items, total: tqdm(items, total=total, desc="decode images",
                                                                   disable=None, leave=False))
    print(f"{ann.name}: {ann.annotation_file}")
    _print_summary(ann.summary())
    dups = ann.duplicate_images()
    if dups:
        print(f"note: {len(dups)} images appear in more than one record (first: {dups[0]})")
    for note in ann.notes:
        print(f"note: {note}")
    if problems:
        print(f"\n{len(problems)} problem(s):")
        for p in problems:
            print(f"  {p}")
        return 1
    print("\nno problems found")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from cpcl.config import load_config, resolve_config_path
    from cpcl.engine.distributed import launched_distributed

    if args.resume:
        if args.config or args.set or args.out or args.overwrite:
            raise UsageError("--resume RUN_DIR continues that run with its own config; drop --config/--set/--out/"
                             "--overwrite")
        out = Path(args.resume)
        if not out.is_dir():
            raise UsageError(f"cannot resume {out}: no such folder (--resume takes the --out of a cpcl train run)")
        if not (out / "last.pt").is_file():
            what = ("no epoch of this run has completed" if (out / "config.yaml").is_file() else
                    "it holds no training run: start one with --config and --out")
            raise UsageError(f"cannot resume {out}: no last.pt ({what})")
        from cpcl.model.checkpoint import checkpoint_config, read_checkpoint

        config = checkpoint_config(read_checkpoint(out / "last.pt"), out / "last.pt")
    else:
        if not args.config or not args.out:
            raise UsageError("cpcl train needs --config and --out (or --resume RUN_DIR)")
        config, out = load_config(resolve_config_path(args.config), args.set or []), Path(args.out)
        if not args.overwrite:
            from cpcl.engine.trainer import claim_run_dir

            claim_run_dir(out)  # before any work, and before --nproc starts its processes
    if args.nproc > 1 and not launched_distributed():
        return _relaunch_with_torchrun(args.nproc, args.argv, out)
    return _run_training(args, config, out)


def _run_training(args: argparse.Namespace, config, out: Path) -> int:
    from cpcl.engine.distributed import shutdown_distributed
    from cpcl.engine.trainer import train
    from cpcl.views.report import results_table

    device = _pick_device(args.device)
    t0 = time.perf_counter()
    try:
        result = train(config, out, device=device, progress=not args.no_progress,
                       allow_identity_labels=args.supervised_upper_bound, resume=bool(args.resume),
                       overwrite=args.overwrite)
    finally:
        shutdown_distributed()
    if result.test:  # rank 0 (the only one when not distributed)
        print(results_table(result.test, title=f"test metrics ({out}, best epoch {result.best_epoch}, "
                                               f"{time.perf_counter() - t0:.0f}s)"))
    return 0


def _relaunch_with_torchrun(nproc: int, argv: list[str], out: Path) -> int:
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
    code = subprocess.call(cmd)
    if code:
        print(f"error: a training process failed (exit status {code}; its message is above); the completed "
              f"epochs are kept: `cpcl train --resume {out} --nproc {nproc}` continues", file=sys.stderr)
    return code


def cmd_eval(args: argparse.Namespace) -> int:
    from cpcl.evaluation.evaluate import load_eval_split
    from cpcl.views.report import results_table

    device = _pick_device(args.device)
    model, split, payload = load_eval_split(args.checkpoint, args.format, args.root, args.split, device,
                                            args.val_ids_from_train)
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
    from cpcl.io import claim_output_file
    from cpcl.model.backbone import BUILTIN_WEIGHTS
    from cpcl.model.checkpoint import export_clip_weights

    if args.replace_packaged and args.weights_out:
        raise UsageError("--replace-packaged writes the packaged weights; drop --weights-out")
    packaged = BUILTIN_WEIGHTS["synthclip-tiny"][1]
    target = packaged if args.replace_packaged else Path(args.weights_out or Path(args.out) / "synthclip_tiny.pt")
    if not args.replace_packaged:  # refused now, not after the training
        claim_output_file(target, overwrite=args.overwrite, holds="pretrained weights")
    config = load_config(resolve_config_path(args.config), args.set or [])
    device = _pick_device(args.device)
    result = train(config, args.out, device=device, progress=not args.no_progress, overwrite=args.overwrite)
    best = Path(args.out) / ("best.pt" if result.best_epoch is not None else "last.pt")
    export_clip_weights(best, target, overwrite=True)
    print(f"pretrained weights (epoch {result.best_epoch}) written to {target}")
    if args.replace_packaged:
        print("they replace the packaged cpcl:synthclip-tiny weights: every later run that starts from "
              "cpcl:synthclip-tiny (the demo's configs included) starts from these")
    else:
        print(f"use them with --set model.pretrained={target} (cpcl:synthclip-tiny is unchanged)")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from cpcl.demo import run_demo
    from cpcl.views.report import results_table

    device = _pick_device(args.device)
    demo = run_demo(args.out, args.set or [], device=device, progress=not args.no_progress, overwrite=args.overwrite)
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


def cmd_sweep(args: argparse.Namespace) -> int:
    from cpcl.config import resolve_config_path
    from cpcl.selection import parse_grid, run_selection

    device = _pick_device(args.device)
    selection = run_selection(resolve_config_path(args.config), parse_grid(args.grid), args.out,
                              base_overrides=args.set or [], limit=args.trials, seed=args.seed, device=device,
                              overwrite=args.overwrite, progress=not args.no_progress,
                              also=[resolve_config_path(c) for c in args.also or []], score=args.score)
    print((Path(args.out) / "selection.md").read_text())
    if selection.chosen is None:
        raise UsageError(f"no trial could be scored on val ({args.score}; see the table above)")
    return 0


def cmd_export_weights(args: argparse.Namespace) -> int:
    from cpcl.model.checkpoint import export_clip_weights

    path = export_clip_weights(args.checkpoint, args.out, half=not args.fp32, overwrite=args.overwrite)
    print(f"wrote {path}")
    return 0


def cmd_index_build(args: argparse.Namespace) -> int:
    from cpcl.retrieval.retriever import load_retriever
    from cpcl.retrieval.service import build_index

    device = _pick_device(args.device)
    retriever = load_retriever(args.checkpoint, device, batch_size=args.batch_size, num_workers=args.workers)
    t0 = time.perf_counter()
    unreadable = [] if args.skip_unreadable else None
    with _hint_skip_unreadable():
        index = build_index(retriever, args.images, args.out, root=args.root, kind=args.kind, nlist=args.nlist,
                            nprobe=args.nprobe, progress=not args.no_progress, overwrite=args.overwrite,
                            uri=_milvus_uri(args),
                            unreadable=unreadable)
    wall = time.perf_counter() - t0
    print(f"indexed {len(index)} images under {index.root} in {wall:.1f}s ({len(index) / wall:.0f} images/s) "
          f"-> {args.out} ({index.kind}, model {index.fingerprint})")
    _report_unreadable(unreadable)
    return 0


@contextlib.contextmanager
def _hint_skip_unreadable():
    """An image file that cannot be read: its error, and the option that leaves such files out."""
    from cpcl.retrieval.retriever import UnreadableImageError

    try:
        yield
    except UnreadableImageError as exc:
        raise UnreadableImageError(f"{exc} (--skip-unreadable leaves such files out and names them)") from None


def _report_unreadable(unreadable: list[Path] | None, shown: int = 10) -> None:
    """Name the image files ``--skip-unreadable`` left out (the first ``shown``, and how many more)."""
    if unreadable:
        more = f" ... and {len(unreadable) - shown} more" if len(unreadable) > shown else ""
        print(f"left out {len(unreadable)} image(s) that could not be read: "
              f"{', '.join(map(str, unreadable[:shown]))}{more}", file=sys.stderr)


def _milvus_uri(args: argparse.Namespace) -> str | None:
    """``--uri`` for ``--backend milvus`` (where it is required), None for the file backend (where it is refused)."""
    if args.backend == "milvus" and not args.uri:
        raise UsageError("--backend milvus needs --uri: a Milvus Lite file (gallery.db) or a server "
                         "(http://HOST:19530)")
    if args.backend == "files" and args.uri:
        raise UsageError(f"--uri {args.uri} is for --backend milvus; an index of the files backend is a directory")
    return args.uri if args.backend == "milvus" else None


def cmd_index_add(args: argparse.Namespace) -> int:
    from cpcl.retrieval.retriever import load_retriever
    from cpcl.retrieval.service import add_images, open_gallery

    index = open_gallery(args.index, _milvus_uri(args))
    device = _pick_device(args.device)
    retriever = load_retriever(index.query_checkpoint(args.checkpoint), device, batch_size=args.batch_size,
                               num_workers=args.workers)
    unreadable = [] if args.skip_unreadable else None
    with _hint_skip_unreadable():
        added, already = add_images(retriever, index, args.images, progress=not args.no_progress,
                                    unreadable=unreadable)
    print(f"added {added} images ({already} already indexed); {args.index} now holds {len(index)}")
    _report_unreadable(unreadable)
    return 0


def cmd_index_info(args: argparse.Namespace) -> int:
    from cpcl.retrieval.index import open_gallery

    index = open_gallery(args.index, _milvus_uri(args))
    m = index.manifest
    print(f"{index.location}: {len(index)} images under {index.root}")
    print(f"kind {index.kind}" + (f" (nlist {m['nlist']}, nprobe {m['nprobe']})" if index.kind != "exact" else ""))
    print(f"model {index.fingerprint}: {m['model']['arch']}, {m['dim']}-d, built from {index.checkpoint}")
    return 0


def _open_service(args: argparse.Namespace, **batching):
    from cpcl.retrieval.service import SearchService

    return SearchService.open(args.index, args.checkpoint, _pick_device(args.device), text_encoder=args.text_encoder,
                              uri=_milvus_uri(args), **batching)


def cmd_search(args: argparse.Namespace) -> int:
    service = _open_service(args)
    results = service.search_many(args.query, args.k, nprobe=args.nprobe)
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
        from cpcl.views.figures import RankedImage, ranking_row, save_png, stack

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

    if args.max_batch < 1 or args.batch_window_ms < 0:
        raise UsageError(f"--max-batch must be at least 1 and --batch-window-ms at least 0, got {args.max_batch} "
                         f"and {args.batch_window_ms}")
    batching = {} if args.max_batch == 1 else {"batch_window_ms": args.batch_window_ms, "max_batch": args.max_batch}
    token = _serve_token(args.token_file)
    service = _open_service(args, **batching)
    service.warm_up()
    gc.freeze()  # the model, index and libraries are long-lived: a full collection no longer walks them (~0.2 s)
    if token is None and args.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("serving on %s: anyone who can reach this address can search the gallery and read its "
                    "images (pass --token-file FILE to require a token)", args.host)
    app = build_app(service, examples=args.example or EXAMPLE_QUERIES, token=token)
    print(f"serving {len(service.index)} images from {args.index} on http://{args.host}:{args.port}/", flush=True)
    if token is not None:
        where = args.token_file or "$CPCL_SERVE_TOKEN"
        print(f"a token is required: open http://{args.host}:{args.port}/?token=TOKEN once in a browser, or send "
              f"'Authorization: Bearer TOKEN' (TOKEN: the one in {where})", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0


def _serve_token(token_file: str | None) -> str | None:
    """The token ``cpcl serve`` requires: the contents of ``--token-file``, else $CPCL_SERVE_TOKEN, else none."""
    if token_file is None:
        source, token = "$CPCL_SERVE_TOKEN", os.environ.get("CPCL_SERVE_TOKEN", "").strip()
        if not token:
            return None
    else:
        source = f"--token-file {token_file}"
        try:
            token = Path(token_file).read_text().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"{source}: cannot read it ({exc})") from None
    if not token or any(c.isspace() for c in token):
        raise UsageError(f"{source}: expected one token without spaces, e.g. the output of "
                         "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'")
    return token


def cmd_visualize(args: argparse.Namespace) -> int:
    from cpcl.views.rankings import write_ranking_figures

    summary = write_ranking_figures(args.checkpoint, args.format, args.root, args.out, split=args.split,
                                    queries=args.queries, seed=args.seed, k=args.k, device=_pick_device(args.device),
                                    batch_size=args.batch_size, progress=True, overwrite=args.overwrite,
                                    val_ids_from_train=args.val_ids_from_train)
    print(f"{summary['queries']} queries of the {args.split} split ({summary['captions']} captions, "
          f"{summary['images']} images): rank 1 correct for {summary['rank1_correct']}; "
          "green = same person, red = another person")
    print(f"wrote {args.out}/query_*.png and {summary['sheet']}")
    return 0


def cmd_clusters(args: argparse.Namespace) -> int:
    from cpcl.views.clusters import render_clusters

    summary = render_clusters(args.run, args.epoch, args.out, modality=args.modality, order=args.order,
                              clusters=args.clusters, per_cluster=args.per_cluster, overwrite=args.overwrite)
    purity = "" if summary["mean_purity"] is None else f", mean purity {100 * summary['mean_purity']:.0f}%"
    print(f"epoch {summary['epoch']}: {summary['clusters']} {summary['modality']} clusters, {summary['outliers']} "
          f"outliers, {summary['recovered']} recovered by OPLM{purity}; the {summary['shown']} "
          f"{'largest' if summary['order'] == 'largest' else 'least pure'} drawn")
    print(f"wrote {summary['out']}/index.html and {len(summary['sheets'])} PNG sheets")
    return 0


ONNX_TOLERANCE = 1e-4


def cmd_export_onnx(args: argparse.Namespace) -> int:
    try:
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise UsageError(f"ONNX export needs the onnx extra ({exc.name} is missing): "
                         "pip install 'cpcl[onnx]'") from None
    from cpcl.model.export import export_onnx

    report = export_onnx(args.checkpoint, args.out, opset=args.opset, overwrite=args.overwrite, int8=args.int8)
    out = Path(args.out)
    for name, file in report["files"].items():
        print(f"{name}: {out / file} ({(out / file).stat().st_size / 2**20:.1f} MB)")
    parity = report["max_abs_diff_vs_pytorch"]
    worst = max(parity["image_encoder"], parity["text_encoder"])
    verdict = "OK" if worst < ONNX_TOLERANCE else "FAILED"
    print(f"parity with PyTorch (onnxruntime, max |difference| of unit embeddings): image "
          f"{parity['image_encoder']:.2e}, text {parity['text_encoder']:.2e} (tolerance {ONNX_TOLERANCE:g}): {verdict}")
    if args.int8:
        print(f"int8 text encoder: smallest cosine to PyTorch's features {parity['text_encoder_int8_min_cosine']:.4f} "
              "(an approximation: measure its recall on your queries, see benchmarks/query_encoder.py)")
    query_encoder = out / report["files"].get("text_encoder_int8", "text_encoder.onnx")
    print(f"search with it: cpcl search INDEX 'a query' --text-encoder {query_encoder}")
    print(f"preprocessing and inputs: {out / 'export.json'}")
    return 0 if verdict == "OK" else 1


def cmd_configs(args: argparse.Namespace) -> int:
    import shutil

    from cpcl.config import config_description, packaged_configs

    width = max(60, shutil.get_terminal_size((100, 20)).columns)
    for name, path in packaged_configs().items():
        print(name)
        print(textwrap.fill(config_description(path), width=width, initial_indent="    ",
                            subsequent_indent="    "))
    return 0


def cmd_archs(args: argparse.Namespace) -> int:
    from cpcl.model.backbone import list_archs

    print("\n".join(list_archs()))
    return 0


# ----------------------------------------------------------------------------------------------- parser


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Help with every option's default, except where there is none to show."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False) or action.default is argparse.SUPPRESS:
            return action.help or ""
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cpcl", formatter_class=_Formatter, epilog=EXIT_STATUS,
        description="Weakly supervised text-based person re-identification: train on image-caption pairs without "
                    "identity labels, evaluate, search.")
    parser.add_argument("--version", action="version", version=f"cpcl {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging, and tracebacks with errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_data_commands(sub)
    _add_training_commands(sub)
    _add_search_commands(sub)
    _add_export_commands(sub)
    _command(sub, "configs", "list the packaged configs, with what each is for").set_defaults(func=cmd_configs)
    _command(sub, "archs", "list the model architectures").set_defaults(func=cmd_archs)
    return parser


def _command(sub, name: str, help: str, interrupted: str = "stopped before it finished") -> argparse.ArgumentParser:
    """A subcommand; ``interrupted`` is what a Ctrl-C in it leaves behind, said after "interrupted; "."""
    p = sub.add_parser(name, help=help, description=help[0].upper() + help[1:] + ".", formatter_class=_Formatter,
                       epilog=EXIT_STATUS)
    p.set_defaults(interrupted=interrupted)
    return p


RUN_KEPT = "completed checkpoints are kept (cpcl train --resume RUN_DIR continues a run)"


def _whole(low: int, high: int | None = None):
    """An option's type: a whole number of at least ``low`` (and at most ``high``); anything else is refused
    by argparse with the option named, before the command does any work."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low or (high is not None and value > high):
            bound = f"at least {low}" if high is None else f"between {low} and {high}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {value}")
        return value

    return parse


def _fraction(low: float = 0.0, high: float = 1.0, low_open: bool = False):
    """An option's type: a finite number within [``low``, ``high``] (``(low, high]`` with ``low_open``)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not (low < value if low_open else low <= value) or not value <= high:
            raise argparse.ArgumentTypeError(f"must be {'above' if low_open else 'at least'} {low:g} and at most "
                                             f"{high:g}, got {text}")
        return value

    return parse


def _add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:N")


def _add_overwrite(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--overwrite", action="store_true", help=f"replace {what} already in --out (refused otherwise)")


def _add_data_commands(sub) -> None:
    from cpcl.data.formats import FORMATS
    from cpcl.data.synth import DOMAINS, STYLES

    p = _command(sub, "synth", "generate the SynthPedes benchmark (CUHK-PEDES format)")
    p.add_argument("--out", required=True, help="folder to write the dataset into")
    p.add_argument("--seed", type=int, default=0, help="generator seed: the dataset is a pure function of it")
    p.add_argument("--ids", type=_whole(1), default=1000, help="number of identities")
    p.add_argument("--val-ids", type=_whole(0), default=100, help="identities held out for val")
    p.add_argument("--test-ids", type=_whole(0), default=200, help="identities held out for test")
    p.add_argument("--images-per-id", type=_fraction(0, 8, low_open=True), default=3.0,
                   help="mean images per identity (at most 8)")
    p.add_argument("--captions-per-image", type=_whole(1), default=2, help="captions of each image")
    p.add_argument("--near-duplicates", type=_fraction(), default=0.15,
                   help="share of identities that differ from another in one attribute only")
    p.add_argument("--caption-noise", type=_fraction(), default=0.08,
                   help="how often an annotator writes a confusable colour (navy as black)")
    p.add_argument("--height", type=_whole(16), default=128, help="image height in pixels")
    p.add_argument("--width", type=_whole(16), default=64, help="image width in pixels")
    p.add_argument("--domain", default="street", choices=DOMAINS,
                   help="scenes of the classic style, and the annotators' vocabulary")
    p.add_argument("--style", default="classic", choices=STYLES,
                   help="how persons are drawn: classic (eye level) or cctv (a high surveillance camera, other "
                        "body shapes and palette)")
    p.add_argument("--cameras", type=_whole(0), default=0,
                   help="classic style: every image taken by one of this many fixed cameras, each with its own "
                        "scene and colour cast that no caption mentions (0: a scene and lighting per image)")
    p.add_argument("--uniforms", type=_fraction(), default=0.0,
                   help="share of persons who wear the outfit of an earlier one, told apart only by hair, skin, "
                        "build, headwear and glasses")
    p.add_argument("--workers", type=_whole(1), default=None, help="rendering processes (default: up to 4)")
    _add_overwrite(p, "a dataset")
    p.set_defaults(func=cmd_synth)

    p = _command(sub, "data", "dataset tools")
    dsub = p.add_subparsers(dest="data_command", required=True, metavar="COMMAND")
    c = _command(dsub, "check", "validate a dataset and list every problem (records and images)")
    c.add_argument("--format", required=True, choices=FORMATS.names(), help="annotation format")
    c.add_argument("--root", required=True, help="data root or dataset folder")
    c.add_argument("--skip-images", action="store_true", help="do not decode every image")
    c.set_defaults(func=cmd_data_check)


def _add_run_args(p: argparse.ArgumentParser, config_default: str | None, config_required: bool = True) -> None:
    p.add_argument("--config", required=config_required and config_default is None, default=config_default,
                   help="YAML file or packaged config name (`cpcl configs`)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (repeatable)")
    _add_device(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _add_split_args(p: argparse.ArgumentParser) -> None:
    from cpcl.data.formats import FORMATS

    p.add_argument("--checkpoint", required=True, help="a cpcl checkpoint (best.pt / last.pt)")
    p.add_argument("--format", required=True, choices=FORMATS.names(), help="annotation format")
    p.add_argument("--root", required=True, help="data root or dataset folder")
    p.add_argument("--split", default="test", choices=["val", "test"], help="which split to rank")
    p.add_argument("--val-ids-from-train", type=_whole(0), default=0, metavar="N",
                   help="the val split is N persons held out of the training split, as a run with "
                        "data.val_ids_from_train=N held them out (datasets without a val split)")


def _add_training_commands(sub) -> None:
    p = _command(sub, "train", "train a model from a config (torchrun-ready)", RUN_KEPT)
    _add_run_args(p, None, config_required=False)
    p.add_argument("--supervised-upper-bound", action="store_true",
                   help="confirm a train.supervised=true run: identity labels replace the clusters")
    p.add_argument("--out", help="run directory (required unless --resume)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped run from its last complete epoch")
    p.add_argument("--nproc", type=_whole(1), default=1, help="processes on this machine (DDP via torchrun)")
    _add_overwrite(p, "a run")
    p.set_defaults(func=cmd_train)

    p = _command(sub, "eval", "evaluate a checkpoint on a dataset split")
    _add_split_args(p)
    p.add_argument("--json", help="also write the metrics to this JSON file")
    p.add_argument("--batch-size", type=_whole(1), default=256, help="encoding batch size")
    _add_device(p)
    p.set_defaults(func=cmd_eval)

    p = _command(sub, "pretrain", "pretrain the small SynthPedes CLIP and export its weights", RUN_KEPT)
    _add_run_args(p, "pretrain_synthclip_tiny")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--weights-out", help="where to write the weights (default: OUT/synthclip_tiny.pt)")
    p.add_argument("--replace-packaged", action="store_true",
                   help="write them over the packaged cpcl:synthclip-tiny weights, which every later run that "
                        "names cpcl:synthclip-tiny (the demo included) then starts from")
    _add_overwrite(p, "a run and its weights")
    p.set_defaults(func=cmd_pretrain)

    p = _command(sub, "demo", "the synthetic end-to-end demo: data, fine-tuning, results table, search index",
                 "run it again with --overwrite to start over")
    p.add_argument("--out", default="runs/demo", help="demo directory")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a key of both configs")
    _add_device(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    _add_overwrite(p, "an earlier demo")
    p.set_defaults(func=cmd_demo)

    p = _command(sub, "sweep", "choose settings on val only (identities, or label-free): train a grid of "
                               "trials, evaluate the best on test once",
                 "finished trials are kept: the same cpcl sweep command continues with the next one")
    _add_run_args(p, None)
    p.add_argument("--grid", action="append", required=True, metavar="KEY=V1,V2,...",
                   help="values to try for a config key (repeatable; trials are their combinations)")
    p.add_argument("--trials", type=_whole(1), help="train this many combinations, drawn with --seed (default: all)")
    p.add_argument("--seed", type=int, default=0, help="which combinations --trials draws")
    p.add_argument("--also", action="append", metavar="CONFIG",
                   help="also train this config as it is, as one more trial (repeatable); with the baseline "
                        "(synthpedes_itc) the choice is never a setting that does worse on val than it")
    p.add_argument("--score", default="val", choices=["val", "label-free"],
                   help="what scores a trial: val identities (R1 of its best-on-val checkpoint), or label-free "
                        "(its best train.label_free_score on held-out pairs; no identity read)")
    p.add_argument("--out", required=True, help="directory for trial-NNN/ runs and selection.{md,json}")
    _add_overwrite(p, "a finished selection")
    p.set_defaults(func=cmd_sweep)

    p = _command(sub, "visualize", "top-k ranking figures for queries of an evaluation split")
    _add_split_args(p)
    p.add_argument("--queries", type=_whole(1), default=8, help="how many captions to show")
    p.add_argument("--seed", type=int, default=0, help="which captions (drawn reproducibly)")
    p.add_argument("-k", type=_whole(1), default=10, help="images per query")
    p.add_argument("--out", required=True, help="directory for query_*.png and sheet.png")
    p.add_argument("--batch-size", type=_whole(1), default=256, help="encoding batch size")
    _add_device(p)
    _add_overwrite(p, "ranking figures")
    p.set_defaults(func=cmd_visualize)

    p = _command(sub, "clusters", "browse the pseudo identities an epoch of a run trained on (PNG sheets and a page)")
    p.add_argument("run", help="a run directory (the --out of cpcl train)")
    p.add_argument("--epoch", type=_whole(1), help="epoch whose labels to draw (default: the last one saved)")
    p.add_argument("--modality", default="image", choices=["image", "text"], help="whose clusters to draw")
    p.add_argument("--order", default="largest", choices=["largest", "impure"],
                   help="largest first, or least pure first (needs held-out identities on the records)")
    p.add_argument("--clusters", type=int, default=40, help="how many clusters to draw")
    p.add_argument("--per-cluster", type=int, default=10, help="images drawn per cluster at most")
    p.add_argument("--out", help="output directory (default RUN/clusters/epoch_NNN_MODALITY)")
    _add_overwrite(p, "a cluster view")
    p.set_defaults(func=cmd_clusters)


def _add_encode_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch-size", type=_whole(1), default=128, help="encoding batch size")
    p.add_argument("--workers", type=_whole(0), default=2, help="image decoding processes")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--skip-unreadable", action="store_true",
                   help="leave out image files that cannot be read, and name them (default: stop at the first)")
    _add_device(p)


def _add_text_encoder(p: argparse.ArgumentParser) -> None:
    p.add_argument("--text-encoder", metavar="ONNX",
                   help="encode queries with this ONNX text tower (text_encoder.onnx or text_encoder.int8.onnx from "
                        "`cpcl export onnx` of the same checkpoint) on onnxruntime instead of PyTorch "
                        "(default: PyTorch)")


def _add_backend(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", default="files", choices=["files", "milvus"],
                   help="where the index lives: files in a directory, or a Milvus collection (then INDEX / --out is "
                        "the collection name)")
    p.add_argument("--uri", help="with --backend milvus: a Milvus Lite file (gallery.db, embedded, no server) or a "
                                 "server address (http://HOST:19530)")


def _add_search_commands(sub) -> None:
    from cpcl.retrieval.kinds import INDEX_KINDS

    p = _command(sub, "index", "build and extend gallery indexes for search")
    isub = p.add_subparsers(dest="index_command", required=True, metavar="COMMAND")
    c = _command(isub, "build", "encode a folder or list of pedestrian crops into a new index",
                 "no index was written (it is written once every image is encoded)")
    c.add_argument("--checkpoint", required=True, help="a cpcl checkpoint (best.pt / last.pt)")
    c.add_argument("--images", required=True, help="a folder (searched recursively) or a file listing image paths")
    c.add_argument("--out", required=True, help="index directory to create (or Milvus collection)")
    c.add_argument("--root", help="root the stored paths are relative to (default: the folder / common parent)")
    c.add_argument("--kind", default="exact", choices=INDEX_KINDS.names(),
                   help="; ".join(f"{name}: {kind.help}" for name, kind in INDEX_KINDS.items()))
    c.add_argument("--nlist", type=_whole(1), help="inverted lists for ivf kinds (default about sqrt(N))")
    c.add_argument("--nprobe", type=_whole(1), default=16, help="lists searched per query for ivf kinds")
    _add_backend(c)
    _add_encode_args(c)
    _add_overwrite(c, "an index")
    c.set_defaults(func=cmd_index_build)
    c = _command(isub, "add", "append the images of a folder or list that the index does not hold yet",
                 "the index is as it was, or (Milvus) holds the chunks finished so far: the same add continues")
    c.add_argument("index", help="index directory (or Milvus collection)")
    c.add_argument("--images", required=True, help="a folder (searched recursively) or a file listing image paths")
    c.add_argument("--checkpoint", help="default: the checkpoint that built the index")
    _add_backend(c)
    _add_encode_args(c)
    c.set_defaults(func=cmd_index_add)
    c = _command(isub, "info", "what an index holds and which model built it")
    c.add_argument("index", help="index directory (or Milvus collection)")
    _add_backend(c)
    c.set_defaults(func=cmd_index_info)

    p = _command(sub, "search", "search an index by text")
    p.add_argument("index", help="index directory (or Milvus collection)")
    _add_backend(p)
    p.add_argument("query", nargs="+", help="one or more descriptions (quote each)")
    p.add_argument("-k", type=int, default=10, help="results per query")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--grid", help="write a PNG of the top-k crops with ranks and scores")
    p.add_argument("--nprobe", type=_whole(1), help="lists searched per query (ivf indexes; default: the index's)")
    p.add_argument("--checkpoint", help="default: the checkpoint that built the index")
    _add_text_encoder(p)
    _add_device(p)
    p.set_defaults(func=cmd_search)

    p = _command(sub, "serve", "serve an index: JSON search API and a search web page")
    p.add_argument("index", help="index directory (or Milvus collection)")
    _add_backend(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (loopback: this machine only)")
    p.add_argument("--port", type=_whole(1, 65535), default=8000, help="port to listen on")
    p.add_argument("--checkpoint", help="default: the checkpoint that built the index")
    _add_text_encoder(p)
    _add_device(p)
    p.add_argument("--example", action="append", help="an example query shown on the page (repeatable)")
    p.add_argument("--token-file", help="require the token in this file from every client (default: "
                                        "$CPCL_SERVE_TOKEN if set, else no token)")
    p.add_argument("--max-batch", type=_whole(1), default=32,
                   help="concurrent queries encoded and searched as one batch at most (1: no batching)")
    p.add_argument("--batch-window-ms", type=_fraction(0, 1000), default=2.0,
                   help="while queries arrive concurrently, wait this long for more to join a batch (a lone client "
                        "never waits)")
    p.set_defaults(func=cmd_serve)


def _add_export_commands(sub) -> None:
    p = _command(sub, "export", "export a checkpoint for other tools and runtimes")
    esub = p.add_subparsers(dest="export_command", required=True, metavar="COMMAND")
    c = _command(esub, "weights", "a checkpoint's CLIP weights as an open_clip state dict (model.pretrained)")
    c.add_argument("--checkpoint", required=True, help="a cpcl checkpoint (best.pt / last.pt)")
    c.add_argument("--out", required=True, help="weights file to write")
    c.add_argument("--fp32", action="store_true", help="keep float32 (default: float16, half the size)")
    c.add_argument("--overwrite", action="store_true", help="replace an existing --out file (refused otherwise)")
    c.set_defaults(func=cmd_export_weights)
    c = _command(esub, "onnx", "both encoders as ONNX, checked against PyTorch with onnxruntime")
    c.add_argument("--checkpoint", required=True, help="a cpcl checkpoint (best.pt / last.pt)")
    c.add_argument("--out", required=True, help="directory for image_encoder.onnx, text_encoder.onnx, export.json")
    c.add_argument("--opset", type=int, default=18, help="ONNX opset")
    c.add_argument("--int8", action="store_true",
                   help="also write text_encoder.int8.onnx: the text tower with 8-bit weights, a fast query encoder")
    _add_overwrite(c, "an export")
    c.set_defaults(func=cmd_export_onnx)


def main(argv: list[str] | None = None) -> int:
    short_spin_waits()  # before any command imports PyTorch
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    _setup_logging(args.verbose)
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:  # the reader went away (`cpcl configs | head`): nothing left to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so that the final flush is quiet
        return 0
    except (CpclError, ValueError, OSError) as exc:  # bad usage or input: the message names what is at fault
        release_unused_claims()
        if args.verbose:
            log.exception("error")
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        release_unused_claims()
        print(f"interrupted; {args.interrupted}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
