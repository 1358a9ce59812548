"""Every output option of every command, against what it must not write over or into: an existing file, an
existing folder, a place nothing can be written. Each is refused before any work (the other inputs here are
missing: an error about them would mean the work had begun), with the option named, exit 2, no traceback,
nothing written."""

import pytest

from cpcl.cli import main

MISSING = "/nonexistent/cpcl-input"
SPLIT = ["--checkpoint", MISSING, "--format", "cuhk-pedes", "--root", MISSING]
# command line with {} for the output -> "file" or "folder" (what the option writes)
OUTPUTS = {
    "eval --json": (["eval", *SPLIT, "--json", "{}"], "file", ".json"),
    "search --grid": (["search", MISSING, "a man", "--grid", "{}"], "file", ".png"),
    "export weights --out": (["export", "weights", "--checkpoint", MISSING, "--out", "{}"], "file", ".pt"),
    "pretrain --weights-out": (["pretrain", "--out", "{folder}", "--weights-out", "{}"], "file", ".pt"),
    "synth --out": (["synth", "--out", "{}"], "folder", ""),
    "train --out": (["train", "--config", MISSING, "--out", "{}"], "folder", ""),
    "pretrain --out": (["pretrain", "--out", "{}"], "folder", ""),
    "demo --out": (["demo", "--out", "{}"], "folder", ""),
    "sweep --out": (["sweep", "--config", MISSING, "--grid", "optim.lr=1,2", "--out", "{}"], "folder", ""),
    "visualize --out": (["visualize", *SPLIT, "--out", "{}"], "folder", ""),
    "clusters --out": (["clusters", MISSING, "--out", "{}"], "folder", ""),
    "export onnx --out": (["export", "onnx", "--checkpoint", MISSING, "--out", "{}"], "folder", ""),
    "index build --out": (["index", "build", "--checkpoint", MISSING, "--images", MISSING, "--out", "{}"], "folder",
                          ""),
}


def _targets(tmp_path, kind: str, suffix: str) -> dict[str, tuple[str, str]]:
    """name -> (path, what the refusal says)"""
    existing_file = tmp_path / f"notes{suffix or '.txt'}"
    existing_file.write_text("a user's own file\n")
    folder = tmp_path / f"folder{suffix}"
    (folder / "inside").mkdir(parents=True)
    out = {"unwritable": (f"/proc/cpcl-out{suffix}", "cannot write into /proc")}
    if kind == "file":
        out["existing folder"] = (str(folder), "is a folder; name a file")
        out["existing file"] = (str(existing_file), "already exists; choose another path, or pass --overwrite")
        out["other kind of file"] = (str(tmp_path / "notes.md"), f"the file written is {suffix}")
    else:
        out["existing file"] = (str(existing_file), "is a file; name a folder")
    return out


@pytest.mark.parametrize("option", OUTPUTS)
def test_every_output_option_is_checked_before_any_work(option, tmp_path, capsys):
    argv, kind, suffix = OUTPUTS[option]
    (tmp_path / "notes.md").write_text("# my notes\n")
    for name, (target, said) in _targets(tmp_path, kind, suffix).items():
        before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
        line = [a.replace("{}", target).replace("{folder}", str(tmp_path / "run")) for a in argv]
        assert _exit_status(line) == 2, (option, name)
        err = capsys.readouterr().err
        assert said in err and target in err, (option, name, err)
        assert "Traceback" not in err and MISSING not in err.split("error:")[-1], (option, name, err)
        assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before, (option, name)
        assert (tmp_path / "notes.md").read_text() == "# my notes\n"


def _exit_status(argv: list[str]) -> int:
    """``cpcl``'s exit status: what ``main`` returns, or the status argparse exits with (a refused option)."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code
