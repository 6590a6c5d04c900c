"""Feature-drafter checkpoints: a folder with config.json and model.safetensors, written atomically.

config.json holds the format version, the kind (eagle2 / hass), the body's architecture config, the draft vocabulary
size and the fingerprint of the target it was trained for; model.safetensors holds the trainable weights and the
draft→target id map (`d2t`). The target's embedding and head are not stored: they are read from the target.
Loading against another target, or from a missing or corrupt file, raises a DrafterError naming what is wrong.
A folder whose config.json has the format "taskspec-lora-adapter" is a LoRA adapter on such a checkpoint (lora.py);
loading.load_drafter reads either format (merging an adapter into its base).
"""

from __future__ import annotations

import glob
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
from ..models.fingerprint import fingerprint_mismatch, target_fingerprint
from .eagle import KINDS, EagleDrafter, EagleModel
from .vocab import DraftVocab

FORMAT = "taskspec-feature-drafter"
LORA_FORMAT = "taskspec-lora-adapter"  # lora.py; here so that loading can tell the formats apart without peft
VERSION = 1
CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"


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
    point leaves the old folder or the new one, never a mix of both.

    Between the two renames of a replacement the folder is missing and its previous version is FOLDER.old, complete
    (a stale FOLDER.old is moved aside before it is deleted, never deleted in place): recover_folder puts it back,
    and loading.load_model reads it meanwhile. One writer per folder."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    recover_folder(folder)
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + TMP_INFIX, dir=folder.parent))
    try:
        write(tmp)
        give_default_modes(tmp)
        if folder.exists():
            os.replace(folder, _old(folder))
            os.replace(tmp, folder)
            _discard(_old(folder))
        else:
            os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


TMP_INFIX = ".tmp-"  # write_folder_atomic's temporary folders: FOLDER.tmp-XXXXXXXX


def _old(folder: Path) -> Path:
    return folder.with_name(folder.name + ".old")


def _discard(path: Path) -> None:
    """Delete a folder by first renaming it to a temporary name, so a kill mid-deletion leaves no partial FOLDER.old
    that recover_folder could mistake for a complete one."""
    if path.exists():
        trash = Path(tempfile.mkdtemp(prefix=path.name.removesuffix(".old") + TMP_INFIX, dir=path.parent))
        os.replace(path, trash / "old")
        shutil.rmtree(trash, ignore_errors=True)


def recover_folder(folder: str | Path) -> None:
    """Repair what a process killed inside write_folder_atomic left (the writer calls it before resuming): a missing
    folder comes back from FOLDER.old, then a stale FOLDER.old and unfinished temporary folders are deleted."""
    folder = Path(folder)
    if not folder.exists() and _old(folder).is_dir():
        os.replace(_old(folder), folder)
    _discard(_old(folder))
    for tmp in folder.parent.glob(glob.escape(folder.name + TMP_INFIX) + "*"):
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)


def readable_folder(folder: str | Path) -> Path:
    """`folder`, or its complete previous version FOLDER.old when a kill between the renames of a save left the
    folder missing (reading repairs nothing: a writer may still be at work)."""
    folder = Path(folder)
    return _old(folder) if not folder.exists() and _old(folder).is_dir() else folder


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


def check_target(saved: dict, target: CausalLM, folder: Path) -> None:
    wrong = fingerprint_mismatch(saved, target)
    if wrong:
        raise DrafterError(f"drafter {str(folder)!r} was trained for another target "
                           f"({saved.get('name', '?')}): " + "; ".join(wrong))
