"""The batch-invariant attention kernel (taskspec.kernels.attention): accuracy against a float64 masked softmax,
bitwise invariance (a row alone == the same row inside a tree pass, any thread count), the transformers
integration, and end to end: bf16 tree verification and bf16 speculative greedy decoding equal plain decoding token
for token on tiny Gemma 3 and Llama models."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import PROMPT
from taskspec.kernels import patch_linears
from taskspec.kernels.attention import (
    ATTENTION_NAME,
    attention_kernel_available,
    attention_kernel_unavailable_reason,
    invariant_attention,
    invariant_attention_forward,
    reference_attention,
    use_invariant_attention,
    use_sdpa_attention,
)

attention_module = importlib.import_module("taskspec.kernels.attention")

needs_kernel = pytest.mark.skipif(not attention_kernel_available(),
                                  reason=f"attention kernel unavailable: {attention_kernel_unavailable_reason()}")

BF16 = torch.bfloat16
U = 2.0 ** -24  # fp32 unit roundoff


def _rand(*shape, dtype=BF16, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g) * scale).to(dtype)


def _qkv(hq, hkv, n, length, d, dtype=BF16, seed=0):
    # scale the queries so that softmaxes are neither flat nor one-hot
    return (_rand(1, hq, n, d, dtype=dtype, seed=seed, scale=1.5), _rand(1, hkv, length, d, dtype=dtype, seed=seed + 1),
            _rand(1, hkv, length, d, dtype=dtype, seed=seed + 2))


def _random_parents(n, seed):
    g = torch.Generator().manual_seed(seed)
    return [-1] + [int(torch.randint(-1, i, (1,), generator=g)) for i in range(1, n)]


def _ancestors(parents, i):
    path = []
    while i >= 0:
        path.append(i)
        i = parents[i]
    return path[::-1]  # root-most first, i last


def _tree_mask(n, length, seed, past_density=1.0):
    """[n, L] mask: the first L - n slots are the past (each row sees a random subset of density past_density), the
    last n slots a tree (each row sees itself and its ancestors)."""
    g = torch.Generator().manual_seed(seed)
    past = length - n
    parents = _random_parents(n, seed)
    mask = torch.zeros(n, length, dtype=torch.bool)
    mask[:, :past] = torch.rand(n, past, generator=g) < past_density
    for i in range(n):
        for a in _ancestors(parents, i):
            mask[i, past + a] = True
    return mask, parents


def assert_close_to_reference(out, q, k, v, mask, scaling, softcap=None):
    """The kernel computes the float64 reference's masked softmax in fp32 and rounds once to the output dtype.

    Error sources, per (row, head) with visible keys t = 1..T: each fp32 score is within (D + 2) u S_t of the exact
    one (S_t = scaling * sum_d |q_d k_td|: a blocked fp32 dot product plus the scaling), so every score difference
    s_t - m, hence every softmax weight, is off by a relative ~2 Delta, Delta = max_t (D + 2) u S_t; the exp adds a few
    ulps (allow 8 u) and the ascending fp32 sums T u each. The output is a convex combination of value rows, so
    |fp32 result - exact| <= max|v| (2 (2 Delta + 8 u) + 2 T u). Rounding to bf16 then adds at most half an ulp,
    2^-8 |result|. (softcap: tanh's slope is <= 1, plus a few ulps of tanhf.)
    """
    ref = reference_attention(q, k, v, mask, scaling, softcap, dtype=torch.float64)  # [1, n, Hq, D]
    assert out.shape == ref.shape and out.dtype == q.dtype
    b, hq, n, d = q.shape
    hkv, length = k.shape[1], k.shape[2]
    m = attention_module._as_bool_mask(mask, b, n, length)[:, None]  # [1, 1, n, L]
    kk = k.double().abs().repeat_interleave(hq // hkv, dim=1)
    s_abs = (q.double().abs() @ kk.transpose(-1, -2)) * scaling  # [1, Hq, n, L]
    delta = ((d + 2) * U * s_abs + (8 * U if softcap else 0.0)).masked_fill(~m, 0).amax(-1)  # [1, Hq, n]
    count = m.sum(-1).double()  # [1, 1, n]
    vmax = v.double().abs().amax()
    fp32_err = vmax * (2 * (2 * delta + 8 * U) + 2 * count * U)  # [1, Hq, n]
    fp32_err = fp32_err.transpose(1, 2)[..., None]  # [1, n, Hq, 1]
    a = out.double()
    rounding = 2.0 ** -8 if q.dtype == BF16 else 0.0
    bound = rounding * torch.maximum(a.abs(), ref.abs()) * 1.01 + fp32_err * 1.01 + 1e-30
    excess = (a - ref).abs() - bound
    assert excess.max().item() <= 0, f"error above the bound by {excess.max().item():.3g}"
    empty = ~m[0, 0].any(-1)  # rows that see nothing: zeros
    assert torch.equal(out[0, empty], torch.zeros_like(out[0, empty]))


# ---------------------------------------------------------------------------------------------------- accuracy

# (kind, n, L): a tree of n nodes needs L >= n (its last n slots)
MASK_CASES = [(kind, n, length) for kind in ("random", "tree") for n in (1, 3, 16) for length in (1, 7, 300)
              if kind == "random" or length >= n]


@needs_kernel
@pytest.mark.parametrize("heads", [(4, 1), (2, 2), (8, 2)], ids=lambda h: f"{h[0]}q{h[1]}kv")
@pytest.mark.parametrize("d", [8, 64, 256])
@pytest.mark.parametrize("kind,n,length", MASK_CASES)
def test_matches_reference_bf16(kind, n, length, d, heads):
    hq, hkv = heads
    seed = n * 1000 + length * 10 + d
    q, k, v = _qkv(hq, hkv, n, length, d, seed=seed)
    if kind == "tree":
        mask, _ = _tree_mask(n, length, seed, past_density=0.8)
    else:
        mask = torch.rand(n, length, generator=torch.Generator().manual_seed(seed)) < 0.6
        mask[0] = False  # one row that sees nothing
    scaling = d ** -0.5
    out = invariant_attention(q, k, v, mask, scaling)
    assert_close_to_reference(out, q, k, v, mask, scaling)


@needs_kernel
@pytest.mark.parametrize("d", [8, 24, 64, 100, 256])
@pytest.mark.parametrize("heads", [(4, 1), (6, 2), (3, 3)], ids=lambda h: f"{h[0]}q{h[1]}kv")
def test_matches_reference_fp32(d, heads):
    hq, hkv = heads
    q, k, v = _qkv(hq, hkv, 9, 133, d, dtype=torch.float32, seed=d)
    mask, _ = _tree_mask(9, 133, seed=d, past_density=0.9)
    out = invariant_attention(q, k, v, mask, 0.3)
    assert out.dtype == torch.float32
    assert_close_to_reference(out, q, k, v, mask, 0.3)


@needs_kernel
@pytest.mark.parametrize("dtype", [BF16, torch.float32], ids=["bf16", "fp32"])
def test_softcap_matches_reference(dtype):
    q, k, v = _qkv(4, 2, 5, 40, 64, dtype=dtype, seed=3)
    q = q * 4  # large scores, so the capping matters
    mask, _ = _tree_mask(5, 40, seed=3)
    out = invariant_attention(q, k, v, mask, 0.125, softcap=2.0)
    assert_close_to_reference(out, q, k, v, mask, 0.125, softcap=2.0)
    uncapped = invariant_attention(q, k, v, mask, 0.125)
    assert not torch.equal(out, uncapped)


@needs_kernel
def test_exact_cases():
    # one visible key: weight exactly 1, sum exactly 1, so the output is that value row exactly
    q, k, v = _qkv(4, 2, 6, 20, 40, seed=5)
    mask = torch.zeros(6, 20, dtype=torch.bool)
    for i in range(6):
        mask[i, 3 * i + 1] = True
    out = invariant_attention(q, k, v, mask)
    for i in range(6):
        for h in range(4):
            assert torch.equal(out[0, i, h], v[0, h // 2, 3 * i + 1])
    # equal keys: uniform weights; values that are small integers: exact sums and an exact division by 4
    k_same = torch.ones(1, 1, 4, 16, dtype=BF16)
    v_int = torch.arange(64, dtype=torch.float32).reshape(1, 1, 4, 16).to(BF16)
    out = invariant_attention(q[:, :2, :1, :16], k_same, v_int, torch.ones(1, 4, dtype=torch.bool))
    assert torch.equal(out[0, 0, 0].float(), v_int[0, 0].float().mean(0).to(BF16).float())


@needs_kernel
def test_masked_keys_are_never_read():
    """Masked slots may hold NaN / inf: rows that do not see them are unaffected (bitwise)."""
    q, k, v = _qkv(4, 1, 5, 30, 64, seed=6)
    mask, _ = _tree_mask(5, 30, seed=6)
    clean = invariant_attention(q, k, v, mask)
    # insert junk slots that no row sees
    junk = torch.full((1, 1, 3, 64), float("nan"), dtype=BF16)
    junk[0, 0, 1] = float("inf")
    k2 = torch.cat([k[:, :, :10], junk, k[:, :, 10:]], dim=2)
    v2 = torch.cat([v[:, :, :10], junk, v[:, :, 10:]], dim=2)
    mask2 = torch.cat([mask[:, :10], torch.zeros(5, 3, dtype=torch.bool), mask[:, 10:]], dim=1)
    assert torch.equal(invariant_attention(q, k2, v2, mask2), clean)


# ------------------------------------------------------------------------------------------- batch invariance

@needs_kernel
@pytest.mark.parametrize("dtype", [BF16, torch.float32], ids=["bf16", "fp32"])
@pytest.mark.parametrize("heads,d", [((4, 1), 256), ((2, 2), 64), ((8, 2), 8), ((2, 1), 16)])
@pytest.mark.parametrize("past_density", [1.0, 0.7])  # 0.7: e.g. a sliding window hides some of the past
def test_tree_row_equals_sequential_decoding(dtype, heads, d, past_density):
    """Row i of a tree pass (its ancestors at later, non-contiguous slots, siblings in between) == the same token
    decoded alone with its ancestors contiguous after the past, as in sequential decoding. Bitwise."""
    hq, hkv = heads
    n, past = 16, 45
    q, k, v = _qkv(hq, hkv, n, past + n, d, dtype=dtype, seed=d + hq)
    mask, parents = _tree_mask(n, past + n, seed=d, past_density=past_density)
    tree = invariant_attention(q, k, v, mask)
    for i in range(n):
        path = _ancestors(parents, i)
        slots = list(range(past)) + [past + a for a in path]
        k_seq, v_seq = k[:, :, slots], v[:, :, slots]
        mask_seq = torch.cat([mask[i, :past], torch.ones(len(path), dtype=torch.bool)])[None]
        alone = invariant_attention(q[:, :, i:i + 1], k_seq, v_seq, mask_seq)
        assert torch.equal(alone.view(-1).view(torch.int32 if dtype == torch.float32 else torch.int16),
                           tree[:, i:i + 1].reshape(-1).view(torch.int32 if dtype == torch.float32 else torch.int16)), i
        # and inside a different batch of rows: the path itself, verified as a chain (n = len(path))
        chain_q = q[:, :, path]
        chain_mask = torch.cat([mask[i, :past].expand(len(path), past),
                                torch.ones(len(path), len(path), dtype=torch.bool).tril()], dim=1)
        chain = invariant_attention(chain_q, k_seq, v_seq, chain_mask)
        assert torch.equal(chain[:, -1], tree[:, i])


@needs_kernel
def test_independent_of_thread_count_and_row_subsets():
    q, k, v = _qkv(8, 2, 24, 700, 128, seed=7)
    mask, _ = _tree_mask(24, 700, seed=7, past_density=0.9)
    expected = invariant_attention(q, k, v, mask, num_threads=1)
    for threads in (2, 3, 5):
        assert torch.equal(invariant_attention(q, k, v, mask, num_threads=threads), expected), threads
    old = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            assert torch.equal(invariant_attention(q, k, v, mask), expected)
            for rows in ([3], [0, 5, 23], list(range(7, 19))):
                assert torch.equal(invariant_attention(q[:, :, rows], k, v, mask[rows]), expected[:, rows])
    finally:
        torch.set_num_threads(old)


@needs_kernel
def test_strided_inputs_equal_contiguous():
    """A cropped cache (K / V views with a longer row stride per head) and a transposed query give the same bits."""
    q, k, v = _qkv(4, 2, 6, 50, 64, seed=8)
    mask, _ = _tree_mask(6, 50, seed=8)
    expected = invariant_attention(q, k, v, mask)
    big_k = torch.cat([k, _rand(1, 2, 30, 64, seed=9)], dim=2)[:, :, :50]
    big_v = torch.cat([v, _rand(1, 2, 30, 64, seed=10)], dim=2)[:, :, :50]
    assert not big_k.is_contiguous()
    q_t = q.transpose(1, 2).contiguous().transpose(1, 2)  # [1, H, n, D] view of a [1, n, H, D] tensor
    assert not q_t.is_contiguous()
    assert torch.equal(invariant_attention(q_t, big_k, big_v, mask), expected)
    mask4 = mask[None, None]
    assert torch.equal(invariant_attention(q, k, v, mask4), expected)
    wide = torch.cat([mask, torch.ones(6, 9, dtype=torch.bool)], dim=1)  # wider than L: cut to L
    assert torch.equal(invariant_attention(q, k, v, wide), expected)


@needs_kernel
def test_batch_dimension():
    q, k, v = (torch.cat([t, t.flip(2)]) for t in _qkv(4, 2, 5, 40, 32, seed=11))
    mask = torch.stack([_tree_mask(5, 40, seed=s)[0] for s in (1, 2)])  # [2, n, L]: one mask per batch row
    out = invariant_attention(q, k, v, mask)
    for b in range(2):
        assert torch.equal(out[b:b + 1], invariant_attention(q[b:b + 1], k[b:b + 1], v[b:b + 1], mask[b]))
    shared = invariant_attention(q, k, v, mask[0])  # one mask for both
    assert torch.equal(shared[0:1], invariant_attention(q[:1], k[:1], v[:1], mask[0]))


# --------------------------------------------------------------------------------- the transformers function

class _Module(torch.nn.Module):
    def __init__(self, groups, is_causal=True):
        super().__init__()
        self.num_key_value_groups = groups
        self.is_causal = is_causal


@needs_kernel
def test_forward_contract_and_masks():
    q, k, v = _qkv(4, 2, 5, 12, 32, seed=12)
    module = _Module(2).eval()
    mask, _ = _tree_mask(5, 12, seed=12)
    out, weights = invariant_attention_forward(module, q, k, v, mask[None, None], scaling=0.2)
    assert weights is None and out.shape == (1, 5, 4, 32) and out.is_contiguous()
    assert torch.equal(out, invariant_attention(q, k, v, mask, 0.2))
    # additive float mask (0 / dtype minimum, or -inf) == the boolean one
    for masked_value in (torch.finfo(BF16).min, float("-inf")):
        additive = torch.zeros(1, 1, 5, 12, dtype=BF16).masked_fill(~mask, masked_value)
        assert torch.equal(invariant_attention_forward(module, q, k, v, additive, scaling=0.2)[0], out)
    # None: causal for the last n positions; with a sliding window; bidirectional when the module is not causal
    causal = torch.ones(12, 12, dtype=torch.bool).tril()[-5:]
    assert torch.equal(invariant_attention_forward(module, q, k, v, None, scaling=0.2)[0],
                       invariant_attention(q, k, v, causal, 0.2))
    window = causal & (torch.arange(7, 12)[:, None] - torch.arange(12)[None, :] < 3)
    assert torch.equal(invariant_attention_forward(module, q, k, v, None, scaling=0.2, sliding_window=3)[0],
                       invariant_attention(q, k, v, window, 0.2))
    assert torch.equal(invariant_attention_forward(_Module(2, is_causal=False), q, k, v, None, scaling=0.2)[0],
                       invariant_attention(q, k, v, torch.ones(5, 12, dtype=torch.bool), 0.2))
    # default scaling: 1 / sqrt(D)
    assert torch.equal(invariant_attention_forward(module, q, k, v, mask[None, None])[0],
                       invariant_attention(q, k, v, mask, 32 ** -0.5))


@needs_kernel
def test_forward_falls_back_to_sdpa():
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    module = _Module(2).eval()
    mask, _ = _tree_mask(5, 12, seed=13)
    # fp16: not a kernel dtype
    q, k, v = (t.half() for t in _qkv(4, 2, 5, 12, 32, dtype=torch.float32, seed=13))
    ours = invariant_attention_forward(module, q, k, v, mask[None, None], scaling=0.2)[0]
    assert torch.equal(ours, sdpa_attention_forward(module, q, k, v, mask[None, None], scaling=0.2)[0])
    # autograd recording: no backward in the kernel
    q, k, v = _qkv(4, 2, 5, 12, 32, dtype=torch.float32, seed=14)
    q.requires_grad_()
    ours = invariant_attention_forward(module, q, k, v, mask[None, None], scaling=0.2)[0]
    ours.sum().backward()
    assert q.grad is not None
    # softcap outside the kernel (SDPA refuses it): the fp32 reference, same masks
    causal = torch.ones(12, 12, dtype=torch.bool).tril()[-5:]
    ours = invariant_attention_forward(module, q, k, v, None, scaling=0.2, softcap=3.0)[0]
    torch.testing.assert_close(ours, reference_attention(q, k, v, causal, 0.2, softcap=3.0))
    # an additive mask with real biases
    bias = torch.randn(1, 1, 5, 12)
    with torch.no_grad():
        ours = invariant_attention_forward(module, q, k, v, bias, scaling=0.2)[0]
        assert torch.equal(ours, sdpa_attention_forward(module, q, k, v, bias, scaling=0.2)[0])


def test_unavailable_kernel_leaves_model_on_sdpa(monkeypatch):
    from conftest import tiny_llama

    target = tiny_llama()
    monkeypatch.setenv("TASKSPEC_NO_ATTENTION_KERNEL", "1")
    attention_module._reset()
    try:
        assert not attention_kernel_available()
        assert "TASKSPEC_NO_ATTENTION_KERNEL" in attention_kernel_unavailable_reason()
        assert use_invariant_attention(target) is False
        assert target.model.config._attn_implementation == "sdpa"
        # a model already switched keeps running (on SDPA) when the kernel goes away
        q, k, v = _qkv(4, 2, 5, 5, 16, dtype=torch.float32, seed=15)  # n == L: SDPA's causal = ours
        out, _ = invariant_attention_forward(_Module(2), q, k, v, None, scaling=0.25)
        torch.testing.assert_close(out, reference_attention(q, k, v, None, 0.25))
    finally:
        monkeypatch.delenv("TASKSPEC_NO_ATTENTION_KERNEL")
        attention_module._reset()


def test_env_var_disables_kernel_in_a_fresh_process():
    env = dict(os.environ, TASKSPEC_NO_KERNEL="1")
    code = ("from taskspec.kernels.attention import attention_kernel_available as a, "
            "attention_kernel_unavailable_reason as r; assert not a(); print(r())")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "TASKSPEC_NO_KERNEL" in result.stdout


def test_failing_compiler_gives_a_reason_not_an_exception(monkeypatch, tmp_path):
    fake_cxx = tmp_path / "fake-cxx"
    fake_cxx.write_text("#!/bin/sh\necho 'fake-cxx: error: no thanks' >&2\nexit 1\n")
    fake_cxx.chmod(0o755)
    monkeypatch.setenv("TASKSPEC_CACHE", str(tmp_path))  # nothing cached: a build is attempted
    monkeypatch.setenv("CXX", str(fake_cxx))
    attention_module._reset()
    try:
        with pytest.warns(RuntimeWarning, match="compilation failed"):
            assert not attention_kernel_available()
        assert "no thanks" in attention_kernel_unavailable_reason()
        assert not list((tmp_path / "kernels").glob("*.so"))
        with pytest.raises(RuntimeError, match="compilation failed"):
            invariant_attention(*_qkv(2, 1, 1, 3, 8, seed=17))
    finally:
        monkeypatch.undo()
        attention_module._reset()


@needs_kernel
def test_cold_build_into_taskspec_cache(tmp_path):
    """A fresh process with an empty $TASKSPEC_CACHE compiles the kernel there (quietly) and can use it."""
    env = dict(os.environ, TASKSPEC_CACHE=str(tmp_path))
    env.pop("TASKSPEC_NO_KERNEL", None)
    env.pop("TASKSPEC_NO_ATTENTION_KERNEL", None)
    code = ("import torch; from taskspec.kernels.attention import attention_library_path, invariant_attention; "
            "print(attention_library_path()); "
            "q = torch.ones(1, 2, 1, 16, dtype=torch.bfloat16); k = torch.ones(1, 1, 5, 16, dtype=torch.bfloat16); "
            "print(invariant_attention(q, k, 3 * k, None).float().mean().item())")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    path, value = result.stdout.split()
    assert Path(path).parent == tmp_path / "kernels" and Path(path).name.startswith("attention-")
    assert Path(path).with_suffix(".json").is_file()  # the build record the next load checks it against
    assert float(value) == 3.0
    assert "warning" not in result.stderr.lower()


@needs_kernel
def test_calls_are_named_in_the_profiler():
    q, k, v = _qkv(2, 1, 2, 8, 16, seed=16)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        invariant_attention(q, k, v, None)
    assert any(e.key == "taskspec::attention" for e in prof.key_averages())


# ------------------------------------------------------------------------------------------------- end to end

def _bf16_target(kind, seed=0):
    """A tiny random bf16 model wrapped in CausalLM, with the linear kernel and the invariant attention."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, LlamaConfig, LlamaForCausalLM

    from taskspec.models.causal_lm import CausalLM

    torch.manual_seed(seed)
    if kind == "gemma3":
        config = Gemma3TextConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                                  num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                                  max_position_embeddings=512, sliding_window=6,
                                  layer_types=["sliding_attention", "full_attention"] * 2, attn_implementation="sdpa")
        model = Gemma3ForCausalLM(config)
    else:
        config = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                             attn_implementation="sdpa")
        model = LlamaForCausalLM(config)
    model = model.to(BF16).eval()
    with torch.no_grad():  # random init is small: sharper distributions make greedy paths less tie-prone
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(3.0)
    target = CausalLM(model, name=f"tiny-{kind}-bf16")
    assert patch_linears(model) > 0
    assert use_invariant_attention(target)
    return target


