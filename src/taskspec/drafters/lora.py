"""LoRA adapters (peft) on a feature drafter: a task specialist costs a few low-rank deltas, not a whole head.

Training injects peft LoRA layers into a frozen base EagleModel (`inject_lora`), so only the deltas learn. The
adapter folder holds nothing of the base, written atomically like a full checkpoint:

    config.json          format "taskspec-lora-adapter", version, kind, rank, alpha, targets (as asked) and modules
                         (the adapted linear layers), draft_vocab_size, base {path as given, relative to this
                         folder, sha256 of its model.safetensors}, target fingerprint (+ training info)
    adapter.safetensors  per adapted module m: "m.lora_A.weight" [r, in] and "m.lora_B.weight" [out, r], fp32
    train_state.pt, train_log.jsonl   (training runs only) LoRA master weights and optimizer state, for resuming

Loading (loading.load_drafter does it transparently) finds the base (the relative path first, so an adapter
and its base can move together), refuses a base whose weights changed, and merges W ← W + (alpha / r)·B·A (fp32,
stored back in the base dtype): the result is a plain EagleDrafter, exactly as fast as a full head. peft's
unmerged forward (`merge=False`) stays the reference the merge is tested against.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch import nn

from ..errors import DrafterError, TaskspecError
from ..models.causal_lm import CausalLM
from ..models.fingerprint import file_sha256, target_fingerprint
from .checkpoint import (CONFIG_FILE, LORA_FORMAT, WEIGHTS_FILE, check_target, load_full_model, read_config,
                         write_weights_folder)
from .eagle import KINDS, EagleDrafter, EagleModel
from .vocab import DraftVocab

FORMAT = LORA_FORMAT
VERSION = 1
ADAPTER_FILE = "adapter.safetensors"
ADAPTER = "default"  # peft's adapter name; one adapter per model
# every linear layer of an EagleModel: the fusion layer and the decoder layer's attention and MLP projections
DEFAULT_TARGETS = ("fc", "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def linear_modules(model: nn.Module) -> list[str]:
    """Names of the linear layers LoRA may adapt (the body's dummy one-token head is never used)."""
    return [name for name, module in model.named_modules()
            if isinstance(module, nn.Linear) and not name.startswith("body.lm_head")]


def resolve_targets(model: nn.Module, targets: Iterable[str]) -> list[str]:
    """Full module names of the linear layers named (or name-suffixed) by `targets`; each must match one."""
    linears = linear_modules(model)
    chosen, unmatched = [], []
    for wanted in targets:
        hits = [name for name in linears if name == wanted or name.endswith("." + wanted)]
        chosen += [h for h in hits if h not in chosen]
        if not hits:
            unmatched.append(wanted)
    if unmatched:
        short = sorted({name.rsplit(".", 1)[-1] for name in linears})
        raise TaskspecError(f"--lora-targets {','.join(unmatched)}: no linear layer of the drafter is named so; "
                            f"its linear layers are {', '.join(short)}")
    return chosen


def inject_lora(model: EagleModel, rank: int, alpha: float, modules: list[str]) -> EagleModel:
    """Wrap `modules` (full names) of `model` in peft LoRA layers, in place: the base weights are frozen, only
    lora_A (random) and lora_B (zero, so the model starts equal to its base) train."""
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, bias="none", target_modules=list(modules))
    return inject_adapter_in_model(config, model, adapter_name=ADAPTER)


def adapter_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The LoRA weights of a peft-injected model, keyed "m.lora_A.weight" [r, in] / "m.lora_B.weight" [out, r]
    (peft's own adapter state-dict keys), as fp32 copies."""
    from peft.tuners.lora import LoraLayer

    out = {}
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer):
            for part in ("lora_A", "lora_B"):
                out[f"{name}.{part}.weight"] = getattr(module, part)[ADAPTER].weight.detach().float().clone()
    return out


