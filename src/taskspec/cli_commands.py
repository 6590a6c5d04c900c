"""What each `taskspec` verb does once its arguments are parsed (cli.py): check options, call the library, print.
Heavy imports stay inside the handlers so `taskspec --help` is fast."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .errors import TaskspecError


def _generation_config(args):
    from .engine.decode import GenerationConfig
    from .engine.sampling import SamplingParams

    return GenerationConfig(max_new_tokens=args.max_new_tokens, seed=args.seed,
                            sampling=SamplingParams(args.temperature, args.top_k, args.top_p),
                            stop_strings=tuple(getattr(args, "stop", None) or ()))


def cmd_generate(args) -> int:
    from .drafters.kinds import build_drafter
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
    from .drafters.shipped import shipped_drafter_set
    from .tasks.drafter_sets import load_drafter_set

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
    from .drafters.shipped import shipped_drafter_set, shipped_drafters
    from .models.target import load_target
    from .tasks.drafter_sets import load_drafter_set

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
    from .tasks.detect import known_labels
    from .tasks.encoders import TARGET_ENCODER

    k_min, k_max = _int_pair(args.k_range, "--k-range")
    prompts = []
    for name in filter(None, args.prompts.split(",")):
        prompts += load_prompts(name, data_dir=args.data_dir, limit=args.limit)
    labels = None
    if args.label_field:
        labels, labels_from = known_labels(prompts, args.label_field)
    target = None
    if args.encoder == TARGET_ENCODER:
        from .models.target import load_target

        target = load_target(args.target, args.dtype, use_kernel=not args.no_kernel)
    detector = TaskDetector(encoder=args.encoder, k=args.k, k_min=k_min, k_max=k_max, stop_words=args.stop_words,
                            seed=args.seed, criterion=args.criterion, target=target)
    print(f"embedding {len(prompts)} prompts with {args.encoder}...", file=sys.stderr)
    detector.fit([p.text for p in prompts], progress=not args.quiet)
    evaluation = None
    if labels is not None:
        evaluation = {"label_field": args.label_field, "labels_from": labels_from,
                      **clustering_metrics(labels, detector.labels_)}
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
        print(f"\nagainst {labels_from}: accuracy {evaluation['accuracy']:.3f}, NMI {evaluation['nmi']:.3f}, "
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
    from .bench.headline import headline_table
    from .bench.plots import PLOT_FILES
    from .bench.result_file import load_result, prompt_map, result_prompts
    from .bench.report import write_report

    if args.data_dir and not args.taskmap:
        raise TaskspecError("--data-dir is read with --taskmap (to reload the prompts of the prompt map)")
    result = load_result(args.result)
    points = None
    if args.taskmap:
        from .tasks import TaskDetector
        from .tasks.detect import taskmap_encoder
        from .tasks.encoders import TARGET_ENCODER

        target = None
        if taskmap_encoder(args.taskmap) == TARGET_ENCODER:  # a map of the target's prefill states embeds with the target
            from .models.target import load_target

            target = load_target(args.target, args.dtype, use_kernel=not args.no_kernel)
        detector = TaskDetector.load(args.taskmap, target=target)
        texts, ids = result_prompts(result, args.data_dir)
        print(f"embedding {len(texts)} prompts with {detector.encoder}...", file=sys.stderr)
        points = prompt_map(texts, ids, detector)
    path = write_report(result, args.out, source=args.result, prompt_map=points)
    print(headline_table(result))  # the summary table, as the README quotes it
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
