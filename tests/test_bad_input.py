"""Bad input gets a clear error naming the input and what was expected."""

from __future__ import annotations

import pytest

from conftest import save_tiny_model, tiny_llama
from taskspec.cli import main
from taskspec.drafters.kinds import build_drafter
from taskspec.drafters.model import ModelDrafter
from taskspec.engine.decode import GenerationConfig, generate
from taskspec.engine.drafter import NoDrafter
from taskspec.engine.sampling import SamplingParams
from taskspec.errors import DrafterError, GenerationInputError, TargetError
from taskspec.models.target import load_target


@pytest.fixture(scope="module")
def target():
    return tiny_llama()


@pytest.mark.parametrize("prompt", ["", "   ", []])
def test_empty_prompt(target, prompt):
    with pytest.raises(GenerationInputError, match="empty"):
        generate(target, NoDrafter(), prompt)


def test_text_prompt_without_tokenizer(target):
    with pytest.raises(GenerationInputError, match="no tokenizer"):
        generate(target, NoDrafter(), "hello")


def test_over_long_prompt(target):
    with pytest.raises(GenerationInputError, match="exceeds the target's context of 512"):
        generate(target, NoDrafter(), [1] * 500, GenerationConfig(max_new_tokens=20))


def test_token_ids_outside_vocabulary(target):
    with pytest.raises(GenerationInputError, match="outside the vocabulary"):
        generate(target, NoDrafter(), [1, 2, 500])


@pytest.mark.parametrize("kwargs, match", [({"temperature": -1}, "temperature"), ({"top_k": -2}, "top_k"),
                                           ({"top_p": 0.0}, "top_p"), ({"top_p": 1.5}, "top_p")])
def test_bad_sampling_options(kwargs, match):
    with pytest.raises(GenerationInputError, match=match):
        SamplingParams(**kwargs)


def test_bad_generation_config():
    with pytest.raises(GenerationInputError, match="max_new_tokens"):
        GenerationConfig(max_new_tokens=0)
    with pytest.raises(GenerationInputError, match="stop strings"):
        GenerationConfig(stop_strings=("",))


@pytest.mark.parametrize("spec, match", [("eagle9", "unknown drafter"), ("ngram:depht=3", "unknown option"),
                                         ("ngram:depth=x", "integers"), ("ngram:min_ngram=4", "min_ngram"),
                                         ("model:", "expected model:PATH"), ("none:foo", "only key=value")])
def test_bad_drafter_specs(target, spec, match):
    with pytest.raises(DrafterError, match=match):
        build_drafter(spec, target)


def test_drafter_with_another_vocabulary(target):
    with pytest.raises(DrafterError, match="vocabulary"):
        ModelDrafter(tiny_llama(vocab=101), target)


def test_missing_and_corrupt_targets(tmp_path):
    with pytest.raises(TargetError, match="GGUF file not found"):
        load_target(str(tmp_path / "missing.gguf"))
    corrupt = tmp_path / "corrupt.gguf"
    corrupt.write_bytes(b"not a gguf at all" * 10)
    with pytest.raises(TargetError, match="could not read this GGUF"):
        load_target(str(corrupt))
    text = tmp_path / "weights.bin"
    text.write_text("x")
    with pytest.raises(TargetError, match="not a .gguf"):
        load_target(str(text))
    with pytest.raises(TargetError, match="local Hugging Face cache"):
        load_target("no-such-org/no-such-model-xyz")
    with pytest.raises(TargetError, match="not a model folder"):
        load_target(str(tmp_path))  # a folder without config.json
    with pytest.raises(TargetError, match="--dtype"):
        load_target("embedded", dtype="int3")


def test_model_without_causal_lm_head(tmp_path):
    from transformers import T5Config, T5Model

    T5Model(T5Config(vocab_size=50, d_model=16, d_ff=32, num_layers=1, num_heads=2, d_kv=8)).save_pretrained(tmp_path)
    with pytest.raises(TargetError, match="no causal-LM head"):
        load_target(str(tmp_path))


def test_cli_reports_errors_with_exit_code_2(capsys, tmp_path):
    assert main(["generate", "--target", str(tmp_path / "missing.gguf"), "--prompt", "hi"]) == 2
    assert "GGUF file not found" in capsys.readouterr().err
    assert main(["generate", "--target", "embedded", "--prompt", "hi", "--temperature", "-1"]) == 2
    assert "temperature" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "--prompt", "hi", "--no-such-option"])
    assert exit_info.value.code == 2


def test_cli_drafter_set_options_are_checked(capsys, tmp_path):
    assert main(["generate", "--prompt", "hi", "--drafter-set", str(tmp_path), "--compose", "merged,single"]) == 2
    assert "one strategy" in capsys.readouterr().err  # before the model loads
    # --compose without --drafter-set takes the set shipped for the target; none ships for this one
    model_dir = save_tiny_model(tmp_path / "tiny")
    assert main(["generate", "--target", str(model_dir), "--dtype", "fp32", "--prompt", "hi",
                 "--compose", "merged"]) == 2
    assert "no drafter set ships for target" in capsys.readouterr().err
    assert main(["build", "--taskmap", "t.json", "--out", str(tmp_path / "set")]) == 2
    assert "exactly one of --data" in capsys.readouterr().err
    assert main(["build", "--taskmap", "t.json", "--features", "f", "--out", str(tmp_path / "s"),
                 "--drafter-options", "depth=x"]) == 2
    assert "--drafter-options" in capsys.readouterr().err


def test_cli_damaged_training_files_exit_with_code_2(capsys, tmp_path):
    """A damaged train_state.pt, feature manifest or shard: a message naming the file, exit code 2, no traceback."""
    import json

    from taskspec.train.features import Example, build_feature_cache

    model_dir = save_tiny_model(tmp_path / "tiny")
    target = load_target(str(model_dir), dtype="fp32")
    features = tmp_path / "features"
    examples = [Example(f"ex{i}", [1, 5 + i], [9, 11 + i, 3, 4]) for i in range(4)]
    build_feature_cache(target, examples, features, top_k=4, examples_per_shard=2, progress=False)
    common = ["--target", str(model_dir), "--dtype", "fp32", "--quiet"]

    def train_into(out):
        return main(["train", *common, "--features", str(features), "--out", str(tmp_path / out), "--steps", "1",
                     "--seqs-per-step", "1", "--draft-vocab-size", "20", "--kind", "eagle2"])

    assert train_into("ckpt") == 0
    (tmp_path / "ckpt" / "train_state.pt").write_bytes(b"\x80\x02not a state")
    assert train_into("ckpt") == 2
    assert "train_state.pt: cannot resume from it" in capsys.readouterr().err

    shard = features / "shard-00001.safetensors"
    shard.write_bytes(shard.read_bytes()[:-64])
    assert train_into("other") == 2
    assert "shard-00001.safetensors: damaged shard" in capsys.readouterr().err

    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps({"prompt": "one plus one", "response": "two"}) + "\n")
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "manifest.json").write_text("[1, 2]")
    assert main(["features", *common, "--data", str(data), "--out", str(tmp_path / "cache")]) == 2
    assert "manifest.json: not a feature-cache manifest" in capsys.readouterr().err
