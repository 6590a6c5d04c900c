"""Do the target's own prefill states separate the domains better than sentence embeddings? (issue #4's missed goals:
clustering accuracy and "automatic k recovers the true number of domains" on the six-domain mix.)

The mix of `taskspec_tables.py` (six domains, --n prompts each, seeded, cut to 2000 characters). Every prompt gets
  - its sentence embedding (the task detector's default encoder, offline all-MiniLM-L6-v2), and
  - the target's final hidden states of the prefill, mean-pooled (what the target-feature router reads; free in
    serving because the engine runs that prefill anyway), as they are, centred on the mix's mean, and standardised
    per dimension (a language model's states share a large common direction, which would make every cosine high).
Each feature is clustered by TaskDetector exactly as `taskspec detect` does (rows L2-normalised, k-means, 10
restarts) at k = 2..8 and with k chosen by the silhouette over 2..10; scored against the source domains
(Hungarian-matched accuracy, NMI, ARI). Then the same on --subsamples seeded draws of half the prompts per domain, to
see how steady the automatic k is.
Last, routing to a task map built on each feature: the mix is split in halves per domain (as taskspec_tables.py
does); a TaskDetector (k by silhouette) is fitted on the training half's sentence embeddings or standardised target
states (standardised with the training half's statistics), both halves get the map's tasks (`predict`), and the
embedding router (logistic regression on the sentence embedding) and the target-feature router (logistic regression
on the pooled states, as TargetFeatureRouter) are fitted on the training half and scored on the held-out half.

    OMP_NUM_THREADS=2 python benchmarks/cluster_target_states.py [--n 80] [--subsamples 5]
        [--out runs/bench/cluster_target_states.json]

The features are cached beside --out (.npz, written atomically) and reused when the mix is the same.
"""

from __future__ import annotations

import argparse
import datetime
import io
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from taskspec_tables import DOMAINS, load_mix, split_halves  # noqa: E402

from taskspec.io_utils import write_bytes_atomic, write_json_atomic  # noqa: E402
from taskspec.tasks import TaskDetector, clustering_metrics  # noqa: E402
from taskspec.tasks.encoders import pool_prefill_hidden, prefill_hidden  # noqa: E402
from taskspec.tasks.routers import LinearClassifier  # noqa: E402


