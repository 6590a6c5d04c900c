"""Target fingerprints: what a drafter, drafter set, feature cache, task map or router records about the target it
was made for, and the check that refuses it for another target.

A fingerprint holds the architecture, vocabulary size, hidden size, layer count and `sha256`, a hash of the weights:
of the .gguf file for a GGUF target (models/target.py), of the weight files (*.safetensors, pytorch_model*.bin) for
a Hugging Face folder. Shapes alone would let a fine-tune of the same architecture pass. Hashing a 270M bf16 folder
(536 MB) takes ~0.75 s on 2 cores, so per-file hashes are cached, keyed by path, size, mtime and ctime, and a
folder target hashes only on the first read of its fingerprint (models/causal_lm.py).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

from ..io_utils import write_json_atomic

if TYPE_CHECKING:
    from .causal_lm import CausalLM

MATCHED_KEYS = ("architecture", "vocab_size", "hidden_size", "num_layers", "sha256")
STORED_KEYS = (*MATCHED_KEYS, "name", "source")  # name and source are informative only (a folder may move)


def target_fingerprint(target: CausalLM) -> dict:
    """The part of `target.fingerprint` worth storing beside something made for it."""
    return {k: target.fingerprint[k] for k in STORED_KEYS if k in target.fingerprint}


def fingerprint_diff(saved: dict, mine: dict) -> list[str]:
    """The MATCHED_KEYS on which two fingerprints differ (empty when they fit). A key missing on either side (an
    old file, or a target built in memory) is not compared; name and source never are. A saved fingerprint that is
    not a JSON object (a damaged file) fits nothing."""
    if not isinstance(saved, dict):
        return list(MATCHED_KEYS)
    return [k for k in MATCHED_KEYS if k in saved and k in mine and saved[k] != mine[k]]


def fingerprint_mismatch(saved: dict, target: CausalLM) -> list[str]:
    """What differs between a saved fingerprint and `target`, as "key: saved ... vs target ..." (empty when it
    fits)."""
    mine = target_fingerprint(target)
    shown = saved if isinstance(saved, dict) else {}
    return [f"{k}: saved {shown.get(k)!r} vs target {mine.get(k)!r}" for k in fingerprint_diff(saved, mine)]


def weight_files(folder: Path) -> list[Path]:
    """The weight files of a Hugging Face model folder, in name order (shards included; training leftovers such as
    training_args.bin are not weights)."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and (
        p.suffix == ".safetensors" or (p.suffix == ".bin" and p.name.startswith("pytorch_model"))))


def weights_sha256(folder: str | Path, cache_file: Path | None = None) -> str | None:
    """One sha256 over the names and contents of the folder's weight files; None when it has none. Per-file
    hashes are reused from `cache_file` (a JSON object) while a file's size, mtime and ctime are unchanged."""
    files = weight_files(Path(folder))
    if not files:
        return None
    digest = hashlib.sha256()
    for path, sha in zip(files, cached_sha256s(files, cache_file)):
        digest.update(f"{path.name}\0{sha}\n".encode())
    return digest.hexdigest()


def cached_sha256s(files: list[Path], cache_file: Path | None = None) -> list[str]:
    """The sha256 of each file, reused from `cache_file` (JSON: {resolved path: {stamp, sha256}}) while the file's
    stamp is unchanged; new hashes are written back."""
    cache = _read_cache(cache_file)
    out, changed = [], False
    for path in files:
        key, stamp = str(Path(path).resolve()), _stamp(Path(path))
        entry = cache.get(key)
        if not (isinstance(entry, dict) and entry.get("stamp") == stamp and isinstance(entry.get("sha256"), str)):
            entry, changed = {"stamp": stamp, "sha256": file_sha256(Path(path))}, True
            cache[key] = entry
        out.append(entry["sha256"])
    if changed and cache_file is not None:
        try:
            write_json_atomic(cache_file, {k: v for k, v in cache.items() if Path(k).exists()})
        except OSError:
            pass  # a read-only cache costs time on the next load, nothing else
    return out


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _stamp(path: Path) -> list[int]:
    """Changes whenever the file's content may have: size, mtime and ctime (which no tool can set back)."""
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _read_cache(cache_file: Path | None) -> dict:
    if cache_file is None:
        return {}
    try:
        cache = json.loads(Path(cache_file).read_text())
    except (OSError, ValueError):
        return {}  # missing or damaged: start afresh
    return cache if isinstance(cache, dict) else {}
