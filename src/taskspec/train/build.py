"""`taskspec build`: from a task map and training data to a drafter set (drafters/drafter_set.py).

Stages, each skipped when its output is complete and resumed when it is partial (every drafter is a `train` run,
which checkpoints and resumes by itself; the manifest is written last):

1. features   with --data: a feature cache of the data under DIR/features (the target's hidden states and top-K
              logits; `taskspec features`); with --features: the given caches, read in place
2. assign     every cached example gets the task the task map predicts for its prompt (decoded from the cache)
3. generic    the generic drafter: a given checkpoint, the one shipped for the target, or trained on all the data
4. heads      per task, a separate feature-level head fine-tuned from the generic one on that task's examples (TAPS)
5. lora       per task, a LoRA adapter on the generic drafter, same data (TaskSpec's specialists on one base)
6. mixed      two drafters on equal mixes of every task (each task weighted equally) at two data sizes
7. routers    fitted on the examples' prompts with their tasks as labels (target-feature from the cached prefill
              features, which costs no extra forward pass)

All specialists and mixes start from the generic drafter with the same number of steps, so the comparison between
them (docs/history.md, the TAPS table) is about the data, not the budget.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from ..drafters.drafter_set import FORMAT, MANIFEST, VERSION
from ..drafters.loading import load_drafter
from ..errors import TaskspecError
from ..io_utils import write_json_atomic
from ..models.causal_lm import CausalLM
from ..models.fingerprint import target_fingerprint
from .data import load_feature_dirs
from .features import read_manifest
from .trainer import TrainConfig, train

ROUTER_KINDS_DEFAULT = ("embedding", "target-feature", "sequence")


class BuildError(TaskspecError):
    """Inputs of `taskspec build` that cannot make a drafter set."""


@dataclass(frozen=True)
class BuildConfig:
    kind: str = "eagle2"
    generic: str = "shipped"  # a checkpoint folder, "shipped" (the target's shipped drafter of `kind`) or "train"
    steps: int = 300  # per specialist / mix (and per generic drafter when trained here: 2 × steps)
    lr: float = 3e-4
    warmup_steps: int = 20
    seqs_per_step: int = 4
    draft_vocab_size: int = 16384  # only for a generic drafter trained here; fine-tuning keeps the base's
    lora_rank: int = 8
    lora_alpha: float = 16.0
    mixed_fractions: tuple[float, ...] = (0.5, 1.0)  # of each task's examples, for mixed-small and mixed-large
    folder_mix: tuple[float, ...] = ()  # extra weight per feature folder (e.g. favour self-distilled caches)
    routers: tuple[str, ...] = ROUTER_KINDS_DEFAULT
    stages: tuple[str, ...] = ("heads", "lora", "mixed", "routers")
    min_task_examples: int = 4
    save_every: int = 50
    seed: int = 0
    options: dict = field(default_factory=dict)  # drafting defaults stored in the manifest (depth, top_k, num_nodes)

    def __post_init__(self) -> None:
        bad = set(self.stages) - {"heads", "lora", "mixed", "routers"}
        if bad:
            raise BuildError(f"--stages {sorted(bad)}: expected some of heads, lora, mixed, routers")
        if any(not 0 < f <= 1 for f in self.mixed_fractions) or len(self.mixed_fractions) != 2:
            raise BuildError(f"--mixed-sizes {self.mixed_fractions}: expected two fractions in (0, 1]")
        if self.steps < 1 or self.lora_rank < 1:
            raise BuildError(f"--steps and --lora-rank must be >= 1, got {self.steps}, {self.lora_rank}")


def prompt_text(target: CausalLM, seq) -> str:
    """The prompt of a cached example as text: its tokens before the first response token."""
    response = seq.loss_mask.nonzero()
    end = int(response[0]) if len(response) else len(seq.input_ids)
    return target.tokenizer.decode(seq.input_ids[:end].tolist(), skip_special_tokens=True)


def assign_tasks(target: CausalLM, detector, feature_dirs: list[str], out: Path) -> dict:
    """{example id: task id} for every cached example (cached in out/assignments.json with what it was made from)."""
    path = out / "assignments.json"
    key = {"features": [str(d) for d in feature_dirs], "taskmap_centroids": _hash(detector.cluster_centers_)}
    saved = _saved_assignments(path, key)
    if saved is not None:
        return saved
    groups = load_feature_dirs(feature_dirs, target.fingerprint)
    ids, texts = [], []
    for group in groups:
        for seq in group:
            text = prompt_text(target, seq)
            if text.strip():
                ids.append(seq.id)
                texts.append(text)
    if not ids:
        raise BuildError(f"--features {','.join(map(str, feature_dirs))}: no example has a prompt")
    tasks = detector.predict(texts)
    assignment = dict(zip(ids, (int(t) for t in tasks)))
    write_json_atomic(path, {"key": key, "tasks": assignment})
    return assignment


def _saved_assignments(path: Path, key: dict) -> dict | None:
    """The cached {example id: task} when it was made from `key`; None when it is missing, stale or damaged (it is
    only a cache of what the task map predicts, so a damaged one is recomputed and overwritten, not an error)."""
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        if saved.get("key") == key:
            return {str(k): int(v) for k, v in saved["tasks"].items()}
    except (OSError, UnicodeDecodeError, ValueError, TypeError, AttributeError, KeyError):
        pass
    return None


def build_drafter_set(target: CausalLM, taskmap: str | Path, feature_dirs: list[str], out: str | Path,
                      config: BuildConfig = BuildConfig(), task_names: list[str] | None = None,
                      progress: bool = True, log=print) -> dict:
    """Build (or resume) the drafter set in `out`; returns the manifest."""
    import shutil

    from ..tasks import TaskDetector

    if target.tokenizer is None:
        raise BuildError(f"target {target.name!r} has no tokenizer; task detection reads prompt text")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    detector = TaskDetector.load(taskmap, target=target)
    if not (out / "taskmap.json").is_file() or Path(taskmap).resolve() != (out / "taskmap.json").resolve():
        shutil.copyfile(taskmap, out / "taskmap.json.tmp")
        (out / "taskmap.json.tmp").replace(out / "taskmap.json")
    names = _task_names(detector, task_names)

    log(f"[assign] {len(feature_dirs)} feature cache(s) → {detector.k_} tasks")
    assignment = assign_tasks(target, detector, feature_dirs, out)
    by_task = {t: sorted(i for i, task in assignment.items() if task == t) for t in range(detector.k_)}
    for t, ids in by_task.items():
        log(f"  {names[t]}: {len(ids)} examples ({', '.join(detector.descriptions_[t].keywords[:5])})"
            if t < len(detector.descriptions_) else f"  {names[t]}: {len(ids)} examples")
    tasks = [t for t in by_task if len(by_task[t]) >= config.min_task_examples]
    skipped = [names[t] for t in by_task if t not in tasks]
    if skipped:
        log(f"  no specialist for {', '.join(skipped)}: fewer than {config.min_task_examples} examples")
    if not tasks:
        raise BuildError(f"no task has {config.min_task_examples} or more examples in the data")
    folder_sizes = _folder_task_counts(feature_dirs, assignment)

    members: dict[str, str] = {}
    specialists: dict[str, dict[str, str]] = {}
    base_cfg = TrainConfig(kind=config.kind, steps=config.steps, seqs_per_step=config.seqs_per_step, lr=config.lr,
                           warmup_steps=config.warmup_steps, draft_vocab_size=config.draft_vocab_size,
                           save_every=config.save_every, eval_every=config.steps, seed=config.seed)

    def run(member: str, folder: str, cfg: TrainConfig, ids: set[str] | None, task_weights: dict[int, float]):
        log(f"[{member}] {cfg.steps} steps on {len(ids) if ids is not None else 'all'} examples → {out / folder}")
        mix = _folder_weights(folder_sizes, task_weights, config.folder_mix, len(feature_dirs))
        train(target, feature_dirs, out / folder, cfg, mix=mix, progress=progress, example_ids=ids)
        members[member] = str(out / folder)

    # generic
    generic_path = _generic_path(config, target)
    if generic_path is None:
        run("generic", "generic", replace(base_cfg, steps=2 * config.steps, lr=5e-4, warmup_steps=50), None,
            {t: 1.0 for t in tasks})
        generic_path = str((out / "generic").resolve())
    elif config.generic == "shipped":  # by name: the set stays valid wherever the package is installed
        members["generic"] = f"shipped:{config.kind}"
    else:
        members["generic"] = str(Path(generic_path).resolve())
    generic = load_drafter(generic_path, target)
    if generic.kind != config.kind:
        raise BuildError(f"--generic {generic_path}: a {generic.kind} drafter, but --kind is {config.kind}")
    tuned = replace(base_cfg, init_from=generic_path, draft_vocab_size=len(generic.vocab))

    if "heads" in config.stages:
        specialists["head"] = {}
        for t in tasks:
            run(f"head:{names[t]}", f"heads/{names[t]}", tuned, set(by_task[t]), {t: 1.0})
            specialists["head"][names[t]] = f"head:{names[t]}"
    if "lora" in config.stages:
        specialists["lora"] = {}
        lora_cfg = replace(tuned, lora_rank=config.lora_rank, lora_alpha=config.lora_alpha)
        for t in tasks:
            run(f"lora:{names[t]}", f"lora/{names[t]}", lora_cfg, set(by_task[t]), {t: 1.0})
            specialists["lora"][names[t]] = f"lora:{names[t]}"
    if "mixed" in config.stages:
        rng = random.Random(config.seed)
        shuffled = {t: rng.sample(by_task[t], len(by_task[t])) for t in tasks}
        for label, fraction in zip(("mixed-small", "mixed-large"), config.mixed_fractions):
            ids = {i for t in tasks for i in shuffled[t][: max(1, round(fraction * len(shuffled[t])))]}
            run(label, f"mixed/{label.removeprefix('mixed-')}", tuned, ids, {t: 1.0 for t in tasks})

    routers = {}
    if "routers" in config.stages:
        routers = fit_routers(target, feature_dirs, assignment, tasks, out, config, log)

    manifest = {
        "format": FORMAT, "version": VERSION, "target": target_fingerprint(target), "kind": config.kind,
        "tasks": [{"id": t, "name": names[t], "examples": len(by_task[t]),
                   "keywords": detector.descriptions_[t].keywords[:8] if t < len(detector.descriptions_) else []}
                  for t in tasks],
        "taskmap": "taskmap.json",
        "members": {k: _relative(v, out) for k, v in members.items()},
        "generic": "generic",
        "specialists": specialists,
        "routers": {k: _relative(v, out) for k, v in routers.items()},
        "default_router": next((k for k in ("target-feature", "embedding", "sequence") if k in routers), None),
        "options": config.options,
        "build": {"config": {k: v for k, v in asdict(config).items()}, "features": [str(d) for d in feature_dirs],
                  "command": " ".join(["taskspec", *sys.argv[1:]])},
    }
    write_json_atomic(out / MANIFEST, manifest)
    return manifest


def fit_routers(target: CausalLM, feature_dirs: list[str], assignment: dict, tasks: list[int], out: Path,
                config: BuildConfig, log=print, holdout: float = 0.2) -> dict[str, str]:
    """Fit each router kind on 80% of the examples, report held-out agreement with the task map, refit on all."""
    import torch

    from ..tasks.encoders import pool_prefill_hidden
    from ..tasks.routers import evaluate_router, make_router

    groups = load_feature_dirs(feature_dirs, target.fingerprint)
    rows = [(seq, assignment[seq.id]) for group in groups for seq in group
            if assignment.get(seq.id) in tasks]
    rng = random.Random(config.seed)
    rng.shuffle(rows)
    texts = [prompt_text(target, seq) for seq, _ in rows]
    labels = [task for _, task in rows]
    n_test = max(1, int(holdout * len(rows)))
    paths, report = {}, {}
    for kind in config.routers:
        path = out / "routers" / f"{kind}.json"
        router = make_router(kind, target)
        if kind == "target-feature":  # the cached prefill features: the prompt rows' mean, as the engine pools them
            def pooled(seq):
                end = int(seq.loss_mask.nonzero()[0]) if seq.loss_mask.any() else len(seq.input_ids)
                return pool_prefill_hidden(seq.hidden[:end].to(torch.float32))
            x = np.stack([pooled(seq) for seq, _ in rows])
            router.classifier.fit(x[n_test:], labels[n_test:])
            held = router.classifier.proba(x[:n_test]).argmax(1)
            accuracy = float(np.mean([router.classifier.classes[i] == y for i, y in zip(held, labels[:n_test])]))
            router.classifier.fit(x, labels)
            report[kind] = {"held_out_accuracy": round(accuracy, 4)}
        else:
            router.fit(texts[n_test:], labels[n_test:])
            report[kind] = evaluate_router(router, texts[:n_test], labels[:n_test])
            router.fit(texts, labels)
        router.save(path)
        paths[kind] = str(path)
        log(f"[router {kind}] held-out agreement with the task map: {report[kind]}")
    write_json_atomic(out / "routers" / "evaluation.json", report)
    return paths


def _task_names(detector, names: list[str] | None) -> list[str]:
    if names is None:
        return [f"task{t}" for t in range(detector.k_)]
    if len(names) != detector.k_ or len(set(names)) != len(names) or any(not n or "/" in n or ":" in n
                                                                          for n in names):
        raise BuildError(f"--task-names {','.join(names)}: expected {detector.k_} distinct names (no '/' or ':'), "
                         "one per task of the task map in its order")
    return list(names)


def _generic_path(config: BuildConfig, target: CausalLM) -> str | None:
    if config.generic == "train":
        return None
    if config.generic == "shipped":
        from ..drafters.shipped import shipped_drafters

        shipped = shipped_drafters(target)
        return str(shipped[config.kind]) if config.kind in shipped else None
    if not Path(config.generic).is_dir():
        raise BuildError(f"--generic {config.generic!r}: not a drafter folder (or 'shipped' / 'train')")
    return config.generic


def _folder_task_counts(feature_dirs: list[str], assignment: dict) -> list[dict[int, int]]:
    """Per feature folder, {task: number of examples} (from the manifests, without loading tensors)."""
    counts = []
    for folder in feature_dirs:
        manifest = read_manifest(folder)  # the first read of it on a resumed build: FeatureError when damaged
        c: dict[int, int] = {}
        for shard in manifest["shards"]:
            for example in shard["examples"]:
                if example in assignment:
                    c[assignment[example]] = c.get(assignment[example], 0) + 1
        counts.append(c)
    return counts


def _folder_weights(folder_counts: list[dict[int, int]], task_weights: dict[int, float], folder_mix, n: int):
    """Sampling weight per folder so that each task gets its share (task_weights) of the examples drawn: a folder's
    weight is the share its examples should have, Σ_task weight(task) · n(folder, task) / n(task)."""
    totals = {t: sum(c.get(t, 0) for c in folder_counts) for t in task_weights}
    extra = list(folder_mix) or [1.0] * n
    if len(extra) != n:
        raise BuildError(f"--mix {list(folder_mix)}: expected {n} weights, one per feature folder")
    weights = [e * sum(w * c.get(t, 0) / totals[t] for t, w in task_weights.items() if totals[t])
               for c, e in zip(folder_counts, extra)]
    if not any(weights):
        raise BuildError("no examples of the requested tasks in the feature folders")
    return weights


def _relative(path: str, out: Path) -> str:
    if path.startswith("shipped:"):
        return path
    p = Path(path)
    try:
        return str(p.resolve().relative_to(out.resolve()))
    except ValueError:
        return str(p.resolve())


def _hash(array) -> str:
    return hashlib.sha256(np.ascontiguousarray(array, dtype=np.float32).tobytes()).hexdigest()[:16]
