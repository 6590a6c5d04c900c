"""A batch-invariant bf16 linear layer for AVX2 CPUs, built on first use.

On x86 CPUs without AVX-512 bf16 support PyTorch computes a bf16 ``F.linear`` over M rows as M matrix-vector
products, each reading the whole weight matrix, so verifying 8 draft tokens costs 8 decoding steps. The kernel in
``bf16_linear.cpp`` reads each tile of weight rows once and uses it for every input row: while the layer is
memory-bandwidth bound, M = 8..32 rows cost little more than one.

Arithmetic: fp32 products and sums (one 8-lane FMA accumulator per output, a fixed reduction tree, a scalar FMA
tail for K % 8, then the bias), one round-to-nearest-even to bf16 at the end; the exact sequence is written at the
top of bf16_linear.cpp. Each output element goes through the same operations whatever the number of rows, the
tiling or the thread count, so a row's output is *bitwise* the same alone or inside a batch (what keeps greedy
speculative decoding token-for-token equal to plain decoding). Against an fp32 matmul rounded to bf16 it differs
only through the order of the fp32 additions: equal on ~99.9% of elements, otherwise by one bf16 ulp.

The C++ source is compiled the first time it is needed and loaded with ctypes by build.py (shared with
attention.py: the system C++ compiler, a cache under ``$TASKSPEC_CACHE/kernels``, a build record that a cached
library must match before it is loaded); about 2 s cold, milliseconds warm. It has a plain C ABI, so no Python or
libtorch headers are needed; calls show up in torch.profiler as ``taskspec::bf16_linear``.
``TASKSPEC_NO_KERNEL=1`` disables it. Nothing here raises at import: ``kernel_available()`` says whether it can be
used and ``kernel_unavailable_reason()`` why not.

Inference only: there is no backward. ``bf16_linear`` refuses inputs that need a gradient; patched modules fall
back to ``F.linear`` when autograd is recording.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from . import build

__all__ = [
    "Bf16Linear", "bf16_linear", "kernel_available", "kernel_unavailable_reason", "kernel_library_path",
    "patch_linears", "reference_bf16_linear", "unpatch_linears",
]

SOURCE = Path(__file__).with_name("bf16_linear.cpp")
ABI_VERSION = 1
PROFILER_NAME = "taskspec::bf16_linear"


# ---------------------------------------------------------------------------------------------- build and load

def _setup_linear(lib):
    fn = lib.ts_bf16_linear
    fn.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_int64] * 3 + [ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


_kernel = build.LazyKernel(lambda: build.load_kernel_library(SOURCE, "bf16_linear", ABI_VERSION, _setup_linear,
                                                             what="bf16 linear kernel"))
_get_state, _reset = _kernel.state, _kernel.reset


def kernel_available() -> bool:
    """True when the kernel can be used here (builds it on the first call; never raises)."""
    return _get_state()["fn"] is not None


def kernel_unavailable_reason() -> str | None:
    """Why ``kernel_available()`` is False, or None when it is True."""
    return _get_state()["reason"]


def kernel_library_path() -> Path | None:
    """The loaded shared library (None when unavailable)."""
    return _get_state()["path"]


# ----------------------------------------------------------------------------------------------- the function

def reference_bf16_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """The same computation in plain PyTorch: fp32 matmul (+ fp32 bias), one rounding to bf16."""
    out = x.float() @ weight.float().T
    if bias is not None:
        out = out + bias.float()
    return out.to(torch.bfloat16)


def _launch(fn, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, threads: int) -> torch.Tensor:
    """Run the kernel on already validated bf16 CPU tensors (weight and bias contiguous)."""
    k = x.shape[-1]
    n = weight.shape[0]
    if x.dim() == 2:
        lead = None
        m = x.shape[0]
        if not x.is_contiguous():
            x = x.contiguous()
    else:
        lead = x.shape[:-1]
        m = lead.numel()
        x = x.reshape(m, k).contiguous()
    out = torch.empty(m, n, dtype=torch.bfloat16)
    if m and n:
        args = (x.data_ptr(), weight.data_ptr(), None if bias is None else bias.data_ptr(), out.data_ptr(),
                m, n, k, threads)
        if build.profiler_enabled():  # name the call in torch.profiler tables (a ctypes call is no torch operator)
            with torch.profiler.record_function(PROFILER_NAME):
                rc = fn(*args)
        else:
            rc = fn(*args)
        if rc:
            raise RuntimeError(f"bf16 linear kernel failed (code {rc}) for M={m}, N={n}, K={k}")
    return out if lead is None else out.view(*lead, n)


def bf16_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *,
                num_threads: int | None = None) -> torch.Tensor:
    """``x @ weight.T + bias`` for bf16 CPU tensors: x [..., K], weight [N, K], bias [N] or None -> [..., N].

    fp32 accumulation, one round-to-nearest-even to bf16. Row i of the result is bitwise independent of the other
    rows of x and of ``num_threads`` (default ``torch.get_num_threads()``). Inference only: raises RuntimeError
    when autograd would need a gradient through it, and when the kernel is unavailable
    (see ``kernel_unavailable_reason()``).
    """
    state = _get_state()
    fn = state["fn"]
    if fn is None:
        raise RuntimeError(state["reason"])
    bf16 = torch.bfloat16
    if x.dtype != bf16 or weight.dtype != bf16 or (bias is not None and bias.dtype != bf16):
        raise TypeError(f"bf16_linear needs bf16 tensors, got x {x.dtype}, weight {weight.dtype}"
                        + ("" if bias is None else f", bias {bias.dtype}"))
    if not (x.is_cpu and weight.is_cpu and (bias is None or bias.is_cpu)):
        raise ValueError("bf16_linear runs on CPU tensors only")
    if weight.dim() != 2 or x.dim() < 1 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"shape mismatch: x {tuple(x.shape)} @ weight {tuple(weight.shape)}.T")
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"bias shape {tuple(bias.shape)}, want ({weight.shape[0]},)")
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad
                                    or (bias is not None and bias.requires_grad)):
        raise RuntimeError("bf16_linear is inference-only (no backward): call it under torch.no_grad() or "
                           "torch.inference_mode(), or detach the inputs")
    threads = torch.get_num_threads() if num_threads is None else int(num_threads)
    return _launch(fn, x, weight.contiguous(), None if bias is None else bias.contiguous(), threads)


# ------------------------------------------------------------------------------------------ modules, patching

class Bf16Linear(nn.Linear):
    """``nn.Linear`` whose forward uses the kernel for bf16 CPU inputs when autograd is not recording.

    Same parameters and state_dict as ``nn.Linear``; ``patch_linears`` turns existing ``nn.Linear`` modules into
    this class in place (so shared / tied Parameters stay shared). Anything else (other dtypes or devices,
    autograd recording, kernel unavailable) goes to ``F.linear``.
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002 (nn.Linear's name)
        weight, bias = self.weight, self.bias
        fn = _get_state()["fn"]
        if (fn is not None and input.dtype == torch.bfloat16 and weight.dtype == torch.bfloat16 and input.is_cpu
                and weight.is_cpu and input.dim() >= 1 and input.shape[-1] == weight.shape[1]
                and (bias is None or (bias.dtype == torch.bfloat16 and bias.is_cpu))
                and not (torch.is_grad_enabled() and (input.requires_grad or weight.requires_grad
                                                      or (bias is not None and bias.requires_grad)))):
            return _launch(fn, input, weight.contiguous(), None if bias is None else bias.contiguous(),
                           torch.get_num_threads())
        return F.linear(input, weight, bias)


def patch_linears(model: nn.Module) -> int:
    """Make every plain ``nn.Linear`` with a bf16 CPU weight in ``model`` (itself included) use the kernel.

    In place: each module's class becomes ``Bf16Linear``, its Parameters are untouched (tied weights stay the same
    object, state_dict keys and values are unchanged). Subclasses of nn.Linear and modules whose forward was
    replaced on the instance (e.g. by hooks) are left alone. Returns how many modules this call patched; 0 when
    the kernel is unavailable. Undo with ``unpatch_linears``.
    """
    if not kernel_available():
        return 0
    patched = 0
    for module in model.modules():
        if (type(module) is nn.Linear and "forward" not in module.__dict__
                and module.weight.dtype == torch.bfloat16 and module.weight.device.type == "cpu"):
            module.__class__ = Bf16Linear
            patched += 1
    return patched


def unpatch_linears(model: nn.Module) -> int:
    """Turn the ``Bf16Linear`` modules of ``model`` back into ``nn.Linear``; returns how many."""
    unpatched = 0
    for module in model.modules():
        if type(module) is Bf16Linear:
            module.__class__ = nn.Linear
            unpatched += 1
    return unpatched
