"""The TaskSpec tables of issue #4: task detection and routing on a mix of known domains.

(a) Clustering against the true domain labels: accuracy (Hungarian-matched), NMI and ARI for k = 2..8 and for the
    k that TaskDetector chooses itself (each of its criteria), on sentence embeddings computed once and reused.
(b) Routers trained on one half of every domain and tested on the other half, against two kinds of labels:
    - the source dataset of each prompt (a harder and partly ill-posed question: ShareGPT holds math and code, and
      MT-Bench and ShareGPT are both open chat);
    - the task map's clusters, which is what picks the specialist in serving: a TaskDetector is fitted on the
      training half (k chosen by --criterion), its clusters are the training labels, and the held-out prompts'
      labels are the clusters the task map assigns them (nearest centroid).
    Accuracy and wall time per prompt of predict() for the embedding, target-feature and sequence routers; for the
    target-feature router also the cost beyond the prefill the engine runs anyway (predict_from_hidden on the prefill
    hidden states), which is what routing costs in serving. The linear routers are fitted with the default C and with
    C chosen by 5-fold cross-validation on the training half only; the target-feature router also on half of the
    training prompts, to see what more labelled prompts buy. Sentence embeddings and prefills are computed once per
    prompt and reused for every label set and option.

    OMP_NUM_THREADS=1 python benchmarks/taskspec_tables.py [--domains gsm8k,mt-bench,...] [--n 40]
        [--criterion silhouette] [--out runs/bench/taskspec_tables.json]

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
from taskspec.tasks.detect import CRITERIA
from taskspec.tasks.encoders import pool_prefill_hidden, prefill_hidden
from taskspec.tasks.routers import LinearClassifier

DOMAINS = ("gsm8k", "mt-bench", "wmt22", "humaneval", "math500", "sharegpt")
C_GRID = (0.01, 0.1, 1.0, 10.0, 100.0)  # searched by cross-validation on the training half
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
    runs = [(criterion, embeddings, criterion) for criterion in CRITERIA]
    runs.append(("stop_words_removed", stop_word_embeddings, TaskDetector().criterion))
    for name, emb, criterion in runs:
        detector = TaskDetector(k_min=auto_range[0], k_max=auto_range[1], seed=seed, criterion=criterion).fit(emb)
        auto[name] = {"k": detector.k_, "criterion": criterion, **clustering_metrics(labels, detector.labels_),
                      "selection_curve": detector.selection_curve_}
    return {"forced_k": rows, "auto": auto, "embed_seconds": round(embed_seconds, 2), "embeddings": embeddings}


def split_halves(labels: list[int], seed: int) -> tuple[list[int], list[int]]:
    """Per domain, a seeded shuffle cut in two: train and test indices, every domain equally in both."""
    rng = np.random.default_rng(seed + 1)
    train, test = [], []
    for label in sorted(set(labels)):
        rows = rng.permutation([i for i, y in enumerate(labels) if y == label]).tolist()
        train += rows[: len(rows) // 2]
        test += rows[len(rows) // 2 :]
    return sorted(train), sorted(test)


def choose_c(features: np.ndarray, labels: list[int], seed: int, folds: int = 5) -> tuple[float, dict]:
    """C of the linear router by stratified k-fold cross-validation on the training prompts only: the C with the best
    mean held-out accuracy (ties: the smaller C, i.e. the stronger regularisation)."""
    from sklearn.model_selection import StratifiedKFold

    y = np.asarray(labels)
    folds = max(2, min(folds, int(np.bincount(y).max())))
    splits = list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(features, y))
    scores = {}
    for c in C_GRID:
        accuracies = []
        for fit_rows, held_rows in splits:
            classifier = LinearClassifier(c, seed).fit(features[fit_rows], y[fit_rows])
            routed = np.asarray(classifier.classes)[classifier.proba(features[held_rows]).argmax(1)]
            accuracies.append(float(np.mean(routed == y[held_rows])))
        scores[c] = round(float(np.mean(accuracies)), 4)
    return max(C_GRID, key=lambda c: (scores[c], -c)), scores


def _accuracy(routes, labels) -> float:
    return round(float(np.mean([t == y for (t, _), y in zip(routes, labels)])), 4)


def _confusion(routes, labels, size: int) -> list[list[int]]:
    confusion = np.zeros((size, size), dtype=int)  # [true, routed]
    np.add.at(confusion, (np.asarray(labels), np.asarray([t for t, _ in routes])), 1)
    return confusion.tolist()


def router_tables(target, texts: list[str], labels: list[int], names: list[str], domains: list[str], seed: int,
                  sequence_seeds: int, embeddings: np.ndarray, criterion: str, auto_range: tuple[int, int]) -> dict:
    train, test = split_halves(labels, seed)
    x_train, y_train = [texts[i] for i in train], [labels[i] for i in train]
    x_test, y_test = [texts[i] for i in test], [labels[i] for i in test]
    out = {"train_prompts": len(train), "test_prompts": len(test)}

    # The task map, fitted on the training half as `taskspec detect` / the pipeline would fit it.
    detector = TaskDetector(k_min=auto_range[0], k_max=auto_range[1], seed=seed, criterion=criterion)
    detector.fit(embeddings[train])
    # The task every prompt gets is the task map's assignment (predict: the most similar centroid by cosine), which
    # is what `taskspec build` gives each example; k-means' own labels_ (nearest centroid, euclidean) can differ.
    clusters_train = detector.predict(embeddings[train]).tolist()
    clusters_test = detector.predict(embeddings[test]).tolist()
    composition = np.zeros((detector.k_, len(domains)), dtype=int)  # [cluster, domain] over both halves
    np.add.at(composition, (np.asarray(clusters_train + clusters_test), np.asarray(y_train + y_test)), 1)
    out["taskmap"] = {"criterion": criterion, "k": detector.k_, "sizes_train": detector.sizes_,
                      "kmeans_labels_agree_with_taskmap_train": round(float(np.mean(
                          detector.labels_ == np.asarray(clusters_train))), 4),
                      "train_vs_source": clustering_metrics(y_train, clusters_train),
                      "test_vs_source": clustering_metrics(y_test, clusters_test),
                      "composition": composition.tolist()}
    label_sets = {"source": (y_train, y_test), "clusters": (clusters_train, clusters_test)}
    print(f"[task map] k = {detector.k_} ({criterion})", file=sys.stderr, flush=True)

    # The target's prefill, once per prompt: pooled states of the training half, full states of the held-out half.
    start = time.perf_counter()
    hidden_train = [prefill_hidden(target, text) for text in x_train]
    pooled_train = np.stack([pool_prefill_hidden(h) for h in hidden_train])
    last_train = np.stack([h[-1].float().numpy() for h in hidden_train])  # side check: the last token's state
    del hidden_train
    hidden_test = [prefill_hidden(target, text) for text in x_test]
    pooled_test = np.stack([pool_prefill_hidden(h) for h in hidden_test])
    last_test = np.stack([h[-1].float().numpy() for h in hidden_test])
    out["prefill_seconds"] = round(time.perf_counter() - start, 1)
    # Half of every domain's training prompts (the first half of its seeded shuffle), for the data-size check.
    rng = np.random.default_rng(seed + 2)
    half = sorted(i for label in sorted(set(y_train))
                  for i in rng.permutation([j for j, y in enumerate(y_train) if y == label])[: sum(
                      1 for y in y_train if y == label) // 2].tolist())
    latency_rows = list(range(0, len(x_test), max(1, len(x_test) // 40)))  # ~40 prompts across the domains

    rows = {}
    for name, (fit_labels, test_labels) in label_sets.items():
        size = max(fit_labels + test_labels) + 1
        for kind, features_train, features_test in (("embedding", embeddings[train], embeddings[test]),
                                                    ("target-feature", pooled_train, pooled_test)):
            best_c, cv_scores = choose_c(features_train, fit_labels, seed)
            variants = [("C = 10", 10.0, None), ("C by 5-fold CV", best_c, None)]
            if kind == "target-feature":
                variants.append(("C = 10, half the training prompts", 10.0, half))
            for variant, c, subset in variants:
                key = f"{kind}, {variant}"
                router = make_router(kind, target, c=c)
                rows_fit = subset if subset is not None else list(range(len(fit_labels)))
                start = time.perf_counter()
                router.fit_features(features_train[rows_fit], [fit_labels[i] for i in rows_fit])
                row = rows.setdefault(key, {"kind": kind, "train_prompts": len(rows_fit)})
                row[f"c_{name}"] = c
                row[f"fit_seconds_classifier_{name}"] = round(time.perf_counter() - start, 3)
                if kind == "embedding":
                    scored = evaluate_router(router, x_test, test_labels)  # encoder + classifier, one prompt at a time
                    routes = router.predict(features_test)
                    row["ms_per_prompt"] = scored["ms_per_prompt"]
                    row[f"accuracy_{name}_from_text"] = scored["accuracy"]  # re-encoded one by one
                else:
                    router.predict_from_hidden(hidden_test[0])  # warm-up
                    start = time.perf_counter()
                    routes = [router.predict_from_hidden(h) for h in hidden_test]  # the serving path
                    row[f"beyond_prefill_ms_per_prompt_{name}"] = round(
                        1000 * (time.perf_counter() - start) / len(hidden_test), 4)
                    if name == "source" and variant == "C = 10":  # a whole prefill per prompt: a subset suffices
                        row["ms_per_prompt"] = evaluate_router(router, [x_test[i] for i in latency_rows],
                                                               [test_labels[i] for i in latency_rows])["ms_per_prompt"]
                row[f"accuracy_{name}"] = _accuracy(routes, test_labels)
                row[f"cv_scores_{name}"] = cv_scores
                row[f"confusion_{name}"] = _confusion(routes, test_labels, size)
                if name == "source":
                    row["per_domain_accuracy"] = {domains[label]: round(float(np.mean(
                        [t == y for (t, _), y in zip(routes, test_labels) if y == label])), 4)
                        for label in sorted(set(test_labels))}
                    row["misrouted"] = [f"{names[i]} → {domains[t]}" for i, (t, _), y in zip(test, routes, test_labels)
                                        if t != y]
                print(f"[router {key}] {name}: accuracy {row[f'accuracy_{name}']}", file=sys.stderr, flush=True)
        # Side check: other poolings of the same prefill (the router itself mean-pools), C = 10.
        for variant, f_train, f_test in (("last-token state", last_train, last_test),
                                         ("mean ⊕ last-token state", np.concatenate([pooled_train, last_train], 1),
                                          np.concatenate([pooled_test, last_test], 1))):
            key = f"target-feature, C = 10, side check: {variant}"
            classifier = LinearClassifier(10.0, seed).fit(f_train, fit_labels)
            routes = [(classifier.classes[int(i)], 0.0) for i in classifier.proba(f_test).argmax(1)]
            row = rows.setdefault(key, {"kind": "target-feature", "train_prompts": len(fit_labels)})
            row[f"accuracy_{name}"] = _accuracy(routes, test_labels)
            row[f"confusion_{name}"] = _confusion(routes, test_labels, size)
            print(f"[router {key}] {name}: accuracy {row[f'accuracy_{name}']}", file=sys.stderr, flush=True)
        # The sequence router, trained from scratch on token ids; a few seeds (small training sets).
        key = "sequence"
        row = rows.setdefault(key, {"kind": "sequence", "train_prompts": len(x_train)})
        accuracies = []
        for extra in range(max(1, sequence_seeds)):
            router = make_router("sequence", target, seed=seed + extra)
            start = time.perf_counter()
            router.fit(x_train, fit_labels)
            if extra == 0:
                row[f"fit_seconds_{name}"] = round(time.perf_counter() - start, 2)
                scored = evaluate_router(router, x_test, test_labels)
                row["ms_per_prompt"] = scored["ms_per_prompt"]
                routes = router.predict(x_test)
                row[f"confusion_{name}"] = _confusion(routes, test_labels, size)
                if name == "source":
                    row["per_domain_accuracy"] = {domains[label]: round(float(np.mean(
                        [t == y for (t, _), y in zip(routes, test_labels) if y == label])), 4)
                        for label in sorted(set(test_labels))}
            accuracies.append(_accuracy(router.predict(x_test), test_labels))
        row[f"accuracy_{name}"] = accuracies[0]
        row[f"accuracy_over_seeds_{name}"] = accuracies
        print(f"[router sequence] {name}: accuracy {accuracies}", file=sys.stderr, flush=True)
    out["rows"] = rows
    return out


def markdown(result: dict) -> str:
    domains = result["domains"]
    c = result["clustering"]
    lines = ["| k | clustering accuracy | NMI | ARI |", "|---|---:|---:|---:|"]
    lines += [f"| {r['k']} | {r['accuracy']:.3f} | {r['nmi']:.3f} | {r['ari']:.3f} |" for r in c["forced_k"]]
    for name, a in c["auto"].items():
        label = f"auto ({a['criterion']}, stop words removed)" if name == "stop_words_removed" else f"auto ({name})"
        lines.append(f"| **{label}: k = {a['k']}** | {a['accuracy']:.3f} | {a['nmi']:.3f} | {a['ari']:.3f} |")
    curve = c["auto"]["silhouette"]["selection_curve"]
    lines += ["", "| k | " + " | ".join(str(e["k"]) for e in curve) + " |", "|---|" + "---:|" * len(curve),
              "| silhouette | " + " | ".join(f"{e['silhouette']:.3f}" for e in curve) + " |"]
    if "silhouette-restarts" in c["auto"]:
        averaged = c["auto"]["silhouette-restarts"]["selection_curve"]
        lines.append("| silhouette, mean over k-means restarts | " + " | ".join(f"{e['score']:.3f}" for e in averaged)
                     + " |")
    r = result["routers"]
    t = r["taskmap"]
    lines += ["", (f"Task map on the training half ({t['criterion']}): k = {t['k']}, cluster sizes {t['sizes_train']}; "
                   f"against the sources: training half accuracy {t['train_vs_source']['accuracy']:.3f} / NMI "
                   f"{t['train_vs_source']['nmi']:.3f}, held-out half accuracy {t['test_vs_source']['accuracy']:.3f}; "
                   f"k-means' own labels equal the task map's assignment (most similar centroid) on "
                   f"{t['kmeans_labels_agree_with_taskmap_train']:.3f} of the training half."),
              "",
              "| cluster (both halves) | " + " | ".join(domains) + " |", "|---|" + "---:|" * len(domains)]
    lines += [f"| {i} | " + " | ".join(str(v) for v in row) + " |" for i, row in enumerate(t["composition"])]
    lines += ["", ("| router | training prompts | accuracy vs source | accuracy vs task map | ms per prompt (predict) | "
                   "ms per prompt beyond prefill |"), "|---|---:|---:|---:|---:|---:|"]
    for key, row in r["rows"].items():
        accuracy = {}
        for name in ("source", "clusters"):
            accuracy[name] = f"{row[f'accuracy_{name}']:.3f}"
            if f"accuracy_over_seeds_{name}" in row:
                accuracy[name] += " (seeds: " + " / ".join(f"{a:.3f}" for a in row[f"accuracy_over_seeds_{name}"]) + ")"
        beyond = " / ".join(f"{row[f'beyond_prefill_ms_per_prompt_{n}']:.3f}" for n in ("source", "clusters")
                            if f"beyond_prefill_ms_per_prompt_{n}" in row) or "–"
        predict = f"{row['ms_per_prompt']:.2f}" if "ms_per_prompt" in row else "(as above)"
        if "CV" in key:
            key += f" (C = {row['c_source']:g} / {row['c_clusters']:g})"
        lines.append(f"| {key} | {row['train_prompts']} | {accuracy['source']} | {accuracy['clusters']} | {predict} | "
                     f"{beyond} |")
    source_rows = [k for k in r["rows"] if "per_domain_accuracy" in r["rows"][k]]
    lines += ["", "| router accuracy per source | " + " | ".join(domains) + " |", "|---|" + "---:|" * len(domains)]
    for key in source_rows:
        per = r["rows"][key]["per_domain_accuracy"]
        lines.append(f"| {key} | " + " | ".join(f"{per[d]:.2f}" for d in domains) + " |")
    for name, heads in (("source", domains), ("clusters", [f"task {i}" for i in range(t["k"])])):
        best = max(r["rows"], key=lambda k: r["rows"][k][f"accuracy_{name}"])
        lines += ["", f"| {best} vs {name}: true ↓ / routed → | " + " | ".join(heads) + " |",
                  "|---|" + "---:|" * len(heads)]
        lines += [f"| {h} | " + " | ".join(str(v) for v in row) + " |"
                  for h, row in zip(heads, r["rows"][best][f"confusion_{name}"])]
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
    parser.add_argument("--criterion", default=TaskDetector().criterion, choices=CRITERIA,
                        help="how the routing task map chooses k (default: TaskDetector's default)")
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
    embeddings = clustering.pop("embeddings")
    chosen = ", ".join(f"{name}: {auto['k']}" for name, auto in clustering["auto"].items())
    print(f"[clustering] auto k = {chosen} ({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)

    from taskspec.models.target import load_target

    target = load_target(args.target)
    routers = router_tables(target, texts, labels, names, domains, args.seed, args.sequence_seeds, embeddings,
                            args.criterion, auto_range)
    result = {
        "command": "python " + " ".join(sys.argv),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "platform": platform.platform(),
                    "torch": torch.__version__},
        "target": target.name, "domains": domains, "n_per_domain": args.n, "seed": args.seed,
        "max_chars": args.max_chars, "criterion": args.criterion, "clustering": clustering, "routers": routers,
        "wall_seconds": round(time.perf_counter() - start, 1),
    }
    write_json_atomic(args.out, result)
    print(markdown(result))
    print(f"\nwrote {args.out} ({result['wall_seconds']:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
