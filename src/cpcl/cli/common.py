"""What every command shares: logging, the device, option types, the help format."""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
from pathlib import Path

from cpcl.errors import UsageError

EXIT_STATUS = ("exit status: 0 done; 1 a check that ran and found problems (cpcl data check, ONNX parity); "
               "2 bad usage or input (the message names the option, key, file or record); 130 interrupted")


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    quiet_rank = int(os.environ.get("RANK", "0")) != 0  # under torchrun, rank 0 alone reports progress
    logging.getLogger("cpcl").setLevel(logging.WARNING if quiet_rank else logging.DEBUG if verbose else logging.INFO)
    # open_clip logs every model creation at INFO on the root logger
    logging.getLogger().setLevel(logging.WARNING)


def pick_device(name: str):
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


class Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Help with every option's default, except where there is none to show."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False) or action.default is argparse.SUPPRESS:
            return action.help or ""
        return super()._get_help_string(action)


def command(sub, name: str, help: str, interrupted: str = "stopped before it finished") -> argparse.ArgumentParser:
    """A subcommand; ``interrupted`` is what a Ctrl-C in it leaves behind, said after "interrupted; "."""
    p = sub.add_parser(name, help=help, description=help[0].upper() + help[1:] + ".", formatter_class=Formatter,
                       epilog=EXIT_STATUS)
    p.set_defaults(interrupted=interrupted)
    return p


RUN_KEPT = "completed checkpoints are kept (cpcl train --resume RUN_DIR continues a run)"


def whole(low: int, high: int | None = None):
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


def fraction(low: float = 0.0, high: float = 1.0, low_open: bool = False):
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


def add_output_file(p: argparse.ArgumentParser, flag: str, help: str, suffixes: tuple[str, ...],
                    **kwargs) -> None:
    """An option naming a file the command writes. Its kind is checked when the line is parsed, before any work:
    a folder, a name without one of ``suffixes``, or a place that cannot be written is refused with the option
    named; an existing file is refused unless ``--overwrite`` (:func:`check_output_files`, after parsing; the
    command has the option). The command writes it atomically (``cpcl.io``): never half a file."""
    p.add_argument(flag, type=_output_file(suffixes), help=help, **kwargs)
    declared = p.get_default("output_files") or ()
    p.set_defaults(output_files=(*declared, flag))


def _output_file(suffixes: tuple[str, ...]):
    def parse(text: str) -> str:
        path = Path(text).expanduser()
        if path.is_dir():
            raise argparse.ArgumentTypeError(f"{text} is a folder; name a file ({' or '.join(suffixes)})")
        if path.suffix.lower() not in suffixes:
            raise argparse.ArgumentTypeError(f"{text}: the file written is {' or '.join(suffixes)}; name it so")
        if path.exists() and not path.is_file():
            raise argparse.ArgumentTypeError(f"{text}: exists and is not a regular file")
        _check_writable(text, path.absolute().parent)
        return text

    return parse


def output_folder(text: str) -> str:
    """An option's type: a folder the command writes into (created if missing). A file there, or a place this
    process cannot create files in, is refused when the line is parsed, before any work."""
    path = Path(text).expanduser()
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file; name a folder to write into")
    _check_writable(text, path.absolute())
    return text


def _check_writable(text: str, folder: Path) -> None:
    """Refuse ``text`` unless a file can be created in ``folder`` or, where it does not exist yet, in the folder
    that would hold it (tried for real: permissions, read-only and virtual file systems alike)."""
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if existing is None or not existing.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: {existing} is not a folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"{text}: cannot write into {existing}: no file can be created there "
                                         f"({exc.strerror})") from None


def check_output_files(args: argparse.Namespace) -> None:
    """Refuse, before any work, an output file that exists already unless ``--overwrite``."""
    for flag in getattr(args, "output_files", ()):
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if value and Path(value).expanduser().exists() and not getattr(args, "overwrite", False):
            raise UsageError(f"{flag} {value} already exists; choose another path, or pass --overwrite to "
                             "replace it")


def add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:N")


def add_overwrite(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--overwrite", action="store_true", help=f"replace {what} already in --out (refused otherwise)")


def add_split_args(p: argparse.ArgumentParser) -> None:
    from cpcl.data.formats import FORMATS

    p.add_argument("--checkpoint", required=True, help="a cpcl checkpoint (best.pt / last.pt)")
    p.add_argument("--format", required=True, choices=FORMATS.names(), help="annotation format")
    p.add_argument("--root", required=True, help="data root or dataset folder")
    p.add_argument("--split", default="test", choices=["val", "test"], help="which split to rank")
    p.add_argument("--val-ids-from-train", type=whole(0), default=0, metavar="N",
                   help="the val split is N persons held out of the training split, as a run with "
                        "data.val_ids_from_train=N held them out (datasets without a val split)")


def add_run_args(p: argparse.ArgumentParser, config_default: str | None, config_required: bool = True) -> None:
    p.add_argument("--config", required=config_required and config_default is None, default=config_default,
                   help="YAML file or packaged config name (`cpcl configs`)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (repeatable)")
    add_device(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
