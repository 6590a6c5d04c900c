"""What the plots of a result show: its methods and datasets in display order, and which methods routed."""

from __future__ import annotations

from .result_file import ALL, BASELINE  # noqa: F401 (BASELINE: the plots read it from here)

ALL_LABEL = "all prompts"


def methods_of(result: dict) -> list[str]:
    """Every method of the summary, in the order of meta["methods"], then in order of appearance."""
    seen = [m for m in result["meta"].get("methods", []) if any(m in t for t in result["summary"].values())]
    for table in result["summary"].values():
        seen += [m for m in table if m not in seen]
    return seen


def datasets_of(result: dict) -> list[str]:
    """Datasets to show side by side: every dataset, then "all" (pooled) when there are several."""
    names = [d for d in result["summary"] if d != ALL]
    return names + [ALL] if len(names) != 1 and ALL in result["summary"] else names


def routed_methods(result: dict) -> list[str]:
    return [m for m in methods_of(result)
            if any(table.get(m, {}).get("routing") for table in result["summary"].values())]


def dataset_label(dataset: str) -> str:
    return ALL_LABEL if dataset == ALL else dataset
