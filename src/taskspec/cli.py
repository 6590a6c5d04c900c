"""taskspec command line: parsing only; every verb calls the library."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from .errors import TaskspecError

DEFAULT_TARGET = "embedded"
DEFAULT_DRAFTER = "auto"


def _add_target(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", default=DEFAULT_TARGET,
                   help="model folder, .gguf file, local Hugging Face id, or 'embedded' (Gemma 3 270M; default)")
    p.add_argument("--dtype", default="bf16", help="bf16 (default), fp32 or fp16")
    p.add_argument("--no-kernel", action="store_true",
                   help="use PyTorch's bf16 linear instead of taskspec's batch-invariant AVX2 kernel")


COMPOSE_HELP = ("single[:MEMBER] | averaged | routed[:embedding|target-feature|sequence] | confidence[:step] | "
                "entropy[:step] | merged | merged-double; append @lora for the LoRA specialists")


def _add_drafter_set(p: argparse.ArgumentParser, compose_help: str) -> None:
    p.add_argument("--drafter-set", help="drafter set folder written by `taskspec build` (refused for another target)")
    p.add_argument("--compose", help=compose_help)


def _add_sampling(p: argparse.ArgumentParser, max_new_tokens: int) -> None:
    p.add_argument("--max-new-tokens", type=int, default=max_new_tokens)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-k", type=int, default=0, help="0 = off")
    p.add_argument("--top-p", type=float, default=1.0, help="1.0 = off")
    p.add_argument("--seed", type=int, default=0)


def _generation_config(args):
    from .engine.decode import GenerationConfig
    from .engine.sampling import SamplingParams

    return GenerationConfig(max_new_tokens=args.max_new_tokens, seed=args.seed,
                            sampling=SamplingParams(args.temperature, args.top_k, args.top_p),
                            stop_strings=tuple(getattr(args, "stop", None) or ()))


def cmd_generate(args) -> int:
    from .drafters import build_drafter
    from .engine.decode import generate
    from .models.target import load_target

    config = _generation_config(args)  # validate options before the slow model load
    if args.compose and "," in args.compose:
        raise TaskspecError(f"--compose {args.compose!r}: generate takes one strategy (bench takes a list)")
    target = load_target(args.target, args.dtype, use_kernel=not args.no_kernel)
    drafter_set = _drafter_set(args, target)
    if drafter_set is not None:
        drafter = drafter_set.compose(args.compose or "routed")
    else:
        drafter = build_drafter(args.drafter, target)
    result = generate(target, drafter, args.prompt, config)
    label = drafter.name if drafter_set is not None else args.drafter
    if args.json:
        print(json.dumps(result.to_dict(), ensure_ascii=False))
    else:
        print(result.text)
        s = result.stats
        chosen = getattr(drafter, "choices", None)
        routed = f", drafted by {', '.join(chosen)}" if chosen else ""
        print(f"[{label}] {s.new_tokens} tokens, τ={s.acceptance_length:.2f}, "
              f"{s.tokens_per_second:.1f} tokens/s{routed}", file=sys.stderr)
    return 0


def _drafter_set(args, target):
    """--drafter-set DIR, else with --compose the set shipped for the target; None when decoding with --drafter."""
    from .drafters.drafter_set import load_drafter_set
    from .drafters.shipped import shipped_drafter_set

    folder = getattr(args, "drafter_set", None)
    if folder is None and getattr(args, "compose", None):
        folder = shipped_drafter_set(target)
        if folder is None:
            raise TaskspecError(f"--compose: no drafter set ships for target {target.name!r}; pass --drafter-set DIR "
                                "(a folder written by `taskspec build` or `taskspec pipeline`)")
    return None if folder is None else load_drafter_set(folder, target)


def cmd_bench(args) -> int:
    from .bench.methods import split_method_list
    from .data import load_prompts
    from .models.target import load_target

    config = _generation_config(args)
    methods = split_method_list(args.methods)
    if args.compose:
        methods += split_method_list([args.compose])
    prompts = []
    for name in filter(None, args.dataset.split(",")):
        prompts += load_prompts(name, data_dir=args.data_dir, limit=args.limit)
    target = load_target(args.target, args.dtype, use_kernel=not args.no_kernel)
    return _run_and_report(target, prompts, methods, config, args.out, args, _drafter_set(args, target))


def cmd_demo(args) -> int:
    from .bench.methods import split_method_list
    from .demo import SET_METHODS, builtin_prompts, demo_prompts, run_demo
    from .drafters.drafter_set import load_drafter_set
    from .drafters.shipped import shipped_drafter_set, shipped_drafters
    from .models.target import load_target

    config = _generation_config(args)
    print(f"Loading target {args.target!r} (the first run converts the embedded GGUF once, ~1-2 minutes)...",
          file=sys.stderr)
    target = load_target(args.target, args.dtype, use_kernel=not args.no_kernel)
    folder = args.drafter_set or shipped_drafter_set(target)
    log = (lambda m: print(m, file=sys.stderr))
    if folder is not None:
        drafter_set = load_drafter_set(folder, target)
        prompts = demo_prompts(args.data_dir, log=log)
        methods = split_method_list(args.methods) if args.methods else list(SET_METHODS)
    else:
        log(f"[demo] no drafter set for target {target.name!r}: the built-in prompts, one table")
        drafter_set, prompts = None, builtin_prompts()
        methods = split_method_list(args.methods or ["none", "ngram", *sorted(shipped_drafters(target)), "auto"])
    run_demo(target, prompts, methods, config, args.out, drafter_set=drafter_set, progress=not args.quiet, log=log,
             command=" ".join(["taskspec", *sys.argv[1:]]))
    return 0


def cmd_collect(args) -> int:
    from .collect import collect
    from .data import load_prompts
    from .models.target import load_target

    config = _generation_config(args)
    prompts = []
    for name in filter(None, args.prompts.split(",")):
        prompts += load_prompts(name, data_dir=args.data_dir, limit=args.limit)
    target = load_target(args.target, args.dtype, use_kernel=not args.no_kernel)
    records = collect(target, prompts, args.out, drafter=args.drafter, config=config, progress=not args.quiet)
    tokens = sum(r["meta"]["new_tokens"] for r in records)
    print(f"{args.out}: {len(records)} records ({tokens} output tokens)", file=sys.stderr)
    return 0


def cmd_detect(args) -> int:
    from .data import load_prompts
    from .tasks import TaskDetector, clustering_metrics
    from .tasks.detect import TaskDetectionError

    k_min, k_max = _int_pair(args.k_range, "--k-range")
    prompts = []
    for name in filter(None, args.prompts.split(",")):
        prompts += load_prompts(name, data_dir=args.data_dir, limit=args.limit)
    labels = None
    if args.label_field:
        missing = [p.id for p in prompts if args.label_field != "source" and args.label_field not in p.meta]
        if missing:
            raise TaskDetectionError(f"--label-field {args.label_field!r}: prompts {missing[:3]} have no such field "
                                     "(use 'source' for the dataset name)")
        labels = [p.source if args.label_field == "source" else str(p.meta[args.label_field]) for p in prompts]
    detector = TaskDetector(encoder=args.encoder, k=args.k, k_min=k_min, k_max=k_max, stop_words=args.stop_words,
                            seed=args.seed, criterion=args.criterion)
    print(f"embedding {len(prompts)} prompts with {args.encoder}...", file=sys.stderr)
    detector.fit([p.text for p in prompts], progress=not args.quiet)
    evaluation = None
    if labels is not None:
        evaluation = {"label_field": args.label_field, **clustering_metrics(labels, detector.labels_)}
    detector.save(args.out, evaluation)
    averaged = detector.criterion == "silhouette-restarts" and args.k is None
    print("| k | silhouette |" + (" mean over k-means restarts |\n|---:|---:|---:|" if averaged else "\n|---:|---:|"))
    for entry in detector.selection_curve_:
        mark = " ←" if entry["k"] == detector.k_ else ""
        score = f" {entry['score']:.4f}{mark} |" if averaged else ""
        print(f"| {entry['k']} | {entry['silhouette']:.4f}{'' if averaged else mark} |{score}")
    print(f"\n{detector.k_} tasks:")
    for task in detector.descriptions_:
        example = task.examples[0].replace("\n", " ")[:90] if task.examples else ""
        print(f"  task {task.task} ({task.size} prompts): {', '.join(task.keywords[:6])}  e.g. \"{example}\"")
    if evaluation:
        print(f"\nagainst {args.label_field!r}: accuracy {evaluation['accuracy']:.3f}, NMI {evaluation['nmi']:.3f}, "
              f"ARI {evaluation['ari']:.3f}")
    print(f"\nwrote {args.out}", file=sys.stderr)
    return 0


def _int_pair(text: str, option: str) -> tuple[int, int]:
    try:
        low, high = (int(v) for v in text.split(","))
    except ValueError:
        raise TaskspecError(f"{option} {text!r}: expected two integers 'low,high'") from None
    return low, high


def cmd_features(args) -> int:
    from .models.target import load_target

    target = load_target(args.target, args.dtype, use_kernel=not args.no_kernel)
    _extract_features(target, args, Path(args.out))
    return 0


def _extract_features(target, args, out: Path) -> Path:
    """The feature cache of `taskspec features` (also `build --data`): args.data, .data_dir, .limit, .source, ..."""
    from .data import load_prompts
    from .train.features import build_feature_cache, examples_from_dataset, examples_from_target

    prompts = []
    for name in filter(None, args.data.split(",")):
        prompts += load_prompts(name, data_dir=args.data_dir, limit=args.limit)
    if target.tokenizer is None:
        from .errors import TargetError

        raise TargetError(f"target {args.target!r} has no tokenizer; features need text")
    if args.source == "dataset":
        examples = examples_from_dataset(target, prompts, args.max_tokens)
    else:
        examples = examples_from_target(target, prompts, args.max_tokens, args.max_new_tokens,
                                        out / "target_outputs.jsonl", progress=not args.quiet)
    if not examples:
        from .errors import TaskspecError

        raise TaskspecError(f"--data {args.data!r}: no example has a response to learn from")
    if args.shuffle_seed >= 0:  # interleave the datasets, so a partial cache is already a mix
        import random

        random.Random(args.shuffle_seed).shuffle(examples)
    manifest = build_feature_cache(target, examples, out, top_k=args.top_k,
                                   examples_per_shard=args.examples_per_shard, progress=not args.quiet,
                                   meta={"data": args.data, "source": args.source, "max_tokens": args.max_tokens})
    tokens = sum(s["tokens"] for s in manifest["shards"])
    print(f"{out}: {len(examples)} examples, {tokens} tokens in {len(manifest['shards'])} shards, "
          f"{manifest['tokens_per_second_this_run']} tokens/s this run", file=sys.stderr)
    return out


def cmd_train(args) -> int:
    from .models.target import load_target
    from .train.trainer import TrainConfig, train

    mix = [float(w) for w in args.mix.split(",")] if args.mix else None
    target = load_target(args.target, args.dtype, use_kernel=not args.no_kernel)
    config = TrainConfig(kind=args.kind, steps=args.steps, seqs_per_step=args.seqs_per_step, lr=args.lr,
                         warmup_steps=args.warmup_steps, draft_vocab_size=args.draft_vocab_size,
                         token_weight=args.token_weight, hca_passes=args.hca_passes, save_every=args.save_every,
                         eval_every=args.eval_every, seed=args.seed, init_from=_init_path(args.init, target),
                         lora_rank=args.lora_rank, lora_alpha=args.lora_alpha)
    last = train(target, [d for d in args.features.split(",") if d], args.out, config, mix=mix,
                 progress=not args.quiet)
    print(f"{args.out}: step {last.get('step')}, loss {last.get('loss')}, held-out draft accuracy per depth "
          f"{last.get('val_acc_per_depth')}", file=sys.stderr)
    return 0


def cmd_build(args) -> int:
    from .models.target import load_target
    from .train.build import BuildConfig, build_drafter_set

    if bool(args.data) == bool(args.features):
        raise TaskspecError("build: pass exactly one of --data SPEC (extract features here) or --features DIRS")
    options = {}
    for part in filter(None, (args.drafter_options or "").split(",")):
        key, eq, value = part.partition("=")
        if not eq or key not in ("depth", "top_k", "num_nodes") or not value.isdigit():
            raise TaskspecError(f"--drafter-options {args.drafter_options!r}: expected depth=N,top_k=N,num_nodes=N")
        options[key] = int(value)
    config = BuildConfig(kind=args.kind, generic=args.generic, steps=args.steps, lr=args.lr,
                         warmup_steps=args.warmup_steps, seqs_per_step=args.seqs_per_step,
                         draft_vocab_size=args.draft_vocab_size, lora_rank=args.lora_rank, lora_alpha=args.lora_alpha,
                         mixed_fractions=tuple(_floats(args.mixed_sizes, "--mixed-sizes")),
                         folder_mix=tuple(_floats(args.mix, "--mix")) if args.mix else (),
                         routers=tuple(filter(None, args.routers.split(","))),
                         stages=tuple(filter(None, args.stages.split(","))), seed=args.seed, options=options)
    target = load_target(args.target, args.dtype, use_kernel=not args.no_kernel)
    if args.data:
        feature_dirs = [str(_extract_features(target, args, Path(args.out) / "features"))]
    else:
        feature_dirs = [d for d in args.features.split(",") if d]
    names = [n.strip() for n in args.task_names.split(",")] if args.task_names else None
    manifest = build_drafter_set(target, args.taskmap, feature_dirs, args.out, config, task_names=names,
                                 progress=not args.quiet, log=lambda m: print(m, file=sys.stderr))
    print(f"{args.out}: drafter set with {len(manifest['tasks'])} tasks "
          f"({', '.join(t['name'] for t in manifest['tasks'])}), members {', '.join(manifest['members'])}, "
          f"routers {', '.join(manifest['routers']) or 'none'}", file=sys.stderr)
    return 0


def cmd_pipeline(args) -> int:
    from .pipeline import format_summary, load_config, run_pipeline

    config = load_config(args.config, out=args.out)  # every key checked before the model loads
    run = run_pipeline(config, progress=not args.quiet, log=lambda m: print(m, file=sys.stderr))
    print(format_summary(run.summary))
    return 0


def _floats(text: str, option: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v]
    except ValueError:
        raise TaskspecError(f"{option} {text!r}: expected comma-separated numbers") from None


def _init_path(spec: str | None, target) -> str:
    """--init: a checkpoint folder, or 'eagle2' / 'hass' for the drafter of that kind shipped for the target."""
    if spec in ("eagle2", "hass"):
        from .drafters.shipped import shipped_drafters

        shipped = shipped_drafters(target)
        if spec not in shipped:
            raise TaskspecError(f"--init {spec}: no {spec} drafter is shipped for target {target.name!r}; pass a "
                                "checkpoint folder")
        return str(shipped[spec])
    return spec or ""


def cmd_report(args) -> int:
    from .bench.plots import PLOT_FILES, load_result, prompt_map, result_prompts
    from .bench.report import write_report

    if args.data_dir and not args.taskmap:
        raise TaskspecError("--data-dir is read with --taskmap (to reload the prompts of the prompt map)")
    result = load_result(args.result)
    points = None
    if args.taskmap:
        from .tasks import TaskDetector

        detector = TaskDetector.load(args.taskmap)
        texts, ids = result_prompts(result, args.data_dir)
        print(f"embedding {len(texts)} prompts with {detector.encoder}...", file=sys.stderr)
        points = prompt_map(texts, ids, detector)
    path = write_report(result, args.out, source=args.result, prompt_map=points)
    pngs = [name for name in PLOT_FILES if (Path(args.out) / name).is_file()]
    print(f"wrote {path} and {len(pngs)} plots ({', '.join(pngs)})", file=sys.stderr)
    return 0


def _run_and_report(target, prompts, methods, config, out, args, drafter_set=None) -> int:
    from .bench.report import markdown_tables
    from .bench.runner import run_bench
    from .io_utils import write_json_atomic

    meta = {"command": " ".join(["taskspec", *sys.argv[1:]])}
    if drafter_set is not None:
        meta["drafter_set"] = {"folder": str(drafter_set.folder), "tasks": drafter_set.manifest["tasks"],
                               "options": drafter_set.options}
    result = run_bench(target, prompts, methods, config, progress=not args.quiet, meta=meta,
                       drafter_set=drafter_set).to_dict()
    print(markdown_tables(result))
    if out:
        write_json_atomic(out, result)
        print(f"\nwrote {out}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="taskspec", description="Task-aware lossless speculative decoding.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="decode one prompt")
    _add_target(g)
    g.add_argument("--drafter", default=DEFAULT_DRAFTER,
                   help="auto (default: the drafter shipped for the target, else ngram) | none | ngram[:depth=N,...] | "
                        "ngram-tree | model:PATH[,depth=N,top_k=K] | eagle2[:PATH] | hass[:PATH][,depth=N,top_k=K,"
                        "num_nodes=M]")
    g.add_argument("--prompt", required=True)
    _add_drafter_set(g, "strategy (default routed): " + COMPOSE_HELP)
    _add_sampling(g, 128)
    g.add_argument("--stop", action="append", help="stop string (repeatable)")
    g.add_argument("--json", action="store_true", help="print one JSON object {text, token_ids, stats}")
    g.set_defaults(func=cmd_generate)

    b = sub.add_parser("bench", help="compare methods on a dataset, interleaved per prompt, in one process")
    _add_target(b)
    b.add_argument("--dataset", required=True, help="dataset name(s), comma-separated, or a .jsonl path")
    b.add_argument("--data-dir", help="data folder (default: $TASKSPEC_DATA, else ../shared/data)")
    b.add_argument("--limit", type=int, default=20, help="prompts per dataset (default 20)")
    b.add_argument("--methods", nargs="+", default=["none,ngram,auto,hf-generate,hf-prompt-lookup"],
                   help="comma/space separated: none, auto, ngram[:opts], ngram-tree, model:PATH, eagle2[:PATH], "
                        "hass[:PATH], hf-generate, hf-prompt-lookup[:N]")
    _add_drafter_set(b, "strategies, comma-separated, run side by side with --methods: " + COMPOSE_HELP)
    _add_sampling(b, 128)
    b.add_argument("--out", help="write the full result (JSON) here")
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    b.set_defaults(func=cmd_bench)

    d = sub.add_parser("demo", help="decode a few example prompts with each method and print the table")
    _add_target(d)
    d.add_argument("--methods", nargs="+", help="methods and strategies as in `bench` (default: none, ngram, and "
                   "the drafter set's single, routed and merged; without a set: none, ngram, auto)")
    d.add_argument("--drafter-set", help="drafter set folder (default: the one shipped for the target)")
    d.add_argument("--data-dir", help="data folder for the benchmark prompts (default: $TASKSPEC_DATA, else "
                                      "../shared/data; without it, ShareGPT and the built-in examples)")
    _add_sampling(d, 96)
    d.add_argument("--out", default="runs/demo", help="report folder: result.json, report.md, plots")
    d.add_argument("--quiet", action="store_true")
    d.set_defaults(func=cmd_demo)
    r = sub.add_parser("report", help="report.md and PNG plots (τ, depth, routing, speedup, prompt map) from a "
                                      "bench or demo result")
    r.add_argument("result", help="result JSON written by `taskspec bench --out` or `taskspec demo --out`")
    r.add_argument("--out", required=True, help="folder for report.md and the plots (created)")
    r.add_argument("--taskmap", help="task map from `taskspec detect`: map the result's prompts in 2-D by task")
    r.add_argument("--data-dir", help="with --taskmap: data folder to reload the prompts from (default: "
                                      "$TASKSPEC_DATA, else ../shared/data)")
    r.set_defaults(func=cmd_report)
    c = sub.add_parser("collect", help="decode prompts and append {prompt, output, meta} records (resumable)")
    _add_target(c)
    c.add_argument("--prompts", required=True, help="dataset name(s), comma-separated, or a .jsonl path")
    c.add_argument("--data-dir", help="data folder (default: $TASKSPEC_DATA, else ../shared/data)")
    c.add_argument("--limit", type=int, default=None, help="prompts per dataset (default: all)")
    c.add_argument("--drafter", default=DEFAULT_DRAFTER, help="drafter used to decode (lossless; default auto)")
    _add_sampling(c, 128)
    c.add_argument("--stop", action="append", help="stop string (repeatable)")
    c.add_argument("--out", required=True, help="JSONL file; records are appended, prompts already in it skipped")
    c.add_argument("--quiet", action="store_true")
    c.set_defaults(func=cmd_collect)
    dt = sub.add_parser("detect", help="find the tasks of a prompt set: sentence embeddings + k-means, k automatic")
    dt.add_argument("--prompts", required=True, help="dataset name(s), comma-separated, or a .jsonl path")
    dt.add_argument("--data-dir", help="data folder (default: $TASKSPEC_DATA, else ../shared/data)")
    dt.add_argument("--limit", type=int, default=None, help="prompts per dataset (default: all)")
    dt.add_argument("--out", required=True, help="task map (JSON) to write")
    dt.add_argument("--k", type=int, default=None, help="force the number of tasks (default: chosen by silhouette)")
    dt.add_argument("--k-range", default="2,10", help="range searched for k (default 2,10)")
    dt.add_argument("--criterion", default="silhouette",
                    help="how k is chosen: silhouette (default; mean cosine silhouette of k-means) or "
                         "silhouette-restarts (the silhouette averaged over 5 k-means seeds: steadier, 5x the time)")
    dt.add_argument("--encoder", default="all-MiniLM-L6-v2",
                    help="sentence-transformers model: name in the local cache or folder (default: the offline "
                         "all-MiniLM-L6-v2 package)")
    dt.add_argument("--stop-words", action="store_true", help="drop English stop words before embedding (TaskSpec)")
    dt.add_argument("--label-field", help="known labels to score against: 'source' (the dataset) or a data field")
    dt.add_argument("--seed", type=int, default=0)
    dt.add_argument("--quiet", action="store_true")
    dt.set_defaults(func=cmd_detect)
    f = sub.add_parser("features", help="cache the target's hidden states and top-K logits over training texts")
    _add_target(f)
    f.add_argument("--data", required=True, help="dataset name(s), comma-separated (e.g. sharegpt,gsm8k:train), "
                                                  "or a .jsonl with prompt and response")
    f.add_argument("--data-dir", help="data folder (default: $TASKSPEC_DATA, else ../shared/data)")
    f.add_argument("--limit", type=int, default=None, help="prompts per dataset (default: all)")
    f.add_argument("--source", choices=["dataset", "target"], default="dataset",
                   help="responses from the dataset, or the target's own greedy outputs (self-distillation)")
    f.add_argument("--max-tokens", type=int, default=512, help="prompt + response tokens per example")
    f.add_argument("--max-new-tokens", type=int, default=128, help="with --source target: output length")
    f.add_argument("--top-k", type=int, default=10, help="target logits kept per token")
    f.add_argument("--examples-per-shard", type=int, default=64)
    f.add_argument("--shuffle-seed", type=int, default=0, help="order of the examples (-1: keep dataset order)")
    f.add_argument("--out", required=True, help="feature folder (resumed if it exists)")
    f.add_argument("--quiet", action="store_true")
    f.set_defaults(func=cmd_features)
    bd = sub.add_parser("build", help="per-task specialist drafters, mixes and routers from a task map (resumable)")
    _add_target(bd)
    bd.add_argument("--taskmap", required=True, help="task map from `taskspec detect`")
    bd.add_argument("--features", help="feature folder(s) from `taskspec features`, comma-separated (read in place)")
    bd.add_argument("--data", help="or: dataset name(s) / .jsonl to extract features from into OUT/features")
    bd.add_argument("--data-dir", help="data folder (default: $TASKSPEC_DATA, else ../shared/data)")
    bd.add_argument("--limit", type=int, default=None, help="with --data: prompts per dataset (default: all)")
    bd.add_argument("--source", choices=["dataset", "target"], default="target",
                    help="with --data: responses from the dataset or the target's own outputs (default)")
    bd.add_argument("--max-tokens", type=int, default=384, help="with --data: prompt + response tokens per example")
    bd.add_argument("--max-new-tokens", type=int, default=128, help="with --data --source target: output length")
    bd.add_argument("--top-k", type=int, default=10, help="with --data: target logits kept per token")
    bd.add_argument("--examples-per-shard", type=int, default=64)
    bd.add_argument("--shuffle-seed", type=int, default=0)
    bd.add_argument("--out", required=True, help="drafter set folder (resumed if it exists)")
    bd.add_argument("--kind", choices=["eagle2", "hass"], default="eagle2")
    bd.add_argument("--generic", default="shipped",
                    help="generic drafter to fine-tune from: a checkpoint folder, 'shipped' (default; trained here "
                         "when none ships for the target) or 'train'")
    bd.add_argument("--task-names", help="a name per task of the task map, in its order (default task0, task1, ...)")
    bd.add_argument("--steps", type=int, default=300, help="training steps per specialist and mix (default 300)")
    bd.add_argument("--lr", type=float, default=3e-4)
    bd.add_argument("--warmup-steps", type=int, default=20)
    bd.add_argument("--seqs-per-step", type=int, default=4)
    bd.add_argument("--draft-vocab-size", type=int, default=16384, help="for a generic drafter trained here")
    bd.add_argument("--lora-rank", type=int, default=8)
    bd.add_argument("--lora-alpha", type=float, default=16.0)
    bd.add_argument("--mixed-sizes", default="0.5,1",
                    help="fractions of every task's examples in the two equal-mix drafters (default 0.5,1)")
    bd.add_argument("--mix", help="extra sampling weight per feature folder, comma-separated")
    bd.add_argument("--routers", default="embedding,target-feature,sequence", help="router kinds to fit")
    bd.add_argument("--stages", default="heads,lora,mixed,routers", help="what to build (default: everything)")
    bd.add_argument("--drafter-options", help="drafting defaults stored in the set, e.g. depth=4")
    bd.add_argument("--seed", type=int, default=0)
    bd.add_argument("--quiet", action="store_true")
    bd.set_defaults(func=cmd_build)
    pl = sub.add_parser("pipeline", help="collect → detect → features → build → evaluate from one config file "
                                         "(resumable; docs/pipeline.md)")
    pl.add_argument("--config", required=True, help="pipeline configuration (.toml or .yaml), e.g. "
                                                    "configs/embedded.toml")
    pl.add_argument("--out", help="output folder (overrides the config's `out`)")
    pl.add_argument("--quiet", action="store_true", help="no progress bars")
    pl.set_defaults(func=cmd_pipeline)
    t = sub.add_parser("train", help="train an EAGLE-2 or HASS drafter on feature caches (resumable)")
    _add_target(t)
    t.add_argument("--kind", choices=["eagle2", "hass"], default="hass")
    t.add_argument("--features", required=True, help="feature folder(s) from `taskspec features`, comma-separated")
    t.add_argument("--mix", help="sampling weight per feature folder, comma-separated (default: equal)")
    t.add_argument("--out", required=True, help="checkpoint folder (resumed if it holds a run with the same options)")
    t.add_argument("--steps", type=int, default=1000)
    t.add_argument("--seqs-per-step", type=int, default=4)
    t.add_argument("--lr", type=float, default=5e-4)
    t.add_argument("--warmup-steps", type=int, default=50)
    t.add_argument("--draft-vocab-size", type=int, default=32768)
    t.add_argument("--token-weight", type=float, default=0.1, help="weight of the token loss vs feature regression")
    t.add_argument("--hca-passes", type=int, default=3, help="hass: passes of harmonized context alignment")
    t.add_argument("--save-every", type=int, default=100)
    t.add_argument("--eval-every", type=int, default=100)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--init", help="start from this drafter checkpoint (fine-tuning; its draft vocabulary is kept), "
                                  "or 'eagle2' / 'hass' for the shipped ones")
    t.add_argument("--lora-rank", type=int, default=0,
                   help="> 0: train a LoRA adapter of this rank on the --init drafter (a folder of a few hundred KB "
                        "that `load_drafter` merges); 0 (default): train all weights")
    t.add_argument("--lora-alpha", type=float, default=16.0, help="LoRA scale numerator (deltas × alpha / rank)")
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(func=cmd_train)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        return args.func(args)
    except TaskspecError as exc:
        print(f"taskspec {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
