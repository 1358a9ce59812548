"""Commands for search: ``index build|add|info``, ``search``, ``serve``."""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import os
import sys
import time
from pathlib import Path

from cpcl.cli.common import (
    add_device,
    add_output_file,
    add_overwrite,
    command,
    fraction,
    output_folder,
    pick_device,
    whole,
)
from cpcl.errors import UsageError

log = logging.getLogger("cpcl")


def writing_index(where: str | Path, uri: str | None, what: str) -> contextlib.AbstractContextManager:
    """Hold an index for one writer: a files index's folder; a Milvus collection through a lock of this machine
    (in the cache folder), since the server has none (processes on other machines are not seen)."""
    from cpcl.io import exclusive

    if uri is None:
        return exclusive(where, what)
    from cpcl.retrieval.milvus import collection_lock_dir

    return exclusive(collection_lock_dir(uri, str(where)), what, shown=f"collection {where} at {uri}")


def cmd_index_build(args: argparse.Namespace) -> int:
    uri = _milvus_uri(args)
    if uri is None:  # a folder (with --backend milvus, --out names a collection)
        try:
            output_folder(args.out)
        except argparse.ArgumentTypeError as exc:
            raise UsageError(f"--out {exc}") from None
    device = pick_device(args.device)
    with writing_index(args.out, uri, "an index build"):
        return _build(args, device, uri)


def _build(args: argparse.Namespace, device, uri: str | None) -> int:
    from cpcl.retrieval.retriever import load_retriever
    from cpcl.retrieval.service import build_index

    retriever = load_retriever(args.checkpoint, device, batch_size=args.batch_size, num_workers=args.workers)
    t0 = time.perf_counter()
    unreadable = [] if args.skip_unreadable else None
    with _hint_skip_unreadable():
        index = build_index(retriever, args.images, args.out, root=args.root, kind=args.kind, nlist=args.nlist,
                            nprobe=args.nprobe, progress=not args.no_progress, overwrite=args.overwrite,
                            uri=uri, unreadable=unreadable)
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

    uri = _milvus_uri(args)
    with writing_index(args.index, uri, "an index add"):  # read and written under one lock: no add is lost
        index = open_gallery(args.index, uri)
        device = pick_device(args.device)
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

    return SearchService.open(args.index, args.checkpoint, pick_device(args.device), text_encoder=args.text_encoder,
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
    _check_port_free(args.host, args.port)
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
        if "CPCL_SERVE_TOKEN" not in os.environ:
            return None
        source, token = "$CPCL_SERVE_TOKEN", os.environ["CPCL_SERVE_TOKEN"].strip()  # set but blank: refused
    else:
        source = f"--token-file {token_file}"
        try:
            token = Path(token_file).read_text().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"{source}: cannot read it ({exc})") from None
    make = "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
    if not token or any(c.isspace() for c in token):
        raise UsageError(f"{source}: expected one token without spaces, e.g. the output of {make}")
    if not all(33 <= ord(c) < 127 for c in token):  # an HTTP header (Bearer) carries ASCII only
        raise UsageError(f"{source}: the token has characters an Authorization header cannot carry (ASCII "
                         f"letters, digits and punctuation only); make one with {make}")
    if len(token) < MIN_TOKEN_CHARS:
        raise UsageError(f"{source}: a token of {len(token)} characters is guessed in moments; use at least "
                         f"{MIN_TOKEN_CHARS}, e.g. the output of {make}")
    return token


MIN_TOKEN_CHARS = 16


