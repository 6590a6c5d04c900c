"""Batch-invariant attention (taskspec.kernels.attention) vs transformers' SDPA attention on CPU.

    python benchmarks/bench_attention.py [--repeats 15] [--threads 2] [--ns 1,8,16,32] [--lengths 128,512,1024]
    python benchmarks/bench_attention.py --embedded [--past 200] [--sizes 1,8,16] [--repeats 7] [--no-timing]

Default mode: the attention function alone at Gemma 3 270M's shapes (4 query heads, 1 KV head, head_dim 256), bf16,
n new query rows over a cache of L keys (the last n of them the new tokens, causal among themselves: a chain
verification). Both functions are called as a Gemma 3 layer calls them (`module, q, k, v, mask` with a bool
[1, 1, n, L] mask), interleaved, one warm-up round, median ms of `repeats` rounds; Markdown table.

--embedded: the embedded Gemma 3 270M target in bf16 with the linear kernel. (1) Invariance: for each demo prompt,
its 16-token greedy continuation verified in one forward vs 16 single-token forwards, with SDPA and with the
invariant attention: max / mean |logit difference|, rows whose logits are bitwise equal, rows whose argmax differs.
(2) The whole target step (forward of n tokens over `past` cached tokens, logits for every row) for each n, SDPA vs
invariant attention, interleaved, median ms.

Nothing here is a test; the machine should be otherwise idle (2-thread timings on a busy machine are meaningless).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch


class _Layer(torch.nn.Module):
    """What the attention functions read from a Gemma 3 attention module."""

    def __init__(self, groups: int):
        super().__init__()
        self.num_key_value_groups = groups
        self.is_causal = True


def _chain_mask(n: int, length: int) -> torch.Tensor:
    mask = torch.ones(n, length, dtype=torch.bool)
    mask[:, length - n:] = torch.ones(n, n, dtype=torch.bool).tril()
    return mask[None, None]


def bench_functions(args) -> None:
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from taskspec.kernels.attention import invariant_attention_forward

    hq, hkv, d = 4, 1, 256
    scaling = 256 ** -0.5
    layer = _Layer(hq // hkv).eval()
    ns = [int(v) for v in args.ns.split(",")]
    lengths = [int(v) for v in args.lengths.split(",")]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, Gemma 3 270M attention shapes (Hq={hq}, "
          f"Hkv={hkv}, D={d}), bf16, chain mask, median of {args.repeats}, ms per call\n")
    print("| L | n | sdpa ms | invariant ms | invariant / sdpa | invariant GFMA/s |")
    print("|---:|---:|---:|---:|---:|---:|")
    torch.manual_seed(0)
    with torch.inference_mode():
        for length in lengths:
            k = torch.randn(1, hkv, length, d).to(torch.bfloat16)
            v = torch.randn(1, hkv, length, d).to(torch.bfloat16)
            for n in ns:
                q = (torch.randn(1, hq, n, d) * 2).to(torch.bfloat16)
                mask = _chain_mask(n, length)
                variants = {
                    "sdpa": lambda: sdpa_attention_forward(layer, q, k, v, mask, scaling=scaling),
                    "invariant": lambda: invariant_attention_forward(layer, q, k, v, mask, scaling=scaling),
                }
                times: dict[str, list[float]] = {name: [] for name in variants}
                for round_ in range(args.repeats + 1):
                    for name, fn in (variants.items() if round_ % 2 else reversed(variants.items())):
                        start = time.perf_counter()
                        fn()
                        if round_:
                            times[name].append((time.perf_counter() - start) * 1e3)
                med = {name: statistics.median(ts) for name, ts in times.items()}
                fmas = 2 * n * hq * length * d  # scores + values (the chain mask hides ~n^2/2 of them; ignored)
                print(f"| {length} | {n} | {med['sdpa']:.3f} | {med['invariant']:.3f} | "
                      f"{med['invariant'] / med['sdpa']:.2f} | {fmas / med['invariant'] / 1e6:.1f} |")


def _set_attention(target, name: str) -> None:
    from taskspec.kernels.attention import use_invariant_attention, use_sdpa_attention

    ok = use_invariant_attention(target) if name == "invariant" else use_sdpa_attention(target)
    if not ok:
        raise SystemExit(f"could not switch the target to {name} attention")


def bench_embedded(args) -> None:
    from taskspec.demo_prompts import DEMO_PROMPTS
    from taskspec.models.cache import crop, new_cache
    from taskspec.models.target import load_target

    target = load_target("embedded", "bf16")
    print(f"target {target.name} (bf16), linear kernel: {target.linear_kernel}, {torch.get_num_threads()} threads\n")

    # (1) invariance: one 16-token chain forward vs 16 single-token forwards, for each demo prompt
    chain_len = 16

    def prefilled(past):
        cache = new_cache()
        target.forward(torch.tensor(past), cache, logit_rows=None)
        return cache

    chains = []  # (past, chain tokens): the chain is the greedy continuation (what a perfect drafter proposes)
    _set_attention(target, "invariant")
    for _, text in DEMO_PROMPTS:
        prompt = target.tokenizer(text, add_special_tokens=True)["input_ids"]
        past, tokens = prompt[:-1], [prompt[-1]]
        cache = prefilled(past)
        for _ in range(chain_len - 1):
            tokens.append(int(target.forward(torch.tensor(tokens[-1:]), cache).logits[0].argmax()))
        chains.append((past, tokens))
    rows = chain_len * len(chains)
    print(f"(1) {chain_len}-token chain in one forward vs {chain_len} single-token forwards, {len(chains)} demo "
          f"prompts ({rows} rows)\n")
    print("| attention | max abs logit diff | mean abs logit diff | bitwise-equal rows | argmax differs |")
    print("|---|---:|---:|---:|---:|")
    for name in ("sdpa", "invariant"):
        _set_attention(target, name)
        diffs, equal, argmax = [], 0, 0
        for past, tokens in chains:
            at_once = target.forward(torch.tensor(tokens), prefilled(past)).logits
            cache = prefilled(past)
            single = torch.cat([target.forward(torch.tensor([t]), cache).logits for t in tokens])
            diffs.append((at_once - single).abs())
            equal += sum(torch.equal(a.view(torch.int32), b.view(torch.int32)) for a, b in zip(at_once, single))
            argmax += int((at_once.argmax(-1) != single.argmax(-1)).sum())
        diff = torch.cat(diffs)
        print(f"| {name} | {diff.max().item():.4g} | {diff.mean().item():.4g} | {equal}/{rows} | {argmax}/{rows} |")

    # (2) the whole target step
    if args.no_timing:
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    torch.manual_seed(0)
    cache = new_cache()
    target.forward(torch.randint(0, target.vocab_size, (args.past,)), cache, logit_rows=None)
    variants = ("sdpa", "invariant")
    times: dict[tuple[str, int], list[float]] = {(v, n): [] for v in variants for n in sizes}
    for rep in range(args.repeats + 1):  # repeat 0 is a warm-up
        for variant in variants if rep % 2 else variants[::-1]:
            _set_attention(target, variant)
            for n in sizes:
                ids = torch.randint(0, target.vocab_size, (n,))
                start = time.perf_counter()
                target.forward(ids, cache)
                elapsed = (time.perf_counter() - start) * 1e3
                crop(cache, args.past)
                if rep:
                    times[(variant, n)].append(elapsed)
    print(f"\n(2) target step: n tokens over {args.past} cached, logits for every row, median of {args.repeats}\n")
    print("| n | sdpa ms | invariant ms | invariant / sdpa |")
    print("|---:|---:|---:|---:|")
    for n in sizes:
        a, b = statistics.median(times[("sdpa", n)]), statistics.median(times[("invariant", n)])
        print(f"| {n} | {a:.1f} | {b:.1f} | {b / a:.2f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds, median reported (15; 7 embedded)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--ns", default="1,8,16,32", help="query rows n (function benchmark)")
    parser.add_argument("--lengths", default="128,512,1024", help="cache lengths L (function benchmark)")
    parser.add_argument("--embedded", action="store_true", help="measure the embedded Gemma 3 270M target instead")
    parser.add_argument("--past", type=int, default=200, help="cached tokens before a timed step (--embedded)")
    parser.add_argument("--sizes", default="1,8,16", help="tokens per timed step (--embedded)")
    parser.add_argument("--no-timing", action="store_true", help="--embedded: the invariance table only")
    args = parser.parse_args(argv)

    from taskspec.kernels.attention import attention_kernel_available, attention_kernel_unavailable_reason

    if args.threads:
        torch.set_num_threads(args.threads)
    if not attention_kernel_available():
        print(f"attention kernel unavailable: {attention_kernel_unavailable_reason()}", file=sys.stderr)
        return 1
    if args.embedded:
        args.repeats = args.repeats or 7
        with torch.inference_mode():
            bench_embedded(args)
    else:
        args.repeats = args.repeats or 15
        bench_functions(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
