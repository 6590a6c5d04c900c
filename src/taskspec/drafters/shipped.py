"""Drafters that ship inside the package, and the `auto` choice.

    src/taskspec/drafters/shipped/<kind>-<target>/   a `taskspec train` checkpoint without the optimizer state
                                                     (config.json, model.safetensors, train_log.jsonl)
    src/taskspec/drafters/shipped/sets/<target>/     a drafter set (`taskspec pipeline`), its generic member the
                                                     shipped drafter ("shipped:<kind>")

A shipped drafter is used only for the target it was trained for (same fingerprint: file hash, vocabulary, hidden
size, layers). `auto` combines prompt lookup with the best shipped drafter for the target (`ngram+hass`, else
`ngram+eagle2`: lookup when the text repeats, the feature drafter otherwise; the fastest measured, docs/history.md),
and is prompt lookup alone (`ngram`), the best drafter that needs no training, for any other target.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..models.causal_lm import CausalLM
from ..models.fingerprint import fingerprint_mismatch
from .checkpoint import CONFIG_FILE

SHIPPED_DIR = Path(__file__).with_name("shipped")
AUTO_PREFERENCE = ("hass", "eagle2")
AUTO_FALLBACK = "ngram"


def shipped_drafters(target: CausalLM, root: Path = SHIPPED_DIR) -> dict[str, Path]:
    """kind → folder of the shipped drafters trained for `target` (first found per kind, in name order)."""
    found: dict[str, Path] = {}
    for config_path in sorted(root.glob(f"*/{CONFIG_FILE}")):
        try:
            config = json.loads(config_path.read_text())
        except (OSError, json.JSONDecodeError):
            continue  # a damaged shipped folder must not break decoding with other drafters
        kind = config.get("kind")
        if kind and kind not in found and not fingerprint_mismatch(config.get("target", {}), target):
            found[kind] = config_path.parent
    return found


def auto_drafter_spec(target: CausalLM, root: Path = SHIPPED_DIR) -> str:
    """The drafter spec `auto` stands for on this target."""
    shipped = shipped_drafters(target, root)
    for kind in AUTO_PREFERENCE:
        if kind in shipped:
            return f"ngram+{kind}:{shipped[kind]}"
    return AUTO_FALLBACK


def shipped_drafter_set(target: CausalLM, root: Path = SHIPPED_DIR) -> Path | None:
    """Folder of the drafter set shipped for `target` (`--compose` without `--drafter-set`, the demo), or None."""
    for manifest_path in sorted(root.glob("sets/*/drafterset.json")):
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if not fingerprint_mismatch(manifest.get("target", {}), target):
            return manifest_path.parent
    return None
