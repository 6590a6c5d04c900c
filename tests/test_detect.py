"""Task detection: auto-k on well-separated clusters, forced k, save/load, metrics, descriptions, bad input."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import regex

from taskspec.tasks import TaskDetectionError, TaskDetector, clustering_metrics
from taskspec.tasks.detect import CRITERIA, describe_tasks, keyword_candidates


def blobs(k: int, per: int = 30, dim: int = 16, spread: float = 0.05, seed: int = 0):
    """k well-separated directions on the unit sphere, `per` noisy points around each: [k·per, dim], labels."""
    rng = np.random.default_rng(seed)
    centers = np.linalg.qr(rng.normal(size=(dim, dim)))[0][:k]  # orthonormal directions
    points = np.concatenate([c + spread * rng.normal(size=(per, dim)) for c in centers])
    return points.astype(np.float32), np.repeat(np.arange(k), per)


@pytest.mark.parametrize("k", [2, 4, 6])
def test_auto_k_finds_the_number_of_clusters(k):
    x, labels = blobs(k)
    detector = TaskDetector(k_min=2, k_max=8).fit(x)
    assert detector.k_ == k
    assert clustering_metrics(labels, detector.labels_) == {"accuracy": 1.0, "nmi": 1.0, "ari": 1.0}
    best = max(detector.selection_curve_, key=lambda e: e["silhouette"])
    assert best["k"] == k and [e["k"] for e in detector.selection_curve_] == list(range(2, 9))


@pytest.mark.parametrize("criterion", CRITERIA)
@pytest.mark.parametrize("k", [3, 5])
def test_every_criterion_finds_the_number_of_clusters(criterion, k):
    x, labels = blobs(k, seed=k)
    detector = TaskDetector(k_min=2, k_max=8, criterion=criterion).fit(x)
    assert detector.k_ == k and detector.criterion == criterion
    assert clustering_metrics(labels, detector.labels_)["accuracy"] == 1.0
    assert max(detector.selection_curve_, key=lambda e: e["score"])["k"] == k


def test_silhouette_restarts_averages_over_k_means_seeds():
    x, _ = blobs(4, seed=7, spread=0.3)  # noisy enough that k-means runs differ at large k
    plain = TaskDetector(k_max=8, criterion="silhouette").fit(x)
    averaged = TaskDetector(k_max=8, criterion="silhouette-restarts").fit(x)
    assert all(e["score"] == e["silhouette"] for e in plain.selection_curve_)
    # the kept run per k is the one with the lowest inertia: never worse than the single run
    assert all(a["inertia"] <= p["inertia"] + 1e-4 for a, p in zip(averaged.selection_curve_, plain.selection_curve_))
    assert [e["k"] for e in averaged.selection_curve_] == list(range(2, 9))


def test_forced_k_and_predict_on_new_points():
    x, labels = blobs(3, seed=1)
    detector = TaskDetector(k=5).fit(x)
    assert detector.k_ == 5 and len(detector.selection_curve_) == 1
    fresh, fresh_labels = blobs(3, per=10, seed=1)  # same centres, new noise draws are close to them
    predicted = detector.fit(x).predict(fresh)
    assert predicted.shape == (30,) and set(predicted) <= set(range(5))


def test_save_load_round_trip_predicts_the_same(tmp_path):
    x, _ = blobs(4, seed=2)
    detector = TaskDetector(k_max=6, seed=3).fit(x)
    detector.save(tmp_path / "taskmap.json")
    loaded = TaskDetector.load(tmp_path / "taskmap.json")
    assert loaded.get_params() == detector.get_params() and loaded.k_ == detector.k_
    assert np.array_equal(loaded.predict(x), detector.predict(x))
    assert loaded.selection_curve_ == detector.selection_curve_


def test_criterion_round_trips_and_old_task_maps_still_load(tmp_path):
    import json

    x, _ = blobs(3, seed=8)
    detector = TaskDetector(k_max=5, criterion="silhouette-restarts").fit(x)
    detector.save(tmp_path / "new.json")
    saved = json.loads((tmp_path / "new.json").read_text())
    assert saved["criterion"] == "silhouette-restarts" and saved["params"]["criterion"] == "silhouette-restarts"
    assert all("score" in e for e in saved["selection_curve"])
    loaded = TaskDetector.load(tmp_path / "new.json")
    assert loaded.criterion == "silhouette-restarts" and loaded.get_params() == detector.get_params()
    assert loaded.selection_curve_ == detector.selection_curve_
    assert np.array_equal(loaded.predict(x), detector.predict(x))
    # a task map written before the criterion existed: no criterion, no score in the curve → silhouette
    del saved["criterion"], saved["params"]["criterion"]
    for entry in saved["selection_curve"]:
        del entry["score"]
    (tmp_path / "old.json").write_text(json.dumps(saved))
    old = TaskDetector.load(tmp_path / "old.json")
    assert old.criterion == "silhouette" and old.k_ == detector.k_
    assert np.array_equal(old.predict(x), detector.predict(x))
    saved["params"]["criterion"] = "elbow"
    (tmp_path / "bad.json").write_text(json.dumps(saved))
    with pytest.raises(TaskDetectionError, match="unreadable.*unknown criterion 'elbow'"):
        TaskDetector.load(tmp_path / "bad.json")


def test_metrics_match_clusters_to_classes_by_the_hungarian_method():
    truth = ["math"] * 4 + ["chat"] * 4 + ["code"] * 2
    predicted = [2, 2, 2, 0, 1, 1, 1, 1, 0, 0]  # one math prompt in the code cluster
    m = clustering_metrics(truth, predicted)
    assert m["accuracy"] == 0.9 and 0 < m["ari"] < 1 and 0 < m["nmi"] < 1


def test_descriptions_name_each_tasks_words_and_nearest_prompts():
    from taskspec.tasks.detect import describe_tasks

    texts = ["solve the equation for x", "solve this equation quickly", "translate this sentence to German",
             "translate the sentence into French"]
    emb = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], dtype=np.float32)
    labels = np.array([0, 0, 1, 1])
    centers = np.array([[1, 0], [0, 1]], dtype=np.float32)
    tasks = describe_tasks(texts, labels, emb, centers, num_examples=1)
    assert [t.size for t in tasks] == [2, 2]
    assert tasks[0].keywords[:2] == ["equation", "solve"] and tasks[0].examples == ["solve the equation for x"]
    assert "translate" in tasks[1].keywords[:3] and "sentence" in tasks[1].keywords[:3]
    # one long prompt repeating its own word does not outweigh a word that most of the task's prompts use
    texts[2] = "translate this sentence " + "launcher " * 30
    tasks = describe_tasks(texts, labels, emb, centers, num_examples=1)
    assert tasks[1].keywords.index("translate") < tasks[1].keywords.index("launcher")


def test_real_encoder_separates_math_from_translation(tmp_path):
    prompts = [f"What is {a} plus {b}? Show your steps." for a, b in [(3, 4), (12, 9), (7, 7), (40, 2), (5, 8)]] + [
        f"Translate into German: {s}" for s in ["The cat sleeps.", "I like trains.", "Where is the station?",
                                                 "The weather is nice today.", "We are late again."]]
    detector = TaskDetector(k_max=4).fit(prompts)
    assert detector.k_ == 2
    assert clustering_metrics(["math"] * 5 + ["mt"] * 5, detector.labels_)["accuracy"] == 1.0
    assert all(len(t.examples) == 3 for t in detector.descriptions_)
    detector.save(tmp_path / "map.json")
    assert list(TaskDetector.load(tmp_path / "map.json").predict(["What is 6 plus 1?"])) == [detector.labels_[0]]


@pytest.mark.parametrize("make, match", [
    (lambda: TaskDetector().fit([]), "no prompts"),
    (lambda: TaskDetector().fit(["only one prompt"]), "at least 3 prompts"),
    (lambda: TaskDetector(k=5).fit(np.eye(3, dtype=np.float32)), "k = 5 with 3 prompts"),
    (lambda: TaskDetector().fit(["fine", "", "also fine"]), r"\[1\] are empty"),
    (lambda: TaskDetector().predict(np.eye(3, dtype=np.float32)), "not fitted"),
    (lambda: TaskDetector(k_min=1).fit(np.eye(4, dtype=np.float32)), "k_min"),
    (lambda: TaskDetector().set_params(clusters=3), "no parameter 'clusters'"),
    (lambda: TaskDetector(criterion="elbow").fit(np.eye(4, dtype=np.float32)),
     "unknown criterion 'elbow' for choosing k; expected one of: silhouette, silhouette-restarts"),
    (lambda: TaskDetector(encoder="no/such-model", k=2).fit(["a b", "c d"]), "cannot load"),
])
def test_bad_input_gets_a_clear_error(make, match):
    with pytest.raises(TaskDetectionError, match=match):
        make()


def test_unreadable_task_map(tmp_path):
    (tmp_path / "bad.json").write_text('{"format": "something-else"}')
    with pytest.raises(TaskDetectionError, match="unreadable"):
        TaskDetector.load(tmp_path / "bad.json")
    with pytest.raises(TaskDetectionError, match="unreadable"):
        TaskDetector.load(tmp_path / "missing.json")


def write_two_task_prompts(path, label_field: str):
    """Six math and six translation prompts as JSONL, each labelled with its task in `label_field`."""
    import json

    rows = [{"prompt": f"What is {a} times {a + 3}? Answer with a number.", label_field: "math"} for a in range(6)] + [
        {"prompt": f"Translate into French: {s}", label_field: "translation"}
        for s in ["Good morning.", "The house is red.", "I read a book.", "Where is the bus?", "It rains.", "Thanks!"]]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_cli_detect_writes_a_task_map_and_scores_known_labels(tmp_path, capsys):
    import json

    from taskspec.cli import main

    data = write_two_task_prompts(tmp_path / "prompts.jsonl", "kind")
    out = tmp_path / "taskmap.json"
    assert main(["detect", "--prompts", str(data), "--out", str(out), "--label-field", "kind", "--k-range", "2,4",
                 "--quiet"]) == 0
    saved = json.loads(out.read_text())
    assert saved["k"] == 2 and saved["evaluation"]["accuracy"] == 1.0
    assert "against the data field 'kind': accuracy 1.000" in capsys.readouterr().out
    assert main(["detect", "--prompts", str(data), "--out", str(out), "--label-field", "nope", "--quiet"]) == 2
    assert main(["detect", "--prompts", str(data), "--out", str(out), "--k-range", "2-4", "--quiet"]) == 2
    assert main(["detect", "--prompts", str(data), "--out", str(out), "--k-range", "2,4", "--criterion",
                 "silhouette-restarts", "--quiet"]) == 0
    saved = json.loads(out.read_text())
    assert saved["k"] == 2 and saved["criterion"] == "silhouette-restarts"
    assert "mean over k-means restarts" in capsys.readouterr().out
    assert main(["detect", "--prompts", str(data), "--out", str(out), "--criterion", "elbow", "--quiet"]) == 2
    assert "unknown criterion 'elbow'" in capsys.readouterr().err


def test_target_state_detector_matches_a_plain_reference_and_round_trips(tmp_path):
    """encoder="target": the embedding is the target-feature router's pooled prefill, standardised with the fitting
    prompts' statistics, unit rows; the map stores those statistics and the target, and refuses another target."""
    from conftest import MATH_PROMPTS, PROSE_PROMPTS, tiny_gemma3, tiny_llama_with_tokenizer

    from taskspec.tasks import TargetFeatureRouter

    target = tiny_llama_with_tokenizer()
    prompts = MATH_PROMPTS + PROSE_PROMPTS
    detector = TaskDetector(encoder="target", k=2, target=target).fit(prompts)
    states = TargetFeatureRouter(target).features(prompts).astype(np.float64)  # [n, H] plain reference
    reference = (states - states.mean(0)) / (states.std(0) + 1e-6)
    reference /= np.linalg.norm(reference, axis=1, keepdims=True)
    np.testing.assert_allclose(detector.embed(prompts), reference, atol=1e-5)
    assert detector.k_ == 2 and len(detector.descriptions_) == 2

    path = detector.save(tmp_path / "taskmap.json")
    loaded = TaskDetector.load(path, target=target)
    new = ["compute 7 plus 1 times 8", "write a short poem about the sun in the garden"]
    assert loaded.predict(new).tolist() == detector.predict(new).tolist()
    np.testing.assert_allclose(loaded.embed(new), detector.embed(new), atol=1e-6)
    with pytest.raises(TaskDetectionError, match="needs the target"):
        TaskDetector.load(path)
    with pytest.raises(TaskDetectionError, match="another target"):
        TaskDetector.load(path, target=tiny_gemma3())
    with pytest.raises(TaskDetectionError, match="pass the target"):
        TaskDetector(encoder="target", k=2).fit(prompts)


