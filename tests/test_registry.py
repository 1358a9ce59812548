"""The library's named choices: one registration each, read by the loaders and the command line."""

from __future__ import annotations

import numpy as np
import pytest

from cpcl.cli import build_parser
from cpcl.clustering.pseudo_labels import DISTANCES, distance_graph
from cpcl.data.formats import FORMATS, read_annotations
from cpcl.registry import Registry, UnknownChoiceError
from cpcl.retrieval.index import GalleryIndex
from cpcl.retrieval.kinds import INDEX_KINDS


def test_a_registry_names_its_entries_and_refuses_unknown_and_repeated_names():
    colours = Registry("colour")
    colours.register("red", (255, 0, 0))

    @colours.register("blue")
    def blue():
        return (0, 0, 255)

    assert colours.names() == ("red", "blue") and "red" in colours and colours["blue"] is blue
    with pytest.raises(UnknownChoiceError, match="unknown colour 'green'; choose one of red, blue"):
        colours.get("green")
    with pytest.raises(ValueError, match="registered twice"):
        colours.register("red", (1, 1, 1))


def test_the_shipped_choices():
    assert FORMATS.names() == ("cuhk-pedes", "icfg-pedes", "rstpreid", "jsonl")
    assert INDEX_KINDS.names() == ("exact", "ivf", "ivf-sq8")
    assert INDEX_KINDS["exact"].exact and not INDEX_KINDS["ivf-sq8"].exact
    assert DISTANCES.names() == ("jaccard", "cosine")


def _choices(argv: list[str], option: str) -> tuple[str, ...]:
    """The choices the parser offers for ``option`` of the subcommand path ``argv``."""
    parser = build_parser()
    for name in argv:
        parser = next(a for a in parser._actions if a.dest.endswith("command")).choices[name]
    return tuple(next(a for a in parser._actions if option in a.option_strings).choices)


def test_the_command_line_offers_what_the_registries_hold():
    assert _choices(["data", "check"], "--format") == FORMATS.names()
    assert _choices(["eval"], "--format") == FORMATS.names()
    assert _choices(["visualize"], "--format") == FORMATS.names()
    assert _choices(["index", "build"], "--kind") == INDEX_KINDS.names()


def test_unknown_names_are_errors_not_fallbacks(tmp_path):
    with pytest.raises(UnknownChoiceError, match="unknown dataset format 'coco'"):
        read_annotations("coco", tmp_path)
    with pytest.raises(UnknownChoiceError, match="unknown index kind 'ivf-pq'; choose one of exact, ivf, ivf-sq8"):
        GalleryIndex.create(tmp_path / "idx", tmp_path, np.zeros((0, 4), np.float32), [], {}, kind="ivf-pq")
    with pytest.raises(UnknownChoiceError, match="unknown clustering distance 'euclid'"):
        distance_graph(np.eye(3, dtype=np.float32), "euclid", 2, 1, 0.5)


def test_a_synth_config_names_the_synth_format_among_the_choices():
    from cpcl.config import config_from_dict
    from cpcl.data.sources import annotation_format

    with pytest.raises(UnknownChoiceError, match="data.format: unknown dataset format 'cuhk'; choose one of synth, "):
        annotation_format(config_from_dict({}, ["data.format=cuhk"]).data)
