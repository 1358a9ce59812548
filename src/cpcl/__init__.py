"""cpcl: weakly supervised text-based person re-identification with CLIP."""

from cpcl.version import __version__

__all__ = ["__version__", "load_retriever"]


def __getattr__(name: str):
    # imported on first use, so that `import cpcl` stays light (no torch) for the CLI's --help
    if name == "load_retriever":
        from cpcl.retrieval.retriever import load_retriever

        return load_retriever
    raise AttributeError(f"module 'cpcl' has no attribute {name!r}")
