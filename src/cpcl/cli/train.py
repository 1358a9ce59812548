"""Commands that train and evaluate: ``train``, ``eval``, ``pretrain``, ``demo``, ``sweep``; and the listings
``configs`` and ``archs``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import textwrap
import time
from pathlib import Path

from cpcl.cli.common import (
    RUN_KEPT,
    add_device,
    add_output_file,
    add_overwrite,
    add_run_args,
    add_split_args,
    command,
    output_folder,
    pick_device,
    whole,
)
from cpcl.errors import UsageError
from cpcl.io import ensure_free

log = logging.getLogger("cpcl")


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
        ensure_free(out, "a training run")
        if not (out / "last.pt").is_file():
            what = ("no epoch of this run has completed" if (out / "config.yaml").is_file() else
                    "it holds no training run: start one with --config and --out")
            raise UsageError(f"cannot resume {out}: no last.pt ({what})")
        config = _run_config(out)
    else:
        if not args.config or not args.out:
            raise UsageError("cpcl train needs --config and --out (or --resume RUN_DIR)")
        config, out = load_config(resolve_config_path(args.config), args.set or []), Path(args.out)
        ensure_free(out, "a training run")  # held by another process: said before anything of it is touched
        if not args.overwrite:
            from cpcl.engine.trainer import claim_run_dir

            claim_run_dir(out)  # before any work, and before --nproc starts its processes
    if args.nproc > 1 and not launched_distributed():
        return _relaunch_with_torchrun(args.nproc, args.argv, out)
    return _run_training(args, config, out)


def _run_config(out: Path):
    """The config a run was started with, from its ``config.yaml`` (the trainer reads ``last.pt`` once, for the
    weights and the state); a run folder without one falls back to the config inside ``last.pt``."""
    from cpcl.config import load_config

    if (out / "config.yaml").is_file():
        return load_config(out / "config.yaml")
    from cpcl.model.checkpoint import checkpoint_config, read_checkpoint

    log.warning("%s has no config.yaml: reading the config from last.pt", out)
    return checkpoint_config(read_checkpoint(out / "last.pt"), out / "last.pt")


def _run_training(args: argparse.Namespace, config, out: Path) -> int:
    from cpcl.engine.distributed import shutdown_distributed
    from cpcl.engine.trainer import train
    from cpcl.views.report import results_table

    device = pick_device(args.device)
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

    device = pick_device(args.device)
    model, split, payload = load_eval_split(args.checkpoint, args.format, args.root, args.split, device,
                                            args.val_ids_from_train)
    scores = split.report(model, device, args.batch_size, progress=True)
    if not split.has_ids:
        log.info("the %s split of %s is scored on %s", args.split, args.root, split.scored_as)
    print(results_table({Path(args.checkpoint).name: scores}, title=f"{args.split} split of {args.root}"))
    if args.json:
        from cpcl.io import atomic_write_text

        atomic_write_text(args.json, json.dumps({"checkpoint": str(args.checkpoint), "split": args.split,
                                                  "epoch": payload.get("epoch"), **scores}, indent=2))
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
    device = pick_device(args.device)
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

    device = pick_device(args.device)
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

    device = pick_device(args.device)
    selection = run_selection(resolve_config_path(args.config), parse_grid(args.grid), args.out,
                              base_overrides=args.set or [], limit=args.trials, seed=args.seed, device=device,
                              overwrite=args.overwrite, progress=not args.no_progress,
                              also=[resolve_config_path(c) for c in args.also or []], score=args.score)
    print((Path(args.out) / "selection.md").read_text())
    if selection.chosen is None:
        raise UsageError(f"no trial could be scored on val ({args.score}; see the table above)")
    return 0


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


def register(sub) -> None:
    p = command(sub, "train", "train a model from a config (torchrun-ready)", RUN_KEPT)
    add_run_args(p, None, config_required=False)
    p.add_argument("--supervised-upper-bound", action="store_true",
                   help="confirm a train.supervised=true run: identity labels replace the clusters")
    p.add_argument("--out", type=output_folder, help="run directory (required unless --resume)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped run from its last complete epoch")
    p.add_argument("--nproc", type=whole(1), default=1, help="processes on this machine (DDP via torchrun)")
    add_overwrite(p, "a run")
    p.set_defaults(func=cmd_train)

    p = command(sub, "eval", "evaluate a checkpoint on a dataset split")
    add_split_args(p)
    add_output_file(p, "--json", "also write the metrics to this JSON file", (".json",))
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json file (refused otherwise)")
    p.add_argument("--batch-size", type=whole(1), default=256, help="encoding batch size")
    add_device(p)
    p.set_defaults(func=cmd_eval)

    p = command(sub, "pretrain", "pretrain the small SynthPedes CLIP and export its weights", RUN_KEPT)
    add_run_args(p, "pretrain_synthclip_tiny")
    p.add_argument("--out", type=output_folder, required=True, help="run directory")
    add_output_file(p, "--weights-out", "where to write the weights (default: OUT/synthclip_tiny.pt)", (".pt",))
    p.add_argument("--replace-packaged", action="store_true",
                   help="write them over the packaged cpcl:synthclip-tiny weights, which every later run that "
                        "names cpcl:synthclip-tiny (the demo included) then starts from")
    add_overwrite(p, "a run and its weights")
    p.set_defaults(func=cmd_pretrain)

    p = command(sub, "demo", "the synthetic end-to-end demo: data, fine-tuning, results table, search index",
                 "run it again with --overwrite to start over")
    p.add_argument("--out", type=output_folder, default="runs/demo", help="demo directory")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a key of both configs")
    add_device(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_overwrite(p, "an earlier demo")
    p.set_defaults(func=cmd_demo)

    p = command(sub, "sweep", "choose settings on val only (identities, or label-free): train a grid of "
                               "trials, evaluate the best on test once",
                 "finished trials are kept: the same cpcl sweep command continues with the next one")
    add_run_args(p, None)
    p.add_argument("--grid", action="append", required=True, metavar="KEY=V1,V2,...",
                   help="values to try for a config key (repeatable; trials are their combinations)")
    p.add_argument("--trials", type=whole(1), help="train this many combinations, drawn with --seed (default: all)")
    p.add_argument("--seed", type=whole(0), default=0, help="which combinations --trials draws")
    p.add_argument("--also", action="append", metavar="CONFIG",
                   help="also train this config as it is, as one more trial (repeatable); with the baseline "
                        "(synthpedes_itc) the choice is never a setting that does worse on val than it")
    p.add_argument("--score", default="val", choices=["val", "label-free"],
                   help="what scores a trial: val identities (R1 of its best-on-val checkpoint), or label-free "
                        "(its best train.label_free_score on held-out pairs; no identity read)")
    p.add_argument("--out", type=output_folder, required=True,
                   help="directory for trial-NNN/ runs and selection.{md,json}")
    add_overwrite(p, "a finished selection")
    p.set_defaults(func=cmd_sweep)


def register_listings(sub) -> None:
    command(sub, "configs", "list the packaged configs, with what each is for").set_defaults(func=cmd_configs)
    command(sub, "archs", "list the model architectures").set_defaults(func=cmd_archs)
