"""One registry for the names a user types: drafter kinds (`--drafter`, kinds.py) and composition strategies
(`--compose`, strategies.py). Each registers itself with its argument and options, so the spec parser, the CLI help
and the error for an unknown name all read the same table.

A spec is NAME[:ARG][,key=value,...] (or NAME,key=value,...): "hass:runs/d,depth=3", "ngram:depth=8",
"routed:sequence", "single:head:math". Only what an entry declares is accepted. No torch here, so `taskspec --help`
stays fast.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from ..errors import DrafterError


@dataclass(frozen=True)
class Spec:
    """A parsed spec: its entry's name, the positional argument ("" when none) and typed options."""

    text: str
    name: str
    arg: str
    options: dict


@dataclass(frozen=True)
class Entry:
    name: str
    build: Callable
    help: str
    arg: str = ""  # metavar of the positional argument ("PATH", "MEMBER"); "" = takes none
    arg_required: bool = False
    choices: tuple[str, ...] = ()  # when the argument is one of these words
    options: dict[str, type] = field(default_factory=dict)  # key=value options and their types (int or str)

    @property
    def usage(self) -> str:
        """e.g. "hass[:PATH][,depth=N,top_k=N,num_nodes=N]", "routed[:embedding|target-feature|sequence]"."""
        arg = "|".join(self.choices) or self.arg
        text = self.name + ((f":{arg}" if self.arg_required else f"[:{arg}]") if arg else "")
        if self.options:
            opts = ",".join(f"{k}={'N' if t is int else 'S'}" for k, t in self.options.items())
            text += f"[,{opts}]" if arg else f"[:{opts}]"
        return text


class Registry:
    """Entries by name, in registration order; `what` names them in messages ("drafter", "composition strategy")."""

    def __init__(self, what: str, note: str = ""):
        self.what, self.note = what, note  # note: added to the error for an unknown name
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, help: str, *, arg: str = "", arg_required: bool = False,
                 choices: tuple[str, ...] = (), options: dict[str, type] | None = None) -> Callable:
        """Decorator: register `build` under `name` (once per name; a builder may serve several names)."""

        def add(build: Callable) -> Callable:
            if name in self._entries:
                raise ValueError(f"{self.what} {name!r} is registered twice")
            self._entries[name] = Entry(name, build, help, arg, arg_required, choices, dict(options or {}))
            return build

        return add

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._entries.values())

    def names(self) -> list[str]:
        return list(self._entries)

    def usage(self, sep: str = " | ") -> str:
        """Every entry's usage on one line (argparse help, error messages)."""
        return sep.join(e.usage for e in self)

    def describe(self) -> str:
        """Each entry's usage, its help indented below (the CLI epilog)."""
        return "\n".join(f"  {e.usage}\n      {e.help}" for e in self)

    def parse(self, text: str) -> tuple[Entry, Spec]:
        """The entry `text` names and its checked argument and options; DrafterError listing what is accepted."""
        name, arg, raw = split_spec(text)
        entry = self._entries.get(name)
        if entry is None:
            note = f" ({self.note})" if self.note else ""
            raise DrafterError(f"unknown {self.what} {text!r}; expected one of: {self.usage()}{note}")
        if arg and not (entry.arg or entry.choices):
            raise DrafterError(f"{self.what} {text!r}: {name} takes no argument, only key=value options "
                               f"({entry.usage}); got {arg!r}")
        if entry.arg_required and not arg:
            raise DrafterError(f"{self.what} {text!r}: expected {entry.usage}")
        if arg and entry.choices and arg not in entry.choices:
            raise DrafterError(f"{self.what} {text!r}: expected " + " or ".join([name, *(f"{name}:{c}" for c in
                                                                                     entry.choices)]))
        return entry, Spec(text, name, arg, self._typed_options(entry, raw, text))

    def _typed_options(self, entry: Entry, raw: dict[str, str], text: str) -> dict:
        unknown = set(raw) - set(entry.options)
        if unknown:
            raise DrafterError(f"{self.what} {text!r}: unknown option(s) {sorted(unknown)}; expected some of "
                               f"{sorted(entry.options)}" if entry.options else
                               f"{self.what} {text!r}: unknown option(s) {sorted(unknown)}; {entry.name} takes none")
        try:
            return {k: entry.options[k](v) for k, v in raw.items()}
        except ValueError:
            raise DrafterError(f"{self.what} {text!r}: option values must be integers "
                               f"({entry.usage})") from None


def split_spec(text: str) -> tuple[str, str, dict[str, str]]:
    """'name:arg,k=v,...' (or 'name,k=v,...') → (name, arg, raw options). Parts without '=' make up the argument
    (so a path may hold commas; a member name such as "head:math" its own colons)."""
    cut = min((i for i in (text.find(":"), text.find(",")) if i >= 0), default=len(text))
    name, rest = text[:cut], text[cut + 1 :]
    arg_parts, options = [], {}
    for part in filter(None, rest.split(",")):
        key, eq, value = part.partition("=")
        if eq:
            options[key.strip()] = value.strip()
        else:
            arg_parts.append(part)
    return name.strip(), ",".join(arg_parts), options
