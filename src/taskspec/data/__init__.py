"""Prompt datasets used for drafter training and benchmarks."""

from taskspec.data.datasets import (
    DATASETS,
    Dataset,
    DatasetError,
    Prompt,
    dataset_names,
    load_prompts,
    resolve_data_dir,
)

__all__ = ["DATASETS", "Dataset", "DatasetError", "Prompt", "dataset_names", "load_prompts", "resolve_data_dir"]
