"""Batch-invariant attention for CPU inference, registered as the transformers attention "taskspec_invariant".

Why: speculative verification runs a tree of n draft tokens through the target in one forward, and greedy output is
only lossless if every token's logits are *bitwise* those of plain one-token-at-a-time decoding. The linear layers
get that from bf16_linear; attention did not: transformers' SDPA path packs GQA heads for one query and repeats KV
heads for several, and torch's SDPA blocks its reductions by size, so in bf16 a token's logits moved by up to ~3 and
10-30% of 128-token greedy outputs of Gemma 3 270M diverged.

The kernel (attention.cpp, built and loaded by build.py like bf16_linear.cpp) computes each (query row, head) on its
own: the visible keys (mask True) in ascending slot order, fp32 dot products in a fixed order, a fixed vectorised
exp, fp32 sums in ascending order, one rounding to bf16 at the end; masked keys are skipped, never read. A row's
output depends only on its query and on the ordered list of keys it may see -- not on n, on the slots those keys
occupy, on the other rows, on the work split or on the thread count. A tree node whose ancestors sit at later cache
slots (parents before children) therefore gets exactly the output of sequential decoding, where the same ancestors
sit contiguously. The exact arithmetic is written at the top of attention.cpp.

dtypes: bf16 and fp32 inputs run in the kernel (fp32 arithmetic in both; fp32 outputs are not rounded). Anything
else (fp16, non-CPU tensors, autograd recording, dropout in training, per-head masks, additive float masks with
non-zero biases, ``position_bias``) goes to transformers' SDPA (or, with ``softcap``, to ``reference_attention``),
so a model switched to "taskspec_invariant" always runs. A query row that may see no key at all gets zeros.

Use ``use_invariant_attention(model)`` on a loaded model (a transformers PreTrainedModel or taskspec's CausalLM);
it returns False and leaves the model alone when the kernel is unavailable (no AVX2/FMA, no compiler,
``TASKSPEC_NO_KERNEL=1`` or ``TASKSPEC_NO_ATTENTION_KERNEL=1``). ``use_sdpa_attention(model)`` switches back.
Masks passed to the model as 4D tensors (or a dict of them per layer type, as CausalLM does) reach the kernel
unchanged; the model's own mask creation (calls without a 4D mask) builds boolean masks as for SDPA, never skipped.
"""

from __future__ import annotations

import ctypes
import logging
from pathlib import Path

import torch

from . import build

__all__ = [
    "ATTENTION_NAME", "attention_kernel_available", "attention_kernel_unavailable_reason", "attention_library_path",
    "invariant_attention", "invariant_attention_forward", "reference_attention", "register_invariant_attention",
    "use_invariant_attention", "use_sdpa_attention",
]

log = logging.getLogger(__name__)

ATTENTION_NAME = "taskspec_invariant"
SOURCE = Path(__file__).with_name("attention.cpp")
ABI_VERSION = 1
DISABLE_ENV = "TASKSPEC_NO_ATTENTION_KERNEL"  # TASKSPEC_NO_KERNEL disables it too
PROFILER_NAME = "taskspec::attention"
_DTYPE_CODES = {torch.bfloat16: 0, torch.float32: 1}


# ---------------------------------------------------------------------------------------------- build and load

def _setup(lib):
    fn = lib.ts_attention
    fn.argtypes = ([ctypes.c_int] + [ctypes.c_void_p] * 5 + [ctypes.c_int64] * 6
                   + [ctypes.c_void_p, ctypes.c_float, ctypes.c_float, ctypes.c_int])
    fn.restype = ctypes.c_int
    return fn


_kernel = build.LazyKernel(lambda: build.load_kernel_library(
    SOURCE, "attention", ABI_VERSION, _setup, what="invariant attention kernel",
    disable_envs=(build.DISABLE_ENV, DISABLE_ENV)))
_get_state, _reset = _kernel.state, _kernel.reset


def attention_kernel_available() -> bool:
    """True when the attention kernel can be used here (builds it on the first call; never raises)."""
    return _get_state()["fn"] is not None


def attention_kernel_unavailable_reason() -> str | None:
    """Why ``attention_kernel_available()`` is False, or None when it is True."""
    return _get_state()["reason"]


def attention_library_path() -> Path | None:
    """The loaded shared library (None when unavailable)."""
    return _get_state()["path"]


# ------------------------------------------------------------------------------------------------------ masks

def _causal_mask(n: int, length: int, causal: bool = True, sliding_window: int | None = None) -> torch.Tensor:
    """[n, L] bool: query i sits at position L - n + i and sees keys j <= it (and within the window)."""
    if not causal:
        return torch.ones(n, length, dtype=torch.bool)
    q_pos = torch.arange(length - n, length)[:, None]
    k_pos = torch.arange(length)[None, :]
    mask = k_pos <= q_pos
    if sliding_window:
        mask &= (q_pos - k_pos) < int(sliding_window)
    return mask


