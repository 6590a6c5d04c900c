"""The `taskspec pipeline` configuration: sections, defaults, and strict parsing of a TOML or YAML file.

Every key has a type and a default here; docs/pipeline.md documents each one and configs/embedded.toml is the
example. Unknown keys and wrong types are errors that name the key, raised before anything slow runs.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import get_type_hints

from .errors import TaskspecError


class PipelineError(TaskspecError):
    """A pipeline configuration or output folder that cannot be used."""


@dataclass(frozen=True)
class PromptsSection:
    sources: tuple[str, ...] = ()  # dataset names (gsm8k:train, sharegpt, ...) or .jsonl files with a "prompt" field
    limit: int = 200  # training prompts per source
    eval_limit: int = 10  # held-out prompts per source for the evaluation (never trained on)
    sample: str = "first"  # first = the first prompts in file order; random = a seeded random sample of the source
    seed: int = 0  # the random sample's seed
    data_dir: str = ""  # data folder for named datasets ("" = $TASKSPEC_DATA, else ../shared/data)


@dataclass(frozen=True)
class CollectSection:
    max_new_tokens: int = 128  # output tokens collected per prompt (greedy)
    max_tokens: int = 384  # prompt + output tokens kept per training example (prompts are cut from the left)
    top_k: int = 10  # target logits kept per token in the feature cache


@dataclass(frozen=True)
class DetectSection:
    k: int = 0  # 0 = automatic (silhouette over k_range)
    k_range: tuple[int, int] = (2, 8)
    encoder: str = "all-MiniLM-L6-v2"  # any sentence-transformers model by name (offline) or path; or "target"
    stop_words: bool = False  # remove English stop words before embedding (TaskSpec)
    task_names: tuple[str, ...] = ()  # one name per task, in the task map's order ("" = task0, task1, ...)
    seed: int = 0


@dataclass(frozen=True)
class BuildSection:
    kind: str = "eagle2"  # eagle2 | hass
    generic: str = "shipped"  # shipped (the drafter shipped for the target; trained when none) | train | a folder
    steps: int = 300  # training steps per specialist / mix
    lr: float = 3e-4
    seqs_per_step: int = 4  # training sequences per step
    save_every: int = 50  # checkpoint every N steps (a killed run resumes from the last one)
    draft_vocab_size: int = 16384  # only for a generic drafter trained here (fine-tuning keeps the base's)
    lora_rank: int = 8
    lora_alpha: float = 16.0
    mixed_sizes: tuple[float, float] = (0.5, 1.0)
    stages: tuple[str, ...] = ("heads", "lora", "mixed", "routers")
    routers: tuple[str, ...] = ("embedding", "target-feature", "sequence")
    drafter_options: dict = field(default_factory=dict)  # drafting defaults stored in the set: depth, top_k, num_nodes
    seed: int = 0


@dataclass(frozen=True)
class EvaluateSection:
    methods: tuple[str, ...] = ("none", "auto")  # any `taskspec bench` methods
    compose: tuple[str, ...] = ("single", "routed", "merged")  # drafter-set strategies run beside them
    max_new_tokens: int = 128
    temperature: float = 0.0


@dataclass(frozen=True)
class PipelineConfig:
    target: str = "embedded"  # any --target: embedded, a HF folder or cached hub id, a .gguf file
    dtype: str = "bf16"
    out: str = ""  # output folder (`--out` overrides)
    prompts: PromptsSection = PromptsSection()
    collect: CollectSection = CollectSection()
    detect: DetectSection = DetectSection()
    build: BuildSection = BuildSection()
    evaluate: EvaluateSection = EvaluateSection()

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))


def load_config(path: str | Path, out: str | None = None) -> PipelineConfig:
    """Read and validate a TOML (.toml) or YAML (.yaml/.yml) pipeline configuration."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"--config {path}: no such file; expected a .toml or .yaml pipeline configuration")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".toml":
            import tomllib

            raw = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            import yaml

            raw = yaml.safe_load(text) or {}
        else:
            raise PipelineError(f"--config {path}: expected a .toml, .yaml or .yml file")
    except PipelineError:
        raise
    except Exception as exc:  # tomllib.TOMLDecodeError, yaml.YAMLError
        raise PipelineError(f"--config {path}: not valid {path.suffix[1:].upper()}: {exc}") from None
    if not isinstance(raw, dict):
        raise PipelineError(f"--config {path}: expected a mapping of sections at the top level")
    config = parse_config(raw, source=str(path))
    if out:
        config = _replace(config, out=out)
    if not config.out:
        raise PipelineError(f"--config {path}: no output folder; set `out = \"...\"` or pass --out DIR")
    return config


def parse_config(raw: dict, source: str = "config") -> PipelineConfig:
    config = _parse_section(PipelineConfig, raw, source, "")
    _check(config, source)
    return config


