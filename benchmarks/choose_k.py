"""How should TaskDetector choose k? Internal criteria compared on prompt mixes with a known number of domains.

Every domain's pool (its first 1000 prompts, cut to 2000 characters, as in benchmarks/taskspec_tables.py; for
MathInstruct's MATH part a seeded sample of 1000 of its MATH rows) is embedded once with the detector's encoder and
cached as .npy. A mix draws N prompts per domain from those pools with one seeded generator (taskspec_tables.py's
load_mix), then every criterion picks k over 2..10 (the `taskspec detect` default range):

- silhouette (cosine; the detector's default) and euclidean; "smallest k within x% of the best silhouette";
- the silhouette averaged over 5 k-means seeds ("silhouette-restarts" in TaskDetector), with n_init = 50, and
  averaged over 10 subsamples of 80%;
- Calinski-Harabasz, Davies-Bouldin; the gap statistic (Tibshirani et al. 2001, 10 uniform references in the
  PCA-rotated box; 1-SE rule and plain max);
- BIC of a Gaussian mixture on PCA-reduced embeddings (10 dims full covariance, 20 dims diagonal / spherical);
- the eigengap of the normalised Laplacian (self-tuning RBF affinity, Zelnik-Manor & Perona 2004; symmetric
  10-NN cosine graph);
- the silhouette of k-means on PCA projections (20 dims; 10 and 20 dims whitened);
- prediction strength >= 0.8 (Tibshirani & Walther 2005, 2-fold);
- and, for reference, the k whose clustering agrees best with the labels (ARI): the best any criterion could do.

    OMP_NUM_THREADS=1 python benchmarks/choose_k.py [--sizes 40,100] [--seeds 0,1,2,3,4]
        [--cache runs/bench/choose_k] [--out runs/bench/choose_k.json]

Prints Markdown tables (the record of each criterion; the k each picks per mix and seed) and writes the JSON.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from scipy.linalg import eigh
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.metrics import adjusted_rand_score, calinski_harabasz_score, davies_bouldin_score, silhouette_score
from sklearn.mixture import GaussianMixture

KS = list(range(2, 11))
POOL = 1000
MIXES = {  # name: (pools, acceptable k)
    "6: all six": (["gsm8k", "mt-bench", "wmt22", "humaneval", "math500", "sharegpt"], [6]),
    "5a: five benchmarks": (["gsm8k", "mt-bench", "wmt22", "humaneval", "math500"], [5]),
    "5b: no gsm8k": (["mt-bench", "wmt22", "humaneval", "math500", "sharegpt"], [5]),
    "4a": (["gsm8k", "wmt22", "humaneval", "sharegpt"], [4]),
    "4b": (["mt-bench", "wmt22", "humaneval", "math500"], [4]),
    "3a": (["gsm8k", "wmt22", "humaneval"], [3]),
    "3b": (["math500", "wmt22", "sharegpt"], [3]),
    # the training mix of configs/embedded.toml: MathInstruct's first rows are GSM8K train, so two tasks
    "train-A": (["sharegpt", "mathinstruct", "gsm8k:train"], [2]),
    # the same with MathInstruct's MATH rows: two math sources may be one task or two
    "train-B": (["sharegpt", "mathinstruct-math", "gsm8k:train"], [2, 3]),
}


def pool_embeddings(name: str, cache: Path, data_dir: str | None) -> np.ndarray:
    path = cache / f"{name.replace(':', '_').replace('mathinstruct-math', 'mathinstruct_math')}.npy"
    if path.is_file():
        return np.load(path)
    from taskspec.data import load_prompts
    from taskspec.tasks.encoders import SentenceEncoder

    if name == "mathinstruct-math":
        rows = [p for p in load_prompts("mathinstruct", data_dir=data_dir)
                if p.meta.get("origin", "").startswith("hendrycks_math")]
        rows = [rows[i] for i in sorted(np.random.default_rng(0).choice(len(rows), POOL, replace=False))]
    else:
        rows = load_prompts(name, data_dir=data_dir, limit=POOL)
    emb = SentenceEncoder().encode([p.text[:2000] for p in rows])
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, emb)
    return emb


def load_mix(pools: list[np.ndarray], n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """As taskspec_tables.load_mix: one generator, per domain a sorted sample of n (all of a smaller pool)."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for label, pool in enumerate(pools):
        m = min(n, len(pool))
        xs.append(pool[sorted(rng.choice(len(pool), size=m, replace=False))])
        ys += [label] * m
    return np.concatenate(xs), np.array(ys)


