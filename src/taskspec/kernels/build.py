"""Build taskspec's C++ kernels on first use and load them with ctypes (shared by bf16_linear.py and attention.py).

A kernel source (``<name>.cpp``, which may include the headers next to it, e.g. ``bf16_common.h``) is compiled with
the system C++ compiler (``$CXX``, else ``c++``/``g++``) into ``$TASKSPEC_CACHE/kernels`` (else
``~/.cache/taskspec/kernels``) as ``<name>-<key>.so``, where the key hashes what it is built from (source and headers,
flags, compiler, ABI version). Beside it, ``<name>-<key>.json`` records that recipe and the SHA-256 of the library's
bytes. A library is loaded only when its record matches the recipe and its bytes the recorded hash; anything else (a
file of the right name planted or corrupted in the cache, a build that died before its record was written) is
rebuilt, never loaded. Builds hold a per-key file lock and land by atomic rename, so concurrent processes are safe.
The record guards against stray and damaged files, not against someone who can rewrite both files: keep the cache
directory writable only by you.

``TASKSPEC_NO_KERNEL=1`` disables every kernel. ``load_kernel_library`` never raises: a kernel that cannot be used
reports why, and its callers fall back to PyTorch.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import platform
import shutil
import subprocess
import threading
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from ..io_utils import write_json_atomic

__all__ = ["DISABLE_ENV", "LazyKernel", "build_library", "cache_dir", "cpu_problem", "find_compiler",
           "load_kernel_library", "profiler_enabled"]

KERNEL_DIR = Path(__file__).parent  # the sources and the headers they include
CXXFLAGS = ("-O3", "-mavx2", "-mfma", "-mf16c", "-fopenmp", "-ffp-contract=off", "-fPIC", "-std=c++17")
LDFLAGS = ("-shared", "-fopenmp")
REQUIRED_CPU_FLAGS = ("avx2", "fma", "f16c")
DISABLE_ENV = "TASKSPEC_NO_KERNEL"
BUILD_TIMEOUT_S = 300

# True while torch.profiler records (kernels then name their ctypes calls, which are no torch operators)
profiler_enabled = getattr(torch._C._autograd, "_profiler_enabled", lambda: False)


# ------------------------------------------------------------------------------------------ environment checks

def cache_dir() -> Path:
    """Where built kernels live: $TASKSPEC_CACHE/kernels, else ~/.cache/taskspec/kernels."""
    return Path(os.environ.get("TASKSPEC_CACHE", Path.home() / ".cache" / "taskspec")) / "kernels"


def cpu_problem() -> str | None:
    """Why this CPU cannot run the kernels (x86-64 Linux with AVX2, FMA, F16C), or None when it can."""
    if platform.system() != "Linux" or platform.machine().lower() not in ("x86_64", "amd64"):
        return f"needs an x86-64 Linux CPU (this is {platform.system()} {platform.machine()})"
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError as exc:
        return f"cannot read /proc/cpuinfo: {exc}"
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.partition(":")[2].split())
            break
    missing = [f for f in REQUIRED_CPU_FLAGS if f not in flags]
    return f"CPU lacks {', '.join(missing)}" if missing else None


def find_compiler() -> str | None:
    """The C++ compiler to use: $CXX, else c++, else g++ (an absolute path), or None."""
    for candidate in (os.environ.get("CXX"), "c++", "g++"):
        if candidate and shutil.which(candidate):
            return shutil.which(candidate)
    return None


# ------------------------------------------------------------------------------------------------------ build

def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _recipe(source: Path, abi_version: int, compiler: str) -> dict:
    """What a library is built from; its hash names the library, and its record repeats it."""
    inputs = [source, *sorted(KERNEL_DIR.glob("*.h"))]  # any header the source may include
    listing = "".join(f"{p.name} {_sha256(p.read_bytes())}\n" for p in inputs)
    return {
        "source": source.name,
        "source_sha256": _sha256(listing.encode()),  # the source and the headers
        "cxxflags": list(CXXFLAGS),
        "ldflags": list(LDFLAGS),
        "compiler": compiler,
        "abi_version": abi_version,
    }


def _record_path(library: Path) -> Path:
    return library.with_suffix(".json")


def _verified(library: Path, recipe: dict) -> bool:
    """True when ``library``'s record matches ``recipe`` and its bytes match the recorded SHA-256."""
    try:
        record = json.loads(_record_path(library).read_text())
        data = library.read_bytes()
    except (OSError, ValueError):  # missing or unreadable file, malformed record
        return False
    return (isinstance(record, dict) and {k: record.get(k) for k in recipe} == recipe
            and record.get("library_sha256") == _sha256(data))


