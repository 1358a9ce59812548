"""Dynamic batching: concurrent queries answered together, each with its own answer."""

from __future__ import annotations

import json
import re
import threading
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pytest

from cpcl.retrieval.batching import QueryBatcher
from cpcl.retrieval.launch import serve_in_subprocess
from cpcl.retrieval.retriever import load_retriever
from cpcl.retrieval.service import SearchService, build_index

COLOURS = ["red", "blue", "green", "black", "white", "grey", "yellow", "pink"]
ITEMS = ["jacket", "coat", "shirt", "dress", "hoodie", "sweater"]
QUERIES = [f"a person in a {c} {i} and {c2} trousers" for c in COLOURS for i in ITEMS for c2 in COLOURS[:2]]


@dataclass
class _Echo:
    hits: list
    extra: dict = field(default_factory=dict)


class _Recorder:
    """A ``run_batch`` that answers each query with itself, and records the batches it saw."""

    def __init__(self, hold: threading.Event | None = None):
        self.batches: list[list[str]] = []
        self.hold = hold

    def __call__(self, queries, k, nprobe):
        if self.hold is not None:
            self.hold.wait(5)
        self.batches.append(list(queries))
        return [_Echo([q] * k) for q in queries]


def test_concurrent_queries_are_batched_and_each_gets_its_own_answer():
    hold = threading.Event()
    run = _Recorder(hold)
    batcher = QueryBatcher(run, window_ms=50, max_batch=8)
    with ThreadPoolExecutor(16) as pool:
        futures = [pool.submit(batcher.submit, f"query {i}", 1 + i % 3) for i in range(40)]
        hold.set()  # the first batch was held: the others queue up behind it
        results = [f.result(10) for f in futures]
    batcher.close()
    for i, result in enumerate(results):
        assert result.hits == [f"query {i}"] * (1 + i % 3)  # its own query, its own k
        assert 1 <= result.extra["batch"] <= 8 and result.extra["wait_ms"] >= 0
    assert sorted(q for b in run.batches for q in b) == sorted(f"query {i}" for i in range(40))  # none lost or twice
    assert max(len(b) for b in run.batches) == 8  # capped at max_batch, and batching did happen


def test_a_lone_client_never_waits_for_the_window():
    run = _Recorder()
    batcher = QueryBatcher(run, window_ms=60_000)
    for i in range(3):  # a window of a minute would time these out if a single query waited for company
        assert batcher.submit(f"q{i}", 2, timeout=10).hits == [f"q{i}"] * 2
    batcher.close()
    assert run.batches == [["q0"], ["q1"], ["q2"]]


def test_a_failing_batch_raises_in_each_caller_and_the_batcher_goes_on():
    def run(queries, k, nprobe):
        if "bad" in queries:
            raise RuntimeError("encoder failed")
        return [_Echo([q]) for q in queries]

    batcher = QueryBatcher(run)
    with pytest.raises(RuntimeError, match="encoder failed"):
        batcher.submit("bad", 1, timeout=10)
    assert batcher.submit("good", 1, timeout=10).hits == ["good"]
    batcher.close()
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit("late", 1)


def test_batched_service_answers_as_direct_search(gallery, tiny_checkpoint, tmp_path):
    retriever = load_retriever(tiny_checkpoint)
    index = build_index(retriever, gallery, tmp_path / "idx")
    direct = SearchService(retriever, index)
    batched = SearchService(retriever, index, batch_window_ms=5, max_batch=16)
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda q: batched.search(q, 7), QUERIES))
    batched.close()
    assert max(a.extra["batch"] for a in answers) > 1
    for query, answer in zip(QUERIES, answers, strict=True):
        expected = direct.search(query, 7)
        assert answer.query == query
        assert [h.item for h in answer.hits] == [h.item for h in expected.hits], query
        np.testing.assert_allclose([h.score for h in answer.hits], [h.score for h in expected.hits], atol=1e-5)
    many = direct.search_many(QUERIES[:5], 3)  # the CLI's several queries: one batch, the same answers
    assert [[h.item for h in r.hits] for r in many] == [[h.item for h in a.hits[:3]] for a in answers[:5]]


def test_served_concurrent_queries_each_get_their_own_results(gallery, tiny_checkpoint, tmp_path):
    retriever = load_retriever(tiny_checkpoint)
    index = build_index(retriever, gallery, tmp_path / "idx")
    direct = SearchService(retriever, index)

    with serve_in_subprocess(index.directory) as server:  # batching is on by default
        def ask(query: str) -> dict:
            url = f"{server.url}/api/search?q={urllib.parse.quote(query)}&k=5"
            with urllib.request.urlopen(url, timeout=60) as response:
                return json.loads(response.read())

        with ThreadPoolExecutor(16) as pool:
            bodies = list(pool.map(ask, QUERIES))
    assert max(b["batch"] for b in bodies) > 1
    for query, body in zip(QUERIES, bodies, strict=True):
        assert body["query"] == query
        assert [h["path"] for h in body["hits"]] == [h.path for h in direct.search(query, 5).hits], query


@pytest.mark.parametrize("query, k, needle", [
    ("", 5, "the query is empty"), ("   ", 5, "the query is empty"), (123, 5, "must be text (a str), got int"),
    (["a man"], 5, "got list"), ("x" * 501, 5, "at most 500 are accepted"), ("a man", 0, "between 1 and 100"),
    ("a man", 101, "between 1 and 100"), ("a man", 2.5, "whole number"), ("a man", True, "whole number"),
])
def test_bad_queries_are_one_sentence_and_leave_the_batching_service_working(gallery, tiny_checkpoint, tmp_path,
                                                                              query, k, needle):
    from cpcl.retrieval.service import QueryError

    retriever = load_retriever(tiny_checkpoint)
    service = SearchService(retriever, build_index(retriever, gallery[:5], tmp_path / "idx"), batch_window_ms=2)
    with pytest.raises(QueryError, match=re.escape(needle)):
        service.search(query, k)
    assert len(service.search("a man in red", 3).hits) == 3
    service.close()
