"""One registry (drafters/registry.py) for drafter kinds and composition strategies: every spec string the README
lists parses, unknown names list the registered ones, and the CLI help is generated from the same table."""

from __future__ import annotations

import pytest

from taskspec.drafters.kinds import DRAFTER_KINDS
from taskspec.drafters.registry import Registry
from taskspec.drafters.strategies import MODIFIERS_HELP, STRATEGIES, is_strategy
from taskspec.errors import DrafterError

README_KINDS = ["auto", "none", "ngram", "ngram:depth=6,max_ngram=3,branches=1", "ngram-tree", "model:PATH",
                "model:PATH,depth=5,top_k=1", "eagle2", "eagle2:PATH", "hass", "hass:PATH,depth=3,top_k=1,num_nodes=8",
                "hass,depth=3", "ngram+hass", "ngram+eagle2", "ngram+hass:PATH,min_ngram=2"]
README_STRATEGIES = ["single", "single:head:math", "averaged", "routed", "routed:embedding", "routed:target-feature",
                     "routed:sequence", "confidence", "confidence:step", "entropy", "entropy:step", "merged",
                     "merged-double", "routed@lora", "merged@lora", "ngram+routed", "ngram+confidence@lora"]


@pytest.mark.parametrize("spec", README_KINDS)
def test_every_readme_drafter_spec_parses(spec):
    entry, parsed = DRAFTER_KINDS.parse(spec)
    assert entry.name == spec.partition(":")[0].partition(",")[0]
    assert all(isinstance(v, int) for v in parsed.options.values())
    assert not is_strategy(spec)


@pytest.mark.parametrize("spec", README_STRATEGIES)
def test_every_readme_strategy_parses(spec):
    assert is_strategy(spec)
    STRATEGIES.parse(spec.removeprefix("ngram+").partition("@")[0])


@pytest.mark.parametrize("registry, spec", [(DRAFTER_KINDS, "eagle9"), (STRATEGIES, "fastest")],
                         ids=["kind", "strategy"])
def test_an_unknown_name_lists_every_registered_one(registry, spec):
    with pytest.raises(DrafterError, match=f"unknown {registry.what} '{spec}'") as error:
        registry.parse(spec)
    assert all(entry.usage in str(error.value) for entry in registry)
    if registry is STRATEGIES:
        assert MODIFIERS_HELP in str(error.value)


@pytest.mark.parametrize("registry, spec, match", [
    (DRAFTER_KINDS, "none:foo", "none takes no argument"), (DRAFTER_KINDS, "model", "expected model:PATH"),
    (DRAFTER_KINDS, "ngram:depht=3", "unknown option"), (DRAFTER_KINDS, "hass,depth=x", "integers"),
    (STRATEGIES, "averaged:x", "averaged takes no argument"), (STRATEGIES, "entropy:often", "entropy or entropy:step"),
])
def test_arguments_and_options_are_checked_against_the_entry(registry, spec, match):
    with pytest.raises(DrafterError, match=match):
        registry.parse(spec)


def test_a_registered_entry_is_parsed_described_and_refused_twice():
    things = Registry("thing")

    @things.register("widget", help="makes widgets", arg="PATH", options={"size": int, "colour": str})
    def build(spec):
        return spec

    entry, spec = things.parse("widget:a/b,size=3,colour=red")
    assert entry.build is build and (spec.arg, spec.options) == ("a/b", {"size": 3, "colour": "red"})
    assert entry.usage == "widget[:PATH][,size=N,colour=S]" and things.describe() == f"  {entry.usage}\n      makes widgets"
    with pytest.raises(ValueError, match="registered twice"):
        things.register("widget", help="again")(build)


@pytest.mark.parametrize("verb", ["generate", "bench"])
def test_cli_help_lists_every_kind_and_strategy(verb, capsys):
    from taskspec.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args([verb, "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse rewraps the option help
    for entry in (*DRAFTER_KINDS, *STRATEGIES):
        assert entry.usage in text and " ".join(entry.help.split()) in text, entry.name
