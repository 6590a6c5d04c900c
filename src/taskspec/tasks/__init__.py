"""Task-aware drafting: detecting the tasks of a workload and routing prompts to them."""

from .detect import (DEFAULT_ENCODER, SentenceEncoder, TaskDescription, TaskDetectionError, TaskDetector,
                     clustering_metrics)
from .routers import EmbeddingRouter, TargetFeatureRouter, evaluate_router

__all__ = ["DEFAULT_ENCODER", "EmbeddingRouter", "SentenceEncoder", "TargetFeatureRouter", "TaskDescription",
           "TaskDetectionError", "TaskDetector", "clustering_metrics", "evaluate_router"]