def features(texts: list[str], target_name: str, cache: Path) -> dict[str, np.ndarray]:
    """{"minilm": [n, 384], "target": [n, H]}, from the cache when it holds these very prompts."""
    key = np.frombuffer("\x00".join(texts).encode(), dtype=np.uint8)
    if cache.is_file():
        saved = np.load(cache)
        if np.array_equal(saved["key"], key):
            print(f"features from {cache}", file=sys.stderr)
            return {"minilm": saved["minilm"], "target": saved["target"]}
    start = time.perf_counter()
    minilm = TaskDetector().embed(texts)
    print(f"sentence embeddings: {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    from taskspec.models.target import load_target

    target = load_target(target_name)
    rows, start = [], time.perf_counter()
    for i, text in enumerate(texts):
        rows.append(pool_prefill_hidden(prefill_hidden(target, text)))  # [H]
        if (i + 1) % 40 == 0:
            print(f"prefills {i + 1}/{len(texts)} ({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)
    out = {"minilm": minilm, "target": np.stack(rows)}
    buffer = io.BytesIO()
    np.savez(buffer, key=key, **out)
    write_bytes_atomic(cache, buffer.getvalue())
    return out


def variants(feats: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The feature sets compared: sentence embeddings, and the target's pooled states raw / centred / standardised."""
    t = feats["target"].astype(np.float64)
    centred = t - t.mean(0)
    return {"MiniLM sentence embedding": feats["minilm"], "target states, raw": t, "target states, centred": centred,
            "target states, standardised": centred / (t.std(0) + 1e-6)}


def cluster(x: np.ndarray, labels: list[int], ks: range, auto_range: tuple[int, int], seed: int) -> dict:
    rows = [{"k": k, **clustering_metrics(labels, TaskDetector(k=k, seed=seed).fit(x).labels_)} for k in ks]
    auto = TaskDetector(k_min=auto_range[0], k_max=auto_range[1], seed=seed).fit(x)
    return {"per_k": rows, "auto": {"k": auto.k_, **clustering_metrics(labels, auto.labels_)},
            "best_nmi_k": max(rows, key=lambda r: r["nmi"])["k"]}


def routing_to_own_map(feats: dict[str, np.ndarray], labels: list[int], seed: int) -> dict:
    """{map feature: {source agreement of the map, k, router accuracy vs the map per router feature}}."""
    train, test = split_halves(labels, seed)
    t = feats["target"].astype(np.float64)
    standardised = (t - t[train].mean(0)) / (t[train].std(0) + 1e-6)  # training-half statistics only
    maps = {"MiniLM sentence embedding": feats["minilm"], "target states, standardised": standardised}
    routers = {"embedding router": feats["minilm"], "target-feature router": feats["target"]}
    labels_arr, out = np.asarray(labels), {}
    for map_name, x in maps.items():
        detector = TaskDetector(k_min=2, k_max=10, seed=seed).fit(x[train])
        tasks = np.asarray(detector.predict(x))  # [n] the map's task of every prompt, both halves
        row = {"k": detector.k_, "held_out_vs_source": clustering_metrics(labels_arr[test].tolist(),
                                                                           tasks[test].tolist())}
        for router_name, f in routers.items():
            clf = LinearClassifier().fit(f[train].astype(np.float32), tasks[train])
            routed = np.asarray(clf.classes)[clf.proba(f[test].astype(np.float32)).argmax(1)]
            row[router_name] = round(float((routed == tasks[test]).mean()), 4)
        out[map_name] = row
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=80, help="prompts per domain (MT-Bench has 80)")
    parser.add_argument("--subsamples", type=int, default=5, help="seeded draws of n/2 prompts per domain")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--target", default="embedded")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default="runs/bench/cluster_target_states.json")
    args = parser.parse_args()
    start = time.perf_counter()
    texts, labels, _ = load_mix(list(DOMAINS), args.n, args.seed, 2000, args.data_dir)
    feats = features(texts, args.target, Path(args.out).with_suffix(".npz"))
    ks, auto_range = range(2, 9), (2, 10)
    labels_arr = np.asarray(labels)
    result = {"command": "python " + " ".join(sys.argv),
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                          "platform": platform.platform()},
              "domains": list(DOMAINS), "n_per_domain": args.n, "features": {}}
    for name, x in variants(feats).items():
        full = cluster(x, labels, ks, auto_range, args.seed)
        subs = []
        for s in range(args.subsamples):
            rng = np.random.default_rng(1000 + s)
            rows = sorted(i for d in range(len(DOMAINS))
                          for i in rng.choice(np.flatnonzero(labels_arr == d), args.n // 2, replace=False))
            sub = cluster(x[rows], labels_arr[rows].tolist(), ks, auto_range, args.seed)
            subs.append({"auto": sub["auto"], "best_nmi_k": sub["best_nmi_k"]})
        result["features"][name] = {"full": full, "subsamples": subs}
        print(f"[{name}] auto k {full['auto']['k']} (acc {full['auto']['accuracy']}, nmi {full['auto']['nmi']}); "
              f"subsamples auto k {[s['auto']['k'] for s in subs]}", file=sys.stderr, flush=True)
    result["routing_to_own_map"] = routing_to_own_map(feats, labels, args.seed)
    result["wall_seconds"] = round(time.perf_counter() - start, 1)
    write_json_atomic(args.out, result)
    print(markdown(result))


def markdown(result: dict) -> str:
    names = list(result["features"])
    lines = ["| k | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    per_k = {name: {r["k"]: r for r in f["full"]["per_k"]} for name, f in result["features"].items()}
    for k in sorted(next(iter(per_k.values()))):
        lines.append(f"| {k} | " + " | ".join(f"{per_k[n][k]['accuracy']:.3f} / {per_k[n][k]['nmi']:.3f} / "
                                            f"{per_k[n][k]['ari']:.3f}" for n in names) + " |")
    lines.append("| **auto** | " + " | ".join(
        f"k = {f['full']['auto']['k']}: {f['full']['auto']['accuracy']:.3f} / {f['full']['auto']['nmi']:.3f} / "
        f"{f['full']['auto']['ari']:.3f}" for f in result["features"].values()) + " |")
    lines.append(f"| auto k on {len(next(iter(result['features'].values()))['subsamples'])} half-size draws | "
                 + " | ".join(" ".join(str(s["auto"]["k"]) for s in f["subsamples"])
                              for f in result["features"].values()) + " |")
    lines.append("| k of best NMI on those draws | " + " | ".join(
        " ".join(str(s["best_nmi_k"]) for s in f["subsamples"]) for f in result["features"].values()) + " |")
    lines += ["", "| task map built on (training half, k by silhouette) | k | map vs sources, held-out half (accuracy / NMI) "
              "| embedding router vs map | target-feature router vs map |", "|---|---:|---:|---:|---:|"]
    for name, row in result.get("routing_to_own_map", {}).items():
        src = row["held_out_vs_source"]
        lines.append(f"| {name} | {row['k']} | {src['accuracy']:.3f} / {src['nmi']:.3f} | {row['embedding router']:.3f} "
                     f"| {row['target-feature router']:.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
