"""Routers: which task (and so which specialist drafter) a prompt belongs to, with a confidence.

Every router has fit(prompts, labels) → self and predict(prompts) → [(task, confidence)], and is scored by
`evaluate_router` (accuracy and latency per prompt). Three kinds live here (`ROUTER_KINDS`; build one with
`make_router(kind, target)`, load any saved one with `load_router(path, target)`):

- `EmbeddingRouter` ("embedding"): logistic regression on the sentence embedding of the prompt (the encoder of
  task detection).
- `TargetFeatureRouter` ("target-feature"): logistic regression on the target's own final hidden states,
  mean-pooled over the prompt. Decoding runs that prefill anyway, so in the engine the router costs one
  [hidden] × [hidden, k] product; none of the TaskSpec or TAPS papers has it. `features(prompt)` computes them
  standalone (a prefill) for fitting.
- `SequenceRouter` ("sequence"): a small network trained from scratch on the prompt's token ids (TaskSpec's
  small-Mamba router, replaced by a faster design; tasks/sequence_router.py).

The linear routers store their classifier as plain arrays in one JSON file; the sequence router stores its weights
as safetensors beside its JSON file. Never a pickle.
"""

from __future__ import annotations

import inspect
import json
import time
from pathlib import Path

import numpy as np
import torch

from ..io_utils import write_json_atomic
from .encoders import DEFAULT_ENCODER, SentenceEncoder, TaskDetectionError, pool_prefill_hidden, prefill_states
from .router_common import FORMAT, VERSION, check_fit_input
from .sequence_router import HashedConvNet, SequenceRouter, tokenizer_fingerprint, tokenizer_mismatch  # noqa: F401

ROUTER_KINDS = ("embedding", "target-feature", "sequence")


class LinearClassifier:
    """Multinomial logistic regression (scikit-learn to fit; numpy to predict): [n, d] → probabilities [n, k]."""

    def __init__(self, c: float = 10.0, seed: int = 0):
        self.c, self.seed = c, seed
        self.classes: list[int] = []
        self.mean = self.scale = self.weight = self.bias = None

    def fit(self, x: np.ndarray, labels) -> "LinearClassifier":
        from sklearn.linear_model import LogisticRegression

        labels = np.asarray(labels)
        self.classes = sorted(int(c) for c in set(labels.tolist()))
        if len(self.classes) < 2:
            raise TaskDetectionError(f"a router needs prompts of at least two tasks, got tasks {self.classes}")
        self.mean, self.scale = x.mean(0), x.std(0) + 1e-6  # standardised features: one C fits every feature scale
        model = LogisticRegression(C=self.c, max_iter=2000, random_state=self.seed).fit((x - self.mean) / self.scale,
                                                                                        labels)
        weight, bias = model.coef_, model.intercept_
        if len(self.classes) == 2:  # scikit-learn keeps one row for two classes
            weight, bias = np.concatenate([-weight, weight]) / 2, np.concatenate([-bias, bias]) / 2
        self.weight, self.bias = weight.astype(np.float32), bias.astype(np.float32)
        return self

    def proba(self, x: np.ndarray) -> np.ndarray:
        logits = ((x - self.mean) / self.scale) @ self.weight.T + self.bias  # [n, k]
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)

    def state(self) -> dict:
        return {"c": self.c, "classes": self.classes, "mean": self.mean.tolist(), "scale": self.scale.tolist(),
                "weight": self.weight.tolist(), "bias": self.bias.tolist()}

    @classmethod
    def from_state(cls, state: dict) -> "LinearClassifier":
        out = cls(state["c"])
        out.classes = [int(c) for c in state["classes"]]
        out.mean, out.scale, out.weight, out.bias = (np.asarray(state[k], dtype=np.float32)
                                                     for k in ("mean", "scale", "weight", "bias"))
        return out


