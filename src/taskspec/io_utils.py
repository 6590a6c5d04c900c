"""Atomic file writes (a killed process never leaves a half-written result behind), and the JSON reader whose errors
name the file."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def give_default_modes(folder: str | os.PathLike) -> None:
    """Give a folder made by mkdtemp (0700), and the files in it, the modes mkdir and open() would (umask applied)."""
    mask = _umask()
    folder = Path(folder)
    os.chmod(folder, 0o777 & ~mask)
    for path in folder.rglob("*"):
        os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~mask)


def write_bytes_atomic(path: str | os.PathLike, blob: bytes) -> Path:
    """Write to a temporary file beside `path`, fsync, give it the mode open() would, rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(blob)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, obj) -> Path:
    return write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def read_json(path: str | os.PathLike, error_cls: type[Exception], expected: str):
    """The JSON value in `path`; `error_cls` naming the file and `expected` (what should be there) when it is missing
    or not JSON, so a damaged file ends in a clear error (exit code 2 for a TaskspecError), not a traceback."""
    path = Path(path)
    if not path.is_file():
        raise error_cls(f"{path}: file not found; expected {expected}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error_cls(f"{path}: not a JSON file ({exc}); expected {expected}") from None
