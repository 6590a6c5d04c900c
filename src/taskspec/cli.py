"""taskspec command line: the parser and main(); each verb's handler is in cli_commands.py and calls the library."""

from __future__ import annotations

import argparse
import logging
import sys

from .cli_commands import (cmd_bench, cmd_build, cmd_collect, cmd_demo, cmd_detect, cmd_features, cmd_generate,
                           cmd_pipeline, cmd_report, cmd_train)
from .drafters.kinds import DRAFTER_KINDS
from .drafters.strategies import MODIFIERS_HELP, STRATEGIES
from .errors import TaskspecError

DEFAULT_TARGET = "embedded"
DEFAULT_DRAFTER = "auto"


def _add_target(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", default=DEFAULT_TARGET,
                   help="model folder, .gguf file, local Hugging Face id, or 'embedded' (Gemma 3 270M; default)")
    p.add_argument("--dtype", default="bf16", help="bf16 (default), fp32 or fp16")
    p.add_argument("--no-kernel", action="store_true",
                   help="use PyTorch's bf16 linear instead of taskspec's batch-invariant AVX2 kernel")


DRAFTER_HELP = "drafter spec (default auto; every kind is described below): " + DRAFTER_KINDS.usage()
COMPOSE_HELP = f"{STRATEGIES.usage()}; {MODIFIERS_HELP}"
SPECS_EPILOG = (f"drafters (--drafter, and engine methods of bench):\n{DRAFTER_KINDS.describe()}\n\n"
                f"composition strategies (--compose, with --drafter-set):\n{STRATEGIES.describe()}\n  {MODIFIERS_HELP}")


def _add_drafter_set(p: argparse.ArgumentParser, compose_help: str) -> None:
    p.add_argument("--drafter-set", help="drafter set folder written by `taskspec build` (refused for another target)")
    p.add_argument("--compose", help=compose_help)


def _add_sampling(p: argparse.ArgumentParser, max_new_tokens: int) -> None:
    p.add_argument("--max-new-tokens", type=int, default=max_new_tokens)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-k", type=int, default=0, help="0 = off")
    p.add_argument("--top-p", type=float, default=1.0, help="1.0 = off")
    p.add_argument("--seed", type=int, default=0)


