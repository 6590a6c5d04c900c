"""Collect the target's own outputs on a list of prompts: the data of self-distillation (TaskSpec's collection step).

Each record is one JSON line, appended, flushed and synced as soon as its prompt is decoded:
    {"id", "prompt", "output", "output_ids", "meta": {"source", "settings", "drafter", "new_tokens", "tau",
                                                      "seconds"}}
so a killed run loses at most the prompt it was decoding. A restart reads the file, drops a torn last line (the
record the kill cut short) with a warning, and decodes only the prompts that are not there yet. `settings` names
the target (a hash of its fingerprint) and the generation options; appending to a file made with other settings is
refused, so one file never mixes two targets or two output lengths.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path

from tqdm import tqdm

from .data import Prompt
from .engine.decode import GenerationConfig, generate
from .errors import GenerationInputError, TaskspecError
from .models.causal_lm import CausalLM

log = logging.getLogger(__name__)
RECORD_KEYS = ("id", "prompt", "output", "output_ids", "meta")


class CollectError(TaskspecError):
    """A collection file that cannot be resumed: damaged in the middle, or made with other settings."""


def collection_settings(target: CausalLM, config: GenerationConfig) -> dict:
    """What makes two collected outputs comparable: the same target and the same generation options."""
    fingerprint = json.dumps(target.fingerprint, sort_keys=True, default=str)
    return {"target": target.name, "target_hash": hashlib.sha256(fingerprint.encode()).hexdigest()[:16],
            "max_new_tokens": config.max_new_tokens, "temperature": config.sampling.temperature,
            "top_k": config.sampling.top_k, "top_p": config.sampling.top_p, "seed": config.seed,
            "stop_strings": list(config.stop_strings)}


def read_records(path: str | os.PathLike, repair: bool = False) -> list[dict]:
    """The complete records of a collection file, in file order.

    Records are written whole, newline last, so only the text after the final newline can be cut short by a kill:
    it is dropped with a warning (and, with repair=True, cut from the file so appending continues on a clean
    line). A bad line that ends in a newline is damage, and raises CollectError.
    """
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    *lines, tail = data.split(b"\n")
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            missing = [k for k in RECORD_KEYS if k not in record] if isinstance(record, dict) else RECORD_KEYS
        except ValueError as exc:
            missing, record = [f"invalid JSON: {exc}"], None
        if missing:
            raise CollectError(f"{path}:{number}: not a collected record (missing {', '.join(missing)}); expected "
                               f"one JSON object with {', '.join(RECORD_KEYS)} per line")
        records.append(record)
    if tail.strip():
        log.warning("%s:%d: dropping a torn last record (no final newline); its prompt will be decoded again", path,
                    len(lines) + 1)
        if repair:
            with open(path, "r+b") as fh:
                fh.truncate(len(data) - len(tail))
    return records


def collect(target: CausalLM, prompts: list[Prompt], out: str | os.PathLike, *, drafter: str = "auto",
            config: GenerationConfig = GenerationConfig(), progress: bool = True) -> list[dict]:
    """Decode every prompt not yet in `out` and append its record; returns the records of `prompts`, in order.

    A prompt the target cannot take (empty, longer than its context) is skipped with a warning and has no record.
    """
    from .drafters.kinds import build_drafter

    if not prompts:
        raise CollectError("no prompts to collect outputs for; expected at least one")
    out = Path(out)
    settings = collection_settings(target, config)
    existing = read_records(out, repair=True)
    for record in existing:
        theirs = record["meta"].get("settings")
        if theirs != settings:
            changed = sorted(k for k in settings if not theirs or theirs.get(k) != settings[k])
            raise CollectError(f"{out}: holds outputs collected with other settings ({', '.join(changed)}); use "
                               "another output file or the same target and options")
    by_id = {r["id"]: r for r in existing}
    todo, seen = [], set(by_id)
    for prompt in prompts:
        if prompt.id not in seen:
            seen.add(prompt.id)
            todo.append(prompt)
    if todo:
        out.parent.mkdir(parents=True, exist_ok=True)
        draft = build_drafter(drafter, target)
        with open(out, "a", encoding="utf-8") as fh, \
                tqdm(total=len(seen), initial=len(seen) - len(todo), desc="collect", unit="prompt",
                     disable=not progress) as bar:
            for prompt in todo:
                start = time.perf_counter()
                try:
                    result = generate(target, draft, prompt.text, config)
                except GenerationInputError as exc:  # one bad prompt (empty, too long) must not stop the others
                    log.warning("collect: skipping prompt %s: %s", prompt.id, exc)
                    bar.update(1)
                    continue
                s = result.stats
                record = {"id": prompt.id, "prompt": prompt.text, "output": result.text,
                          "output_ids": result.token_ids,
                          "meta": {"source": prompt.source, "settings": settings, "drafter": draft.name,
                                   "new_tokens": s.new_tokens, "tau": round(s.acceptance_length, 3),
                                   "seconds": round(time.perf_counter() - start, 3)}}
                fh.write(json.dumps(record, ensure_ascii=False) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
                by_id[prompt.id] = record
                bar.update(1)
                bar.set_postfix_str(f"τ={s.acceptance_length:.2f}, {s.tokens_per_second:.0f} tok/s")
    return [by_id[i] for i in dict.fromkeys(p.id for p in prompts) if i in by_id]