def test_cli_detect_with_the_target_encoder(tmp_path):
    import json

    from conftest import MATH_PROMPTS, PROSE_PROMPTS, save_tiny_model

    from taskspec.cli import main

    model_dir = save_tiny_model(tmp_path / "model")
    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in MATH_PROMPTS + PROSE_PROMPTS))
    out = tmp_path / "taskmap.json"
    assert main(["detect", "--prompts", str(data), "--out", str(out), "--encoder", "target", "--target",
                 str(model_dir), "--dtype", "fp32", "--k", "2", "--quiet"]) == 0
    saved = json.loads(out.read_text())
    assert saved["params"]["encoder"] == "target" and saved["target"]
    assert len(saved["standardise"]["mean"]) == json.loads((model_dir / "config.json").read_text())["hidden_size"]
    from taskspec.tasks.detect import taskmap_encoder

    assert taskmap_encoder(out) == "target" and taskmap_encoder(tmp_path / "missing.json") is None


def test_cli_detect_label_field_source_prefers_the_datas_own_source_field(tmp_path, capsys):
    """A user's file with its own "source" field is scored against that field, not against the file's name (which
    gave every prompt the same label: accuracy 0.5 here, NMI 0), and the output says which labels were used."""
    import json

    from taskspec.cli import main

    data = write_two_task_prompts(tmp_path / "mixed.jsonl", "source")
    out = tmp_path / "taskmap.json"
    assert main(["detect", "--prompts", str(data), "--out", str(out), "--label-field", "source", "--k", "2",
                 "--quiet"]) == 0
    evaluation = json.loads(out.read_text())["evaluation"]
    assert evaluation["accuracy"] == 1.0 and evaluation["nmi"] == 1.0
    assert evaluation["labels_from"] == "the data field 'source'"
    assert "against the data field 'source': accuracy 1.000" in capsys.readouterr().out


