"""Task-aware drafting: detecting the tasks of a workload (and, later, specialists and routers)."""

from .detect import (DEFAULT_ENCODER, SentenceEncoder, TaskDescription, TaskDetectionError, TaskDetector,
                     clustering_metrics)

__all__ = ["DEFAULT_ENCODER", "SentenceEncoder", "TaskDescription", "TaskDetectionError", "TaskDetector",
           "clustering_metrics"]
