"""Automatic task detection: sentence embeddings of prompts, k-means, and k chosen by the silhouette.

TaskSpec (arXiv 2505.08600) clusters prompt embeddings with k-means and has to be told k. Here k is chosen over a
range by the mean silhouette (cosine) of the clustering, the standard internal criterion for k-means: it rewards
tight, well separated clusters and, unlike the inertia "elbow", needs no judgement call to read (docs/concepts.md).
`--k` forces k. The fitted detector keeps the encoder name, the centroids, the cluster sizes, a readable
description of each task (top keywords by class-based TF-IDF, three prompts nearest the centroid) and the
selection curve, and saves to / loads from one JSON file.

`criterion` picks how k is chosen (`CRITERIA`):
- "silhouette" (the default): the k whose k-means clustering (best of `n_init` starts, seed `seed`) has the highest
  mean cosine silhouette.
- "silhouette-restarts": the same criterion with less noise: k-means is run from `RESTARTS` seeds (seed, seed + 1,
  ...) for every k, the k with the highest silhouette averaged over those runs wins, and the run with the lowest
  inertia at that k is kept. The silhouette of one k-means run moves with the run's local optimum, and at larger k
  that noise can decide the argmax (six domains, 40 prompts each: one sample's k = 8 is a 6 with restarts). On 90
  prompt mixes with known domain counts it was right 64 times against 62 and never off by two or more (the plain
  silhouette: 6 times), for 5x the clustering time: an option, not clearly enough better to be the default.
Measured against Calinski-Harabasz, Davies-Bouldin, the gap statistic, Gaussian-mixture BIC, spectral eigengaps and
prediction strength on the same mixes, the silhouette had the best record (benchmarks/choose_k.py; docs/history.md,
"Choosing k").

`encoder = "target"` (TARGET_ENCODER) clusters the target's own final prefill states, mean-pooled over the prompt
and standardised per dimension with the statistics of the prompts the map was fitted on (stored in the map), instead
of sentence embeddings. On six domains they chose k more steadily and agreed with the domains better, and the
target-feature router, which reads the same states at no cost beyond the prefill, routes to such a map at 0.963
against 0.896 for a sentence-embedding map (docs/results.md, "Tasks from the target's own prefill states"). Such a
detector needs the target: TaskDetector(encoder="target", target=T), TaskDetector.load(path, target=T); the map
stores the target's fingerprint and refuses another one.

TaskDetector follows scikit-learn's estimator contract: fit(X) → self, predict(X) → labels, fit_predict(X),
get_params / set_params. X is a list of prompt strings (embedded with the encoder) or an [n, d] array of
embeddings that are used as they are.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import regex

from ..io_utils import write_json_atomic
from .encoders import DEFAULT_ENCODER, TARGET_ENCODER, SentenceEncoder, TargetStateEncoder, TaskDetectionError

FORMAT = "taskspec-taskmap"
VERSION = 1  # later additions (the criterion, a "score" per curve entry) are optional keys: old maps still load
CRITERIA = ("silhouette", "silhouette-restarts")
RESTARTS = 5  # k-means runs per k for "silhouette-restarts"
# Keywords. `regex` (a dependency of transformers) knows Unicode scripts and marks, which `re` does not.
_UNSPACED_RUN = regex.compile(r"[\p{Han}\p{Hiragana}\p{Katakana}\p{Thai}\p{Lao}\p{Khmer}\p{Myanmar}]+")
_SPACED_WORD = regex.compile(r"\p{L}[\p{L}\p{M}'-]+")  # two or more letters: "equation", "übersetzung", "перевод"


def remove_stop_words(text: str) -> str:
    """TaskSpec's optional preprocessing: drop English stop words before embedding."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return " ".join(w for w in text.split() if w.lower().strip(".,;:!?\"'()") not in ENGLISH_STOP_WORDS)


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def taskmap_encoder(path: str | Path) -> str | None:
    """The encoder a saved task map was fitted with (None when the file is unreadable: load() then says why)."""
    try:
        params = json.loads(Path(path).read_text()).get("params", {})
        return params.get("encoder") if isinstance(params, dict) else None
    except (OSError, ValueError, AttributeError):
        return None


