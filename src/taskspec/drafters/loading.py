"""Loading a drafter folder of either format: a full feature-drafter checkpoint (checkpoint.py) or a LoRA adapter
on one (lora.py), told apart by config.json's format. It sits above both so that neither imports the other's
loader: lora.py builds on checkpoint.py, and nothing in checkpoint.py knows about adapters beyond their format name.
"""

from __future__ import annotations

from pathlib import Path

from ..models.causal_lm import CausalLM
from .checkpoint import LORA_FORMAT, load_full_model, read_config, readable_folder
from .eagle import EagleDrafter, EagleModel
from .lora import load_adapter_model
from .vocab import DraftVocab


def load_drafter(folder: str | Path, target: CausalLM, **options) -> EagleDrafter:
    """Load a checkpoint (or a LoRA adapter, merged into its base) for `target`; options (depth, top_k, num_nodes)
    override the drafting defaults."""
    model, vocab, config = load_model(folder, target)
    return EagleDrafter(model, vocab, target, config["kind"], name=str(folder), **options)


def load_model(folder: str | Path, target: CausalLM) -> tuple[EagleModel, DraftVocab, dict]:
    """(weights in the target's dtype, draft vocabulary, config.json) of a checkpoint or LoRA adapter folder,
    not yet wrapped in a drafter (so training can take the weights as they are stored)."""
    folder = readable_folder(folder)
    config = read_config(folder)
    if config.get("format") == LORA_FORMAT:
        return load_adapter_model(folder, target, config)
    return load_full_model(folder, target, config)
