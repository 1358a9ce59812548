"""The kinds of gallery index (``cpcl index build --kind``): exact search, or a FAISS inverted-file index.

A kind is one registration in :data:`INDEX_KINDS`: its help text and, for approximate kinds, how to make
the untrained FAISS index for ``(dimension, lists)``. This module imports nothing heavy, so the command
line can list the kinds without loading FAISS or PyTorch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cpcl.registry import Registry


@dataclass(frozen=True)
class IndexKind:
    name: str
    help: str
    # (dimension, inverted lists) -> an untrained FAISS index searched by inner product; None = exact search
    make_faiss: Callable[[int, int], Any] | None = None

    @property
    def exact(self) -> bool:
        return self.make_faiss is None


def _owning(index, quantizer):
    """``index`` takes ownership of its coarse quantizer (freed with it, never before)."""
    index.own_fields = True
    quantizer.this.disown()
    return index


def _ivf_flat(dim: int, nlist: int):
    import faiss

    quantizer = faiss.IndexFlatIP(dim)
    return _owning(faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT), quantizer)


def _ivf_sq8(dim: int, nlist: int):
    import faiss

    quantizer = faiss.IndexFlatIP(dim)
    return _owning(faiss.IndexIVFScalarQuantizer(quantizer, dim, nlist, faiss.ScalarQuantizer.QT_8bit,
                                                 faiss.METRIC_INNER_PRODUCT), quantizer)


INDEX_KINDS: Registry[IndexKind] = Registry("index kind")
for _kind in (IndexKind("exact", "exact inner product over every image (no approximation)"),
              IndexKind("ivf", "FAISS inverted lists over float32 vectors (approximate)", _ivf_flat),
              IndexKind("ivf-sq8", "FAISS inverted lists over 8-bit codes: a quarter of the memory", _ivf_sq8)):
    INDEX_KINDS.register(_kind.name, _kind)
