"""taskspec: task-aware, lossless speculative decoding on the CPU.

The stable Python API (everything else is internal and may move):

    load_target(spec, dtype="bf16")            the target model: "embedded", a HF folder / cached hub id, a .gguf
    build_drafter(spec, target)                a drafter by spec, as `--drafter` takes it ("auto", "ngram", "hass")
    load_drafter(folder, target)               a trained feature-level drafter or LoRA adapter folder
    load_drafter_set(folder, target)           a drafter set; `.compose(strategy)` gives one drafter
    generate(target, drafter, prompt, config)  lossless speculative decoding → GenerationResult(text, token_ids, stats)
    GenerationConfig, SamplingParams           how many tokens, greedy or sampled (temperature, top-k, top-p, seed)
    TaskDetector                               task detection (scikit-learn fit / predict, save / load)
    make_router(kind, target), load_router     routers: fit(prompts, tasks) / predict(prompts) → (task, confidence)
    load_config, run_pipeline                  `taskspec pipeline` from Python

Names are imported on first use, so `import taskspec` stays cheap (no torch until a model is needed).
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "load_target": "taskspec.models.target",
    "build_drafter": "taskspec.drafters.kinds",
    "load_drafter": "taskspec.drafters.loading",
    "load_drafter_set": "taskspec.tasks.drafter_sets",
    "generate": "taskspec.engine.decode",
    "GenerationConfig": "taskspec.engine.decode",
    "GenerationResult": "taskspec.engine.decode",
    "SamplingParams": "taskspec.engine.sampling",
    "TaskDetector": "taskspec.tasks.detect",
    "make_router": "taskspec.tasks.routers",
    "load_router": "taskspec.tasks.routers",
    "load_config": "taskspec.pipeline_config",
    "run_pipeline": "taskspec.pipeline",
    "TaskspecError": "taskspec.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'taskspec' has no attribute {name!r}; the API is: {', '.join(__all__)}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
