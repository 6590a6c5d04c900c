"""Composition strategies: how a drafter set (drafter_set.py) becomes one Drafter, each registered with its argument
and help (registry.py); `compose(drafter_set, text)` builds one.

A strategy spec is [ngram+]NAME[:ARG][@FAMILY]:
    ngram+    prompt lookup first (when the last 2+ tokens occurred before), the strategy otherwise: what `auto`
              does for one drafter (fallback.py), e.g. ngram+routed
    @lora     the LoRA specialists instead of the separate heads (@head, the default)

Builders import their modules when called, so the CLI can list the strategies without loading torch.
"""

from __future__ import annotations

from ..errors import DrafterError
from .registry import Registry, Spec, split_spec

FAMILIES = ("head", "lora")
LOOKUP_PREFIX = "ngram+"
MODIFIERS_HELP = "append @lora for the LoRA specialists; prefix ngram+ for prompt lookup first"
STRATEGIES = Registry("composition strategy", note=MODIFIERS_HELP)


def is_strategy(text: str) -> bool:
    """Whether `text` names a composition strategy (rather than a drafter kind such as ngram+hass)."""
    return split_spec(text.removeprefix(LOOKUP_PREFIX).partition("@")[0])[0] in STRATEGIES


def compose(drafter_set, text: str):
    """A Drafter composed from `drafter_set` (a DrafterSet) by strategy `text`, named `text`."""
    if text.startswith(LOOKUP_PREFIX):
        from .fallback import FallbackDrafter
        from .ngram import NgramDrafter

        inner = compose(drafter_set, text.removeprefix(LOOKUP_PREFIX))
        return FallbackDrafter(NgramDrafter(min_ngram=2), inner, name=text)
    body, at, family = text.partition("@")
    if at and family not in FAMILIES:
        raise DrafterError(f"composition strategy {text!r}: unknown specialist family {family!r}; expected "
                           f"{' or '.join(FAMILIES)}")
    entry, spec = STRATEGIES.parse(body)
    drafter = entry.build(drafter_set, spec, family or "head")
    drafter.name = text
    return drafter


def _specialists(drafter_set, family: str) -> tuple[list[str], list]:
    """(task labels, a fresh member drafter per task) of one specialist family."""
    tasks = drafter_set.specialists(family)
    return list(tasks), [drafter_set.member(member) for member in tasks.values()]


@STRATEGIES.register("single", help="one member (default: the generic drafter)", arg="MEMBER")
def _single(drafter_set, spec: Spec, family: str):
    return drafter_set.member(spec.arg or drafter_set.manifest["generic"])


@STRATEGIES.register("averaged", help="weight-space average of the specialists")
def _averaged(drafter_set, spec: Spec, family: str):
    from .compose import averaged_drafter

    return averaged_drafter(_specialists(drafter_set, family)[1])


@STRATEGIES.register("routed", help="the specialist of the task a router picks from the prompt (default: the set's "
                     "router)", arg="embedding|target-feature|sequence")
def _routed(drafter_set, spec: Spec, family: str):
    from .compose import PromptRoutedDrafter

    router = drafter_set.router(spec.arg or None)
    labels, members = _specialists(drafter_set, family)
    wants_hidden = getattr(router, "predict_from_hidden", None) is not None
    task_of_id = {t["id"]: t["name"] for t in drafter_set.manifest["tasks"]}
    tokenizer = drafter_set.target.tokenizer

    def choose(prompt_ids, prompt_hidden):  # prompt_hidden: [len(prompt), hidden] or None
        if wants_hidden and prompt_hidden is not None:
            task, _ = router.predict_from_hidden(prompt_hidden)
        else:
            if tokenizer is None:
                raise DrafterError(f"composition strategy {spec.text!r}: the router needs text but the target has "
                                   "no tokenizer")
            task, _ = router.predict([tokenizer.decode(prompt_ids, skip_special_tokens=True)])[0]
        return task_of_id.get(int(task), "")

    return PromptRoutedDrafter(members, labels, choose, wants_hidden=wants_hidden)


@STRATEGIES.register("entropy", help="the same with the lowest draft entropy", choices=("step",))
@STRATEGIES.register("confidence", help="the most confident specialist's first draft step drafts, per request "
                     "(:step: re-chosen at every verification step; TAPS)", choices=("step",))
def _score_routed(drafter_set, spec: Spec, family: str):
    from .compose import ScoreRoutedDrafter

    labels, members = _specialists(drafter_set, family)
    return ScoreRoutedDrafter(members, labels, spec.name, per_step=spec.arg == "step")


@STRATEGIES.register("merged-double", help="the same, each specialist with the full budget (twice the nodes; "
                     "TAPS's setting)")
@STRATEGIES.register("merged", help="every specialist drafts, the trees are merged and verified in one pass, with "
                     "an equal verification budget (each gets its share)")
def _merged(drafter_set, spec: Spec, family: str):
    from .compose import MergedTreeDrafter

    tasks = drafter_set.specialists(family)
    budget = drafter_set.budget()  # nodes one drafter verifies per step
    each = budget if spec.name == "merged-double" else max(1, budget // len(tasks))
    members = [drafter_set.member(member, **drafter_set.budget_options(each)) for member in tasks.values()]
    return MergedTreeDrafter(members, list(tasks))
