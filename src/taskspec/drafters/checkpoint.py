"""Feature-drafter checkpoints: a folder with config.json and model.safetensors, written atomically.

config.json holds the format version, the kind (eagle2 / hass), the body's architecture config, the draft vocabulary
size and the fingerprint of the target it was trained for; model.safetensors holds the trainable weights and the
draft→target id map (`d2t`). The target's embedding and head are not stored: they are read from the target.
Loading against another target, or from a missing or corrupt file, raises a DrafterError naming what is wrong.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from ..errors import DrafterError
from ..models.causal_lm import CausalLM
from .eagle import KINDS, EagleDrafter, EagleModel
from .vocab import DraftVocab

FORMAT = "taskspec-feature-drafter"
VERSION = 1
CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"
_MATCHED_FINGERPRINT_KEYS = ("architecture", "vocab_size", "hidden_size", "num_layers", "sha256")


def save_drafter(drafter: EagleDrafter, folder: str | Path, extra: dict | None = None,
                 extra_files: Callable[[Path], None] | None = None) -> Path:
    """Write the drafter to `folder` (replaced as a whole: a temporary folder renamed into place).

    extra_files(tmp_folder) may add files (e.g. the trainer's state) that must be replaced together with it."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    config = {
        "format": FORMAT,
        "version": VERSION,
        "kind": drafter.kind,
        "draft_vocab_size": len(drafter.vocab),
        "body_config": drafter.model.config.to_dict(),
        "target": target_fingerprint(drafter.target),
        **(extra or {}),
    }
    tensors = {k: v.detach().contiguous() for k, v in drafter.model.state_dict().items() if _stored(k)}
    tensors["d2t"] = drafter.vocab.d2t.to(torch.int64)
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
    try:
        save_file(tensors, str(tmp / WEIGHTS_FILE))
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2, default=str))
        if extra_files is not None:
            extra_files(tmp)
        if folder.exists():
            old = folder.with_name(folder.name + ".old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(folder, old)
            os.replace(tmp, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def load_drafter(folder: str | Path, target: CausalLM, **options) -> EagleDrafter:
    """Load a checkpoint for `target`; options (depth, top_k, num_nodes) override the drafting defaults."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    from transformers import AutoConfig

    folder = Path(folder)
    config_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    for path in (config_path, weights_path):
        if not path.is_file():
            raise DrafterError(f"drafter checkpoint {str(folder)!r}: missing {path.name}; expected a folder written "
                               "by `taskspec train` (config.json + model.safetensors)")
    try:
        config = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DrafterError(f"drafter checkpoint {str(config_path)!r}: unreadable config ({exc})") from None
    if config.get("format") != FORMAT or config.get("version") != VERSION or config.get("kind") not in KINDS:
        raise DrafterError(f"drafter checkpoint {str(config_path)!r}: not a {FORMAT} v{VERSION} config "
                           f"(format {config.get('format')!r}, version {config.get('version')!r}, "
                           f"kind {config.get('kind')!r})")
    _check_target(config.get("target", {}), target, folder)
    try:
        tensors = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise DrafterError(f"drafter checkpoint {str(weights_path)!r}: corrupt weights ({exc})") from None
    body = dict(config["body_config"])
    body["unk_token_id"] = None  # the body's vocabulary is a dummy of one token (see body_config)
    body_config = AutoConfig.for_model(body.pop("model_type"), **body)
    model = EagleModel(body_config)
    d2t = tensors.pop("d2t", None)
    if d2t is None or d2t.numel() != config["draft_vocab_size"]:
        raise DrafterError(f"drafter checkpoint {str(weights_path)!r}: missing or wrong-sized d2t map")
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    missing = [k for k in missing if _stored(k)]
    if missing or unexpected:
        raise DrafterError(f"drafter checkpoint {str(weights_path)!r}: weights do not match the architecture "
                           f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    model = model.to(target.dtype)
    return EagleDrafter(model, DraftVocab(d2t, target.vocab_size), target, config["kind"], name=str(folder),
                        **options)


def _stored(key: str) -> bool:
    """The dummy one-token embedding and head of the body are never used, so never stored."""
    return not (key.endswith("embed_tokens.weight") or key.startswith("body.lm_head"))


def target_fingerprint(target: CausalLM) -> dict:
    return {k: target.fingerprint[k] for k in (*_MATCHED_FINGERPRINT_KEYS, "name", "source")
            if k in target.fingerprint}


def fingerprint_mismatch(saved: dict, target: CausalLM) -> list[str]:
    """What differs between a saved target fingerprint and `target` (empty when the drafter fits it)."""
    mine = target_fingerprint(target)
    return [f"{k}: drafter {saved[k]!r} vs target {mine[k]!r}" for k in _MATCHED_FINGERPRINT_KEYS
            if k in saved and k in mine and saved[k] != mine[k]]


def _check_target(saved: dict, target: CausalLM, folder: Path) -> None:
    wrong = fingerprint_mismatch(saved, target)
    if wrong:
        raise DrafterError(f"drafter {str(folder)!r} was trained for another target "
                           f"({saved.get('name', '?')}): " + "; ".join(wrong))
