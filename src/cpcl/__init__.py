"""cpcl: weakly supervised text-based person re-identification with CLIP."""

__version__ = "0.1.0"
