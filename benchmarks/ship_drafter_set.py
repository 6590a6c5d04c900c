"""Ship a drafter set inside the package: copy what loading needs into src/taskspec/drafters/shipped/sets/NAME.

    python benchmarks/ship_drafter_set.py runs/pipeline/embedded/drafter-set --name embedded

Copies the manifest, the task map, the routers and, per member, config.json + the weights + train_log.jsonl (never
train_state.pt or intermediate checkpoints), into a temporary folder that replaces the old set in one rename. A LoRA
member whose base is a shipped drafter finds it by its weights hash wherever the package is installed
(drafters/lora.py). Refuses when every shipped weight file together would pass the budget (issue #5: 60 MB), and
checks that the copy loads for the embedded target when --verify is given.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

SHIPPED = Path(__file__).resolve().parent.parent / "src" / "taskspec" / "drafters" / "shipped"
MEMBER_FILES = ("config.json", "model.safetensors", "adapter.safetensors", "train_log.jsonl")
BUDGET_MB = 60.0


def weights_mb(root: Path, skip: Path | None = None) -> float:
    """MB (10^6 bytes) of every .safetensors file under root, leaving out the folder `skip` (the set replaced)."""
    files = [p for p in root.rglob("*.safetensors") if skip is None or skip not in p.parents]
    return sum(p.stat().st_size for p in files) / 1e6


def copy_set(source: Path, dest: Path) -> None:
    manifest = json.loads((source / "drafterset.json").read_text())
    for name in ("drafterset.json", "taskmap.json"):
        if (source / name).is_file():
            shutil.copy2(source / name, dest / name)
    for member, folder in manifest["members"].items():
        if folder.startswith("shipped:"):
            continue
        if Path(folder).is_absolute():
            sys.exit(f"member {member!r} is at an absolute path ({folder}); expected a folder inside {source}")
        (dest / folder).mkdir(parents=True, exist_ok=True)
        copied = [n for n in MEMBER_FILES if (source / folder / n).is_file()]
        if "config.json" not in copied or not any(n.endswith(".safetensors") for n in copied):
            sys.exit(f"member {member!r}: {source / folder} has no config.json and weights; is the build finished?")
        for name in copied:
            shutil.copy2(source / folder / name, dest / folder / name)
    for kind, path in manifest.get("routers", {}).items():
        for file in (source / path, (source / path).with_suffix(".safetensors")):
            if file.is_file():
                (dest / path).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(file, dest / Path(path).parent / file.name)
    if (source / "routers" / "evaluation.json").is_file():
        shutil.copy2(source / "routers" / "evaluation.json", dest / "routers" / "evaluation.json")


def verify(dest: Path) -> None:
    from taskspec.tasks.drafter_sets import load_drafter_set
    from taskspec.models.target import load_target

    target = load_target("embedded", "bf16")
    drafter_set = load_drafter_set(dest, target)
    for member in drafter_set.manifest["members"]:
        drafter_set.member(member)
    for kind in drafter_set.manifest.get("routers", {}):
        drafter_set.router(kind)
    print(f"verified: {len(drafter_set.manifest['members'])} members and "
          f"{len(drafter_set.manifest.get('routers', {}))} routers load for the embedded target")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="a finished drafter set folder (has drafterset.json)")
    parser.add_argument("--name", required=True, help="the set's folder name under shipped/sets/")
    parser.add_argument("--budget-mb", type=float, default=BUDGET_MB, help="all shipped weights together")
    parser.add_argument("--verify", action="store_true", help="load every member and router for the embedded target")
    args = parser.parse_args(argv)
    if not (args.source / "drafterset.json").is_file():
        sys.exit(f"{args.source}: no drafterset.json; expected a finished drafter set (taskspec build / pipeline)")
    sets = SHIPPED / "sets"
    sets.mkdir(parents=True, exist_ok=True)
    dest = sets / args.name
    tmp = Path(tempfile.mkdtemp(prefix=f".{args.name}.", dir=sets))
    try:
        copy_set(args.source, tmp)
        total = weights_mb(SHIPPED, skip=dest)  # the copy in tmp counts (it lies under SHIPPED), the old set not
        if total > args.budget_mb:
            sys.exit(f"shipped weights would be {total:.1f} MB with this set; the budget is {args.budget_mb:.0f} MB")
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    print(f"shipped {args.source} → {dest}: {weights_mb(dest):.1f} MB of weights; "
          f"all shipped weights {weights_mb(SHIPPED):.1f} MB (budget {args.budget_mb:.0f} MB)")
    if args.verify:
        verify(dest)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
