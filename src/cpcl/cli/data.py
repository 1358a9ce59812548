"""Commands for data: ``cpcl synth`` and ``cpcl data check``."""

from __future__ import annotations

import argparse
import sys
import time

from cpcl.cli.common import (
    add_overwrite,
    command,
    fraction,
    output_folder,
    whole,
)


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


def register(sub) -> None:
    from cpcl.data.formats import FORMATS
    from cpcl.data.synth import DOMAINS, STYLES

    p = command(sub, "synth", "generate the SynthPedes benchmark (CUHK-PEDES format)")
    p.add_argument("--out", type=output_folder, required=True, help="folder to write the dataset into")
    p.add_argument("--seed", type=whole(0), default=0, help="generator seed: the dataset is a pure function of it")
    p.add_argument("--ids", type=whole(1), default=1000, help="number of identities")
    p.add_argument("--val-ids", type=whole(0), default=100, help="identities held out for val")
    p.add_argument("--test-ids", type=whole(0), default=200, help="identities held out for test")
    p.add_argument("--images-per-id", type=fraction(0, 8, low_open=True), default=3.0,
                   help="mean images per identity (at most 8)")
    p.add_argument("--captions-per-image", type=whole(1), default=2, help="captions of each image")
    p.add_argument("--near-duplicates", type=fraction(), default=0.15,
                   help="share of identities that differ from another in one attribute only")
    p.add_argument("--caption-noise", type=fraction(), default=0.08,
                   help="how often an annotator writes a confusable colour (navy as black)")
    p.add_argument("--height", type=whole(16), default=128, help="image height in pixels")
    p.add_argument("--width", type=whole(16), default=64, help="image width in pixels")
    p.add_argument("--domain", default="street", choices=DOMAINS,
                   help="scenes of the classic style, and the annotators' vocabulary")
    p.add_argument("--style", default="classic", choices=STYLES,
                   help="how persons are drawn: classic (eye level) or cctv (a high surveillance camera, other "
                        "body shapes and palette)")
    p.add_argument("--cameras", type=whole(0), default=0,
                   help="classic style: every image taken by one of this many fixed cameras, each with its own "
                        "scene and colour cast that no caption mentions (0: a scene and lighting per image)")
    p.add_argument("--uniforms", type=fraction(), default=0.0,
                   help="share of persons who wear the outfit of an earlier one, told apart only by hair, skin, "
                        "build, headwear and glasses")
    p.add_argument("--workers", type=whole(1), default=None, help="rendering processes (default: up to 4)")
    add_overwrite(p, "a dataset")
    p.set_defaults(func=cmd_synth)

    p = command(sub, "data", "dataset tools")
    dsub = p.add_subparsers(dest="data_command", required=True, metavar="COMMAND")
    c = command(dsub, "check", "validate a dataset and list every problem (records and images)")
    c.add_argument("--format", required=True, choices=FORMATS.names(), help="annotation format")
    c.add_argument("--root", required=True, help="data root or dataset folder")
    c.add_argument("--skip-images", action="store_true", help="do not decode every image")
    c.set_defaults(func=cmd_data_check)
