"""taskspec report: report.md and PNG plots from a bench result, skipped plots, the prompt map, bad input, CLI."""

from __future__ import annotations

import json
import random
import zlib

import numpy as np
import pytest

from taskspec.bench.plots import PLOT_FILES
from taskspec.bench.result_file import ReportError, check_result, load_result, pca_2d, prompt_map, result_prompts
from taskspec.bench.report import markdown_tables, write_report
from taskspec.cli import main
from taskspec.engine.stats import SpecStats

PNG = b"\x89PNG\r\n\x1a\n"
ROUTED = ("confidence", "routed:embedding")
# method → (draft accuracy per depth, ms per verification step); hf-prompt-lookup → (τ, ms per step)
PROFILES = {"none": ([], 60.0), "ngram": ([0.55, 0.8, 0.85, 0.9, 0.92, 0.95], 72.0), "hass": ([0.45, 0.55, 0.6], 84.0),
            "auto": ([0.62, 0.78, 0.83, 0.88, 0.9, 0.93], 86.0), "confidence": ([0.5, 0.6, 0.64], 95.0),
            "routed:embedding": ([0.48, 0.58, 0.62], 88.0)}
EASE = {"gsm8k": 1.0, "svamp": 0.95, "math500": 0.8, "mt-bench": 0.6, "humaneval": 0.85, "demo": 0.9}
SPECIALIST = {"gsm8k": "head:math", "svamp": "head:math", "math500": "head:math", "mt-bench": "head:chat",
              "humaneval": "head:code", "demo": "head:chat"}


def _stats(method: str, dataset: str, rng: random.Random, new_tokens: int = 128) -> SpecStats:
    """One request's stats, simulated step by step so τ, per-depth counts and time agree like a real run's."""
    s = SpecStats(requests=1, prompt_tokens=40, target_steps=1, time_prefill=0.2)
    if method == "hf-prompt-lookup":
        tau = 2.4 * EASE[dataset] + rng.uniform(-0.2, 0.2)
        s.new_tokens, s.target_steps = new_tokens, round(new_tokens / tau)
        s.time_total = s.target_steps * 0.085
        return s
    accuracy, step_ms = PROFILES[method]
    emitted = 1  # the prefill's token
    while emitted < new_tokens:
        accepted = 0
        while accepted < len(accuracy) and rng.random() < accuracy[accepted] * EASE[dataset]:
            accepted += 1
        s.record_step(accepted, min(accepted + 1, len(accuracy)))
        s.draft_nodes += len(accuracy)
        emitted += accepted + 1
    s.new_tokens = min(emitted, new_tokens)
    steps = s.target_steps - 1
    s.time_draft = steps * step_ms * 0.2e-3
    s.time_target = steps * step_ms * 0.75e-3
    s.time_accept = steps * 0.5e-3
    s.time_total = s.time_prefill + steps * step_ms * 1e-3 * rng.uniform(0.95, 1.05)
    return s


def synthetic_result(datasets=("gsm8k", "math500", "mt-bench", "humaneval"), methods=None, per_dataset: int = 6,
                     routing: bool = True, with_map: bool = False, seed: int = 0) -> dict:
    """A bench result as `taskspec bench --out` writes it (summaries by the runner's own summarise)."""
    from taskspec.bench.runner import summarise

    methods = list(methods or ["none", "ngram", "hass", "auto", "hf-prompt-lookup", *(ROUTED if routing else ())])
    rng = random.Random(seed)
    runs = []
    for dataset in datasets:
        for i in range(per_dataset):
            pid = f"{dataset}/{i}"
            for method in methods:
                stats = _stats(method, dataset, rng)
                run = {"prompt_id": pid, "dataset": dataset, "method": method, "token_ids": [i, 1, 2],
                       "stats": stats.to_dict(), "_stats": stats}
                if method in ROUTED:
                    label = SPECIALIST[dataset] if rng.random() < 0.8 else rng.choice(sorted(set(SPECIALIST.values())))
                    run["routing"] = {label: 1}
                runs.append(run)
    summary = summarise(runs, methods, greedy=True)
    for run in runs:
        run.pop("_stats")
    meta = {"date": "2026-05-01T12:00:00+00:00", "target": "embedded", "dtype": "bfloat16", "linear_kernel": "avx2",
            "attention_kernel": "taskspec", "methods": methods, "datasets": sorted(datasets),
            "prompts": per_dataset * len(datasets), "max_new_tokens": 128, "temperature": 0.0,
            "command": "taskspec bench --dataset " + ",".join(datasets) + " --methods " + ",".join(methods)}
    result = {"meta": meta, "summary": summary, "mismatches": [], "runs": runs}
    if with_map:
        result["prompt_map"] = [{"prompt_id": f"{d}/{i}", "x": j + rng.gauss(0, 0.15),
                                 "y": (j % 2) + rng.gauss(0, 0.15), "task": min(j, 2)}
                                for j, d in enumerate(datasets) for i in range(per_dataset)]
    return result


def _save(tmp_path, result, name="bench.json"):
    path = tmp_path / name
    path.write_text(json.dumps(result))
    return path