@needs_kernel
@pytest.mark.parametrize("kind", ["gemma3", "llama"])
def test_switching_attention_implementations(kind):
    target = _bf16_target(kind)
    hf = target.model
    assert all(m.config._attn_implementation == ATTENTION_NAME for m in hf.modules() if hasattr(m, "config"))
    ids = torch.tensor(PROMPT)
    from taskspec.models.cache import new_cache

    ours = target.forward(ids, new_cache()).logits
    # the model's own mask creation (no 4-D mask given) reaches the kernel with the same masks
    with torch.inference_mode():
        theirs = hf(input_ids=ids[None], use_cache=False).logits[0].float()
    assert torch.equal(ours, theirs)
    assert use_sdpa_attention(target)
    assert hf.config._attn_implementation == "sdpa"
    sdpa = target.forward(ids, new_cache()).logits
    scale = sdpa.abs().max().item()
    assert (sdpa - ours).abs().max().item() <= 0.05 * scale  # the same model, a different summation order
    assert use_invariant_attention(target.model)  # a bare PreTrainedModel works too
    assert torch.equal(target.forward(ids, new_cache()).logits, ours)


TREE_PATHS = [[5, 6, 7, 8], [5, 9, 10], [5, 9, 12, 13, 14], [11, 12, 13], [11, 15], [20]]


