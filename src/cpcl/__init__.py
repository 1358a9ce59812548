"""cpcl: weakly supervised text-based person re-identification with CLIP."""

__version__ = "0.1.0"

__all__ = ["load_retriever"]


def __getattr__(name: str):
    # imported on first use, so that `import cpcl` stays light (no torch) for the CLI's --help
    if name == "load_retriever":
        from cpcl.retrieval.retriever import load_retriever

        return load_retriever
    raise AttributeError(f"module 'cpcl' has no attribute {name!r}")
