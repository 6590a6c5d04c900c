"""Cost of one target verification step against the number of tokens it verifies.

    python benchmarks/bench_target_step.py --target embedded --past 200 --sizes 1,2,4,8,16,32 --repeats 7 \
        [--out results/target-step.json]

Speculative decoding pays off only if verifying n tokens costs much less than n single steps. This measures the
target forward (n new tokens over a cached past, chain mask, logits for every row) for each n, with taskspec's
batch-invariant bf16 linear kernel and with PyTorch's own bf16 linear, interleaved in one run, and prints the median
ms and the cost relative to a 1-token step; --out writes the same figures, every repeat and the machine as JSON
(the result files under results/ back docs/results.md).
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import sys
import time

import torch

from taskspec.io_utils import write_json_atomic
from taskspec.kernels import kernel_available, kernel_unavailable_reason, patch_linears, unpatch_linears
from taskspec.models.cache import crop, new_cache
from taskspec.models.target import load_target


def step_ms(target, cache, past: int, n: int) -> float:
    ids = torch.randint(0, target.vocab_size, (n,))
    t0 = time.perf_counter()
    target.forward(ids, cache)
    elapsed = time.perf_counter() - t0
    crop(cache, past)
    return 1000 * elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default="embedded")
    parser.add_argument("--dtype", default="bf16")
    parser.add_argument("--past", type=int, default=200, help="cached tokens before the step")
    parser.add_argument("--sizes", default="1,2,4,8,16,32")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", help="write the result (JSON) here")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    target = load_target(args.target, args.dtype, use_kernel=False)
    variants = ["torch"]
    if args.dtype == "bf16":
        if kernel_available():
            variants.append("kernel")
        else:
            print(f"kernel unavailable: {kernel_unavailable_reason()}")
    torch.manual_seed(0)
    cache = new_cache()
    target.forward(torch.randint(0, target.vocab_size, (args.past,)), cache, logit_rows=None)

    times: dict[tuple[str, int], list[float]] = {(v, n): [] for v in variants for n in sizes}
    for rep in range(args.repeats + 1):  # repeat 0 is a warm-up
        for variant in variants if rep % 2 else variants[::-1]:
            (patch_linears if variant == "kernel" else unpatch_linears)(target.model)
            for n in sizes:
                ms = step_ms(target, cache, args.past, n)
                if rep:
                    times[(variant, n)].append(ms)
    unpatch_linears(target.model)

    print(f"target {target.name} ({args.dtype}), past {args.past} tokens, {torch.get_num_threads()} threads, "
          f"median of {args.repeats}\n")
    header = "| tokens verified | " + " | ".join(f"{v} ms | {v} × 1-token" for v in variants) + " |"
    print(header)
    print("|---:|" + "---:|---:|" * len(variants))
    for n in sizes:
        cells = []
        for v in variants:
            med = statistics.median(times[(v, n)])
            cells += [f"{med:.1f}", f"{med / statistics.median(times[(v, 1)]):.2f}"]
        print(f"| {n} | " + " | ".join(cells) + " |")
    if args.out:
        write_json_atomic(args.out, {
            "meta": {"command": " ".join(["python", *sys.argv]), "target": target.name, "dtype": args.dtype,
                     "past": args.past, "repeats": args.repeats, "threads": torch.get_num_threads(),
                     "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                     "machine": {"processor": platform.processor() or platform.machine(),
                                 "torch": torch.__version__}},
            "median_ms": {v: {str(n): round(statistics.median(times[(v, n)]), 3) for n in sizes} for v in variants},
            "times_ms": {v: {str(n): [round(t, 3) for t in times[(v, n)]] for n in sizes} for v in variants}})
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
