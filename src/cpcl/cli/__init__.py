"""Command-line interface: the only package that parses argv, sets up logging, picks the device and prints.

One module per product area, each registering its subcommands beside their handlers: ``data`` (synth, data
check), ``train`` (train, eval, pretrain, demo, sweep, configs, archs), ``views`` (visualize, clusters,
export), ``search`` (index, search, serve); ``common`` holds what they share.

Every command imports what it needs when it runs, so that ``cpcl --help``, ``cpcl configs`` or ``cpcl index
info`` start without loading PyTorch. Exit status: 0 done; 1 a check that ran and failed (``cpcl data check``
found problems, ONNX parity above tolerance); 2 bad usage or input (an option, a config key, a file or a
record at fault: the message names it); 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from cpcl.cli import data, search, train, views
from cpcl.cli.common import EXIT_STATUS, Formatter, check_output_files, setup_logging
from cpcl.errors import CpclError
from cpcl.io import release_unused_claims
from cpcl.threads import short_spin_waits
from cpcl.version import __version__

log = logging.getLogger("cpcl")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cpcl", formatter_class=Formatter, epilog=EXIT_STATUS,
        description="Weakly supervised text-based person re-identification: train on image-caption pairs without "
                    "identity labels, evaluate, search.")
    parser.add_argument("--version", action="version", version=f"cpcl {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging, and tracebacks with errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    data.register(sub)
    train.register(sub)
    views.register(sub)
    search.register(sub)
    views.register_export(sub)
    train.register_listings(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    short_spin_waits()  # before any command imports PyTorch
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    setup_logging(args.verbose)
    try:
        check_output_files(args)
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
