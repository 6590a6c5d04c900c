"""The AVX2 bf16 linear kernel (taskspec.kernels): accuracy against an fp32 reference, batch invariance (bitwise),
module patching on a tiny Hugging Face model, and the switches that turn it off."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from taskspec.kernels import (
    Bf16Linear,
    bf16_linear,
    build,
    kernel_available,
    kernel_unavailable_reason,
    patch_linears,
    reference_bf16_linear,
    unpatch_linears,
)
from taskspec.models.causal_lm import cache_keyword

# the package attribute `bf16_linear` is the function; the module itself is reached through sys.modules
kernel_module = importlib.import_module("taskspec.kernels.bf16_linear")

needs_kernel = pytest.mark.skipif(not kernel_available(),
                                  reason=f"bf16 linear kernel unavailable: {kernel_unavailable_reason()}")

BF16 = torch.bfloat16
U = 2.0 ** -24  # fp32 unit roundoff


def _rand(*shape, scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g) * scale).to(BF16)


def assert_close_to_reference(out, x, weight, bias):
    """Kernel and reference both compute an fp32 dot product and round it once to bf16; they differ only in the
    order of the fp32 additions. Each fp32 sum is within K*u*S of the exact value (S = sum |x_k w_k| + |b|, the
    standard bound for recursive/blocked summation with u = 2^-24), so the two fp32 values differ by at most
    2*K*u*S, and rounding each to bf16 adds at most half a bf16 ulp each (<= 2^-8 |v| each, 2^-7 max|v| together).
    Hence |kernel - reference| <= 2^-7 * max(|kernel|, |reference|) + 2*K*u*S: one bf16 ulp plus fp32 noise,
    which only matters under cancellation. On top of that the two must agree bitwise on nearly every element
    (a disagreement needs the fp32 values to straddle a bf16 rounding boundary: probability ~1e-4 per element)."""
    ref = reference_bf16_linear(x, weight, bias)
    assert out.shape == ref.shape and out.dtype == BF16
    k = x.shape[-1]
    s = x.float().abs() @ weight.float().abs().T
    if bias is not None:
        s = s + bias.float().abs()
    a, b = out.float(), ref.float()
    bound = 2.0 ** -7 * torch.maximum(a.abs(), b.abs()) + 2 * k * U * s + 1e-30
    excess = (a - b).abs() - bound
    assert excess.max().item() <= 0, f"max error above bound by {excess.max().item()}"
    if out.numel() >= 1000:
        assert (out == ref).float().mean().item() >= 0.99


@needs_kernel
@pytest.mark.parametrize("m", [1, 2, 3, 7, 16, 33])
@pytest.mark.parametrize("k", [8, 64, 640, 100])
@pytest.mark.parametrize("n", [1, 5, 256, 1000])
@pytest.mark.parametrize("with_bias", [False, True], ids=["nobias", "bias"])
def test_matches_fp32_reference(m, k, n, with_bias):
    x = _rand(m, k, seed=1)
    weight = _rand(n, k, scale=k ** -0.5, seed=2)
    bias = _rand(n, seed=3) if with_bias else None
    out = bf16_linear(x, weight, bias)
    assert_close_to_reference(out, x, weight, bias)


@needs_kernel
@pytest.mark.parametrize("k", [1, 3, 7, 9, 15, 17, 31, 2048])
def test_odd_k_tails(k):
    x, weight, bias = _rand(5, k, seed=4), _rand(37, k, seed=5), _rand(37, seed=6)
    assert_close_to_reference(bf16_linear(x, weight, bias), x, weight, bias)


@needs_kernel
def test_exact_on_small_integers():
    # integer products and sums below 2^8 are exact in fp32 and in bf16: the result must equal the exact value
    g = torch.Generator().manual_seed(7)
    x = torch.randint(-3, 4, (9, 21), generator=g).to(BF16)
    weight = torch.randint(-3, 4, (13, 21), generator=g).to(BF16)
    bias = torch.randint(-8, 9, (13,), generator=g).to(BF16)
    expected = (x.double() @ weight.double().T + bias.double()).to(BF16)
    assert torch.equal(bf16_linear(x, weight, bias), expected)


@needs_kernel
def test_rounding_is_nearest_even_like_torch():
    # dot products landing exactly halfway between two bf16 values, and just off it, plus inf and NaN
    x = torch.tensor([[1.0, 1.0]], dtype=BF16)
    one_plus = [1.0, 2.0 ** -8, 3 * 2.0 ** -8, 2.0 ** -8 + 2.0 ** -16, 2.0 ** -9]  # second summand
    weight = torch.tensor([[1.0, v] for v in one_plus] + [[float("inf"), 1.0], [float("nan"), 1.0],
                                                          [float("inf"), float("-inf")]]).to(BF16)
    out = bf16_linear(x, weight)
    ref = reference_bf16_linear(x, weight, None)
    assert torch.equal(out.view(torch.int16)[0, :6], ref.view(torch.int16)[0, :6])
    assert torch.isnan(out[0, 6]) and torch.isnan(out[0, 7])


@needs_kernel
def test_shapes_3d_noncontiguous_and_empty():
    weight, bias = _rand(40, 24, seed=8), _rand(40, seed=9)
    x3 = _rand(2, 5, 24, seed=10)
    out = bf16_linear(x3, weight, bias)
    assert out.shape == (2, 5, 40)
    assert torch.equal(out.reshape(10, 40), bf16_linear(x3.reshape(10, 24), weight, bias))
    assert_close_to_reference(out, x3, weight, bias)

    x_t = _rand(24, 6, seed=11).T  # non-contiguous [6, 24]
    assert not x_t.is_contiguous()
    assert torch.equal(bf16_linear(x_t, weight, bias), bf16_linear(x_t.contiguous(), weight, bias))
    x_strided = _rand(6, 48, seed=12)[:, ::2]
    assert torch.equal(bf16_linear(x_strided, weight), bf16_linear(x_strided.contiguous(), weight))

    assert bf16_linear(_rand(0, 24), weight, bias).shape == (0, 40)
    assert bf16_linear(_rand(3, 0, 24), weight).shape == (3, 0, 40)
    assert bf16_linear(_rand(24, seed=13), weight, bias).shape == (40,)  # 1-D input
    zero_k = bf16_linear(torch.zeros(3, 0, dtype=BF16), torch.zeros(4, 0, dtype=BF16), bias[:4])
    assert torch.equal(zero_k, bias[:4].expand(3, 4))


@needs_kernel
def test_rejects_bad_inputs():
    weight = _rand(8, 16)
    with pytest.raises(TypeError):
        bf16_linear(torch.randn(2, 16), weight)
    with pytest.raises(ValueError):
        bf16_linear(_rand(2, 15), weight)
    with pytest.raises(ValueError):
        bf16_linear(_rand(2, 16), weight, _rand(7))
    with pytest.raises(RuntimeError, match="inference-only"):
        bf16_linear(_rand(2, 16).requires_grad_(), weight)
    with torch.no_grad():  # fine without autograd recording
        bf16_linear(_rand(2, 16).requires_grad_(), weight)


# --------------------------------------------------------------------------------------------- batch invariance

@needs_kernel
@pytest.mark.parametrize("k,n", [(640, 1000), (100, 257), (2048, 64), (7, 13)])
def test_batch_invariance_bitwise(k, n):
    """Row i of an M-row call == the 1-row call on row i, bit for bit, for every M and thread count."""
    x = _rand(33, k, seed=20)
    weight = _rand(n, k, scale=k ** -0.5, seed=21)
    bias = _rand(n, seed=22)
    singles = torch.cat([bf16_linear(x[i:i + 1], weight, bias, num_threads=1) for i in range(33)])
    for m in (2, 3, 4, 5, 7, 8, 16, 33):
        for threads in (1, 2, 3):
            batch = bf16_linear(x[:m], weight, bias, num_threads=threads)
            assert torch.equal(batch.view(torch.int16), singles[:m].view(torch.int16)), (m, threads)
    # a row's result does not depend on where it sits in the batch either
    perm = torch.randperm(33, generator=torch.Generator().manual_seed(0))
    assert torch.equal(bf16_linear(x[perm], weight, bias), singles[perm])


@needs_kernel
def test_batch_invariance_follows_torch_num_threads():
    x, weight = _rand(9, 640, seed=23), _rand(3000, 640, seed=24)
    expected = bf16_linear(x, weight, num_threads=1)
    old = torch.get_num_threads()
    try:
        for threads in (1, 2, 4):
            torch.set_num_threads(threads)
            assert torch.equal(bf16_linear(x, weight), expected)
            assert torch.equal(bf16_linear(x[4:5], weight), expected[4:5])
    finally:
        torch.set_num_threads(old)


@needs_kernel
def test_patched_mlp_is_batch_invariant():
    """A stack of patched Linears (an MLP): a row alone and the same row inside batches give identical bits."""
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(64, 256), nn.GELU(), nn.Linear(256, 100, bias=False), nn.Tanh(),
                        nn.Linear(100, 64)).to(BF16)
    assert patch_linears(mlp) == 3
    x = _rand(4, 16, 64, seed=25)
    with torch.inference_mode():
        batch = mlp(x)
        for b in range(4):
            for t in (0, 5, 15):
                assert torch.equal(mlp(x[b, t]), batch[b, t])
                assert torch.equal(mlp(x[b, t:t + 1]), batch[b, t:t + 1])
        assert torch.equal(mlp(x[1:3, 2:9]), batch[1:3, 2:9])


# ------------------------------------------------------------------------------------------------- patching

def _tiny_llama():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, vocab_size=300,
                                      tie_word_embeddings=True, max_position_embeddings=128,
                                      attn_implementation="eager")
    model = transformers.LlamaForCausalLM(config).to(BF16).eval()
    with torch.no_grad():  # random init is small: scale the weights up a little so logits are not all ~0
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(4.0)
    return model


@needs_kernel
def test_patch_linears_on_tiny_llama():
    model = _tiny_llama()
    assert model.lm_head.weight is model.model.embed_tokens.weight
    keys_before = list(model.state_dict())
    params_before = {name: p for name, p in model.named_parameters()}
    ids = torch.randint(0, 300, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        plain = model(input_ids=ids, use_cache=False).logits

    n_linear = sum(type(m) is nn.Linear for m in model.modules())
    assert patch_linears(model) == n_linear == 2 * 7 + 1  # q k v o gate up down per layer, + lm_head
    assert patch_linears(model) == 0  # idempotent
    assert isinstance(model.lm_head, Bf16Linear) and isinstance(model.lm_head, nn.Linear)
    assert model.lm_head.weight is model.model.embed_tokens.weight  # still tied
    assert list(model.state_dict()) == keys_before
    assert all(p is params_before[name] for name, p in model.named_parameters())

    with torch.inference_mode():
        patched = model(input_ids=ids, use_cache=False).logits
    assert patched.dtype == plain.dtype
    # torch's bf16 linear also accumulates in fp32 and rounds once (here the logits even come out identical), but
    # in general the fp32 summation order differs, an activation can round one bf16 ulp apart and the difference
    # propagates: compare with a model-level tolerance and the argmax.
    assert (patched.float() - plain.float()).abs().max().item() <= 0.02 * plain.float().abs().max().item()
    assert (patched.argmax(-1) == plain.argmax(-1)).float().mean().item() >= 0.95

    assert unpatch_linears(model) == n_linear
    assert not any(isinstance(m, Bf16Linear) for m in model.modules())
    with torch.inference_mode():
        assert torch.equal(model(input_ids=ids, use_cache=False).logits, plain)


@needs_kernel
def test_patched_model_logits_per_position_match_incremental_decoding():
    """What speculative verification relies on: the logits of positions checked together in one forward equal,
    bitwise, those of one-token-at-a-time forwards with the KV cache. The kernel makes the linear layers exact;
    the rest must be too, so attention is "eager" here (torch's SDPA with several queries is not bitwise equal
    to one query at a time in bf16, with or without the kernel)."""
    transformers = pytest.importorskip("transformers")
    model = _tiny_llama()
    patch_linears(model)
    ids = torch.randint(0, 300, (1, 10), generator=torch.Generator().manual_seed(2))
    keyword = cache_keyword(model.forward)  # `cache` where transformers takes it (no deprecation warning)
    with torch.inference_mode():
        prefix = model(input_ids=ids[:, :4], use_cache=True)
        cache_many = prefix.past_key_values
        many = model(input_ids=ids[:, 4:], **{keyword: cache_many}, use_cache=True).logits[0]
        prefix = model(input_ids=ids[:, :4], use_cache=True)
        cache_one = prefix.past_key_values
        one = []
        for t in range(4, 10):
            one.append(model(input_ids=ids[:, t:t + 1], **{keyword: cache_one}, use_cache=True).logits[0, 0])
        one = torch.stack(one)
    assert isinstance(cache_many, transformers.Cache)
    assert torch.equal(many.view(torch.int16), one.view(torch.int16))


@needs_kernel
def test_patched_module_falls_back_when_kernel_does_not_apply():
    torch.manual_seed(0)
    lin = nn.Linear(32, 16).to(BF16)
    assert patch_linears(lin) == 1 and type(lin) is Bf16Linear
    x = _rand(3, 32, seed=30)
    # autograd recording (weight requires grad): plain F.linear, gradients work
    y = lin(x)
    assert y.requires_grad
    y.float().sum().backward()
    assert lin.weight.grad is not None
    with torch.no_grad():
        assert torch.equal(lin(x), bf16_linear(x, lin.weight, lin.bias))
    fp32 = nn.Linear(8, 4)
    assert patch_linears(fp32) == 0 and type(fp32) is nn.Linear  # only bf16 weights are patched


# ------------------------------------------------------------------------------------------------- switches

def test_env_var_disables_kernel(monkeypatch):
    monkeypatch.setenv("TASKSPEC_NO_KERNEL", "1")
    kernel_module._reset()
    try:
        assert not kernel_available()
        assert "TASKSPEC_NO_KERNEL" in kernel_unavailable_reason()
        lin = nn.Linear(8, 4).to(BF16)
        assert patch_linears(lin) == 0 and type(lin) is nn.Linear
        with pytest.raises(RuntimeError, match="TASKSPEC_NO_KERNEL"):
            bf16_linear(_rand(2, 8), lin.weight)
    finally:
        monkeypatch.delenv("TASKSPEC_NO_KERNEL")
        kernel_module._reset()
    assert kernel_available() == (kernel_unavailable_reason() is None)


def test_env_var_disables_kernel_in_a_fresh_process():
    env = dict(os.environ, TASKSPEC_NO_KERNEL="1")
    code = ("from taskspec.kernels import kernel_available, kernel_unavailable_reason as r; "
            "assert not kernel_available(); print(r())")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "TASKSPEC_NO_KERNEL" in result.stdout


def test_unavailable_reasons_do_not_raise(monkeypatch, tmp_path):
    """A failing compiler or a CPU without AVX2 makes the kernel unavailable with a reason, never an exception."""
    fake_cxx = tmp_path / "fake-cxx"
    fake_cxx.write_text("#!/bin/sh\necho 'fake-cxx: error: no thanks' >&2\nexit 1\n")
    fake_cxx.chmod(0o755)
    monkeypatch.setenv("TASKSPEC_CACHE", str(tmp_path))  # nothing cached: a build is attempted
    monkeypatch.setenv("CXX", str(fake_cxx))
    kernel_module._reset()
    try:
        with pytest.warns(RuntimeWarning, match="compilation failed"):
            assert not kernel_available()
        assert "compilation failed" in kernel_unavailable_reason()
        assert "no thanks" in kernel_unavailable_reason()  # the compiler's message is kept
        assert not list((tmp_path / "kernels").glob("*.so"))
        kernel_module._reset()
        monkeypatch.setattr(build, "cpu_problem", lambda: "CPU lacks avx2")
        assert not kernel_available() and kernel_unavailable_reason() == "CPU lacks avx2"
    finally:
        monkeypatch.undo()
        kernel_module._reset()


@needs_kernel
def test_cold_build_into_taskspec_cache(tmp_path):
    """A fresh process with an empty $TASKSPEC_CACHE compiles the kernel there (quietly) and can use it."""
    env = dict(os.environ, TASKSPEC_CACHE=str(tmp_path))
    env.pop("TASKSPEC_NO_KERNEL", None)
    code = ("import torch; from taskspec.kernels import kernel_available, kernel_library_path, bf16_linear; "
            "assert kernel_available(); print(kernel_library_path()); "
            "print(bf16_linear(torch.ones(2, 20, dtype=torch.bfloat16), torch.ones(3, 20, dtype=torch.bfloat16))"
            ".sum().item())")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    path, total = result.stdout.split()
    assert Path(path).parent == tmp_path / "kernels" and Path(path).is_file()
    assert Path(path).with_suffix(".json").is_file()  # the build record the next load checks it against
    assert float(total) == 2 * 3 * 20
    assert "warning" not in result.stderr.lower()


def test_cpu_flag_check_reads_proc_cpuinfo():
    problem = build.cpu_problem()
    if problem is None:
        flags = open("/proc/cpuinfo").read()
        assert " avx2" in flags and " fma" in flags
    else:
        assert isinstance(problem, str) and problem


@needs_kernel
def test_calls_are_named_in_the_profiler():
    x, weight = _rand(2, 16), _rand(8, 16)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        bf16_linear(x, weight)
    assert any(e.key == "taskspec::bf16_linear" for e in prof.key_averages())
