"""What every router shares: the file format tag and the check of fit()'s input."""

from __future__ import annotations

import numpy as np

from .encoders import TaskDetectionError

FORMAT = "taskspec-router"
VERSION = 1


def check_fit_input(prompts, labels) -> list[int]:
    """Labels as a list of int task ids, after checking there is one per prompt."""
    labels = list(labels)
    if len(prompts) != len(labels) or not len(prompts):
        raise TaskDetectionError(f"router fit: {len(prompts)} prompts and {len(labels)} labels; expected the "
                                 "same, non-zero number")
    bad = [label for label in labels if isinstance(label, bool) or not isinstance(label, (int, np.integer))]
    if bad:
        raise TaskDetectionError(f"router fit: labels must be integer task ids, got {bad[:3]!r}")
    return [int(label) for label in labels]