def _parse_section(cls, raw: dict, source: str, prefix: str):
    if not isinstance(raw, dict):
        raise PipelineError(f"{source}: [{prefix.rstrip('.')}] must be a table of keys")
    hints = get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise PipelineError(f"{source}: unknown key(s) {', '.join(prefix + k for k in unknown)}; "
                            f"expected some of {', '.join(prefix + k for k in sorted(known))}")
    values = {}
    for name, value in raw.items():
        kind = hints[name]
        key = prefix + name
        if is_dataclass(kind):
            values[name] = _parse_section(kind, value, source, key + ".")
        else:
            values[name] = _coerce(value, kind, key, source)
    return cls(**values)


def _coerce(value, kind, key: str, source: str):
    origin = getattr(kind, "__origin__", None)
    expected = getattr(kind, "__name__", str(kind))
    if origin is tuple:
        item = kind.__args__[0]
        if isinstance(value, str) and item is str:  # "a,b" is accepted for a list of names
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise PipelineError(f"{source}: {key} = {value!r}: expected a list of {item.__name__}")
        items = tuple(_coerce(v, item, key, source) for v in value)
        if kind.__args__[-1] is not Ellipsis and len(items) != len(kind.__args__):
            raise PipelineError(f"{source}: {key} = {value!r}: expected {len(kind.__args__)} values")
        return items
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is dict and isinstance(value, dict):
        return dict(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise PipelineError(f"{source}: {key} = {value!r}: expected {expected}")
    return value


def _check(config: PipelineConfig, source: str) -> None:
    from .tasks.routers import ROUTER_KINDS

    p, c, d, b, e = config.prompts, config.collect, config.detect, config.build, config.evaluate
    problems = []
    if not p.sources:
        problems.append("prompts.sources is empty; expected dataset names or .jsonl files")
    if p.sample not in ("first", "random"):
        problems.append(f"prompts.sample = {p.sample!r}: expected first or random")
    if p.limit < 2 or p.eval_limit < 0:
        problems.append(f"prompts.limit = {p.limit} (>= 2) and prompts.eval_limit = {p.eval_limit} (>= 0)")
    if c.max_new_tokens < 1 or c.max_tokens < 8 or c.top_k < 1:
        problems.append("collect.max_new_tokens, collect.top_k must be >= 1 and collect.max_tokens >= 8")
    if d.k == 1 or d.k < 0 or not 2 <= d.k_range[0] <= d.k_range[1]:
        problems.append(f"detect.k = {d.k} (0 = automatic, else >= 2), detect.k_range = {list(d.k_range)} "
                        "(2 <= low <= high)")
    if b.kind not in ("eagle2", "hass"):
        problems.append(f"build.kind = {b.kind!r}: expected eagle2 or hass")
    bad_stages = set(b.stages) - {"heads", "lora", "mixed", "routers"}
    if bad_stages:
        problems.append(f"build.stages: unknown {sorted(bad_stages)}; expected heads, lora, mixed, routers")
    bad_routers = set(b.routers) - set(ROUTER_KINDS)
    if bad_routers:
        problems.append(f"build.routers: unknown {sorted(bad_routers)}; expected some of {', '.join(ROUTER_KINDS)}")
    bad_options = set(b.drafter_options) - {"depth", "top_k", "num_nodes"}
    if bad_options or any(not isinstance(v, int) or v < 1 for v in b.drafter_options.values()):
        problems.append(f"build.drafter_options = {b.drafter_options}: expected depth, top_k, num_nodes >= 1")
    if b.steps < 1 or b.lora_rank < 1:
        problems.append("build.steps and build.lora_rank must be >= 1")
    if e.max_new_tokens < 1 or e.temperature < 0:
        problems.append("evaluate.max_new_tokens must be >= 1 and evaluate.temperature >= 0")
    if config.dtype not in ("bf16", "fp32", "fp16"):
        problems.append(f"dtype = {config.dtype!r}: expected bf16, fp32 or fp16")
    if problems:
        raise PipelineError(f"{source}: " + "; ".join(problems))
    build_config(b)


def build_config(section: BuildSection):
    """The `taskspec build` configuration of a [build] section (validated by BuildConfig itself)."""
    from .train.build import BuildConfig, BuildError

    try:
        return BuildConfig(kind=section.kind, generic=section.generic, steps=section.steps, lr=section.lr,
                           seqs_per_step=section.seqs_per_step, save_every=section.save_every,
                           draft_vocab_size=section.draft_vocab_size,
                           lora_rank=section.lora_rank, lora_alpha=section.lora_alpha,
                           mixed_fractions=section.mixed_sizes, routers=section.routers, stages=section.stages,
                           seed=section.seed, options=dict(section.drafter_options))
    except BuildError as exc:
        raise PipelineError(f"[build]: {exc}") from None


def _replace(config, **changes):
    from dataclasses import replace

    return replace(config, **changes)