def km(x, k, n_init=10, seed=0):
    return KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(x)


def gap_curve(x, inertias, ks, references=10, seed=0):
    rng = np.random.default_rng(seed)
    centred = x - x.mean(0)
    z = centred @ np.linalg.svd(centred, full_matrices=False)[2].T
    lo, hi = z.min(0), z.max(0)
    ref = np.zeros((references, len(ks)))
    for b in range(references):
        r = rng.uniform(lo, hi, size=z.shape)
        for j, k in enumerate(ks):
            ref[b, j] = np.log(KMeans(n_clusters=k, n_init=3, random_state=b).fit(r).inertia_)
    gap = ref.mean(0) - np.log([inertias[k] for k in ks])
    return gap, ref.std(0) * np.sqrt(1 + 1 / references)


def eigengap(x, mode):
    sim = x @ x.T
    n = len(x)
    if mode == "selftune":
        d = np.sqrt(np.maximum(0, 2 - 2 * sim))
        sigma = np.sort(d, axis=1)[:, 7]
        a = np.exp(-d ** 2 / (sigma[:, None] * sigma[None, :]))
    else:
        a = np.zeros_like(sim)
        a[np.repeat(np.arange(n), 10), np.argsort(-sim, axis=1)[:, 1:11].ravel()] = 1
        a = np.maximum(a, a.T)
    np.fill_diagonal(a, 0)
    dinv = 1 / np.sqrt(np.maximum(a.sum(1), 1e-12))
    lam = eigh(np.eye(n) - dinv[:, None] * a * dinv[None, :], eigvals_only=True, subset_by_index=[0, max(KS) + 1])
    return {k: float(lam[k] - lam[k - 1]) for k in KS}