def _as_bool_mask(mask: torch.Tensor | None, batch: int, n: int, length: int, causal: bool = True,
                  sliding_window: int | None = None) -> torch.Tensor | None:
    """Any supported mask -> [1 or batch, n, L] bool (a view when possible). None when unsupported (per-head masks,
    additive masks carrying real biases, wrong shapes): callers then fall back."""
    if mask is None:
        return _causal_mask(n, length, causal, sliding_window)[None]
    if mask.dim() == 4:
        if mask.shape[1] != 1:
            return None
        mask = mask[:, 0]
    elif mask.dim() == 2:
        mask = mask[None]
    elif mask.dim() != 3:
        return None
    if mask.shape[-1] < length or mask.shape[0] not in (1, batch) or mask.shape[1] not in (1, n):
        return None
    mask = mask[..., :length]
    if mask.dtype != torch.bool:
        if not mask.is_floating_point():
            mask = mask != 0
        else:  # additive: 0 = attend, -inf or the dtype's minimum = masked; anything else is a bias we cannot apply
            visible = mask > torch.finfo(mask.dtype).min
            if bool((mask[visible] != 0).any()):
                return None
            mask = visible
    if mask.shape[1] != n:
        mask = mask.expand(mask.shape[0], n, length)
    if length > 1 and mask.stride(-1) != 1:
        mask = mask.contiguous()
    return mask


# -------------------------------------------------------------------------------------------------- functions

