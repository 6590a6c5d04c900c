"""The README's Python example runs as written (on the embedded target), and the API it promises is importable."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import taskspec

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_the_api_is_importable_and_documented():
    for name in taskspec.__all__:
        obj = getattr(taskspec, name)
        assert obj.__doc__, f"taskspec.{name} has no docstring"
    with pytest.raises(AttributeError, match="the API is"):
        taskspec.no_such_thing  # noqa: B018


@pytest.mark.embedded
def test_readme_api_example_runs(capsys):
    blocks = readme_python_blocks()
    assert blocks, "README.md has no python example"
    for block in blocks:
        exec(compile(block, str(README), "exec"), {})
    printed = capsys.readouterr().out
    assert printed.strip()
