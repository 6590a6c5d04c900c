"""Feature-drafter checkpoints: a folder with config.json and model.safetensors, written atomically.

config.json holds the format version, the kind (eagle2 / hass), the body's architecture config, the draft vocabulary
size and the fingerprint of the target it was trained for; model.safetensors holds the trainable weights and the
draft→target id map (`d2t`). The target's embedding and head are not stored: they are read from the target.
Loading against another target, or from a missing or corrupt file, raises a DrafterError naming what is wrong.
A folder whose config.json has the format "taskspec-lora-adapter" is a LoRA adapter on such a checkpoint (lora.py);
load_drafter merges it into its base transparently.
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
from ..io_utils import give_default_modes
from ..models.causal_lm import CausalLM
from .eagle import KINDS, EagleDrafter, EagleModel
from .vocab import DraftVocab

FORMAT = "taskspec-feature-drafter"
LORA_FORMAT = "taskspec-lora-adapter"  # lora.py; here so that loading can tell the formats apart without peft
VERSION = 1
CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"
_MATCHED_FINGERPRINT_KEYS = ("architecture", "vocab_size", "hidden_size", "num_layers", "sha256")


def save_drafter(drafter: EagleDrafter, folder: str | Path, extra: dict | None = None,
                 extra_files: Callable[[Path], None] | None = None) -> Path:
    """Write the drafter to `folder` (replaced as a whole: a temporary folder renamed into place).

    extra_files(tmp_folder) may add files (e.g. the trainer's state) that must be replaced together with it."""
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

    return write_weights_folder(folder, WEIGHTS_FILE, tensors, config, extra_files)


def write_weights_folder(folder: str | Path, weights_file: str, tensors: dict, config: dict,
                         extra_files: Callable[[Path], None] | None = None) -> Path:
    """A checkpoint or adapter folder: tensors in `weights_file`, config.json, extra_files(tmp); replaced whole."""
    from safetensors.torch import save_file

    def write(tmp: Path) -> None:
        save_file(tensors, str(tmp / weights_file))
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2, default=str))
        if extra_files is not None:
            extra_files(tmp)

    return write_folder_atomic(folder, write)


def write_folder_atomic(folder: str | Path, write: Callable[[Path], None]) -> Path:
    """Fill a temporary sibling folder with write(tmp), then rename it over `folder`: a process killed at any
    point leaves the old folder or the new one, never a mix of both."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
    try:
        write(tmp)
        give_default_modes(tmp)
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
    """Load a checkpoint (or a LoRA adapter, merged into its base) for `target`; options (depth, top_k, num_nodes)
    override the drafting defaults."""
    model, vocab, config = load_model(folder, target)
    return EagleDrafter(model, vocab, target, config["kind"], name=str(folder), **options)


def load_model(folder: str | Path, target: CausalLM) -> tuple[EagleModel, DraftVocab, dict]:
    """(weights in the target's dtype, draft vocabulary, config.json) of a checkpoint or LoRA adapter folder,
    not yet wrapped in a drafter (so training can take the weights as they are stored)."""
    config = read_config(folder)
    if config.get("format") == LORA_FORMAT:
        from .lora import load_adapter_model

        return load_adapter_model(folder, target, config)
    return load_full_model(folder, target, config)


def read_config(folder: str | Path) -> dict:
    """config.json of a drafter folder (either format); DrafterError when missing or unreadable."""
    config_path = Path(folder) / CONFIG_FILE
    if not config_path.is_file():
        raise DrafterError(f"drafter checkpoint {str(folder)!r}: missing {CONFIG_FILE}; expected a folder written "
                           f"by `taskspec train` ({CONFIG_FILE} + {WEIGHTS_FILE}, or + adapter.safetensors for a "
                           "LoRA adapter)")
    try:
        config = json.loads(config_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DrafterError(f"drafter checkpoint {str(config_path)!r}: unreadable config ({exc})") from None
    if not isinstance(config, dict):
        raise DrafterError(f"drafter checkpoint {str(config_path)!r}: unreadable config (not a JSON object)")
    return config


def load_full_model(folder: str | Path, target: CausalLM, config: dict) -> tuple[EagleModel, DraftVocab, dict]:
    """A full checkpoint: config.json (already read) + model.safetensors."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    from transformers import AutoConfig

    folder = Path(folder)
    config_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    if config.get("format") != FORMAT or config.get("version") != VERSION or config.get("kind") not in KINDS:
        raise DrafterError(f"drafter checkpoint {str(config_path)!r}: not a {FORMAT} v{VERSION} config "
                           f"(format {config.get('format')!r}, version {config.get('version')!r}, "
                           f"kind {config.get('kind')!r})")
    if not weights_path.is_file():
        raise DrafterError(f"drafter checkpoint {str(folder)!r}: missing {WEIGHTS_FILE}; expected a folder written "
                           f"by `taskspec train` ({CONFIG_FILE} + {WEIGHTS_FILE})")
    check_target(config.get("target", {}), target, folder)
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
    return model.to(target.dtype), DraftVocab(d2t, target.vocab_size), config


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


def check_target(saved: dict, target: CausalLM, folder: Path) -> None:
    wrong = fingerprint_mismatch(saved, target)
    if wrong:
        raise DrafterError(f"drafter {str(folder)!r} was trained for another target "
                           f"({saved.get('name', '?')}): " + "; ".join(wrong))