# ---- the detector ------------------------------------------------------------------------------------------------
@dataclass
class TaskDescription:
    task: int
    size: int
    keywords: list[str]
    examples: list[str]


class TaskDetector:
    """k-means over prompt embeddings with k chosen automatically (or forced); scikit-learn fit/predict contract."""

    def __init__(self, encoder: str = DEFAULT_ENCODER, k: int | None = None, k_min: int = 2, k_max: int = 10,
                 stop_words: bool = False, seed: int = 0, n_init: int = 10, criterion: str = "silhouette",
                 target=None):
        self.encoder, self.k, self.k_min, self.k_max = encoder, k, k_min, k_max
        self.stop_words, self.seed, self.n_init, self.criterion = stop_words, seed, n_init, criterion
        self.target = target  # encoder="target" embeds with it; keywords use its tokenizer. A model, not a parameter
        self._encoder_model = None
        self.standardise_: tuple[np.ndarray, np.ndarray] | None = None  # encoder="target": (mean [H], scale [H])

    # scikit-learn's parameter protocol (no dependency on BaseEstimator's introspection)
    def get_params(self, deep: bool = True) -> dict:
        return {name: getattr(self, name) for name in ("encoder", "k", "k_min", "k_max", "stop_words", "seed",
                                                       "n_init", "criterion")}

    def set_params(self, **params) -> "TaskDetector":
        for name, value in params.items():
            if name not in self.get_params():
                raise TaskDetectionError(f"TaskDetector has no parameter {name!r}")
            setattr(self, name, value)
        return self

    # ---- fitting -------------------------------------------------------------------------------------------------
    def embed(self, X, progress: bool = False) -> np.ndarray:
        """[n, d] unit embeddings of prompts (strings), or the given [n, d] array normalised."""
        if isinstance(X, np.ndarray):
            if X.ndim != 2 or not len(X):
                raise TaskDetectionError(f"embeddings: expected a non-empty [n, d] array, got shape {X.shape}")
            return _unit_rows(X.astype(np.float32))
        texts = self._checked_texts(X)
        if self.encoder == TARGET_ENCODER:
            return self._target_embed(texts, progress)
        if self._encoder_model is None or self._encoder_model.name != self.encoder:
            self._encoder_model = SentenceEncoder(self.encoder)
        return self._encoder_model.encode(texts, progress=progress)

    def _checked_texts(self, X) -> list[str]:
        """The prompts as a non-empty list of non-empty strings (stop words removed when asked)."""
        texts = list(X)
        if not texts:
            raise TaskDetectionError("no prompts given; expected a list of prompt strings")
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]
        if bad:
            raise TaskDetectionError(f"prompt(s) {bad[:5]} are empty or not strings; expected text")
        return [remove_stop_words(t) or t for t in texts] if self.stop_words else texts

    def _target_embed(self, texts: list[str], progress: bool, fitting: bool = False) -> np.ndarray:
        """Pooled prefill states, standardised with the fitted statistics (computed here when `fitting`), unit rows."""
        if self._encoder_model is None or self._encoder_model.name != TARGET_ENCODER:
            self._encoder_model = TargetStateEncoder(self.target)
        states = self._encoder_model.encode(texts, progress=progress).astype(np.float64)  # [n, H]
        if fitting:
            self.standardise_ = (states.mean(0), states.std(0) + 1e-6)
        if self.standardise_ is None:
            raise TaskDetectionError("this target-state task map has no standardisation statistics (it was fitted "
                                     "on an array); fit it on prompt texts")
        mean, scale = self.standardise_
        if states.shape[1] != len(mean):
            raise TaskDetectionError(f"target states of size {states.shape[1]}; this task map was fitted on size "
                                     f"{len(mean)}")
        return _unit_rows(((states - mean) / scale).astype(np.float32))

    def fit(self, X, y=None, progress: bool = False) -> "TaskDetector":
        from sklearn.cluster import KMeans
        from sklearn.metrics import silhouette_score

        if self.criterion not in CRITERIA:
            raise TaskDetectionError(f"unknown criterion {self.criterion!r} for choosing k; expected one of: "
                                     f"{', '.join(CRITERIA)}")
        X = X if isinstance(X, np.ndarray) else list(X)
        if self.encoder == TARGET_ENCODER and not isinstance(X, np.ndarray):
            emb = self._target_embed(self._checked_texts(X), progress, fitting=True)
        else:
            emb = self.embed(X, progress)
        n = len(emb)
        if self.k is not None:
            if not 1 <= self.k <= n:
                raise TaskDetectionError(f"k = {self.k} with {n} prompts; expected 1 <= k <= {n}")
            candidates = [self.k]
        else:
            if n < 3:
                raise TaskDetectionError(f"choosing k automatically needs at least 3 prompts, got {n}; pass k")
            if self.k_min < 2 or self.k_max < self.k_min:
                raise TaskDetectionError(f"k range {self.k_min}..{self.k_max}: expected 2 <= k_min <= k_max")
            candidates = list(range(self.k_min, min(self.k_max, n - 1) + 1))
            if not candidates:
                raise TaskDetectionError(f"k range {self.k_min}..{self.k_max} is empty for {n} prompts")
        restarts = RESTARTS if self.criterion == "silhouette-restarts" and self.k is None else 1
        curve, best = [], None
        for k in candidates:
            runs = [KMeans(n_clusters=k, n_init=self.n_init, random_state=self.seed + r).fit(emb)
                    for r in range(restarts)]
            sils = [float(silhouette_score(emb, run.labels_, metric="cosine")) if 1 < k < n else float("nan")
                    for run in runs]
            kept = min(range(restarts), key=lambda r: runs[r].inertia_)  # run 0 when there are no restarts
            score = sils[0] if restarts == 1 else float(np.mean(sils))
            curve.append({"k": k, "silhouette": round(sils[kept], 5), "inertia": round(float(runs[kept].inertia_), 5),
                          "score": round(score, 5)})
            if best is None or (not math.isnan(score) and score > best[0]):
                best = (score, runs[kept])
        km = best[1]
        self.k_ = int(km.n_clusters)
        self.cluster_centers_ = km.cluster_centers_.astype(np.float32)  # [k, d]
        self.labels_ = km.labels_.astype(int)
        self.sizes_ = np.bincount(self.labels_, minlength=self.k_).tolist()
        self.selection_curve_ = curve
        tokenizer = getattr(self.target, "tokenizer", None)  # the target's, when one is at hand
        self.descriptions_ = (describe_tasks([str(t) for t in X], self.labels_, emb, self.cluster_centers_,
                                             tokenizer=tokenizer) if not isinstance(X, np.ndarray) else [])
        return self

    def predict(self, X) -> np.ndarray:
        """Nearest centroid (cosine) for each prompt: [n] task ids."""
        return self.scores(X).argmax(axis=1)

    def fit_predict(self, X, y=None) -> np.ndarray:
        return self.fit(X).labels_

    def scores(self, X) -> np.ndarray:
        """[n, k] cosine similarity of each prompt to each task centroid."""
        self._check_fitted()
        emb = self.embed(X)
        if emb.shape[1] != self.cluster_centers_.shape[1]:
            raise TaskDetectionError(f"embeddings of size {emb.shape[1]}; this task map was fitted on size "
                                     f"{self.cluster_centers_.shape[1]} ({self.encoder})")
        return emb @ _unit_rows(self.cluster_centers_).T

    def _check_fitted(self) -> None:
        if not hasattr(self, "cluster_centers_"):
            raise TaskDetectionError("this TaskDetector is not fitted yet; call fit() or TaskDetector.load()")

    # ---- persistence ---------------------------------------------------------------------------------------------
    def save(self, path: str | Path, evaluation: dict | None = None) -> Path:
        """One JSON file (atomic); `evaluation` (e.g. agreement with known labels) is stored alongside."""
        self._check_fitted()
        data = {"format": FORMAT, "version": VERSION, "params": self.get_params(), "k": self.k_,
                "criterion": self.criterion, "sizes": self.sizes_, "selection_curve": self.selection_curve_,
                "tasks": [d.__dict__ for d in self.descriptions_],
                "centroids": [[round(float(v), 7) for v in row] for row in self.cluster_centers_]}
        if self.encoder == TARGET_ENCODER and self.standardise_ is not None:
            from ..models.fingerprint import target_fingerprint

            data["target"] = target_fingerprint(self.target)  # fitting on texts needed the target
            data["standardise"] = {"mean": [float(v) for v in self.standardise_[0]],
                                   "scale": [float(v) for v in self.standardise_[1]]}
        if evaluation:
            data["evaluation"] = evaluation
        return write_json_atomic(path, data)

    @classmethod
    def load(cls, path: str | Path, target=None) -> "TaskDetector":
        """The map saved at `path`. A target-state map (encoder "target") needs `target` to embed prompts and refuses
        a target other than the one it was fitted on; sentence-embedding maps ignore it."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
            if data.get("format") != FORMAT or data.get("version") != VERSION:
                raise ValueError(f"not a {FORMAT} v{VERSION} file")
            # maps written before `criterion` existed were all chosen by the silhouette
            detector = cls(**{"criterion": "silhouette", **data["params"]}, target=target)
            if detector.encoder == TARGET_ENCODER and "standardise" in data:
                detector.standardise_ = tuple(np.asarray(data["standardise"][key], dtype=np.float64)
                                              for key in ("mean", "scale"))
            if detector.criterion not in CRITERIA:
                raise ValueError(f"unknown criterion {detector.criterion!r}; expected one of: {', '.join(CRITERIA)}")
            detector.k_ = int(data["k"])
            detector.cluster_centers_ = np.asarray(data["centroids"], dtype=np.float32)
            detector.sizes_ = list(data["sizes"])
            detector.selection_curve_ = list(data["selection_curve"])
            detector.descriptions_ = [TaskDescription(**d) for d in data["tasks"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise TaskDetectionError(f"task map {str(path)!r}: unreadable ({exc}); expected a file written by "
                                     "`taskspec detect`") from None
        if detector.cluster_centers_.shape[0] != detector.k_:
            raise TaskDetectionError(f"task map {str(path)!r}: {detector.cluster_centers_.shape[0]} centroids for "
                                     f"k = {detector.k_}")
        if detector.encoder == TARGET_ENCODER:
            from ..models.fingerprint import fingerprint_mismatch

            if target is None:
                raise TaskDetectionError(f"task map {str(path)!r} clusters the target's prefill states; loading it "
                                         "needs the target (TaskDetector.load(path, target=T))")
            problems = fingerprint_mismatch(data.get("target") or {}, target)
            if problems:
                raise TaskDetectionError(f"task map {str(path)!r} was fitted on another target: "
                                         f"{'; '.join(problems)}")
        return detector


def keyword_candidates(text: str, tokenizer=None) -> set[str]:
    """The words of a prompt that may name its task, lower-cased, English stop words dropped. Scripts written with
    spaces give their words; each run of a script written without them (Chinese, Japanese, Thai, ...) gives its
    words (`_run_words`)."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    words = {w for run in _UNSPACED_RUN.findall(text) for w in _run_words(run, tokenizer)}
    spaced = _UNSPACED_RUN.sub(" ", text)
    words.update(w.lower() for w in _SPACED_WORD.findall(spaced))
    return words - ENGLISH_STOP_WORDS


