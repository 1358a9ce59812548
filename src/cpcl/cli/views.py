"""Commands that show and export a run: ``visualize``, ``clusters``, ``export weights|onnx``."""

from __future__ import annotations

import argparse
from pathlib import Path

from cpcl.cli.common import (
    add_device,
    add_output_file,
    add_overwrite,
    add_split_args,
    command,
    output_folder,
    pick_device,
    whole,
)
from cpcl.errors import UsageError


def cmd_visualize(args: argparse.Namespace) -> int:
    from cpcl.views.rankings import write_ranking_figures

    summary = write_ranking_figures(args.checkpoint, args.format, args.root, args.out, split=args.split,
                                    queries=args.queries, seed=args.seed, k=args.k, device=pick_device(args.device),
                                    batch_size=args.batch_size, progress=True, overwrite=args.overwrite,
                                    val_ids_from_train=args.val_ids_from_train)
    print(f"{summary['queries']} queries of the {args.split} split ({summary['captions']} captions, "
          f"{summary['images']} images): rank 1 correct for {summary['rank1_correct']}; "
          f"green = {summary['correct_means']}, red = any other")
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


def cmd_export_weights(args: argparse.Namespace) -> int:
    from cpcl.model.checkpoint import export_clip_weights

    path = export_clip_weights(args.checkpoint, args.out, half=not args.fp32, overwrite=args.overwrite)
    print(f"wrote {path}")
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


def register(sub) -> None:
    p = command(sub, "visualize", "top-k ranking figures for queries of an evaluation split")
    add_split_args(p)
    p.add_argument("--queries", type=whole(1), default=8, help="how many captions to show")
    p.add_argument("--seed", type=whole(0), default=0, help="which captions (drawn reproducibly)")
    p.add_argument("-k", type=whole(1), default=10, help="images per query")
    p.add_argument("--out", type=output_folder, required=True, help="directory for query_*.png and sheet.png")
    p.add_argument("--batch-size", type=whole(1), default=256, help="encoding batch size")
    add_device(p)
    add_overwrite(p, "ranking figures")
    p.set_defaults(func=cmd_visualize)

    p = command(sub, "clusters", "browse the pseudo identities an epoch of a run trained on (PNG sheets and a page)")
    p.add_argument("run", help="a run directory (the --out of cpcl train)")
    p.add_argument("--epoch", type=whole(1), help="epoch whose labels to draw (default: the last one saved)")
    p.add_argument("--modality", default="image", choices=["image", "text"], help="whose clusters to draw")
    p.add_argument("--order", default="largest", choices=["largest", "impure"],
                   help="largest first, or least pure first (needs held-out identities on the records)")
    p.add_argument("--clusters", type=whole(1), default=40, help="how many clusters to draw")
    p.add_argument("--per-cluster", type=whole(1), default=10, help="images drawn per cluster at most")
    p.add_argument("--out", type=output_folder, help="output directory (default RUN/clusters/epoch_NNN_MODALITY)")
    add_overwrite(p, "a cluster view")
    p.set_defaults(func=cmd_clusters)


def register_export(sub) -> None:
    p = command(sub, "export", "export a checkpoint for other tools and runtimes")
    esub = p.add_subparsers(dest="export_command", required=True, metavar="COMMAND")
    c = command(esub, "weights", "a checkpoint's CLIP weights as an open_clip checkpoint that records the activation "
                                 "and preprocessing (use it as model.pretrained)")
    c.add_argument("--checkpoint", required=True, help="a cpcl checkpoint (best.pt / last.pt)")
    add_output_file(c, "--out", "weights file to write (a PyTorch file: .pt)", (".pt", ".pth", ".bin"),
                    required=True)
    c.add_argument("--fp32", action="store_true", help="keep float32 (default: float16, half the size)")
    c.add_argument("--overwrite", action="store_true", help="replace an existing --out file (refused otherwise)")
    c.set_defaults(func=cmd_export_weights)
    c = command(esub, "onnx", "both encoders as ONNX, checked against PyTorch with onnxruntime")
    c.add_argument("--checkpoint", required=True, help="a cpcl checkpoint (best.pt / last.pt)")
    c.add_argument("--out", type=output_folder, required=True,
                   help="directory for image_encoder.onnx, text_encoder.onnx, export.json")
    c.add_argument("--opset", type=whole(18), default=18,
                   help="ONNX opset: 18 or above (PyTorch's exporter), and one onnxruntime loads")
    c.add_argument("--int8", action="store_true",
                   help="also write text_encoder.int8.onnx: the text tower with 8-bit weights, a fast query encoder")
    add_overwrite(c, "an export")
    c.set_defaults(func=cmd_export_onnx)