def reference_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                        mask: torch.Tensor | None = None, scaling: float | None = None, softcap: float | None = None,
                        dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Plain PyTorch masked softmax attention in ``dtype`` (default fp32), for tests and fallbacks.

    query [B, Hq, n, D], key / value [B, Hkv, L, D] (GQA: head h reads kv head h // (Hq // Hkv)), mask: bool
    [n, L], [B or 1, n, L] or [B or 1, 1, n, L] (True = attend) or None (causal, queries at the last n positions).
    Returns [B, n, Hq, D] in ``dtype`` (not rounded to the input dtype); rows that see no key are zeros.
    """
    b, hq, n, d = query.shape
    hkv, length = key.shape[1], key.shape[2]
    scaling = d ** -0.5 if scaling is None else scaling
    m = _as_bool_mask(mask, b, n, length)
    if m is None:
        raise ValueError(f"unsupported mask of shape {tuple(mask.shape)} and dtype {mask.dtype}")
    q = query.to(dtype)
    k = key.to(dtype).repeat_interleave(hq // hkv, dim=1)
    v = value.to(dtype).repeat_interleave(hq // hkv, dim=1)
    scores = (q @ k.transpose(-1, -2)) * scaling  # [B, Hq, n, L]
    if softcap:
        scores = torch.tanh(scores / softcap) * softcap
    m = m[:, None]  # [B or 1, 1, n, L]
    scores = scores.masked_fill(~m, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    probs = torch.where(m.any(-1, keepdim=True), probs, torch.zeros((), dtype=dtype))
    return (probs @ v).transpose(1, 2)


_Strides = ctypes.c_int64 * 11


def _launch(fn, query, key, value, mask, mask_b: int, mask_i: int, scaling: float, softcap: float | None,
            threads: int) -> torch.Tensor:
    """Run the kernel on validated CPU tensors. mask: bool, element [b, i, j] at mask_b * b + mask_i * i + j (its
    last dimension contiguous, at least L long)."""
    b, hq, n, d = query.shape
    hkv, length = key.shape[1], key.shape[2]
    qs, ks, vs = query.stride(), key.stride(), value.stride()
    if d > 1 and (qs[3] != 1 or ks[3] != 1 or vs[3] != 1):
        query, key, value = query.contiguous(), key.contiguous(), value.contiguous()
        qs, ks, vs = query.stride(), key.stride(), value.stride()
    out = torch.empty(b, n, hq, d, dtype=query.dtype)
    if out.numel() == 0:
        return out
    strides = _Strides(qs[0], qs[1], qs[2], ks[0], ks[1], ks[2], vs[0], vs[1], vs[2], mask_b, mask_i)
    args = (_DTYPE_CODES[query.dtype], query.data_ptr(), key.data_ptr(), value.data_ptr(), mask.data_ptr(),
            out.data_ptr(), b, hq, hkv, n, length, d, ctypes.addressof(strides), scaling,
            float(softcap) if softcap else 0.0, threads)
    if build.profiler_enabled():
        with torch.profiler.record_function(PROFILER_NAME):
            rc = fn(*args)
    else:
        rc = fn(*args)
    if rc:
        raise RuntimeError(f"attention kernel failed (code {rc}) for q {tuple(query.shape)}, k {tuple(key.shape)}")
    return out


def _launch_3d(fn, query, key, value, mask, scaling, softcap, threads) -> torch.Tensor:
    """_launch with a [1 or B, n, L] mask from _as_bool_mask."""
    mb = mask.stride(0) if mask.shape[0] > 1 else 0
    mi = mask.stride(1) if mask.shape[1] > 1 else 0
    return _launch(fn, query, key, value, mask, mb, mi, scaling, softcap, threads)


def _kernel_problem(query, key, value, mask) -> str | None:
    """Why the kernel cannot take these inputs (None when it can)."""
    if query.dtype not in _DTYPE_CODES or key.dtype != query.dtype or value.dtype != query.dtype:
        return f"dtypes {query.dtype}/{key.dtype}/{value.dtype}: the kernel takes bf16 or fp32"
    if not (query.is_cpu and key.is_cpu and value.is_cpu):
        return "not CPU tensors"
    if query.dim() != 4 or key.dim() != 4 or value.dim() != 4:
        return "expected 4-D query/key/value"
    b, hq, _, d = query.shape
    if key.shape[0] != b or value.shape[:3] != key.shape[:3] or key.shape[-1] != d or value.shape[-1] != d:
        return f"shapes q {tuple(query.shape)}, k {tuple(key.shape)}, v {tuple(value.shape)}"
    if key.shape[1] == 0 or hq % key.shape[1]:
        return f"{hq} query heads for {key.shape[1]} kv heads"
    if mask is None:
        return "unsupported mask"
    if torch.is_grad_enabled() and (query.requires_grad or key.requires_grad or value.requires_grad):
        return "autograd is recording (the kernel has no backward)"
    return None


def invariant_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                        mask: torch.Tensor | None = None, scaling: float | None = None, softcap: float | None = None,
                        *, num_threads: int | None = None) -> torch.Tensor:
    """Batch-invariant attention: query [B, Hq, n, D], key / value [B, Hkv, L, D] -> [B, n, Hq, D] (input dtype).

    mask as for ``reference_attention`` (bool, True = attend; None = causal w.r.t. the last n positions). bf16 or
    fp32 CPU tensors. Each (row, head) output is bitwise a function of its query and of the ordered visible keys
    only, whatever ``num_threads`` (default ``torch.get_num_threads()``). Raises when the kernel is unavailable or
    the inputs are not supported.
    """
    state = _get_state()
    if state["fn"] is None:
        raise RuntimeError(state["reason"])
    b, _, n, d = query.shape if query.dim() == 4 else (0, 0, 0, 0)
    m = _as_bool_mask(mask, b, n, key.shape[-2]) if query.dim() == 4 and key.dim() == 4 else None
    problem = _kernel_problem(query, key, value, m)
    if problem:
        raise ValueError(f"invariant_attention: {problem}")
    threads = torch.get_num_threads() if num_threads is None else int(num_threads)
    return _launch_3d(state["fn"], query, key, value, m, float(d ** -0.5 if scaling is None else scaling), softcap,
                      threads)


def invariant_attention_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor,
                                value: torch.Tensor, attention_mask: torch.Tensor | None, dropout: float = 0.0,
                                scaling: float | None = None, is_causal: bool | None = None,
                                softcap: float | None = None, sliding_window: int | None = None,
                                **kwargs) -> tuple[torch.Tensor, None]:
    """A transformers attention function (same contract as ``sdpa_attention_forward``): returns
    ``(attn_output [B, n, Hq, D], None)``.

    attention_mask: a bool [B or 1, 1, n, L] mask (what taskspec passes), an additive float mask (0 / -inf or the
    dtype minimum), or None: causal for queries at the last n positions (bidirectional when ``is_causal`` or
    ``module.is_causal`` is False), restricted to ``sliding_window`` when the layer has one. Inputs the kernel does
    not take go to SDPA (see the module docstring).
    """
    state = _get_state()
    fn = state["fn"]
    scale = float(query.shape[-1] ** -0.5 if scaling is None else scaling)
    # fast path: what taskspec's CausalLM passes (a bool [1, 1, n, L] mask, inference, bf16 / fp32 CPU tensors)
    m = attention_mask
    if (fn is not None and m is not None and m.dtype is torch.bool and m.dim() == 4 and query.dim() == 4
            and key.dim() == 4 and value.dim() == 4 and query.dtype in _DTYPE_CODES and key.dtype is query.dtype
            and value.dtype is query.dtype and query.is_cpu and key.is_cpu and value.is_cpu
            and kwargs.get("position_bias") is None and kwargs.get("cache") is None and kwargs.get("s_aux") is None
            and not (dropout and module is not None and module.training)
            and not (torch.is_grad_enabled() and (query.requires_grad or key.requires_grad or value.requires_grad))):
        b, hq, n, d = query.shape
        mshape, kshape = m.shape, key.shape
        if (mshape[1] == 1 and mshape[2] == n and mshape[3] >= kshape[2] and mshape[0] in (1, b)
                and kshape[0] == b and kshape[1] and hq % kshape[1] == 0 and kshape[3] == d
                and value.shape == kshape and (mshape[3] == 1 or m.stride(3) == 1)):
            return _launch(fn, query, key, value, m, m.stride(0) if mshape[0] > 1 else 0,
                           m.stride(2) if n > 1 else 0, scale, softcap, torch.get_num_threads()), None

    if kwargs.get("s_aux") is not None:
        raise NotImplementedError("taskspec_invariant attention does not support attention sinks (s_aux)")
    fallback = (fn is None or kwargs.get("position_bias") is not None or kwargs.get("cache") is not None
                or (dropout and module is not None and module.training))
    mask = None
    if query.dim() == 4 and key.dim() == 4:
        causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
        mask = _as_bool_mask(attention_mask, query.shape[0], query.shape[2], key.shape[2], causal,
                             sliding_window if attention_mask is None else None)
    if fallback or _kernel_problem(query, key, value, mask):
        if softcap:  # SDPA refuses softcap: eager-style fp32 reference
            if mask is None:
                raise NotImplementedError("taskspec_invariant attention: softcap with a per-head or biased mask")
            out = reference_attention(query, key, value, mask.to(query.device), scale, softcap)
            return out.to(query.dtype).contiguous(), None
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    return _launch_3d(fn, query, key, value, mask, scale, softcap, torch.get_num_threads()), None


# ---------------------------------------------------------------------------------------- model integration

def _invariant_mask(*args, **kwargs):
    """The mask interface for "taskspec_invariant": SDPA's boolean masks, always materialised (never None)."""
    from transformers.masking_utils import sdpa_mask

    kwargs["allow_is_causal_skip"] = False
    kwargs["allow_is_bidirectional_skip"] = False
    return sdpa_mask(*args, **kwargs)


def register_invariant_attention() -> None:
    """Register "taskspec_invariant" with transformers' AttentionInterface and AttentionMaskInterface (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(ATTENTION_NAME, invariant_attention_forward)
    AttentionMaskInterface.register(ATTENTION_NAME, _invariant_mask)


def _hf_model(model):
    from transformers import PreTrainedModel

    if isinstance(model, PreTrainedModel):
        return model
    inner = getattr(model, "model", None)  # taskspec's CausalLM
    if isinstance(inner, PreTrainedModel):
        return inner
    raise TypeError(f"expected a transformers PreTrainedModel or a CausalLM wrapping one, got {type(model).__name__}")


def _implementations(hf) -> set[str]:
    from transformers import PreTrainedModel

    return {m.config._attn_implementation for m in hf.modules() if isinstance(m, PreTrainedModel)}


def use_invariant_attention(model) -> bool:
    """Switch every attention layer of ``model`` (a PreTrainedModel or a CausalLM) to "taskspec_invariant".

    Returns True when the whole model now uses it; False (model left as it was, e.g. on SDPA) when the attention
    kernel is unavailable (``attention_kernel_unavailable_reason()``) or the model cannot switch implementations.
    """
    hf = _hf_model(model)
    if not attention_kernel_available():
        log.info("invariant attention unavailable: %s", attention_kernel_unavailable_reason())
        return False
    register_invariant_attention()
    previous = hf.config._attn_implementation
    try:
        hf.set_attn_implementation(ATTENTION_NAME)
    except (ValueError, KeyError, ImportError) as exc:
        log.warning("could not switch %s to %s attention: %s", type(hf).__name__, ATTENTION_NAME, exc)
        return False
    if _implementations(hf) != {ATTENTION_NAME}:
        log.warning("%s did not switch every sub-model to %s attention; keeping %s", type(hf).__name__,
                    ATTENTION_NAME, previous)
        hf.set_attn_implementation(previous)
        return False
    return True


def use_sdpa_attention(model) -> bool:
    """Switch ``model`` (a PreTrainedModel or a CausalLM) back to transformers' SDPA; True when it now uses it."""
    hf = _hf_model(model)
    hf.set_attn_implementation("sdpa")
    return _implementations(hf) == {"sdpa"}
