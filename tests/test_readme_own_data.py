"""The README's "your own crops" lines, run as they are written, on a small JSONL without any person_id or
test split: each must exit 0, and the page `cpcl serve` starts must answer as `cpcl search` does."""

from __future__ import annotations

import json
import re
import shlex
import socket
from pathlib import Path

from benchmarks.own_data_path import _free_port, served_top10, write_own_data
from cpcl.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_lines(section: str) -> list[str]:
    """The ``cpcl`` lines of the first bash block under the README heading that starts with ``section``."""
    text = README.read_text()
    start = text.index(f"\n## {section}")
    block = re.search(r"```bash\n(.*?)```", text[start:], re.S).group(1)
    return [line for line in block.splitlines() if line.startswith("cpcl ")]


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_the_readme_own_crops_lines_run_as_written(tmp_path, monkeypatch, capsys):
    lines = readme_lines("Your own crops")
    assert [shlex.split(line, comments=True)[1] for line in lines] == ["data", "train", "index", "search", "serve"]
    # 90 persons: enough images that 200 are held out and a batch of 64 pairs still trains
    write_own_data(tmp_path / "my-data", num_ids=90)
    monkeypatch.chdir(tmp_path)
    searched = None
    for line in lines:
        argv = shlex.split(line, comments=True)[1:]
        if argv[0] == "serve":  # as written it listens on 8000; where that is taken, on a free port
            served = served_top10(tmp_path, argv if _port_free(8000) else [*argv, "--port", str(_free_port())],
                                  searched[0])
            continue
        assert main(argv) == 0, line
        out = capsys.readouterr().out
        if argv[0] == "search":
            searched = (argv[2], [row.split()[2] for row in out.splitlines()[1:11]])
    saved = json.loads((tmp_path / "runs/mine/results.json").read_text())
    assert saved["selection"]["select_on"] == "label-free" and saved["best_epoch"] is not None
    assert saved["test"] == {}  # no test split: nothing reported on one
    assert (tmp_path / "top10.png").is_file()
    assert served == searched[1] and len(served) == 10
