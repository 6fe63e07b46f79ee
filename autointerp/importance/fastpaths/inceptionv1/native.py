"""Native loops (``kernels.c``) for the InceptionV1 path's tiers, compiled once per machine.

Some of the path's elementwise work is a tiny convolution per pair followed by a ReLU and a mean
over positions. ``torch.compile`` fuses it into one loop but writes the (pairs, positions, outputs)
intermediate to memory and reloads each weight per position. The
C loop in ``kernels.c`` computes it as a small register-blocked product per pair instead (4
positions × 16 outputs), and the rank-one fit that precedes it reads each pair's change twice
instead of materialising it (:func:`rank_one_pooled`, :func:`rank_one_fit`).

The source is compiled with the system C compiler (``$CC``, else ``cc``, ``gcc`` or ``clang``;
``-O3 -march=native``) into the user's cache (``$AUTOINTERP_KERNEL_CACHE``, else
``~/.cache/autointerp/kernels``), keyed by the source, the compiler and this CPU's flags, written to
a temporary file and renamed (so concurrent worker processes never load half a library); where the
cache cannot be written, in a per-user folder under the temporary folder. Where that fails (no
compiler, a platform without the vector extensions), :func:`kernels` returns None after one warning
and callers run their PyTorch code: same results up to float rounding. ``AUTOINTERP_NATIVE=0``
turns the native loops off.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("kernels.c")
FLAGS = ("-O3", "-march=native", "-shared", "-fPIC", "-std=gnu11")
LIBS = ("-lm",)  # sqrtf: linked explicitly, not borrowed from the loading process


def _compiler() -> str | None:
    """The C compiler to use, or None."""
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return name
    return None


def _cpu_flags() -> str:
    """This CPU's feature flags (Linux), else the platform's processor string: part of the cache key,
    as ``-march=native`` builds for this CPU only."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line
    except OSError:
        pass
    return platform.processor() + platform.machine()


def cache_dir() -> Path | None:
    """Where compiled kernels are kept (None: no home folder and no ``AUTOINTERP_KERNEL_CACHE``)."""
    if os.environ.get("AUTOINTERP_KERNEL_CACHE"):
        return Path(os.environ["AUTOINTERP_KERNEL_CACHE"])
    try:
        return Path.home() / ".cache" / "autointerp" / "kernels"
    except (RuntimeError, KeyError):  # no home folder for this user
        return None


def _private_temp_folder() -> Path | None:
    """A folder under the system's temporary folder only this user can write (made with mode 0700);
    None where one exists that someone else owns or others can write: a library found there could
    be anyone's."""
    folder = Path(tempfile.gettempdir()) / f"autointerp-kernels-{getattr(os, 'getuid', lambda: 'user')()}"
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        info = folder.lstat()
    except OSError:
        return None
    if not hasattr(os, "getuid"):  # no POSIX ownership to check (Windows): not used there
        return None
    if folder.is_symlink() or info.st_uid != os.getuid() or info.st_mode & 0o022:
        return None
    return folder


def _build(compiler: str) -> Path:
    """The compiled library (compiled now unless cached). Where the cache cannot be written (a
    read-only home, say), it is built in a private per-user folder under the temporary folder."""
    source = SOURCE.read_bytes()
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=60).stdout
    flags = " ".join(FLAGS + LIBS).encode()
    key = hashlib.sha256(b"\0".join([source, version.encode(), flags, _cpu_flags().encode()]))
    name = f"kernels-{key.hexdigest()[:20]}.so"
    cache = cache_dir()
    if cache is not None:
        if (cache / name).exists():
            return cache / name
        try:
            cache.mkdir(parents=True, exist_ok=True)
            return _compile(compiler, cache / name)
        except OSError:  # the cache cannot be made or written: the temporary folder
            pass
    private = _private_temp_folder()
    if private is None:
        raise RuntimeError(f"no writable folder for the compiled kernels (tried {cache} and the temporary folder)")
    if (private / name).exists():
        return private / name
    return _compile(compiler, private / name)


def _compile(compiler: str, target: Path) -> Path:
    """``kernels.c`` compiled into ``target``, through a temporary file renamed when complete."""
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        command = [compiler, *FLAGS, str(SOURCE), "-o", tmp, *LIBS]
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            first = (done.stderr.strip().splitlines() or ["no message"])[0]
            raise RuntimeError(f"{compiler} failed on {SOURCE.name}: {first}")
        os.chmod(tmp, 0o755)  # mkstemp made it 0600: readable by the other users of a shared cache
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