# ---- one function per verb: its subparser, options in --help order, and its handler ----------------------
def _add_generate(sub: "argparse._SubParsersAction") -> None:
    g = sub.add_parser("generate", help="decode one prompt", epilog=SPECS_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_target(g)
    g.add_argument("--drafter", default=DEFAULT_DRAFTER, help=DRAFTER_HELP)
    g.add_argument("--prompt", required=True)
    _add_drafter_set(g, "strategy (default routed): " + COMPOSE_HELP)
    _add_sampling(g, 128)
    g.add_argument("--stop", action="append", help="stop string (repeatable)")
    g.add_argument("--json", action="store_true", help="print one JSON object {text, token_ids, stats}")
    g.set_defaults(func=cmd_generate)


def _add_bench(sub: "argparse._SubParsersAction") -> None:
    b = sub.add_parser("bench", help="compare methods on a dataset, interleaved per prompt, in one process",
                       epilog=SPECS_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_target(b)
    b.add_argument("--dataset", required=True, help="dataset name(s), comma-separated, or a .jsonl path")
    b.add_argument("--data-dir", help="data folder (default: $TASKSPEC_DATA, else ../shared/data)")
    b.add_argument("--limit", type=int, default=20, help="prompts per dataset (default 20)")
    b.add_argument("--methods", nargs="+", default=["none,ngram,auto,hf-generate,hf-prompt-lookup"],
                   help="comma/space separated: drafters as --drafter takes them (below), hf-generate, "
                        "hf-prompt-lookup[:N]")
    _add_drafter_set(b, "strategies, comma-separated, run side by side with --methods: " + COMPOSE_HELP)
    _add_sampling(b, 128)
    b.add_argument("--out", help="write the full result (JSON) here")
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    b.set_defaults(func=cmd_bench)


def _add_demo(sub: "argparse._SubParsersAction") -> None:
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


def _add_report(sub: "argparse._SubParsersAction") -> None:
    r = sub.add_parser("report", help="report.md and PNG plots (τ, depth, routing, speedup, prompt map) from a "
                                      "bench or demo result")
    r.add_argument("result", help="result JSON written by `taskspec bench --out` or `taskspec demo --out`")
    r.add_argument("--out", required=True, help="folder for report.md and the plots (created)")
    r.add_argument("--taskmap", help="task map from `taskspec detect`: map the result's prompts in 2-D by task")
    r.add_argument("--data-dir", help="with --taskmap: data folder to reload the prompts from (default: "
                                      "$TASKSPEC_DATA, else ../shared/data)")
    _add_target(r)  # read only for a task map of the target's prefill states (detect --encoder target)
    r.set_defaults(func=cmd_report)


def _add_collect(sub: "argparse._SubParsersAction") -> None:
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


def _add_detect(sub: "argparse._SubParsersAction") -> None:
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
                         "all-MiniLM-L6-v2 package); or 'target': the target's own standardised prefill states "
                         "(what the target-feature router reads; loads --target)")
    _add_target(dt)
    dt.add_argument("--stop-words", action="store_true", help="drop English stop words before embedding (TaskSpec)")
    dt.add_argument("--label-field",
                    help="known labels to score against: a data field of the prompts, or 'source': the data's own "
                         "'source' field when every prompt has one, else the dataset (file) name of each prompt "
                         "(refused when only some prompts have the field); the output says which was used")
    dt.add_argument("--seed", type=int, default=0)
    dt.add_argument("--quiet", action="store_true")
    dt.set_defaults(func=cmd_detect)


def _add_features(sub: "argparse._SubParsersAction") -> None:
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


def _add_build(sub: "argparse._SubParsersAction") -> None:
    bd = sub.add_parser("build", help="per-task specialist drafters, mixes and routers from a task map (resumable)")
    _add_target(bd)
    bd.add_argument("--taskmap", required=True, help="task map from `taskspec detect`")
    _add_build_inputs(bd)
    bd.add_argument("--out", required=True, help="drafter set folder (resumed if it exists)")
    _add_build_training(bd)
    bd.add_argument("--mixed-sizes", default="0.5,1",
                    help="fractions of every task's examples in the two equal-mix drafters (default 0.5,1)")
    bd.add_argument("--mix", help="extra sampling weight per feature folder, comma-separated")
    bd.add_argument("--routers", default="embedding,target-feature,sequence", help="router kinds to fit")
    bd.add_argument("--stages", default="heads,lora,mixed,routers", help="what to build (default: everything)")
    bd.add_argument("--drafter-options", help="drafting defaults stored in the set, e.g. depth=4")
    bd.add_argument("--seed", type=int, default=0)
    bd.add_argument("--quiet", action="store_true")
    bd.set_defaults(func=cmd_build)


def _add_build_inputs(bd: argparse.ArgumentParser) -> None:
    """Where `build` reads its training examples: feature folders, or a dataset to extract them from."""
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


def _add_build_training(bd: argparse.ArgumentParser) -> None:
    """How `build` trains each specialist (a head, or a LoRA adapter on the generic drafter)."""
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


def _add_pipeline(sub: "argparse._SubParsersAction") -> None:
    pl = sub.add_parser("pipeline", help="collect → detect → features → build → evaluate from one config file "
                                         "(resumable; docs/pipeline.md)")
    pl.add_argument("--config", required=True, help="pipeline configuration (.toml or .yaml), e.g. "
                                                    "configs/embedded.toml")
    pl.add_argument("--out", help="output folder (overrides the config's `out`)")
    pl.add_argument("--quiet", action="store_true", help="no progress bars")
    pl.set_defaults(func=cmd_pipeline)


def _add_train(sub: "argparse._SubParsersAction") -> None:
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


def build_parser() -> argparse.ArgumentParser:
    """The `taskspec` parser: -v, then one subparser per verb, listed by --help in this order."""
    parser = argparse.ArgumentParser(prog="taskspec", description="Task-aware lossless speculative decoding.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True)
    for add_verb in (_add_generate, _add_bench, _add_demo, _add_report, _add_collect, _add_detect, _add_features,
                     _add_build, _add_pipeline, _add_train):
        add_verb(sub)
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
