"""CPU kernels built on first use (see bf16_linear.py)."""

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
]