def _compile(compiler: str, source: Path, output: Path) -> None:
    """Run the compiler; raises RuntimeError (with the end of its messages) when it fails or does not run."""
    cmd = [compiler, *CXXFLAGS, f"-I{KERNEL_DIR}", str(source), "-o", str(output), *LDFLAGS]
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeError(f"compiler did not run: {exc}") from exc
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-20:])
        raise RuntimeError(f"compilation failed ({' '.join(cmd)}):\n{tail}")


def build_library(source: Path, name: str, abi_version: int, compiler: str) -> Path:
    """``cache_dir()/<name>-<key>.so`` built from ``source``: the cached one when its record vouches for it, else a
    fresh build (replacing whatever file had that name).

    Safe when several processes build at once (file lock, atomic renames: the library first, then its record, so a
    crash in between leaves a library without a record, which the next call rebuilds). Raises RuntimeError when the
    compiler fails or does not run.
    """
    source = Path(source)
    recipe = _recipe(source, abi_version, compiler)
    key = _sha256(json.dumps(recipe, sort_keys=True).encode())[:16]
    directory = cache_dir()
    library = directory / f"{name}-{key}.so"
    if _verified(library, recipe):
        return library
    directory.mkdir(parents=True, exist_ok=True)
    import fcntl  # Linux only, like the rest of the build path (imported here so that importing never fails)

    with open(directory / f"{name}-{key}.lock", "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)  # another process may be building the same file
        if _verified(library, recipe):
            return library
        if library.exists():
            warnings.warn(f"{library} does not match its build record; rebuilding it", RuntimeWarning, stacklevel=2)
        tmp = directory / f".{name}-{key}.{os.getpid()}.tmp.so"
        try:
            _compile(compiler, source, tmp)
            digest = _sha256(tmp.read_bytes())
            os.replace(tmp, library)  # atomic: readers never see a partial file
        finally:
            tmp.unlink(missing_ok=True)
        write_json_atomic(_record_path(library), {**recipe, "library_sha256": digest})
    return library


# ------------------------------------------------------------------------------------------------------- load

def load_kernel_library(source: Path, name: str, abi_version: int, setup: Callable[[ctypes.CDLL], object], *,
                        what: str, disable_envs: tuple[str, ...] = (DISABLE_ENV,)) -> dict:
    """Build (on first use) and load a C++ kernel with a plain C ABI; never raises.

    Checks, in order: the ``disable_envs`` switches, the CPU (``cpu_problem``), a C++ compiler; then builds
    ``source`` with ``build_library``, loads it with ctypes, checks that ``ts_<name>_abi_version()`` returns
    ``abi_version`` and calls ``setup(lib)`` (which declares argtypes and returns the entry point).
    Returns ``{"fn": setup's result or None, "reason": None or why not, "path": the .so or None}``; a failed
    build or load also emits a RuntimeWarning (``what`` names the kernel in the messages).
    """
    for env in disable_envs:
        if os.environ.get(env, "").strip() not in ("", "0"):
            return {"fn": None, "reason": f"disabled by {env}={os.environ[env]}", "path": None}
    problem = cpu_problem()
    if problem:
        return {"fn": None, "reason": problem, "path": None}
    compiler = find_compiler()
    if compiler is None:
        return {"fn": None, "reason": "no C++ compiler found ($CXX, c++, g++)", "path": None}
    try:
        path = build_library(source, name, abi_version, compiler)
        # torch is imported, so the library's libgomp.so.1 resolves to the OpenMP runtime torch already loaded.
        lib = ctypes.CDLL(str(path))
        got = getattr(lib, f"ts_{name}_abi_version")()
        if got != abi_version:
            raise RuntimeError(f"{path} has ABI version {got}, want {abi_version}")
        fn = setup(lib)
    except Exception as exc:  # never raise from here: callers fall back to torch
        reason = f"{what} unavailable: {exc}"
        warnings.warn(reason, RuntimeWarning, stacklevel=4)
        return {"fn": None, "reason": reason, "path": None}
    return {"fn": fn, "reason": None, "path": path}


class LazyKernel:
    """A kernel library built and loaded once, on first use, thread-safely; never raises.

    state(): {"fn": ctypes function or None, "reason": why not (str) or None, "path": the library or None}.
    """

    def __init__(self, load: Callable[[], dict]):
        self._load = load
        self._lock = threading.Lock()
        self._state: dict | None = None

    def state(self) -> dict:
        state = self._state
        if state is None:
            with self._lock:
                if self._state is None:
                    self._state = self._load()
                state = self._state
        return state

    def reset(self) -> None:
        """Forget the loaded state, so the next call probes again (tests: environment changes)."""
        with self._lock:
            self._state = None