def _pngs(folder):
    return {name for name in PLOT_FILES if (folder / name).is_file()}


# ---- the report --------------------------------------------------------------------------------------------------
def test_full_report_writes_every_plot_and_the_tables(tmp_path):
    result = synthetic_result(with_map=True)
    path = write_report(result, tmp_path / "out", source="runs/bench.json")
    text = path.read_text()
    assert path == tmp_path / "out" / "report.md"
    for name in PLOT_FILES:
        data = (tmp_path / "out" / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 5000, name
        assert f"]({name})" in text
    assert markdown_tables(result) in text  # the bench tables, as bench/report.py makes them
    for fact in ("2026-05-01T12:00:00+00:00", "`embedded`", "| temperature | 0.0 |", "| max_new_tokens | 128 |",
                 "| prompts | 24 |", "`taskspec bench --dataset gsm8k,math500,mt-bench,humaneval"):
        assert fact in text, fact
    assert "Skipped" not in text and "no per-depth data for none, hf-prompt-lookup" in text
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.endswith(".tmp")]  # no temporary file left


def test_plots_without_data_are_skipped_and_said_so(tmp_path):
    out = tmp_path / "out"
    write_report(synthetic_result(with_map=True), out)
    assert _pngs(out) == set(PLOT_FILES)
    text = write_report(synthetic_result(routing=False), out).read_text()  # same folder: stale plots go
    assert _pngs(out) == {"tau.png", "depth.png", "speedup.png"}
    assert "*Skipped: no method has a routing split" in text and "*Skipped: no prompt map" in text
    assert "routing.png" not in text and "prompt_map.png" not in text


def test_no_baseline_and_no_drafter_skip_speedup_and_depth(tmp_path):
    result = synthetic_result(methods=["hf-prompt-lookup"], routing=False)
    text = write_report(result, tmp_path).read_text()
    assert _pngs(tmp_path) == {"tau.png"}
    assert "*Skipped: no speedups" in text and "*Skipped: no method drafts" in text


def test_demo_result_with_one_dataset(tmp_path):
    result = synthetic_result(datasets=("demo",), methods=["none", "ngram", "hass", "auto"], per_dataset=5,
                              routing=False)
    write_report(result, tmp_path)
    assert _pngs(tmp_path) == {"tau.png", "depth.png", "speedup.png"}


def test_given_prompt_map_overrides_the_results(tmp_path):
    result = synthetic_result(routing=False)
    points = [{"prompt_id": "gsm8k/0", "x": 0.0, "y": 1.0, "task": 0}, {"prompt_id": "mt-bench/0", "x": 1.0,
                                                                        "y": 0.0, "task": 1}]
    text = write_report(result, tmp_path, prompt_map=points).read_text()
    assert "prompt_map.png" in _pngs(tmp_path) and "2 of the 24 prompts" in text
    with pytest.raises(ReportError, match="prompt_map"):
        write_report(result, tmp_path, prompt_map=[{"x": 1}])


