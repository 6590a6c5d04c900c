"""`taskspec demo` on a tiny target and drafter set: prompts tagged by detected task, one table per task, a report
folder; the prompt sample; the shipped drafter set is found by target fingerprint."""

from __future__ import annotations

import contextlib
import json
import logging
import warnings

import pytest

from conftest import MATH_PROMPTS, PROSE_PROMPTS, tiny_llama, tiny_task_workspace
from taskspec.data import Prompt
from taskspec.demo import SET_METHODS, demo_prompts, run_demo
from taskspec.drafters.shipped import shipped_drafter_set
from taskspec.engine.decode import GenerationConfig
from taskspec.models.fingerprint import target_fingerprint
from taskspec.tasks.drafter_sets import load_drafter_set
from taskspec.train.build import BuildConfig, build_drafter_set


@pytest.fixture(scope="module")
def drafter_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    target, features, taskmap, detector = tiny_task_workspace(root)
    math_task = int(detector.predict(MATH_PROMPTS[:1])[0])
    names = ["math", "prose"] if math_task == 0 else ["prose", "math"]
    config = BuildConfig(generic="train", steps=3, seqs_per_step=2, draft_vocab_size=64, stages=("heads", "routers"),
                         routers=("target-feature",), min_task_examples=2, save_every=3, options={"depth": 2})
    build_drafter_set(target, taskmap, features, root / "set", config, task_names=names, progress=False,
                      log=lambda m: None)
    return load_drafter_set(root / "set", target)


def test_demo_makes_one_table_per_task_and_a_report(drafter_set, tmp_path, capsys):
    prompts = [Prompt(id=f"p{i}", text=t, source="mine", meta={}) for i, t in
               enumerate([MATH_PROMPTS[0], PROSE_PROMPTS[1], MATH_PROMPTS[2]])]
    logs = []
    result = run_demo(drafter_set.target, prompts, list(SET_METHODS), GenerationConfig(max_new_tokens=8),
                      tmp_path / "demo", drafter_set=drafter_set, progress=False, log=logs.append)
    printed = capsys.readouterr().out
    assert "**math**" in printed and "**prose**" in printed  # the bench tables, grouped by detected task
    assert set(result["summary"]) == {"all", "math", "prose"}
    assert result["summary"]["math"]["none"]["prompts"] == 2
    assert all(v["greedy_match_rate"] == 1.0 for v in result["summary"]["all"].values())
    assert {p["task"] for p in result["prompt_map"]} == {"math", "prose"}
    assert {p["dataset"] for p in result["prompt_map"]} == {"mine"}
    assert any("math: 2 prompts (mine)" in line for line in logs)
    saved = json.loads((tmp_path / "demo" / "result.json").read_text())
    assert saved["summary"] == result["summary"]
    report = (tmp_path / "demo" / "report.md").read_text()
    assert "prompt_map.png" in report and (tmp_path / "demo" / "prompt_map.png").stat().st_size > 0


def test_demo_prompts_sample_every_available_source(tmp_path):
    logs = []
    prompts = demo_prompts(data_dir=tmp_path / "no-data", log=logs.append)  # ShareGPT ships as a package
    sources = {p.source for p in prompts}
    assert "sharegpt" in sources and "demo" in sources  # the built-in examples stand in for the benchmarks
    assert any("not found: gsm8k" in line for line in logs)
    assert all(len(p.text) <= 600 for p in prompts if p.source == "sharegpt")
    assert demo_prompts(data_dir=tmp_path / "no-data", log=logs.append) == prompts  # a fixed sample


def test_shipped_drafter_set_is_found_by_target(tmp_path):
    target, other = tiny_llama(0), tiny_llama(1, vocab=120)
    assert shipped_drafter_set(target, root=tmp_path) is None
    for name, owner in (("a-other", other), ("b-mine", target)):
        (tmp_path / "sets" / name).mkdir(parents=True)
        (tmp_path / "sets" / name / "drafterset.json").write_text(json.dumps({"target": target_fingerprint(owner)}))
    assert shipped_drafter_set(target, root=tmp_path) == tmp_path / "sets" / "b-mine"
    assert shipped_drafter_set(other, root=tmp_path) == tmp_path / "sets" / "a-other"


@contextlib.contextmanager
def no_warnings():
    """Turns every warning into an error and collects what transformers logs at WARNING or above (its own logger,
    the "[transformers] ..." lines) into the yielded list, which the caller checks is empty."""
    messages: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: messages.append(record.getMessage())
    logging.getLogger("transformers").addHandler(handler)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            yield messages
    finally:
        logging.getLogger("transformers").removeHandler(handler)


