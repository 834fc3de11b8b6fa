"""Choosing where the network runs: the original's ``-g`` syntax, CPU threads, CUDA, Apple MPS."""
from __future__ import annotations

import contextlib
import ctypes
import logging
import os
from typing import Iterator

import torch

from .errors import InputError

log = logging.getLogger("deepemhancer")

PRECISIONS: tuple[str, ...] = ("fp32", "tf32", "bf16", "fp16")
KEEP_FREED_BYTES = 512 * 2**20


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_devices(gpu_ids: str = "0") -> list[torch.device]:
    """Turn the original's ``-g`` value into devices.

    ``"-1"`` is the CPU; ``"all"`` every CUDA device; ``"0,2"`` those CUDA devices. Where no CUDA
    device exists, a GPU request falls back to Apple MPS when present, else to the CPU, with a
    notice: scripts written for the original pass ``-g 0`` everywhere.
    """
    text = str(gpu_ids).strip().lower()
    if text in ("-1", "cpu"):
        return [torch.device("cpu")]
    if text == "mps":
        if not _mps_available():
            raise InputError("-g mps asked for Apple's GPU but MPS is not available here; use -g -1 for the CPU")
        return [torch.device("mps")]
    if text == "all":
        ids = list(range(torch.cuda.device_count()))
    else:
        try:
            ids = [int(part) for part in text.split(",") if part.strip() != ""]
        except ValueError:
            raise InputError(f"GPU ids {gpu_ids!r} are not understood; give GPU ids like 0 or 0,1, "
                             "'all', or -1 for the CPU", setting="gpu_ids") from None
        if not ids:
            raise InputError("no GPU ids given; give GPU ids like 0 or 0,1, 'all', or -1 for the CPU",
                             setting="gpu_ids")
        if any(i < 0 for i in ids):
            raise InputError(f"GPU ids {gpu_ids!r} mix -1 (the CPU) with GPU ids; give GPU ids or -1 alone",
                             setting="gpu_ids")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        fallback = torch.device("mps") if _mps_available() else torch.device("cpu")
        log.warning("no CUDA GPU is available; running on %s", "Apple MPS" if fallback.type == "mps" else "the CPU")
        return [fallback]
    missing = [i for i in ids if i >= count]
    if missing:
        raise InputError(f"GPU id(s) {missing} do not exist: this machine has {count} CUDA device(s) "
                         f"(ids 0..{count - 1}); choose existing GPUs, or the CPU", setting="gpu_ids")
    return [torch.device("cuda", i) for i in dict.fromkeys(ids)]


@contextlib.contextmanager
def torch_settings(threads: int | None, precision: str) -> Iterator[None]:
    """Run a block with ``threads`` CPU threads (None: as they are) and the matrix-multiply precision
    of ``precision`` (fp32: true float32 on CUDA, so results match the CPU; tf32 allows TF32), and
    put the caller's settings back afterwards: they are process-wide."""
    if threads is not None and threads < 1:
        raise InputError(f"the number of CPU threads must be at least 1, not {threads}")
    saved = (torch.get_num_threads(), torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        allow = precision == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = allow
        torch.backends.cudnn.allow_tf32 = allow
        yield
    finally:
        torch.set_num_threads(saved[0])
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[1:]


def keep_freed_memory() -> bool:
    """Ask glibc's allocator to keep freed blocks of up to 512 MiB for reuse instead of handing them
    back to the system: a CPU forward pass allocates and frees its large activations for every
    batch, and re-faulting them cost a third of the CPU time (24 % system time, 5.5 M page faults
    in a 27-cube run). For a program's entry point (the command line, a Scipion run), not a
    library call: the setting is process-wide. Returns whether it applied (glibc only)."""
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # malloc.h
    return bool(mallopt(m_mmap_threshold, KEEP_FREED_BYTES)) and bool(mallopt(m_trim_threshold, 2 * KEEP_FREED_BYTES))


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype for a precision name (None: run in float32)."""
    if precision not in PRECISIONS:
        raise InputError(f"precision {precision!r} is unknown; choose one of {', '.join(PRECISIONS)}")
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)


def available_memory_bytes(device: torch.device) -> int:
    """Free memory on the device (CUDA: driver's free; CPU and MPS: the host's available memory)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))


def is_out_of_memory(error: BaseException) -> bool:
    """Whether an exception is the device running out of memory (CUDA, MPS or the host)."""
    if isinstance(error, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


def release_cached_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()