def test_known_labels_fall_back_to_dataset_names_and_refuse_a_half_present_source_field():
    from taskspec.data import Prompt
    from taskspec.tasks.detect import known_labels

    plain = [Prompt("a/0", "x", "gsm8k"), Prompt("b/0", "y", "mine", {"kind": "chat"})]
    assert known_labels(plain, "source") == (["gsm8k", "mine"], "the dataset (or file name) of each prompt")
    own = [Prompt("b/0", "y", "mine", {"source": "web"}), Prompt("b/1", "z", "mine", {"source": 3})]
    assert known_labels(own, "source") == (["web", "3"], "the data field 'source'")
    with pytest.raises(TaskDetectionError, match=r"1 prompts have a data field 'source' and 1 \(e.g. \['a/0'\]\)"):
        known_labels(plain[:1] + own[:1], "source")
    with pytest.raises(TaskDetectionError, match=r"--label-field 'kind': prompts \['a/0'\] have no such field"):
        known_labels(plain, "kind")


# Chinese prompts (wmt22 zh-en sources): four about smart devices, all with 智能 ("smart")
CHINESE = ["生物医学工程学院博士生张迪鸣团队现场展示了一个智能手机端的生物传感器，大小只有智能手机的一半。",
           "张迪鸣介绍说，这套传感器与智能手机相连，呼出气体后，健康报告就会显示在手机上。",
           "除了智能手机，手术室里也用起了智能手术灯。",
           "这种智能手术灯有四个灯盘，通过调节光谱，来增强不同组织在光照下的区别度。"]