def base_sha256(folder: str | Path) -> str:
    """sha256 of a full checkpoint's model.safetensors: an adapter is only valid on the exact weights it learnt on."""
    path = Path(folder) / WEIGHTS_FILE
    if not path.is_file():
        raise DrafterError(f"base drafter {str(folder)!r}: missing {WEIGHTS_FILE}; a LoRA adapter needs a full "
                           "drafter checkpoint as its base (not another adapter)")
    return file_sha256(path)


def save_adapter(model: nn.Module, folder: str | Path, target: CausalLM, *, base: str | Path, base_sha: str,
                 kind: str, rank: int, alpha: float, targets: Iterable[str], draft_vocab_size: int,
                 extra: dict | None = None, extra_files: Callable[[Path], None] | None = None) -> Path:
    """Write the LoRA weights of the peft-injected `model` (trained on the drafter at `base`) to `folder`."""

    folder = Path(folder)
    tensors = adapter_tensors(model)
    try:
        relative = os.path.relpath(Path(base).resolve(), folder.resolve())
    except ValueError:  # another drive (Windows): only the path as given
        relative = None
    config = {
        "format": FORMAT,
        "version": VERSION,
        "kind": kind,
        "rank": rank,
        "alpha": alpha,
        "targets": list(targets),
        "modules": sorted({key.rsplit(".lora_", 1)[0] for key in tensors}),
        "draft_vocab_size": draft_vocab_size,
        "base": {"path": str(base), "relative": relative, "sha256": base_sha},
        "target": target_fingerprint(target),
        **(extra or {}),
    }

    return write_weights_folder(folder, ADAPTER_FILE, tensors, config, extra_files)


def load_adapter(folder: str | Path, target: CausalLM, merge: bool = True, **options) -> EagleDrafter:
    """An adapter folder as a drafter: merged (the default, as fast as a full head) or peft's unmerged forward
    (the reference). Options (depth, top_k, num_nodes) as for load_drafter."""
    model, vocab, config = load_adapter_model(folder, target, merge=merge)
    name = str(folder) if merge else f"{folder} (unmerged)"
    return EagleDrafter(model, vocab, target, config["kind"], name=name, **options)


def load_adapter_model(folder: str | Path, target: CausalLM, config: dict | None = None,
                       merge: bool = True) -> tuple[EagleModel, DraftVocab, dict]:
    """(base weights with the adapter merged in, or peft-injected when merge=False; draft vocabulary; config)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    config_path, weights_path = folder / CONFIG_FILE, folder / ADAPTER_FILE
    config = read_config(folder) if config is None else config
    expected = ("format", "version", "kind", "rank", "alpha", "modules", "draft_vocab_size", "base")
    if (config.get("format") != FORMAT or config.get("version") != VERSION or config.get("kind") not in KINDS
            or any(key not in config for key in expected) or not isinstance(config["base"], dict)):
        raise DrafterError(f"LoRA adapter {str(config_path)!r}: not a {FORMAT} v{VERSION} config (expected the keys "
                           f"{', '.join(expected)}; format {config.get('format')!r}, version "
                           f"{config.get('version')!r}, kind {config.get('kind')!r})")
    check_target(config.get("target", {}), target, folder)
    if not weights_path.is_file():
        raise DrafterError(f"LoRA adapter {str(folder)!r}: missing {ADAPTER_FILE}; expected a folder written by "
                           f"`taskspec train --lora-rank` ({CONFIG_FILE} + {ADAPTER_FILE})")
    try:
        tensors = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise DrafterError(f"LoRA adapter {str(weights_path)!r}: corrupt weights ({exc})") from None

    base = _find_base(folder, config)
    sha = base_sha256(base)
    if sha != config["base"].get("sha256"):
        raise DrafterError(f"LoRA adapter {str(folder)!r}: its base drafter {str(base / WEIGHTS_FILE)!r} has other "
                           f"weights (sha256 {sha[:12]}…) than the adapter was trained on "
                           f"({str(config['base'].get('sha256'))[:12]}…); use the original base drafter")
    model, vocab, _ = load_full_model(base, target, read_config(base))
    if len(vocab) != config["draft_vocab_size"]:
        raise DrafterError(f"LoRA adapter {str(config_path)!r}: draft vocabulary of {config['draft_vocab_size']} "
                           f"tokens, but its base {str(base)!r} has {len(vocab)}")
    _check_tensors(tensors, model, config, weights_path)
    scaling = config["alpha"] / config["rank"]
    if merge:
        merge_lora(model, tensors, scaling)
    else:
        from peft import set_peft_model_state_dict

        inject_lora(model, config["rank"], config["alpha"], config["modules"])
        unexpected = set_peft_model_state_dict(model, tensors, adapter_name=ADAPTER).unexpected_keys
        if unexpected:
            raise DrafterError(f"LoRA adapter {str(weights_path)!r}: peft did not load {unexpected[:3]}")
        model.eval()
    return model, vocab, config


@torch.no_grad()
def merge_lora(model: EagleModel, tensors: dict[str, torch.Tensor], scaling: float) -> EagleModel:
    """W ← W + scaling·B·A for every adapted module, in place: computed in fp32, stored in W's dtype."""
    for key in tensors:
        if not key.endswith(".lora_A.weight"):
            continue
        name = key[: -len(".lora_A.weight")]
        weight = model.get_submodule(name).weight  # [out, in]
        lora_a, lora_b = tensors[key].float(), tensors[f"{name}.lora_B.weight"].float()  # [r, in], [out, r]
        weight.copy_((weight.float() + scaling * (lora_b @ lora_a)).to(weight.dtype))
    return model


