"""Every published figure is backed by a committed result file (results/), and the README's headline table is
exactly what that file gives."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from taskspec.bench.headline import headline_table

ROOT = Path(__file__).resolve().parents[1]
RESULT_PATH = re.compile(r"results/[\w.\-/]+\.json")
HEADLINE_SOURCE = re.compile(r"^Result file: `(results/[\w.\-/]+\.json)`", re.M)


def _tables_after(text: str, start: int) -> list[str]:
    """The first Markdown table after `start`: its lines, header included."""
    lines = text[start:].splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("|"))
    table = []
    for line in lines[first:]:
        if not line.startswith("|"):
            break
        table.append(line)
    return table


def readme_headlines(text: str) -> list[tuple[str, list[str]]]:
    """(cited result file, the table right below the citation) for every headline table of the README."""
    return [(m.group(1), _tables_after(text, m.end())) for m in HEADLINE_SOURCE.finditer(text)]


def test_readme_has_a_headline_backed_by_a_result_file():
    assert readme_headlines((ROOT / "README.md").read_text()), \
        "README.md: no 'Result file: `results/....json`' line above a headline table"


@pytest.mark.parametrize("source,table", readme_headlines((ROOT / "README.md").read_text()),
                         ids=lambda v: v if isinstance(v, str) else "")
def test_readme_headline_table_equals_its_result_file(source, table):
    result = json.loads((ROOT / source).read_text())
    assert "\n".join(table) == headline_table(result), \
        f"README.md's table below {source} differs from the file; regenerate it with `taskspec report {source}`"


def test_a_changed_figure_is_caught():
    # negative control: the comparison above must see a single changed digit
    source, table = readme_headlines((ROOT / "README.md").read_text())[0]
    result = json.loads((ROOT / source).read_text())
    row = next(iter(result["summary"].values()))
    row["none"]["tokens_per_second"] += 1.0
    assert "\n".join(table) != headline_table(result)


@pytest.mark.parametrize("doc", ["README.md", "docs/results.md"])
def test_every_cited_result_file_is_committed_and_valid(doc):
    cited = set(RESULT_PATH.findall((ROOT / doc).read_text()))
    assert cited, f"{doc} cites no result file"
    for path in sorted(cited):
        assert (ROOT / path).is_file(), f"{doc} cites {path}, which is not in the repository"
        json.loads((ROOT / path).read_text())


def test_every_table_in_results_md_names_its_file():
    """Each section of docs/results.md that holds a table cites at least one committed result file."""
    text = (ROOT / "docs" / "results.md").read_text()
    sections = re.split(r"^(?=#{2,3} )", text, flags=re.M)
    for section in sections:
        has_table = any(line.startswith("|---") for line in section.splitlines())
        if has_table:
            title = section.splitlines()[0]
            assert RESULT_PATH.search(section), f"docs/results.md, {title!r}: a table without its result file"


def test_every_result_file_is_indexed():
    index = (ROOT / "results" / "README.md").read_text()
    for path in sorted((ROOT / "results").rglob("*.json")):
        name = path.relative_to(ROOT).as_posix()
        assert name in index, f"{name} is not listed in results/README.md"