@needs_kernel
@pytest.mark.parametrize("kind", ["gemma3", "llama"])
def test_bf16_tree_pass_equals_sequential_decoding_bitwise(kind):
    """Per-node logits of one tree-masked pass == single-token forwards along each path, bit for bit (bf16). The
    Gemma 3 model's sliding window (6) is shorter than the past, so the window also acts inside the tree."""
    from taskspec.models.cache import new_cache
    from taskspec.engine.tree import DraftTree

    target = _bf16_target(kind)
    tree = DraftTree.from_paths(TREE_PATHS)
    past, root = PROMPT[:-1], PROMPT[-1]

    def prefilled():
        cache = new_cache()
        target.forward(torch.tensor(past), cache, logit_rows=None)
        return cache

    out = target.forward(torch.tensor((root, *tree.tokens)), prefilled(), tree.ancestor_mask(),
                         tree.position_offsets())
    for leaf in tree.leaves():
        path = tree.path_to(leaf)
        cache = prefilled()
        rows = []
        for token in [root] + [tree.tokens[node] for node in path]:
            rows.append(target.forward(torch.tensor([token]), cache).logits[0])
        sequential = torch.stack(rows)
        tree_rows = out.logits[[0] + [node + 1 for node in path]]
        assert torch.equal(tree_rows.view(torch.int32), sequential.view(torch.int32)), (leaf, path)