def prediction_strength(x, k, seed=0):
    perm = np.random.default_rng(seed).permutation(len(x))
    halves = perm[: len(x) // 2], perm[len(x) // 2:]
    out = []
    for fit_rows, test_rows in (halves, halves[::-1]):
        predicted = km(x[fit_rows], k, 5).predict(x[test_rows])
        own = km(x[test_rows], k, 5).labels_
        strengths = []
        for c in range(k):
            m = np.flatnonzero(own == c)
            if len(m) >= 2:
                same = predicted[m][:, None] == predicted[m][None, :]
                strengths.append((same.sum() - len(m)) / (len(m) * (len(m) - 1)))
        out.append(min(strengths))
    return float(np.mean(out))


def curves(x, y, seed):
    c = {}
    fits = {k: km(x, k) for k in range(1, max(KS) + 2)}
    c["ari"] = {k: adjusted_rand_score(y, fits[k].labels_) for k in KS}
    c["sil_cos"] = {k: silhouette_score(x, fits[k].labels_, metric="cosine") for k in KS}
    c["sil_euc"] = {k: silhouette_score(x, fits[k].labels_) for k in KS}
    c["ch"] = {k: calinski_harabasz_score(x, fits[k].labels_) for k in KS}
    c["db"] = {k: davies_bouldin_score(x, fits[k].labels_) for k in KS}
    gk = list(range(1, max(KS) + 2))
    gap, s = gap_curve(x, {k: f.inertia_ for k, f in fits.items()}, gk)
    c["gap"], c["gap_s"] = dict(zip(gk, gap.tolist())), dict(zip(gk, s.tolist()))
    for d, whiten in ((10, True), (20, True), (20, False)):
        z = PCA(d, whiten=whiten, random_state=0).fit_transform(x)
        c[f"sil_pca{d}{'w' if whiten else ''}"] = {k: silhouette_score(z, km(z, k).labels_) for k in KS}
    for d, cov in ((10, "full"), (20, "diag"), (20, "spherical")):
        z = PCA(d, random_state=0).fit_transform(x)
        c[f"bic_pca{d}_{cov}"] = {k: GaussianMixture(k, covariance_type=cov, n_init=3, random_state=0).fit(z).bic(z)
                                 for k in KS}
    for mode in ("selftune", "knn10"):
        c[f"eigengap_{mode}"] = eigengap(x, mode)
    c["pred_strength"] = {k: prediction_strength(x, k) for k in KS}
    c["sil_restarts"] = {k: float(np.mean([c["sil_cos"][k]] + [silhouette_score(x, km(x, k, 10, s).labels_,
                                                                                  metric="cosine")
                                                                 for s in range(1, 5)])) for k in KS}
    c["sil_ninit50"] = {k: silhouette_score(x, km(x, k, 50).labels_, metric="cosine") for k in KS}
    rng = np.random.default_rng(seed + 100)
    sub = {k: [] for k in KS}
    for b in range(10):
        rows = rng.choice(len(x), int(0.8 * len(x)), replace=False)
        for k in KS:
            sub[k].append(silhouette_score(x[rows], KMeans(k, n_init=3, random_state=b).fit(x[rows]).labels_,
                                           metric="cosine"))
    c["sil_subsample"] = {k: float(np.mean(v)) for k, v in sub.items()}
    return c


def choose(c) -> dict:
    def best(curve, sign=1):
        return max(KS, key=lambda k: sign * curve[k])

    top = max(c["sil_cos"].values())
    g, s = c["gap"], c["gap_s"]
    rule = [k for k in range(1, max(KS) + 1) if g[k] >= g[k + 1] - s[k + 1]]
    strong = [k for k in KS if c["pred_strength"][k] >= 0.8]
    return {
        "silhouette (cosine)": best(c["sil_cos"]),
        "silhouette-restarts (mean over 5 k-means seeds)": best(c["sil_restarts"]),
        "silhouette, k-means n_init=50": best(c["sil_ninit50"]),
        "silhouette, mean over 10 80% subsamples": best(c["sil_subsample"]),
        "silhouette (euclidean)": best(c["sil_euc"]),
        "smallest k within 5% of best silhouette": min(k for k in KS if c["sil_cos"][k] >= 0.95 * top),
        "smallest k within 10% of best silhouette": min(k for k in KS if c["sil_cos"][k] >= 0.90 * top),
        "Calinski-Harabasz": best(c["ch"]),
        "Davies-Bouldin": best(c["db"], -1),
        "gap (Tibshirani 1-SE rule)": rule[0] if rule else max(KS),
        "gap (max over 2..10)": best(g),
        "GMM BIC pca10_full": best(c["bic_pca10_full"], -1),
        "GMM BIC pca20_diag": best(c["bic_pca20_diag"], -1),
        "GMM BIC pca20_spherical": best(c["bic_pca20_spherical"], -1),
        "eigengap (selftune)": best(c["eigengap_selftune"]),
        "eigengap (knn10)": best(c["eigengap_knn10"]),
        "silhouette on pca20": best(c["sil_pca20"]),
        "silhouette on pca10w": best(c["sil_pca10w"]),
        "silhouette on pca20w": best(c["sil_pca20w"]),
        "prediction strength >= 0.8": max(strong) if strong else 1,
        "(best ARI)": best(c["ari"]),
    }


def markdown(results: list[dict]) -> str:
    mixes = list(dict.fromkeys(r["mix"] for r in results))
    labelled = [r for r in results if not r["mix"].startswith("train")]
    training = [r for r in results if r["mix"].startswith("train")]
    lines = [("| criterion | = true count, 3–6-domain mixes | = 2 (or 3 for train-B), training mixes | all | mean "
              "\\|k − true\\| (3–6 domains) | off by ≥ 2 | = best-ARI k | mean ARI at chosen k (3–6 domains) |"),
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    rows = []
    for c in results[0]["chosen"]:
        right = sum(r["chosen"][c] in r["truth"] for r in labelled)
        right_training = sum(r["chosen"][c] in r["truth"] for r in training)
        error = sum(abs(r["chosen"][c] - r["truth"][0]) for r in labelled) / len(labelled)
        wild = sum(r["chosen"][c] >= max(r["truth"]) + 2 or r["chosen"][c] <= min(r["truth"]) - 2 for r in results)
        oracle = sum(r["chosen"][c] == r["chosen"]["(best ARI)"] for r in results)
        ari = sum(r["curves"]["ari"].get(str(r["chosen"][c]), 0.0) for r in labelled) / len(labelled)
        rows.append((-(right + right_training), c,
                     (f"| {c} | {right}/{len(labelled)} | {right_training}/{len(training)} | "
                      f"**{right + right_training}/{len(results)}** | {error:.2f} | {wild} | {oracle}/{len(results)} | "
                      f"{ari:.3f} |")))
    lines += [line for _, _, line in sorted(rows)]
    truth = {r["mix"]: r["truth"] for r in results}
    for n in sorted({r["n"] for r in results}):
        seeds = sorted({r["seed"] for r in results if r["n"] == n})
        lines += ["", (f"{n} prompts per domain, seeds {', '.join(map(str, seeds))}: the k each criterion picks "
                       "(in brackets: how many equal the true count)"), "",
                  "| criterion | " + " | ".join(m.split(":")[0] for m in mixes) + " |", "|---|" + "---|" * len(mixes),
                  "| true count | " + " | ".join("/".join(map(str, truth[m])) for m in mixes) + " |"]
        for c in results[0]["chosen"]:
            cells = []
            for m in mixes:
                ks = [r["chosen"][c] for r in results if r["mix"] == m and r["n"] == n]
                cells.append(" ".join(map(str, ks)) + f" ({sum(k in truth[m] for k in ks)})")
            lines.append(f"| {c} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="40,100", help="prompts per domain (comma list)")
    parser.add_argument("--seeds", default="0,1,2,3,4", help="sampling seeds (comma list)")
    parser.add_argument("--mixes", default=",".join(MIXES), help="which mixes (comma list of names)")
    parser.add_argument("--cache", default="runs/bench/choose_k", help="folder of the cached pool embeddings")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default="runs/bench/choose_k.json")
    args = parser.parse_args()
    sizes, seeds = [int(v) for v in args.sizes.split(",")], [int(v) for v in args.seeds.split(",")]
    cache, results = Path(args.cache), []
    for mix in filter(None, args.mixes.split(",")):
        pools, truth = MIXES[mix]
        embeddings = [pool_embeddings(name, cache, args.data_dir) for name in pools]
        for n in sizes:
            for seed in seeds:
                start = time.perf_counter()
                x, y = load_mix(embeddings, n, seed)
                c = curves(x, y, seed)
                chosen = choose(c)
                results.append({"mix": mix, "pools": pools, "truth": truth, "n": n, "seed": seed, "size": len(x),
                                "chosen": chosen,
                                "curves": {name: {str(k): float(v) for k, v in curve.items()}
                                           for name, curve in c.items()}})
                print(f"{mix} n={n} seed={seed}: silhouette {chosen['silhouette (cosine)']}, best ARI "
                      f"{chosen['(best ARI)']} ({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)
    from taskspec.io_utils import write_json_atomic

    write_json_atomic(args.out, results)
    print(markdown(results))


if __name__ == "__main__":
    main()