ENGLISH_MATH = ["solve the equation for x", "solve this equation quickly", "what is the sum of the equation",
                "solve for y in the equation"]


class GreedyWordTokenizer:
    """A stand-in for a target's tokenizer: longest match against a few Chinese words, else one character."""

    words = ("智能", "手机", "手术灯", "传感器", "生物")

    def __init__(self):
        self.vocab: list[str] = []

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict:
        ids, i = [], 0
        while i < len(text):
            piece = next((w for w in self.words if text.startswith(w, i)), text[i])
            self.vocab.append(piece)
            ids.append(len(self.vocab) - 1)
            i += len(piece)
        return {"input_ids": ids}

    def batch_decode(self, rows: list[list[int]]) -> list[str]:
        return ["".join(self.vocab[i] for i in row) for row in rows]


def describe_two(texts: list[str], tokenizer=None):
    from taskspec.tasks.detect import describe_tasks

    labels = np.repeat([0, 1], [len(CHINESE), len(ENGLISH_MATH)])
    centers = np.eye(2, dtype=np.float32)
    return describe_tasks(texts, labels, centers[labels], centers, tokenizer=tokenizer)


def test_keywords_of_chinese_prompts_are_chinese_words_from_them():
    chinese, english = describe_two(CHINESE + ENGLISH_MATH)
    assert chinese.keywords[0] == "智能" and len(chinese.keywords) == 8  # in every prompt of the task
    assert all(regex.fullmatch(r"\p{Han}{2}", w) and any(w in t for t in CHINESE) for w in chinese.keywords)
    assert english.keywords[:2] == ["equation", "solve"]
    # with a tokenizer (the target's, in the detector): its whole words, three characters too, never single
    # characters; bigrams only of runs that hold none of its words (张迪鸣介绍说)
    chinese, _ = describe_two(CHINESE + ENGLISH_MATH, GreedyWordTokenizer())
    assert chinese.keywords[0] == "智能" and {"手术灯", "传感器"} <= set(chinese.keywords)
    wordless = [run for t in CHINESE for run in regex.findall(r"\p{Han}+", t)
                if not any(w in run for w in GreedyWordTokenizer.words)]
    assert all(w in GreedyWordTokenizer.words or (len(w) == 2 and any(w in run for run in wordless))
               for w in chinese.keywords)


