"""Retrieval evaluation: pure metric functions and the encode-and-rank driver."""

from cpcl.evaluation.metrics import RetrievalMetrics, chance_metrics, retrieval_metrics

__all__ = ["RetrievalMetrics", "chance_metrics", "retrieval_metrics"]
