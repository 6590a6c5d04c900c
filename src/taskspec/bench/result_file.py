"""A bench or demo result as `taskspec report` reads it: loading and checking the JSON (ReportError naming the file
otherwise), reloading its prompts, and the 2-D map of those prompts by detected task that plots.py draws."""

from __future__ import annotations

import os

import numpy as np

from ..errors import TaskspecError
from ..io_utils import read_json

ALL = "all"  # the summary's pooled dataset (bench/runner.py)
BASELINE = "none"  # plain decoding: the denominator of every speedup
META_KEYS = ("target", "dtype", "prompts", "max_new_tokens", "temperature")  # what markdown_tables reads
ENTRY_KEYS = ("acceptance_length", "tokens_per_second", "time")


class ReportError(TaskspecError):
    """A result file that cannot be reported on (missing, not JSON, not a bench/demo result, empty)."""


# ---- input -------------------------------------------------------------------------------------------------------
def load_result(path: str | os.PathLike) -> dict:
    """Read and check a `taskspec bench` / `taskspec demo` result JSON; ReportError naming the file otherwise."""
    result = read_json(path, ReportError, "the JSON written by `taskspec bench --out` or `taskspec demo --out`")
    return check_result(result, repr(str(path)))


def check_result(result, source: str = "result") -> dict:
    """The result itself when it has what the report reads (meta, summary, runs); ReportError naming `source`."""
    expected = "expected a taskspec bench or demo result: a JSON object with 'meta', 'summary' and 'runs'"
    if not isinstance(result, dict) or "summary" not in result or "runs" not in result:
        keys = f"keys {sorted(result)[:8]}" if isinstance(result, dict) else f"a JSON {type(result).__name__}"
        raise ReportError(f"result {source}: not a bench or demo result (got {keys}); {expected}")
    meta, summary, runs = result.get("meta"), result["summary"], result["runs"]
    if not isinstance(meta, dict) or not isinstance(summary, dict) or not isinstance(runs, list):
        raise ReportError(f"result {source}: 'meta' and 'summary' must be objects and 'runs' a list; {expected}")
    if not runs or not any(summary.values()):
        raise ReportError(f"result {source}: empty result (no runs, no summary entries); nothing to report")
    missing = [k for k in META_KEYS if k not in meta]
    if missing:
        raise ReportError(f"result {source}: meta lacks {', '.join(missing)}; {expected}")
    for dataset, table in summary.items():
        if not isinstance(table, dict):
            raise ReportError(f"result {source}: summary[{dataset!r}] is not an object of methods; {expected}")
        for method, entry in table.items():
            lacking = [k for k in ENTRY_KEYS if not isinstance(entry, dict) or k not in entry]
            if lacking:
                raise ReportError(f"result {source}: summary[{dataset!r}][{method!r}] lacks {', '.join(lacking)}; "
                                  f"{expected}")
    if "prompt_map" in result:
        check_prompt_map(result["prompt_map"], source)
    return result


def check_prompt_map(points, source: str = "result") -> list[dict]:
    ok = isinstance(points, list) and all(
        isinstance(p, dict) and {"prompt_id", "x", "y", "task"} <= p.keys()
        and all(isinstance(p[k], (int, float)) and not isinstance(p[k], bool) for k in ("x", "y"))
        for p in points)
    if not ok:
        raise ReportError(f"result {source}: 'prompt_map' must be a list of {{prompt_id, x, y, task}} with numeric "
                          "x and y (see taskspec.bench.result_file.prompt_map)")
    return points


# ---- the prompt map ----------------------------------------------------------------------------------------------
def prompt_map(texts: list[str], ids: list[str], detector) -> list[dict]:
    """[{prompt_id, x, y, task}]: the prompts embedded with the detector's sentence encoder (`detector.embed`),
    projected to their first two principal components, and the task `detector.predict` gives each."""
    texts, ids = list(texts), [str(i) for i in ids]
    if len(texts) != len(ids):
        raise ReportError(f"prompt map: {len(texts)} texts for {len(ids)} ids")
    if not texts:
        raise ReportError("prompt map: no prompts given")
    emb = np.asarray(detector.embed(texts), dtype=np.float64)
    tasks = detector.predict(emb.astype(np.float32))  # predict() takes embeddings as they are: no second encoding
    xy = pca_2d(emb)
    return [{"prompt_id": pid, "x": round(float(x), 5), "y": round(float(y), 5), "task": _plain(task)}
            for pid, (x, y), task in zip(ids, xy, tasks)]


def pca_2d(x: np.ndarray) -> np.ndarray:
    """[n, 2]: the rows' coordinates on their first two principal components (zeros where there are fewer), signs
    fixed so the largest loading of each component is positive (the same picture on every run)."""
    x = np.asarray(x, dtype=np.float64)
    centred = x - x.mean(axis=0, keepdims=True)
    out = np.zeros((len(x), 2))
    if len(x) < 2:
        return out
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    for c in range(min(2, len(s))):
        if s[c] <= 1e-12:
            continue
        v = vt[c] * (1.0 if vt[c][np.argmax(np.abs(vt[c]))] >= 0 else -1.0)
        out[:, c] = centred @ v
    return out


def result_prompts(result: dict, data_dir: str | os.PathLike | None = None) -> tuple[list[str], list[str]]:
    """(texts, ids) of the result's prompts, reloaded by the dataset names in result["meta"]["datasets"] (the
    split read from the ids, e.g. gsm8k/train/3) and matched by prompt id; `demo` is taskspec demo's prompts."""
    from ..data import DATASETS, load_prompts

    wanted: dict[str, list[str]] = {}  # dataset → its prompt ids, in run order
    for run in result["runs"]:
        wanted.setdefault(str(run.get("dataset")), []).append(str(run.get("prompt_id")))
    wanted = {name: list(dict.fromkeys(ids)) for name, ids in wanted.items()}
    names = list(dict.fromkeys([*(result["meta"].get("datasets") or []), *wanted]))
    found: dict[str, str] = {}
    for name in names:
        ids = wanted.get(name, [])
        if not ids:
            continue
        if name == "demo":
            from ..demo_prompts import DEMO_PROMPTS

            found.update({f"demo/{key}": text for key, text in DEMO_PROMPTS})
            continue
        if name not in DATASETS:
            raise ReportError(f"prompt map: dataset {name!r} of the result is not a registered dataset "
                              f"({', '.join(sorted(DATASETS))}); its prompts cannot be reloaded")
        splits = [s for s in DATASETS[name].splits if any(i.startswith(f"{name}/{s}/") for i in ids)]
        for spec, split in [(f"{name}:{s}", s) for s in splits] or [(name, "")]:
            mine = {i for i in ids if not split or i.startswith(f"{name}/{split}/")}
            # the bench took the first --limit prompts: read that many first, the whole split only if some are missing
            for limit in (len(mine), None):
                prompts = load_prompts(spec, data_dir=data_dir, limit=limit)
                found.update({p.id: p.text for p in prompts if p.id in mine})
                if mine <= found.keys() or limit is None or len(prompts) < limit:
                    break
    ordered = [i for ids in wanted.values() for i in ids if i in found]
    if not ordered:
        raise ReportError(f"prompt map: none of the result's {sum(map(len, wanted.values()))} prompt ids were "
                          f"found in datasets {', '.join(names)}; is --data-dir the folder the bench read?")
    return [found[i] for i in ordered], ordered


def _plain(value):
    """numpy scalars → JSON-ready Python values."""
    return value.item() if hasattr(value, "item") else value