class _LinearRouter:
    """Shared fit/predict/save for routers that are a feature function (a subclass's `features(prompts) → [n, d]`)
    followed by a LinearClassifier."""

    kind = ""

    def __init__(self, c: float = 10.0):
        self.classifier = LinearClassifier(c)

    def fit(self, prompts, labels) -> "_LinearRouter":
        prompts = prompts if isinstance(prompts, np.ndarray) else list(prompts)
        labels = check_fit_input(prompts, labels)
        self.classifier.fit(self.features(prompts), labels)
        return self

    def fit_features(self, features: np.ndarray, labels) -> "_LinearRouter":
        """Fit on features already computed by `features(prompts)` ([n, d]; for the target-feature router the pooled
        prefill states), e.g. to fit several label sets or options on one pass over the prompts."""
        features = np.asarray(features, dtype=np.float32)
        if features.ndim != 2:
            raise TaskDetectionError(f"router fit_features: expected an [n, d] array, got shape {features.shape}")
        self.classifier.fit(features, check_fit_input(features, labels))
        return self

    def predict(self, prompts) -> list[tuple[int, float]]:
        if self.classifier.weight is None:
            raise TaskDetectionError(f"this {self.kind} router is not fitted; call fit() or load()")
        p = self.classifier.proba(self.features(prompts if isinstance(prompts, np.ndarray) else list(prompts)))
        best = p.argmax(axis=1)
        return [(self.classifier.classes[i], float(p[row, i])) for row, i in enumerate(best)]

    def _save(self, path, extra: dict) -> Path:
        return write_json_atomic(path, {"format": FORMAT, "version": VERSION, "kind": self.kind, **extra,
                                        "classifier": self.classifier.state()})

    @staticmethod
    def _read(path, kind: str) -> dict:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
            stored = _STORED_KINDS.get(data.get("kind")) if isinstance(data.get("kind"), str) else None
            if data.get("format") != FORMAT or data.get("version") != VERSION or stored != kind:
                raise ValueError(f"not a {kind} router file ({FORMAT} v{VERSION})")
            LinearClassifier.from_state(data["classifier"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise TaskDetectionError(f"router {str(path)!r}: unreadable ({exc})") from None
        return data


class EmbeddingRouter(_LinearRouter):
    """Logistic regression on sentence embeddings. Prompts may be strings or a precomputed [n, d] array."""

    kind = "embedding"

    def __init__(self, encoder: str = DEFAULT_ENCODER, c: float = 10.0):
        super().__init__(c)
        self.encoder = encoder
        self._encoder_model = None

    def features(self, prompts) -> np.ndarray:
        if isinstance(prompts, np.ndarray):
            return prompts.astype(np.float32)
        if self._encoder_model is None:
            self._encoder_model = SentenceEncoder(self.encoder)
        return self._encoder_model.encode(list(prompts))

    def save(self, path) -> Path:
        return self._save(path, {"encoder": self.encoder})

    @classmethod
    def load(cls, path) -> "EmbeddingRouter":
        data = cls._read(path, cls.kind)
        router = cls(data["encoder"])
        router.classifier = LinearClassifier.from_state(data["classifier"])
        return router


class TargetFeatureRouter(_LinearRouter):
    """Logistic regression on the target's mean-pooled final hidden states over the prompt."""

    kind = "target-feature"  # files written before the registry say "target-features"; both load

    def __init__(self, target, c: float = 10.0):
        super().__init__(c)
        self.target = target

    def features(self, prompts) -> np.ndarray:
        """[n] prompts → [n, H] pooled prefill states (one prefill each)."""
        return prefill_states(self.target, prompts)

    def predict_from_hidden(self, hidden: torch.Tensor) -> tuple[int, float]:
        """Route from the prefill the engine already ran: hidden [n, H] → (task, confidence)."""
        p = self.classifier.proba(pool_prefill_hidden(hidden)[None])[0]
        best = int(p.argmax())
        return self.classifier.classes[best], float(p[best])

    def save(self, path) -> Path:
        from ..models.fingerprint import target_fingerprint

        return self._save(path, {"target": target_fingerprint(self.target)})

    @classmethod
    def load(cls, path, target) -> "TargetFeatureRouter":
        from ..models.fingerprint import fingerprint_mismatch

        data = cls._read(path, cls.kind)
        problems = fingerprint_mismatch(data.get("target", {}), target)
        if problems:
            raise TaskDetectionError(f"router {str(path)!r} was fitted on another target: {'; '.join(problems)}")
        router = cls(target)
        router.classifier = LinearClassifier.from_state(data["classifier"])
        return router


# ---- the registry ------------------------------------------------------------------------------------------------
# Stored "kind" → registry kind. "target-features" is what TargetFeatureRouter wrote before the registry existed.
_STORED_KINDS = {"embedding": "embedding", "target-feature": "target-feature", "target-features": "target-feature",
                 "sequence": "sequence"}


def _router_class(kind: str):
    return {"embedding": EmbeddingRouter, "target-feature": TargetFeatureRouter, "sequence": SequenceRouter}[kind]


def make_router(kind: str, target=None, **options):
    """An unfitted router of `kind` (one of ROUTER_KINDS). "target-feature" and "sequence" need the target (its
    hidden states; its tokenizer); options are the router's constructor options (e.g. c=, epochs=, seed=)."""
    if kind not in ROUTER_KINDS:
        raise TaskDetectionError(f"unknown router kind {kind!r}; expected one of: {', '.join(ROUTER_KINDS)}")
    cls = _router_class(kind)
    accepted = [name for name in inspect.signature(cls.__init__).parameters
                if name not in ("self", "target", "tokenizer")]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise TaskDetectionError(f"router kind {kind!r}: unknown option(s) {', '.join(unknown)}; expected some of: "
                                 f"{', '.join(accepted)}")
    if kind == "embedding":
        return cls(**options)
    if target is None:
        raise TaskDetectionError(f"a {kind} router needs the target; pass target=")
    return cls(target, **options) if kind == "target-feature" else cls(target.tokenizer, **options)


def load_router(path, target=None):
    """Load a router saved by any kind's save(), dispatching on the kind stored in the file. Routers that depend on
    the target need it and refuse another one (target-feature: the target's fingerprint; sequence: its tokenizer)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} file")
    except (OSError, ValueError) as exc:
        raise TaskDetectionError(f"router {str(path)!r}: unreadable ({exc})") from None
    stored = data.get("kind")
    kind = _STORED_KINDS.get(stored) if isinstance(stored, str) else None
    if kind is None:
        raise TaskDetectionError(f"router {str(path)!r}: unknown router kind {stored!r}; expected one of: "
                                 f"{', '.join(ROUTER_KINDS)}")
    if kind == "embedding":
        return EmbeddingRouter.load(path)
    if target is None:
        raise TaskDetectionError(f"router {str(path)!r} is a {kind} router; loading it needs the target")
    if kind == "target-feature":
        return TargetFeatureRouter.load(path, target)
    if target.tokenizer is None:
        raise TaskDetectionError(f"router {str(path)!r} is a sequence router; target {target.name!r} has no tokenizer")
    return SequenceRouter.load(path, target.tokenizer)


def evaluate_router(router, prompts, labels) -> dict:
    """Accuracy and mean wall time per prompt of predict() (prompts one by one, as they arrive in serving)."""
    prompts, labels = list(prompts), list(labels)
    if not prompts:
        raise TaskDetectionError("evaluate_router: no prompts")
    router.predict(prompts[:1])  # warm-up: model loading is not per-prompt latency
    correct, start = 0, time.perf_counter()
    for prompt, label in zip(prompts, labels):
        task, _ = router.predict([prompt])[0]
        correct += int(task == label)
    seconds = time.perf_counter() - start
    return {"accuracy": round(correct / len(prompts), 4), "ms_per_prompt": round(1000 * seconds / len(prompts), 3)}
