"""Shared fixtures: tiny random Hugging Face targets (fp32) and a plain greedy reference."""

from __future__ import annotations

import pytest
import torch
from transformers import Gemma3ForCausalLM, Gemma3TextConfig, LlamaConfig, LlamaForCausalLM

from taskspec.models.causal_lm import CausalLM

VOCAB = 97


def tiny_llama(seed: int = 0, vocab: int = VOCAB) -> CausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         attn_implementation="sdpa")
    return CausalLM(LlamaForCausalLM(config), name=f"tiny-llama-{seed}")


def tiny_gemma3(seed: int = 0) -> CausalLM:
    """Alternating sliding (window 6) and full attention layers, so prompts longer than 6 exercise the window."""
    torch.manual_seed(seed)
    config = Gemma3TextConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                              num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=512,
                              sliding_window=6, layer_types=["sliding_attention", "full_attention"] * 2,
                              attn_implementation="sdpa")
    return CausalLM(Gemma3ForCausalLM(config), name=f"tiny-gemma3-{seed}")


TINY_TARGETS = {"llama": tiny_llama, "gemma3": tiny_gemma3}


@pytest.fixture(params=sorted(TINY_TARGETS))
def tiny_target(request) -> CausalLM:
    return TINY_TARGETS[request.param]()


@torch.inference_mode()
def reference_greedy(target: CausalLM, prompt: list[int], new_tokens: int) -> list[int]:
    """Plain greedy decoding with the model's own forward, no cache: the simplest possible reference."""
    ids = list(prompt)
    for _ in range(new_tokens):
        logits = target.model(input_ids=torch.tensor([ids]), use_cache=False).logits[0, -1]
        ids.append(int(logits.argmax()))
    return ids[len(prompt):]


# A prompt with repeats (so prompt lookup finds matches) and longer than the tiny Gemma 3 sliding window.
PROMPT = [3, 17, 42, 8, 5, 17, 42, 8, 61, 9, 17, 42]


def tiny_tokenizer(vocab: int = VOCAB):
    """A character-level fast tokenizer over ids 0..vocab-1 (<pad>, <bos>, <eos>, then printable characters)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    chars = [chr(c) for c in range(32, 32 + vocab - 3)]
    table = {"<pad>": 0, "<bos>": 1, "<eos>": 2, **{c: i + 3 for i, c in enumerate(chars)}}
    core = Tokenizer(models.WordLevel(table, unk_token="<pad>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()
    core.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>")


def tiny_llama_with_tokenizer(seed: int = 0) -> CausalLM:
    target = tiny_llama(seed)
    return CausalLM(target.model, tokenizer=tiny_tokenizer(), name=target.name)


def save_tiny_model(folder):
    """The tiny tokenized Llama saved as a Hugging Face folder (what `--target FOLDER` loads); returns the folder."""
    target = tiny_llama_with_tokenizer()
    target.model.save_pretrained(folder)
    target.tokenizer.save_pretrained(folder)
    return folder


MATH_PROMPTS = [f"compute {a} plus {b} times {a + b}" for a, b in ((3, 4), (12, 7), (5, 9), (21, 2), (8, 8), (14, 6))]
PROSE_PROMPTS = [f"write a short poem about the {w} in the garden" for w in ("rose", "bird", "rain", "moon", "tree",
                                                                            "cat")]


def tiny_task_workspace(root):
    """Two feature caches of math and prose examples on the tiny tokenized target, and a 2-task map of them:
    (target, [feature folders], taskmap path, detector)."""
    from taskspec.tasks import TaskDetector
    from taskspec.train.features import Example, build_feature_cache

    target = tiny_llama_with_tokenizer()
    tok = target.tokenizer
    examples = []
    for i, text in enumerate(MATH_PROMPTS + PROSE_PROMPTS):
        response = " answer 42 42 42" if text in MATH_PROMPTS else " roses are red roses are red"
        examples.append(Example(f"ex{i}", tok(text)["input_ids"], tok(response, add_special_tokens=False)["input_ids"]))
    build_feature_cache(target, examples[::2], root / "f1", top_k=4, examples_per_shard=4, progress=False)
    build_feature_cache(target, examples[1::2], root / "f2", top_k=4, examples_per_shard=4, progress=False)
    detector = TaskDetector(k=2).fit(MATH_PROMPTS + PROSE_PROMPTS)
    detector.save(root / "taskmap.json")
    return target, [str(root / "f1"), str(root / "f2")], root / "taskmap.json", detector