def adapter_size_bytes(folder: str | Path) -> int:
    """Bytes needed to ship an adapter (config.json + adapter.safetensors; not the resume state)."""
    return sum((Path(folder) / name).stat().st_size for name in (CONFIG_FILE, ADAPTER_FILE))


def _find_base(folder: Path, config: dict) -> Path:
    """The base drafter folder: the path relative to the adapter first, then the path as given, then a drafter
    shipped with the package whose weights have the recorded hash (so a set whose adapters sit on a shipped
    drafter can itself be shipped, or installed anywhere)."""
    base = config["base"]
    tried = []
    for candidate in (Path(os.path.normpath(folder / base["relative"])) if base.get("relative") else None,
                      Path(base["path"]) if base.get("path") else None):
        if candidate is None:
            continue
        tried.append(str(candidate))
        if (candidate / CONFIG_FILE).is_file():
            return candidate
    from .shipped import SHIPPED_DIR

    if base.get("sha256"):
        for weights in sorted(SHIPPED_DIR.glob(f"*/{WEIGHTS_FILE}")):
            if base_sha256(weights.parent) == base["sha256"]:
                return weights.parent
    tried.append(f"the drafters shipped in {SHIPPED_DIR}")
    raise DrafterError(f"LoRA adapter {str(folder / CONFIG_FILE)!r}: its base drafter is missing (tried "
                       f"{' and '.join(repr(t) for t in tried)}); expected the drafter checkpoint the "
                       "adapter was trained on, at the same place relative to the adapter or at its original path")


def _check_tensors(tensors: dict[str, torch.Tensor], model: EagleModel, config: dict, path: Path) -> None:
    """Exactly an A [rank, in] and a B [out, rank] per listed module, each module a linear layer of the base."""
    rank, linears = config["rank"], dict(model.named_modules())
    expected = {}
    for name in config["modules"]:
        layer = linears.get(name)
        if not isinstance(layer, nn.Linear):
            raise DrafterError(f"LoRA adapter {str(path)!r}: module {name!r} is not a linear layer of the base drafter")
        out_features, in_features = layer.weight.shape
        expected[f"{name}.lora_A.weight"] = (rank, in_features)
        expected[f"{name}.lora_B.weight"] = (out_features, rank)
    got = {key: tuple(t.shape) for key, t in tensors.items()}
    if got != expected:
        wrong = sorted(k for k in expected.keys() | got.keys() if got.get(k) != expected.get(k))
        raise DrafterError(f"LoRA adapter {str(path)!r}: weights do not match the config (rank {rank}, modules "
                           f"{len(config['modules'])}): " + "; ".join(f"{k}: expected {expected.get(k)}, "
                                                                      f"found {got.get(k)}" for k in wrong[:3]))