class _OracleTreeDrafter:
    """Proposes trees hiding the true greedy continuation (known in advance) among wrong branches; the true branch
    is right for its first `right` tokens only, so steps accept, reject and compact the cache."""

    needs_target_hidden = False
    name = "oracle-tree"

    def __init__(self, prompt, continuation, vocab, depth=4, right=3):
        self.full = list(prompt) + list(continuation)
        self.vocab, self.depth, self.right = vocab, depth, right

    def reset(self, prompt_ids, target_hidden=None):
        pass

    def observe(self, committed, target_hidden=None):
        pass

    def propose(self, context):
        from taskspec.engine.tree import DraftTree

        n = len(context.tokens)
        truth = self.full[n:n + min(self.depth, context.max_depth)]
        if not truth:
            return DraftTree.empty()
        wrong = lambda t: (t + 1) % self.vocab  # noqa: E731
        draft = truth[:self.right] + [wrong(t) for t in truth[self.right:]]
        decoys = [[wrong(wrong(t)) for t in truth], [wrong(truth[0])] + truth[1:], truth[:1] + [wrong(t) for t in truth[1:]]]
        return DraftTree.from_paths(decoys[:1] + [draft] + decoys[1:])


def _prompts(count, seed):
    g = torch.Generator().manual_seed(seed)
    prompts = []
    for _ in range(count):
        length = int(torch.randint(4, 20, (1,), generator=g))
        base = torch.randint(1, 97, (length,), generator=g).tolist()
        prompts.append(base + base[: length // 2])  # some repetition for prompt lookup
    return prompts


@needs_kernel
@pytest.mark.parametrize("kind", ["gemma3", "llama"])
def test_bf16_speculative_greedy_equals_plain_greedy(kind):
    """The property that matters: in bf16, greedy speculative decoding with tree drafts (n-gram trees and an oracle
    that mixes right and wrong branches) emits exactly the tokens of plain one-token-at-a-time decoding."""
    from taskspec.drafters.ngram import NgramDrafter
    from taskspec.engine.drafter import NoDrafter
    from taskspec.engine.decode import GenerationConfig, generate

    target = _bf16_target(kind)
    config = GenerationConfig(max_new_tokens=48, stop_on_eos=False)
    emitted = {"ngram": 0, "oracle": 0}
    steps = {"ngram": 0, "oracle": 0}
    for prompt in _prompts(12, seed=1 if kind == "gemma3" else 2):
        plain = generate(target, NoDrafter(), prompt, config)
        assert plain.stats.target_steps == 48
        for name, drafter in (("ngram", NgramDrafter(depth=5, branches=4)),
                              ("oracle", _OracleTreeDrafter(prompt, plain.token_ids, target.vocab_size))):
            result = generate(target, drafter, prompt, config)
            assert result.token_ids == plain.token_ids, (name, prompt)
            emitted[name] += result.stats.new_tokens
            steps[name] += result.stats.target_steps
    # drafts were accepted: every step is not just the bonus token
    assert emitted["oracle"] / steps["oracle"] > 2.5
    assert emitted["ngram"] / steps["ngram"] > 1.2