def _run_words(run: str, tokenizer) -> set[str]:
    """A run of an unspaced script cut by `tokenizer` (the target's, whose vocabulary holds whole words: "混凝土")
    into its tokens of two or more characters; a run with no such token (no tokenizer, or a byte-level one that never
    learnt the script and cuts characters into bytes) gives its overlapping character bigrams instead (most Chinese
    words are two characters long), so every run of two or more characters gives some words."""
    words = {p for p in _token_pieces(run, tokenizer) if len(p) >= 2 and _UNSPACED_RUN.fullmatch(p)}
    return words or {run[i : i + 2] for i in range(len(run) - 1)}


def _token_pieces(run: str, tokenizer) -> list[str]:
    """The characters of `run` each token covers, by the tokenizer's character offsets (a byte-level token that is
    part of one character covers that whole character, so it never makes a word by itself); [] without a tokenizer."""
    if tokenizer is None:
        return []
    try:
        offsets = tokenizer(run, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    except (NotImplementedError, TypeError, ValueError):  # a slow tokenizer has no offsets: decode token by token
        ids = tokenizer(run, add_special_tokens=False)["input_ids"]
        return [p.strip() for p in tokenizer.batch_decode([[i] for i in ids])]
    return [run[start:end].strip() for start, end in offsets]


def describe_tasks(texts: list[str], labels: np.ndarray, emb: np.ndarray, centers: np.ndarray,
                   num_keywords: int = 8, num_examples: int = 3, tokenizer=None) -> list[TaskDescription]:
    """Top keywords per task by class-based TF-IDF (a word used by many of this task's prompts and rare in the
    others; each prompt counts a word once, so one long prompt repeating its own jargon cannot name the task) and
    the prompts nearest the centroid. Words are `keyword_candidates` (with the target's tokenizer, when given)."""
    k = len(centers)
    counts = [Counter() for _ in range(k)]
    for text, label in zip(texts, labels):
        counts[label].update(keyword_candidates(text, tokenizer))
    df = Counter(word for c in counts for word in c)
    out = []
    for task in range(k):
        total = sum(counts[task].values()) or 1
        score = {w: (n / total) * math.log(1 + k / df[w]) for w, n in counts[task].items()}
        keywords = sorted(score, key=lambda w: (-score[w], w))[:num_keywords]
        members = np.flatnonzero(labels == task)
        nearest = members[np.argsort(-(emb[members] @ _unit_rows(centers[task : task + 1]).T)[:, 0])]
        examples = [texts[i][:200] for i in nearest[:num_examples]]
        out.append(TaskDescription(task, int(len(members)), keywords, examples))
    return out


# ---- agreement with known labels ---------------------------------------------------------------------------------
def known_labels(prompts, field: str) -> tuple[list[str], str]:
    """The label of each prompt under `--label-field field`, and a phrase saying where the labels came from.

    A field of the data wins: when every prompt has `field` among its data fields, those values are the labels, even
    for "source" (a user's file with its own "source" field means that field, not the file's name). "source" falls
    back to the dataset each prompt came from (a file's name for a file) only when no prompt has such a field; some
    prompts with it and some without is ambiguous and refused. Prompts are taskspec.data.Prompt (.source, .meta)."""
    having = [field in p.meta for p in prompts]
    if all(having):
        return [str(p.meta[field]) for p in prompts], f"the data field {field!r}"
    if field == "source" and not any(having):
        return [p.source for p in prompts], "the dataset (or file name) of each prompt"
    missing = [p.id for p, has in zip(prompts, having) if not has]
    if field == "source":
        raise TaskDetectionError(f"--label-field 'source': {len(prompts) - len(missing)} prompts have a data field "
                                 f"'source' and {len(missing)} (e.g. {missing[:3]}) do not, so it means neither that "
                                 "field nor the dataset name for all of them; give every row the field, or rename it "
                                 "to score against the dataset names")
    raise TaskDetectionError(f"--label-field {field!r}: prompts {missing[:3]} have no such field (use 'source' for "
                             "the dataset name)")


def clustering_metrics(labels_true, labels_pred) -> dict:
    """Clustering accuracy (clusters matched to classes one-to-one by the Hungarian method), NMI and ARI."""
    from scipy.optimize import linear_sum_assignment
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    true_ids = {c: i for i, c in enumerate(sorted(set(labels_true), key=str))}
    t = np.array([true_ids[c] for c in labels_true])
    p = np.asarray(labels_pred)
    table = np.zeros((p.max() + 1, len(true_ids)), dtype=np.int64)  # [clusters, classes]
    np.add.at(table, (p, t), 1)
    rows, cols = linear_sum_assignment(-table)
    return {"accuracy": round(float(table[rows, cols].sum() / len(t)), 4),
            "nmi": round(float(normalized_mutual_info_score(t, p)), 4),
            "ari": round(float(adjusted_rand_score(t, p)), 4)}
