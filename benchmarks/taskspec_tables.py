"""The TaskSpec tables of issue #4: task detection and routing on a mix of known domains.

(a) Clustering against the true domain labels: accuracy (Hungarian-matched), NMI and ARI for k = 2..8 and for the
    k that TaskDetector chooses itself (silhouette), on sentence embeddings computed once and reused for every k.
(b) Routers trained on one half of every domain and tested on the other half, labels = the true domains: accuracy
    and wall time per prompt of predict() for the embedding, target-feature and sequence routers; for the
    target-feature router also the cost beyond the prefill the engine runs anyway (predict_from_hidden on the prefill
    hidden states), which is what routing costs in serving.

    OMP_NUM_THREADS=1 python benchmarks/taskspec_tables.py [--domains gsm8k,mt-bench,...] [--n 40]
        [--out runs/bench/taskspec_tables.json]

Prints Markdown tables and writes the numbers as JSON (atomically).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time

import numpy as np
import torch

from taskspec.data import load_prompts
from taskspec.io_utils import write_json_atomic
from taskspec.tasks import TaskDetector, clustering_metrics, evaluate_router, make_router

DOMAINS = ("gsm8k", "mt-bench", "wmt22", "humaneval", "math500", "sharegpt")
POOL = 1000  # each domain's N prompts are a seeded sample of its first POOL rows (mt-bench has 80, sorted by category)


def load_mix(domains: list[str], n: int, seed: int, max_chars: int, data_dir: str | None):
    """N prompts per domain, sampled with `seed` from the first POOL rows, cut to max_chars characters (routing reads
    the beginning of a prompt; it keeps the prefill of the rare very long ShareGPT prompt bounded)."""
    rng = np.random.default_rng(seed)
    texts, labels, names = [], [], []
    for label, domain in enumerate(domains):
        pool = load_prompts(domain, data_dir=data_dir, limit=max(POOL, n))
        if len(pool) < n:
            raise SystemExit(f"domain {domain!r} has only {len(pool)} prompts; pass --n {len(pool)} or less")
        chosen = sorted(rng.choice(len(pool), size=n, replace=False))
        texts += [pool[i].text[:max_chars] for i in chosen]
        labels += [label] * n
        names += [pool[i].id + (f" ({pool[i].meta['category']})" if pool[i].meta.get("category") else "")
                  for i in chosen]
    return texts, labels, names


def clustering_tables(texts: list[str], labels: list[int], ks: range, auto_range: tuple[int, int], seed: int) -> dict:
    """Metrics for each forced k and for the automatic k; the embeddings are computed once (plain and with TaskSpec's
    stop-word removal) and passed to TaskDetector as arrays."""
    start = time.perf_counter()
    embeddings = TaskDetector(seed=seed).embed(texts)  # [n, 384], unit rows
    stop_word_embeddings = TaskDetector(stop_words=True, seed=seed).embed(texts)
    embed_seconds = time.perf_counter() - start
    rows = []
    for k in ks:
        detector = TaskDetector(k=k, seed=seed).fit(embeddings)
        rows.append({"k": k, **clustering_metrics(labels, detector.labels_)})
    auto = {}
    for name, emb in (("plain", embeddings), ("stop_words_removed", stop_word_embeddings)):
        detector = TaskDetector(k_min=auto_range[0], k_max=auto_range[1], seed=seed).fit(emb)
        auto[name] = {"k": detector.k_, **clustering_metrics(labels, detector.labels_),
                      "selection_curve": detector.selection_curve_}
    return {"forced_k": rows, "auto": auto, "embed_seconds": round(embed_seconds, 2)}


def split_halves(labels: list[int], seed: int) -> tuple[list[int], list[int]]:
    """Per domain, a seeded shuffle cut in two: train and test indices, every domain equally in both."""
    rng = np.random.default_rng(seed + 1)
    train, test = [], []
    for label in sorted(set(labels)):
        rows = rng.permutation([i for i, y in enumerate(labels) if y == label]).tolist()
        train += rows[: len(rows) // 2]
        test += rows[len(rows) // 2 :]
    return sorted(train), sorted(test)


@torch.inference_mode()
def prefill_hidden(target, text: str) -> torch.Tensor:
    """The final hidden states [n, H] of the prompt, as the engine's prefill computes them."""
    from taskspec.engine.cache import new_cache
    from taskspec.engine.decode import encode_prompt

    ids = encode_prompt(target, text)
    return target.forward(torch.tensor(ids), new_cache(), logit_rows=None, want_hidden=True).hidden