def byte_level_bpe(corpus: list[str], vocab_size: int = 400):
    """A fast byte-level BPE tokenizer (as GPT-2, Llama 3, Qwen) trained in the test on `corpus`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tok)


def test_keywords_with_a_byte_level_tokenizer_are_never_empty():
    # trained on English only, it cuts every Chinese character into bytes: no token is a word, so bigrams
    english_only = byte_level_bpe(ENGLISH_MATH * 5)
    chinese, _ = describe_two(CHINESE + ENGLISH_MATH, english_only)
    assert chinese.keywords and chinese.keywords[0] == "智能"
    assert all(regex.fullmatch(r"\p{Han}{2}", w) and any(w in t for t in CHINESE) for w in chinese.keywords)
    # trained on the Chinese text too, its merged tokens are read by character offsets: words from the prompts
    merged = byte_level_bpe(CHINESE * 5 + ENGLISH_MATH * 5)
    chinese, _ = describe_two(CHINESE + ENGLISH_MATH, merged)
    assert chinese.keywords and all(regex.fullmatch(r"\p{Han}{2,}", w) and any(w in t for t in CHINESE)
                                    for w in chinese.keywords)


WMT22 = Path(os.environ.get("TASKSPEC_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data") / "wmt22"


@pytest.mark.skipif(not WMT22.is_dir(), reason=f"shared data folder missing: {WMT22}")
def test_every_chinese_run_gives_keywords_with_a_partly_trained_byte_level_tokenizer():
    # a byte-level BPE trained on these prompts merges some words and leaves other runs (新华网, 昨天晚上) in bytes:
    # such a run gives its bigrams even when another run of the same prompt has whole words
    rows = json.loads((WMT22 / "test.zh-en.json").read_text(encoding="utf-8"))[:40]
    chinese = [r["translation"]["zh"] for r in rows]
    tokenizer = byte_level_bpe(chinese, vocab_size=600)
    for prompt in chinese:
        words = keyword_candidates(prompt, tokenizer)
        for run in regex.findall(r"\p{Han}{2,}", prompt):
            assert any(w in run for w in words), (run, sorted(words))
    labels = np.repeat([0, 1], [len(chinese), len(ENGLISH_MATH)])
    centers = np.eye(2, dtype=np.float32)
    task = describe_tasks(chinese + ENGLISH_MATH, labels, centers[labels], centers, tokenizer=tokenizer)[0]
    assert task.keywords and all(regex.fullmatch(r"\p{Han}{2,}", w) and any(w in t for t in chinese)
                                 for w in task.keywords)


def test_the_detector_describes_tasks_with_the_targets_tokenizer(monkeypatch):
    from types import SimpleNamespace

    from taskspec.tasks import detect

    class ScriptEncoder:  # Chinese vs not: [n, 2] unit rows
        def __init__(self, name):
            self.name = name

        def encode(self, texts, progress=False):
            return np.array([[1.0, 0.0] if regex.search(r"\p{Han}", t) else [0.0, 1.0] for t in texts], np.float32)

    monkeypatch.setattr(detect, "SentenceEncoder", ScriptEncoder)
    target = SimpleNamespace(tokenizer=GreedyWordTokenizer())
    detector = TaskDetector(encoder="script", k=2, target=target).fit(CHINESE + ENGLISH_MATH)
    chinese = next(t for t in detector.descriptions_ if any("智能" in e for e in t.examples))
    assert "手术灯" in chinese.keywords