@functools.lru_cache(maxsize=1)
def kernels() -> ctypes.CDLL | None:
    """The compiled ``kernels.c``, or None where native loops are off or cannot be built (one warning)."""
    if os.environ.get("AUTOINTERP_NATIVE", "1") == "0":
        return None
    compiler = _compiler()
    try:
        if compiler is None:
            raise RuntimeError("no C compiler found (set CC, or install gcc)")
        lib = ctypes.CDLL(str(_build(compiler)))
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        warnings.warn(
            f"native loops unavailable ({exc}); the importance path runs its PyTorch code instead "
            "(slower, same results)",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    lib.rank_one_pooled.argtypes = [ptr] * 5 + [i64] * 6 + [ptr] * 2
    lib.rank_one_pooled.restype = ctypes.c_int
    lib.rank_one_fit.argtypes = [ptr] * 5 + [i64] * 3 + [ptr] * 5
    lib.rank_one_fit.restype = ctypes.c_int
    lib.rank_one_fit_pre.argtypes = [ptr] * 6 + [i64] * 3 + [ptr] * 5
    lib.rank_one_fit_pre.restype = ctypes.c_int
    return lib


def _check_indices(function: str, *indices: tuple[str, torch.Tensor, int]) -> None:
    """Raise IndexError naming the first of ``(what, tensor, n)`` with an entry outside ``[0, n)``."""
    for what, t, n in indices:
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= n):
            raise IndexError(f"{function}: {what} out of range [0, {n})")


def _ptr(t: torch.Tensor, dtype: torch.dtype) -> int:
    """The data pointer of ``t``, checked to be a contiguous CPU tensor of ``dtype``."""
    if t.dtype != dtype or not t.is_contiguous() or t.device.type != "cpu":
        raise ValueError(f"native loop: expected a contiguous CPU {dtype} tensor, got {t.dtype} {tuple(t.shape)}")
    return t.data_ptr()