def router_tables(target, texts: list[str], labels: list[int], names: list[str], domains: list[str], seed: int,
                  sequence_seeds: int) -> dict:
    train, test = split_halves(labels, seed)
    x_train, y_train = [texts[i] for i in train], [labels[i] for i in train]
    x_test, y_test = [texts[i] for i in test], [labels[i] for i in test]
    out = {"train_prompts": len(train), "test_prompts": len(test)}
    for kind in ("embedding", "target-feature", "sequence"):
        router = make_router(kind, target, **({"seed": seed} if kind == "sequence" else {}))
        start = time.perf_counter()
        router.fit(x_train, y_train)
        fit_seconds = time.perf_counter() - start
        row = {"fit_seconds": round(fit_seconds, 2), **evaluate_router(router, x_test, y_test)}
        if kind == "target-feature":
            # Serving path: the prefill has run; routing is the pooled linear classifier on its hidden states.
            hidden = [prefill_hidden(target, text) for text in x_test]
            router.predict_from_hidden(hidden[0])  # warm-up
            start = time.perf_counter()
            routes = [router.predict_from_hidden(h) for h in hidden]
            row["beyond_prefill_ms_per_prompt"] = round(1000 * (time.perf_counter() - start) / len(hidden), 4)
            row["beyond_prefill_accuracy"] = round(float(np.mean([t == y for (t, _), y in zip(routes, y_test)])), 4)
        else:
            routes = router.predict(x_test)
        row["per_domain_accuracy"] = {domains[label]: round(float(np.mean([t == y for (t, _), y in zip(routes, y_test)
                                                                            if y == label])), 4)
                                      for label in sorted(set(y_test))}
        row["mean_confidence"] = round(float(np.mean([c for _, c in routes])), 4)
        confusion = np.zeros((len(domains), len(domains)), dtype=int)  # [true domain, routed domain]
        np.add.at(confusion, (np.asarray(y_test), np.asarray([t for t, _ in routes])), 1)
        row["confusion"] = confusion.tolist()
        row["misrouted"] = [f"{names[i]} → {domains[t]}" for i, (t, _), y in zip(test, routes, y_test) if t != y]
        if kind == "sequence" and sequence_seeds > 1:  # small training sets: how much does the seed move it?
            accuracies = [row["accuracy"]]
            for extra in range(1, sequence_seeds):
                other = make_router(kind, target, seed=seed + extra).fit(x_train, y_train)
                accuracies.append(round(float(np.mean([t == y for (t, _), y in zip(other.predict(x_test), y_test)])),
                                        4))
            row["accuracy_over_seeds"] = accuracies
        out[kind] = row
        print(f"[router {kind}] accuracy {row['accuracy']}, {row['ms_per_prompt']} ms per prompt", file=sys.stderr,
              flush=True)
    return out