def _check_port_free(host: str, port: int) -> None:
    """Refuse, before the model is loaded and "serving" is printed, a port another program listens on."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT is no obstacle
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise UsageError(f"--host {host} --port {port}: cannot listen there ({exc.strerror}); choose another "
                             "--port") from None


def _add_encode_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch-size", type=whole(1), default=128, help="encoding batch size")
    p.add_argument("--workers", type=whole(0), default=2, help="image decoding processes")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--skip-unreadable", action="store_true",
                   help="leave out image files that cannot be read, and name them (default: stop at the first)")
    add_device(p)


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


def register(sub) -> None:
    from cpcl.retrieval.kinds import INDEX_KINDS

    p = command(sub, "index", "build and extend gallery indexes for search")
    isub = p.add_subparsers(dest="index_command", required=True, metavar="COMMAND")
    c = command(isub, "build", "encode a folder or list of pedestrian crops into a new index",
                 "no index was written (it is written once every image is encoded)")
    c.add_argument("--checkpoint", required=True, help="a cpcl checkpoint (best.pt / last.pt)")
    c.add_argument("--images", required=True, help="a folder (searched recursively) or a file listing image paths")
    c.add_argument("--out", required=True, help="index directory to create (or Milvus collection)")
    c.add_argument("--root", help="root the stored paths are relative to (default: the folder / common parent)")
    c.add_argument("--kind", default="exact", choices=INDEX_KINDS.names(),
                   help="; ".join(f"{name}: {kind.help}" for name, kind in INDEX_KINDS.items()))
    c.add_argument("--nlist", type=whole(1), help="inverted lists for ivf kinds (default about sqrt(N))")
    c.add_argument("--nprobe", type=whole(1), default=16, help="lists searched per query for ivf kinds")
    _add_backend(c)
    _add_encode_args(c)
    add_overwrite(c, "an index")
    c.set_defaults(func=cmd_index_build)
    c = command(isub, "add", "append the images of a folder or list that the index does not hold yet",
                 "the index is as it was, or (Milvus) holds the chunks finished so far: the same add continues")
    c.add_argument("index", help="index directory (or Milvus collection)")
    c.add_argument("--images", required=True, help="a folder (searched recursively) or a file listing image paths")
    c.add_argument("--checkpoint", help="default: the checkpoint that built the index")
    _add_backend(c)
    _add_encode_args(c)
    c.set_defaults(func=cmd_index_add)
    c = command(isub, "info", "what an index holds and which model built it")
    c.add_argument("index", help="index directory (or Milvus collection)")
    _add_backend(c)
    c.set_defaults(func=cmd_index_info)

    p = command(sub, "search", "search an index by text")
    p.add_argument("index", help="index directory (or Milvus collection)")
    _add_backend(p)
    p.add_argument("query", nargs="+", help="one or more descriptions (quote each)")
    p.add_argument("-k", type=whole(1, 100), default=10, help="results per query")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    add_output_file(p, "--grid", "write a PNG of the top-k crops with ranks and scores", (".png",))
    p.add_argument("--overwrite", action="store_true", help="replace an existing --grid file (refused otherwise)")
    p.add_argument("--nprobe", type=whole(1), help="lists searched per query (ivf indexes; default: the index's)")
    p.add_argument("--checkpoint", help="default: the checkpoint that built the index")
    _add_text_encoder(p)
    add_device(p)
    p.set_defaults(func=cmd_search)

    p = command(sub, "serve", "serve an index: JSON search API and a search web page")
    p.add_argument("index", help="index directory (or Milvus collection)")
    _add_backend(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (loopback: this machine only)")
    p.add_argument("--port", type=whole(1, 65535), default=8000, help="port to listen on")
    p.add_argument("--checkpoint", help="default: the checkpoint that built the index")
    _add_text_encoder(p)
    add_device(p)
    p.add_argument("--example", action="append", help="an example query shown on the page (repeatable)")
    p.add_argument("--token-file", help="require the token in this file from every client (default: "
                                        "$CPCL_SERVE_TOKEN if set, else no token)")
    p.add_argument("--max-batch", type=whole(1), default=32,
                   help="concurrent queries encoded and searched as one batch at most (1: no batching)")
    p.add_argument("--batch-window-ms", type=fraction(0, 1000), default=2.0,
                   help="while queries arrive concurrently, wait this long for more to join a batch (a lone client "
                        "never waits)")
    p.set_defaults(func=cmd_serve)
