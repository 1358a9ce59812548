import urllib.request

import pytest

from cpcl.retrieval.launch import ServerError, serve_in_subprocess
from cpcl.retrieval.retriever import load_retriever
from cpcl.retrieval.service import build_index


def test_serve_in_subprocess_answers_and_stops(gallery, tiny_checkpoint, tmp_path):
    build_index(load_retriever(tiny_checkpoint), gallery, tmp_path / "idx")
    with serve_in_subprocess(tmp_path / "idx", timeout=60) as server:
        assert urllib.request.urlopen(server.url + "/healthz", timeout=5).status == 200
    assert server.process.poll() is not None  # stopped on exit


def test_a_server_that_cannot_start_says_why(tmp_path):
    with pytest.raises(ServerError, match="(?s)exited with status 2.*not an index"), \
            serve_in_subprocess(tmp_path / "missing", timeout=60):
        pass