def markdown(result: dict) -> str:
    domains = result["domains"]
    c = result["clustering"]
    lines = ["| k | clustering accuracy | NMI | ARI |", "|---|---:|---:|---:|"]
    lines += [f"| {r['k']} | {r['accuracy']:.3f} | {r['nmi']:.3f} | {r['ari']:.3f} |" for r in c["forced_k"]]
    for name, label in (("plain", "auto"), ("stop_words_removed", "auto, stop words removed")):
        a = c["auto"][name]
        lines.append(f"| **{label}: k = {a['k']}** | {a['accuracy']:.3f} | {a['nmi']:.3f} | {a['ari']:.3f} |")
    curve = c["auto"]["plain"]["selection_curve"]
    lines += ["", "| k | " + " | ".join(str(e["k"]) for e in curve) + " |", "|---|" + "---:|" * len(curve),
              "| silhouette | " + " | ".join(f"{e['silhouette']:.3f}" for e in curve) + " |"]
    r = result["routers"]
    lines += ["", "| router | accuracy | ms per prompt (predict) | ms per prompt beyond prefill | fit s |",
              "|---|---:|---:|---:|---:|"]
    for kind in ("embedding", "target-feature", "sequence"):
        row = r[kind]
        beyond = f"{row['beyond_prefill_ms_per_prompt']:.3f}" if "beyond_prefill_ms_per_prompt" in row else "–"
        accuracy = f"{row['accuracy']:.3f}"
        if "accuracy_over_seeds" in row:
            accuracy += " (seeds: " + " / ".join(f"{a:.3f}" for a in row["accuracy_over_seeds"]) + ")"
        lines.append(f"| {kind} | {accuracy} | {row['ms_per_prompt']:.2f} | {beyond} | {row['fit_seconds']:.1f} |")
    lines += ["", "| router accuracy per domain | " + " | ".join(domains) + " |", "|---|" + "---:|" * len(domains)]
    for kind in ("embedding", "target-feature", "sequence"):
        per = r[kind]["per_domain_accuracy"]
        lines.append(f"| {kind} | " + " | ".join(f"{per[d]:.2f}" for d in domains) + " |")
    best = max(("embedding", "target-feature", "sequence"), key=lambda kind: r[kind]["accuracy"])
    lines += ["", f"| {best} router: true ↓ / routed → | " + " | ".join(domains) + " |",
              "|---|" + "---:|" * len(domains)]
    lines += [f"| {d} | " + " | ".join(str(v) for v in row) + " |" for d, row in zip(domains, r[best]["confusion"])]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--domains", default=",".join(DOMAINS), help="dataset specs (taskspec.data.load_prompts)")
    parser.add_argument("--n", type=int, default=40, help="prompts per domain")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-chars", type=int, default=2000, help="prompts are cut to this many characters")
    parser.add_argument("--k-range", default="2,8", help="forced k values for the clustering table (lo,hi)")
    parser.add_argument("--auto-k-range", default="2,10", help="range the automatic k is chosen from (lo,hi)")
    parser.add_argument("--sequence-seeds", type=int, default=3, help="seeds the sequence router is trained with")
    parser.add_argument("--target", default="embedded")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default="runs/bench/taskspec_tables.json")
    args = parser.parse_args()
    domains = [d for d in args.domains.split(",") if d]
    if len(domains) < 2 or args.n < 4:
        raise SystemExit("need at least two domains and --n >= 4")
    k_lo, k_hi = (int(v) for v in args.k_range.split(","))
    auto_range = tuple(int(v) for v in args.auto_k_range.split(","))

    start = time.perf_counter()
    texts, labels, names = load_mix(domains, args.n, args.seed, args.max_chars, args.data_dir)
    print(f"{len(texts)} prompts from {', '.join(domains)}", file=sys.stderr, flush=True)
    clustering = clustering_tables(texts, labels, range(k_lo, k_hi + 1), auto_range, args.seed)
    print(f"[clustering] auto k = {clustering['auto']['plain']['k']} ({time.perf_counter() - start:.0f} s)",
          file=sys.stderr, flush=True)

    from taskspec.models.target import load_target

    target = load_target(args.target)
    routers = router_tables(target, texts, labels, names, domains, args.seed, args.sequence_seeds)
    result = {
        "command": "python " + " ".join(sys.argv),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "platform": platform.platform(),
                    "torch": torch.__version__},
        "target": target.name, "domains": domains, "n_per_domain": args.n, "seed": args.seed,
        "max_chars": args.max_chars, "clustering": clustering, "routers": routers,
        "wall_seconds": round(time.perf_counter() - start, 1),
    }
    write_json_atomic(args.out, result)
    print(markdown(result))
    print(f"\nwrote {args.out} ({result['wall_seconds']:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