def test_a_demo_run_emits_no_warnings(drafter_set, tmp_path):
    """transformers 5.x warns on every forward given its KV cache as `past_key_values` (a FutureWarning per call:
    dozens through a demo's progress bar); the target's forward and the EAGLE heads' lean body must pass `cache`."""
    prompts = [Prompt(id=f"p{i}", text=t, source="mine", meta={}) for i, t in
               enumerate([MATH_PROMPTS[0], PROSE_PROMPTS[1]])]
    with no_warnings() as logged:
        result = run_demo(drafter_set.target, prompts, list(SET_METHODS), GenerationConfig(max_new_tokens=6),
                          tmp_path / "demo", drafter_set=drafter_set, progress=False, log=lambda m: None)
    assert all(v["greedy_match_rate"] == 1.0 for v in result["summary"]["all"].values())
    assert logged == []


def test_taskspec_generate_prints_no_warnings(tmp_path, capfd):
    """The same through the command line: nothing on stderr mentions a warning or a deprecation."""
    from conftest import tiny_llama_with_tokenizer
    from taskspec.cli import main

    target = tiny_llama_with_tokenizer()
    target.model.save_pretrained(tmp_path / "model")
    target.tokenizer.save_pretrained(tmp_path / "model")
    capfd.readouterr()
    with no_warnings() as logged:
        assert main(["generate", "--target", str(tmp_path / "model"), "--dtype", "fp32", "--drafter", "ngram",
                     "--prompt", "compute 3 plus 4 times 7", "--max-new-tokens", "8"]) == 0
    err = capfd.readouterr().err.lower()
    assert logged == [] and "warn" not in err and "deprecated" not in err, err[-2000:]


def write_tiny_llama_gguf(path, vocab: int = 64, hidden: int = 16, ffn: int = 32, heads: int = 2) -> dict:
    """A one-layer llama GGUF (float32 tensors, a sentencepiece-style vocabulary); returns its tensors by name."""
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_context_length(64)
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(heads)
    writer.add_head_count_kv(heads)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_rope_dimension_count(hidden // heads)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(["<unk>", "<s>", "</s>"] + [chr(97 + i % 26) * (1 + i // 26) for i in range(vocab - 3)])
    writer.add_token_scores([0.0] * 3 + [-float(i) for i in range(vocab - 3)])
    writer.add_token_types([2, 3, 3] + [1] * (vocab - 3))  # unknown, control, control, then normal tokens
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    rng = np.random.default_rng(0)
    shapes = {"token_embd.weight": (vocab, hidden), "output_norm.weight": (hidden,), "output.weight": (vocab, hidden),
              "blk.0.attn_norm.weight": (hidden,), "blk.0.ffn_norm.weight": (hidden,),
              "blk.0.ffn_gate.weight": (ffn, hidden), "blk.0.ffn_up.weight": (ffn, hidden),
              "blk.0.ffn_down.weight": (hidden, ffn),
              **{f"blk.0.{name}.weight": (hidden, hidden) for name in ("attn_q", "attn_k", "attn_v", "attn_output")}}
    tensors = {name: (0.02 * rng.standard_normal(shape)).astype(np.float32) for name, shape in shapes.items()}
    for name, tensor in tensors.items():
        writer.add_tensor(name, tensor)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return tensors


def test_converting_a_gguf_target_logs_no_transformers_warning(tmp_path, monkeypatch):
    """The first run converts the embedded GGUF. transformers 5.25 then logged that packed GGUF weights are fastest
    in float32: the conversion must ask for plain dense weights (what it saves), and get them."""
    import torch

    from taskspec.models.target import load_target

    tensors = write_tiny_llama_gguf(tmp_path / "tiny.gguf")
    monkeypatch.setenv("TASKSPEC_CACHE", str(tmp_path / "cache"))
    with no_warnings() as logged:
        target = load_target(str(tmp_path / "tiny.gguf"), "fp32")
    assert logged == []
    embedding = target.model.get_input_embeddings().weight  # [vocab, hidden], saved in bf16 by the conversion
    assert torch.equal(embedding, torch.from_numpy(tensors["token_embd.weight"]).bfloat16().float())
    assert target.tokenizer("abc", add_special_tokens=False)["input_ids"] == [3, 4, 5]
