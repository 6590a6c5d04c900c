"""Task-aware drafting: detecting the tasks of a workload and routing prompts to them."""

from .detect import TaskDescription, TaskDetector, clustering_metrics
from .encoders import DEFAULT_ENCODER, SentenceEncoder, TaskDetectionError
from .routers import (ROUTER_KINDS, EmbeddingRouter, SequenceRouter, TargetFeatureRouter, evaluate_router,
                      load_router, make_router)

__all__ = ["DEFAULT_ENCODER", "ROUTER_KINDS", "EmbeddingRouter", "SentenceEncoder", "SequenceRouter",
           "TargetFeatureRouter", "TaskDescription", "TaskDetectionError", "TaskDetector", "clustering_metrics",
           "evaluate_router", "load_router", "make_router"]