# ---- bad input ---------------------------------------------------------------------------------------------------
def test_bad_inputs_raise_errors_naming_the_file(tmp_path):
    with pytest.raises(ReportError, match=r"nope\.json.*file not found"):
        load_result(tmp_path / "nope.json")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ReportError, match=r"broken\.json.*not a JSON file"):
        load_result(tmp_path / "broken.json")
    (tmp_path / "taskmap.json").write_text(json.dumps({"format": "taskspec-taskmap", "k": 2}))
    with pytest.raises(ReportError, match=r"taskmap\.json.*not a bench or demo result"):
        load_result(tmp_path / "taskmap.json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ReportError, match=r"list\.json.*not a bench or demo result.*JSON list"):
        load_result(tmp_path / "list.json")
    empty = synthetic_result()
    empty.update(runs=[], summary={"all": {}})
    with pytest.raises(ReportError, match=r"empty\.json.*empty result"):
        load_result(_save(tmp_path, empty, "empty.json"))
    broken = synthetic_result()
    del broken["summary"]["all"]["ngram"]["acceptance_length"]
    with pytest.raises(ReportError, match=r"summary\['all'\]\['ngram'\] lacks acceptance_length"):
        check_result(broken)


def test_cli_reports_bad_input_with_exit_code_2(tmp_path, capsys):
    assert main(["report", str(tmp_path / "missing.json"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "taskspec report: error:" in err and "missing.json" in err and "file not found" in err
    assert not (tmp_path / "out").exists()
    assert main(["report", str(_save(tmp_path, synthetic_result())), "--out", str(tmp_path / "out"),
                 "--data-dir", str(tmp_path)]) == 2
    assert "--data-dir is read with --taskmap" in capsys.readouterr().err


# ---- the prompt map ----------------------------------------------------------------------------------------------
class FakeEncoder:
    """Stands in for the sentence encoder: hashed character trigrams, unit rows; counts its calls."""

    calls = 0

    def __init__(self, name: str = "fake", batch_size: int = 64):
        self.name = name

    def encode(self, texts, progress: bool = False) -> np.ndarray:
        FakeEncoder.calls += 1
        out = np.zeros((len(texts), 64), dtype=np.float32)
        for row, text in zip(out, texts):
            for i in range(len(text) - 2):
                row[zlib.crc32(text[i:i + 3].lower().encode()) % 64] += 1
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


MATH = [f"What is {a} plus {b}? Show your steps." for a, b in [(3, 4), (12, 9), (7, 7), (40, 2)]]
TRANSLATE = [f"Translate into German: {s}" for s in ["The cat sleeps.", "I like trains.", "Where is it?", "Good."]]


@pytest.fixture
def fake_detector(monkeypatch):
    from taskspec.tasks import TaskDetector
    from taskspec.tasks import detect

    monkeypatch.setattr(detect, "SentenceEncoder", FakeEncoder)  # TaskDetector.embed builds its encoder from this
    return TaskDetector(encoder="fake", k=2).fit(MATH + TRANSLATE)


def test_prompt_map_embeds_once_projects_and_predicts(fake_detector):
    FakeEncoder.calls = 0
    texts, ids = MATH + TRANSLATE, [f"p/{i}" for i in range(8)]
    points = prompt_map(texts, ids, fake_detector)
    assert FakeEncoder.calls == 1  # the detector's encoder, once for both the map and the tasks
    assert [p["prompt_id"] for p in points] == ids
    assert [p["task"] for p in points] == fake_detector.predict(texts).tolist()
    assert all(isinstance(p["task"], int) and isinstance(p["x"], float) for p in points)
    xs = np.array([p["x"] for p in points])
    assert (xs[:4].max() < xs[4:].min()) or (xs[4:].max() < xs[:4].min())  # PC 1 separates the two kinds
    json.dumps(points)  # JSON-ready


def test_pca_2d_is_deterministic_and_handles_few_rows():
    x = np.random.default_rng(0).normal(size=(10, 5))
    a, b = pca_2d(x), pca_2d(-x[:, ::-1] * 1.0)
    assert a.shape == (10, 2) and np.allclose(np.abs(a), np.abs(b))
    assert np.allclose(pca_2d(x), pca_2d(x.copy()))
    assert np.allclose(pca_2d(x[:1]), 0) and pca_2d(x[:2])[:, 1].tolist() == [0.0, 0.0]


def test_result_prompts_reloads_datasets_by_name_split_and_id(tmp_path):
    (tmp_path / "gsm8k").mkdir()
    for split in ("test", "train"):
        rows = [{"question": f"{split} question {i}", "answer": "#### 1"} for i in range(5)]
        (tmp_path / "gsm8k" / f"{split}.jsonl").write_text("\n".join(map(json.dumps, rows)) + "\n")
    result = synthetic_result(datasets=("gsm8k", "demo"), routing=False, per_dataset=2)
    for run in result["runs"]:  # a gsm8k:train bench: ids carry the split
        run["prompt_id"] = run["prompt_id"].replace("gsm8k/", "gsm8k/train/").replace("demo/0", "demo/math") \
            .replace("demo/1", "demo/code")
    texts, ids = result_prompts(result, tmp_path)
    assert ids == ["gsm8k/train/0", "gsm8k/train/1", "demo/math", "demo/code"]
    assert texts[:2] == ["train question 0", "train question 1"] and texts[3].startswith("def fibonacci")
    missing = {**result, "runs": [{**result["runs"][0], "prompt_id": "gsm8k/train/7"}]}  # the file has 5 rows
    with pytest.raises(ReportError, match="none of the result's 1 prompt ids were found"):
        result_prompts(missing, tmp_path)
    for run in result["runs"]:  # prompts from a user's .jsonl: the result keeps only the file's stem
        run["dataset"] = "my-prompts"
    result["meta"]["datasets"] = ["my-prompts"]
    with pytest.raises(ReportError, match="'my-prompts'.*not a registered dataset"):
        result_prompts(result, tmp_path)


def test_cli_report_with_a_taskmap(tmp_path, fake_detector, capsys):
    fake_detector.save(tmp_path / "taskmap.json")
    result = synthetic_result(datasets=("demo",), methods=["none", "ngram", "confidence"], per_dataset=5)
    names = ["math", "code", "chat", "rewrite", "summary"]
    for run in result["runs"]:
        run["prompt_id"] = "demo/" + names[int(run["prompt_id"].split("/")[1])]
    source = _save(tmp_path, result)
    assert main(["report", str(source), "--out", str(tmp_path / "out"), "--taskmap",
                 str(tmp_path / "taskmap.json")]) == 0
    assert _pngs(tmp_path / "out") == set(PLOT_FILES)
    text = (tmp_path / "out" / "report.md").read_text()
    assert "5 of the 5 prompts" in text and "# taskspec report: bench.json" in text
    assert "wrote" in capsys.readouterr().err
    assert "prompt_map" not in json.loads(source.read_text())  # the input is never modified


def test_cli_report_plain(tmp_path, capsys):
    source = _save(tmp_path, synthetic_result(with_map=True))
    assert main(["report", str(source), "--out", str(tmp_path / "out")]) == 0
    assert _pngs(tmp_path / "out") == set(PLOT_FILES)
    assert "5 plots" in capsys.readouterr().err
