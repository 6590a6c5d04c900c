"""The kernel build cache (taskspec.kernels.build): a cached library is loaded only when its build record vouches for
its bytes; anything else under its name is rebuilt, never loaded. Uses a tiny C++ source (fast to compile)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import warnings

import pytest

from taskspec.kernels import build

pytestmark = pytest.mark.skipif(build.find_compiler() is None or build.cpu_problem() is not None,
                                reason="needs a C++ compiler and an x86-64 Linux CPU with AVX2")

TINY = 'extern "C" int ts_tiny_abi_version() { return 1; }\nextern "C" int ts_tiny_value() { return 42; }\n'

# a library of the same name that must never be loaded: loading it runs its constructor, which leaves a marker file
PLANTED = """#include <cstdio>
__attribute__((constructor)) static void mark() { std::FILE* f = std::fopen("MARKER", "w"); if (f) std::fclose(f); }
extern "C" int ts_tiny_abi_version() { return 1; }
extern "C" int ts_tiny_value() { return 666; }
"""


def _setup(lib):
    return lib.ts_tiny_value


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """(source, compiler) with $TASKSPEC_CACHE in tmp_path."""
    monkeypatch.setenv("TASKSPEC_CACHE", str(tmp_path / "cache"))
    source = tmp_path / "tiny.cpp"
    source.write_text(TINY)
    return source, build.find_compiler()


def _planted_library(tmp_path, compiler):
    """The bytes of PLANTED compiled, and the marker path its constructor creates."""
    marker = tmp_path / "loaded-the-planted-library"
    src = tmp_path / "planted.cpp"
    src.write_text(PLANTED.replace("MARKER", str(marker)))
    out = tmp_path / "planted.so"
    subprocess.run([compiler, "-shared", "-fPIC", str(src), "-o", str(out)], check=True, capture_output=True)
    return out.read_bytes(), marker


def _warned_mismatch(caught) -> bool:
    return any(issubclass(w.category, RuntimeWarning) and "does not match its build record" in str(w.message)
               for w in caught)


def test_build_writes_a_record_of_what_it_built(tiny):
    source, compiler = tiny
    library = build.build_library(source, "tiny", 1, compiler)
    record = json.loads(library.with_suffix(".json").read_text())
    assert record["library_sha256"] == hashlib.sha256(library.read_bytes()).hexdigest()
    assert record["source"] == "tiny.cpp" and record["compiler"] == compiler and record["abi_version"] == 1
    assert "-ffp-contract=off" in record["cxxflags"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a verified library is reused quietly, not rebuilt
        mtime = library.stat().st_mtime_ns
        assert build.build_library(source, "tiny", 1, compiler) == library
        assert library.stat().st_mtime_ns == mtime
    assert not list(library.parent.glob(".*tmp*"))  # no temporary file left behind


def test_a_tampered_library_is_rebuilt(tiny):
    source, compiler = tiny
    library = build.build_library(source, "tiny", 1, compiler)
    good = library.read_bytes()
    tampered = good[:-1] + bytes([good[-1] ^ 1])  # one bit flipped, record untouched
    library.write_bytes(tampered)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert build.build_library(source, "tiny", 1, compiler) == library
    kept = library.read_bytes() == tampered
    assert not kept, "the tampered library was kept"
    assert hashlib.sha256(library.read_bytes()).hexdigest() == json.loads(
        library.with_suffix(".json").read_text())["library_sha256"]
    assert _warned_mismatch(caught)


@pytest.mark.parametrize("record", ["missing", "stale"])
def test_a_planted_library_is_never_loaded(tiny, tmp_path, record):
    """A file put under the library's name (no record, or the record of another build) is rebuilt, not loaded."""
    source, compiler = tiny
    library = build.build_library(source, "tiny", 1, compiler)  # learn the name; never loaded in this process
    planted, marker = _planted_library(tmp_path, compiler)
    library.write_bytes(planted)
    if record == "missing":
        library.with_suffix(".json").unlink()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        state = build.load_kernel_library(source, "tiny", 1, _setup, what="tiny kernel", disable_envs=())
    assert not marker.exists(), "the planted library was loaded"
    kept = library.read_bytes() == planted
    assert not kept, "the planted library was kept"
    assert state["reason"] is None and state["path"] == library
    assert state["fn"]() == 42
    assert _warned_mismatch(caught)


def test_a_changed_header_gives_a_new_library(tiny, tmp_path, monkeypatch):
    """Headers next to the sources are part of what a library is built from (the kernels include bf16_common.h)."""
    source, compiler = tiny
    headers = tmp_path / "headers"
    headers.mkdir()
    shutil.copy(build.KERNEL_DIR / "bf16_common.h", headers)
    monkeypatch.setattr(build, "KERNEL_DIR", headers)
    first = build.build_library(source, "tiny", 1, compiler)
    (headers / "bf16_common.h").write_text((headers / "bf16_common.h").read_text() + "\n// changed\n")
    second = build.build_library(source, "tiny", 1, compiler)
    assert second != first and first.is_file() and second.is_file()
