"""CPU kernels built on first use (see bf16_linear.py and attention.py; build.py compiles, checks and loads them)."""

from .attention import (
    ATTENTION_NAME,
    attention_kernel_available,
    attention_kernel_unavailable_reason,
    attention_library_path,
    invariant_attention,
    invariant_attention_forward,
    reference_attention,
    register_invariant_attention,
    use_invariant_attention,
    use_sdpa_attention,
)
from .bf16_linear import (
    Bf16Linear,
    bf16_linear,
    kernel_available,
    kernel_library_path,
    kernel_unavailable_reason,
    patch_linears,
    reference_bf16_linear,
    unpatch_linears,
)

__all__ = [
    "Bf16Linear", "bf16_linear", "kernel_available", "kernel_library_path", "kernel_unavailable_reason",
    "patch_linears", "reference_bf16_linear", "unpatch_linears",
    "ATTENTION_NAME", "attention_kernel_available", "attention_kernel_unavailable_reason", "attention_library_path",
    "invariant_attention", "invariant_attention_forward", "reference_attention", "register_invariant_attention",
    "use_invariant_attention", "use_sdpa_attention",
]
