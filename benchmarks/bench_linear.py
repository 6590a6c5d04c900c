"""bf16 linear layers on CPU: torch bf16 F.linear vs the taskspec kernel vs torch fp32 F.linear.

    python benchmarks/bench_linear.py [--repeats 7] [--threads 2] [--ms 1,2,4,8,16,32] [--layers lm_head,q_proj]
                                      [--cold] [--no-fp32]

Shapes are Gemma 3 270M's (hidden 640, 4 query heads x 256, 1 KV head x 256, MLP 2048, vocab 262144). For every
(layer, M) the three variants run interleaved, `repeats` rounds after one warm-up round, and the median time in
ms is reported (fp32 uses fp32 copies of the same weights, made outside the timing). Prints a Markdown table:
the kernel's column also gives its time relative to its own M=1 time, and the speed-up over torch bf16.

By default a layer's weights stay in the CPU caches between calls when they fit (all but the LM head), which
makes the small layers compute-bound. Inside a model they come from memory every step (the layers together are
far larger than the caches): --cold rotates each call through enough copies of the weights (>= 96 MiB) for that.
Nothing here is a test; the machine should be otherwise idle.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from taskspec.kernels import bf16_linear, kernel_available, kernel_unavailable_reason

LAYERS = {  # name: (K = in_features, N = out_features)
    "lm_head": (640, 262144),
    "q_proj": (640, 1024),
    "k_proj/v_proj": (640, 256),
    "o_proj": (1024, 640),
    "gate/up_proj": (640, 2048),
    "down_proj": (2048, 640),
    # a feature drafter's head: the target's output rows for the draft vocabulary (drafters/eagle.py)
    "draft_head_32k": (640, 32768),
    "draft_head_16k": (640, 16384),
    "draft_head_8k": (640, 8192),
}


COLD_BYTES = 96 << 20  # well above the 32 MiB L3 of the machine this was written on


class Ring:
    """Endless round-robin over a list."""

    def __init__(self, items: list):
        self.items = items

    def __iter__(self):
        while self.items:
            yield from self.items


def _variants(x: torch.Tensor, weights: list[torch.Tensor], weights32: list[torch.Tensor]) -> dict:
    """The timed calls. Both bf16 variants share one ring of weight copies, so with --cold a call never reads the
    copy another call has just brought into the caches."""
    ring, ring32, x32 = iter(Ring(weights)), iter(Ring(weights32)), x.float()
    variants = {"bf16": lambda: F.linear(x, next(ring)), "kernel": lambda: bf16_linear(x, next(ring))}
    if weights32:
        variants["fp32"] = lambda: F.linear(x32, next(ring32))
    return variants


def _interleaved(variants: dict, repeats: int) -> dict[str, list[float]]:
    """ms per call of each variant: one warm-up round, then `repeats` rounds, the variants taking turns."""
    times: dict[str, list[float]] = {v: [] for v in variants}
    for round_ in range(repeats + 1):
        for v, fn in variants.items():
            start = time.perf_counter()
            fn()
            if round_:
                times[v].append((time.perf_counter() - start) * 1e3)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds per (layer, M), median reported")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--ms", default="1,2,4,8,16,32", help="comma-separated row counts M")
    parser.add_argument("--layers", default=",".join(LAYERS), help="comma-separated subset of " + ", ".join(LAYERS))
    parser.add_argument("--no-fp32", action="store_true", help="skip the torch fp32 column (saves memory and time)")
    parser.add_argument("--cold", action="store_true",
                        help="rotate through copies of the weights so they come from memory, as inside a model")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    if not kernel_available():
        print(f"kernel unavailable: {kernel_unavailable_reason()}", file=sys.stderr)
        return 1
    ms = [int(v) for v in args.ms.split(",")]
    names = [v.strip() for v in args.layers.split(",")]
    unknown = [n for n in names if n not in LAYERS]
    if unknown:
        parser.error(f"unknown layers {unknown}; choose from {list(LAYERS)}")

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.repeats} repeats, median ms, "
          f"weights {'from memory (--cold)' if args.cold else 'cache-hot when they fit'}\n")
    print("| layer (K->N) | M | torch bf16 | kernel (x its M=1) | torch fp32 | kernel speed-up vs bf16 |")
    print("|---|---:|---:|---:|---:|---:|")
    torch.manual_seed(0)
    with torch.inference_mode():
        for name in names:
            k, n = LAYERS[name]
            weight = (torch.randn(n, k) * k ** -0.5).to(torch.bfloat16)
            copies = max(1, -(-COLD_BYTES // weight.nbytes)) if args.cold else 1
            weights = [weight] + [weight.clone() for _ in range(copies - 1)]
            weights32 = [] if args.no_fp32 else [w.float() for w in weights]
            for fn in _variants(torch.randn(1, k).to(torch.bfloat16), weights, weights32).values():
                for _ in weights:  # touch every copy once per variant first: the first timed M is no outlier
                    fn()
            kernel_m1 = None
            for m in ms:
                x = torch.randn(m, k).to(torch.bfloat16)
                times = _interleaved(_variants(x, weights, weights32), args.repeats)
                med = {v: statistics.median(ts) for v, ts in times.items()}
                if m == 1:
                    kernel_m1 = med["kernel"]
                ratio = f" ({med['kernel'] / kernel_m1:.2f}x)" if kernel_m1 else ""
                fp32 = f"{med['fp32']:.3f}" if "fp32" in med else "-"
                print(f"| {name} ({k}->{n}) | {m} | {med['bf16']:.3f} | {med['kernel']:.3f}{ratio} | {fp32} "
                      f"| {med['bf16'] / med['kernel']:.2f}x |", flush=True)
            del weight, weights, weights32
    return 0


if __name__ == "__main__":
    sys.exit(main())