def rank_one_pooled(
    taps: torch.Tensor,
    delta_all: torch.Tensor,
    rows: torch.Tensor,
    r: torch.Tensor,
    b_idx: torch.Tensor,
    k: int,
    pad: int,
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``mean_pos(relu(r + taps * δ) - relu(r))`` (P, O) and ``Σ_t |taps|`` (P, O) for the rank-one
    tier (:func:`.lowrank._pooled`'s sums), or None where native loops are off.

    ``taps`` (P, k², O); ``delta_all`` (N, H, W), pair ``p``'s map ``delta_all[rows[p]]``; ``r``
    (B, H·W, O) channels last, pair ``p``'s image ``b_idx[p]``."""
    lib = kernels()
    if lib is None:
        return None
    p, kk, o = taps.shape
    n, h, w = delta_all.shape
    if k < 1 or 2 * pad != k - 1:
        raise ValueError(f"rank_one_pooled: expected an odd k >= 1 with 'same' padding (k - 1) / 2, got {k}, {pad}")
    if kk != k * k or r.shape[1:] != (h * w, o) or len(rows) != p or len(b_idx) != p:
        raise ValueError(f"rank_one_pooled: shapes taps {tuple(taps.shape)}, delta {tuple(delta_all.shape)}, "
                         f"r {tuple(r.shape)} do not fit k={k}")  # fmt: skip
    _check_indices("rank_one_pooled", ("a row", rows, n), ("an image index", b_idx, len(r)))
    rows, b_idx = rows.to(torch.int64).contiguous(), b_idx.to(torch.int64).contiguous()
    taps, delta_all, r = taps.contiguous(), delta_all.contiguous(), r.contiguous()
    pooled, tap_abs = taps.new_empty(p, o), taps.new_empty(p, o)
    status = lib.rank_one_pooled(
        _ptr(taps, torch.float32), _ptr(delta_all, torch.float32), _ptr(rows, torch.int64),
        _ptr(r, torch.float32), _ptr(b_idx, torch.int64), p, k, pad, o, h, w,
        _ptr(pooled, torch.float32), _ptr(tap_abs, torch.float32),
    )  # fmt: skip
    if status != 0:
        raise (
            MemoryError("rank_one_pooled: out of memory")
            if status == 1
            else ValueError(f"rank_one_pooled: {k}x{k} kernels: at most 7x7")
        )
    return pooled, tap_abs


def rank_one_fit(
    dq_all: torch.Tensor, rows: torch.Tensor, delta_all: torch.Tensor, order: torch.Tensor, b_idx: torch.Tensor
) -> tuple[torch.Tensor, ...] | None:
    """The rank-one tier's fit (:func:`.lowrank._fit`'s results) for the pairs
    ``rows`` of ``dq_all`` (N, H, W, C) and ``delta_all`` (N, H, W), with ``α`` (P, C) already in the
    network's channel order (``dq_all[..., j]`` is channel ``order[b_idx[p], j]``); ``||S||²``, ``||α||``,
    ``max|δ|`` and ``||δ||`` (P,). None where native loops are off."""
    lib = kernels()
    if lib is None:
        return None
    n, h, w, c = dq_all.shape
    p = len(rows)
    if delta_all.shape != (n, h, w) or order.shape[1:] != (c,) or len(b_idx) != p:
        raise ValueError(f"rank_one_fit: shapes dq {tuple(dq_all.shape)}, delta {tuple(delta_all.shape)}, "
                         f"order {tuple(order.shape)} do not fit")  # fmt: skip
    _check_indices(
        "rank_one_fit", ("a row", rows, n), ("an image index", b_idx, len(order)), ("a channel in order", order, c)
    )
    rows, b_idx = rows.to(torch.int64).contiguous(), b_idx.to(torch.int64).contiguous()
    order = order.to(torch.int64).contiguous()
    dq_all, delta_all = dq_all.contiguous(), delta_all.contiguous()
    inputs = (
        _ptr(dq_all, torch.float32), _ptr(delta_all, torch.float32), _ptr(rows, torch.int64),
        _ptr(order, torch.int64), _ptr(b_idx, torch.int64),
    )  # fmt: skip
    return _fit_call(lib.rank_one_fit, "rank_one_fit", inputs, p, h * w, c)


def rank_one_fit_pre(
    pre: torch.Tensor,
    w_all: torch.Tensor,
    delta_all: torch.Tensor,
    rows: torch.Tensor,
    order: torch.Tensor,
    b_idx: torch.Tensor,
) -> tuple[torch.Tensor, ...] | None:
    """:func:`rank_one_fit` for the bottleneck change ``relu(p + w ⊗ δ) - relu(p)``, formed one pair at a
    time in the loop rather than read from memory: ``pre`` (B, H, W, C) each image's pre-activations
    ``p`` and ``w_all`` (N, C) each pair's ablated channel's weights, both in the image's channel order
    ``order`` (B, C); pair ``p`` is row ``rows[p]`` of ``w_all`` and ``delta_all`` (N, H, W), on image
    ``b_idx[p]``. None where native loops are off."""
    lib = kernels()
    if lib is None:
        return None
    b, h, w, c = pre.shape
    n, p = len(w_all), len(rows)
    if w_all.shape != (n, c) or delta_all.shape != (n, h, w) or order.shape != (b, c) or len(b_idx) != p:
        raise ValueError(f"rank_one_fit_pre: shapes pre {tuple(pre.shape)}, w {tuple(w_all.shape)}, "
                         f"delta {tuple(delta_all.shape)}, order {tuple(order.shape)} do not fit")  # fmt: skip
    _check_indices(
        "rank_one_fit_pre", ("a row", rows, n), ("an image index", b_idx, b), ("a channel in order", order, c)
    )
    rows, b_idx = rows.to(torch.int64).contiguous(), b_idx.to(torch.int64).contiguous()
    order = order.to(torch.int64).contiguous()
    pre, w_all, delta_all = pre.contiguous(), w_all.contiguous(), delta_all.contiguous()
    inputs = (
        _ptr(pre, torch.float32), _ptr(w_all, torch.float32), _ptr(delta_all, torch.float32),
        _ptr(rows, torch.int64), _ptr(order, torch.int64), _ptr(b_idx, torch.int64),
    )  # fmt: skip
    return _fit_call(lib.rank_one_fit_pre, "rank_one_fit_pre", inputs, p, h * w, c)


def _fit_call(
    function: Callable[..., int], name: str, inputs: tuple[int, ...], p: int, hw: int, c: int
) -> tuple[torch.Tensor, ...]:
    """Call one of the C fits (their arguments end alike: ``P, HW, C`` and five outputs) with the data
    pointers ``inputs``: ``α`` (P, C, zeros where the loop writes nothing), ``||S||²``, ``||α||``,
    ``max|δ|`` and ``||δ||`` (P,) float32."""
    alpha = torch.zeros(p, c, dtype=torch.float32)
    s_sq, alpha_norm, delta_max, delta_norm = (torch.empty(p, dtype=torch.float32) for _ in range(4))
    outputs = (_ptr(t, torch.float32) for t in (alpha, s_sq, alpha_norm, delta_max, delta_norm))
    if function(*inputs, p, hw, c, *outputs) != 0:
        raise MemoryError(f"{name}: out of memory")
    return alpha, s_sq, alpha_norm, delta_max, delta_norm
