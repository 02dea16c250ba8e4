"""Memory the work needs against memory the machine has, checked before work starts.

A search holds both parents (and the base) on one device for hours; finding out that
they do not fit after the first parent is read wastes the run and may get the
process killed by the OOM killer with no message. So the bytes are added up from
the safetensors headers first and compared with what the device has free.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from .errors import ResourceError
from .io.dtypes import DTYPE_SIZES

MEMINFO = Path("/proc/meminfo")
CPUINFO = Path("/proc/cpuinfo")
# CPU flags whose matrix units run bfloat16 natively (Intel AMX, AVX512-BF16). Without one,
# torch emulates bfloat16 matrix products and they run slower than float32.
FAST_BFLOAT16_FLAGS = ("amx_bf16", "avx512_bf16")


def cpu_has_fast_bfloat16(cpuinfo: Path = CPUINFO) -> bool | None:
    """Whether this CPU multiplies bfloat16 matrices natively (None where it cannot be
    known: no /proc/cpuinfo). torch's `get_cpu_capability()` says only "AVX512" on a
    CPU with AMX, so the flags are read here."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return None
    flags = {word for line in text.splitlines() if line.startswith("flags")
             for word in line.partition(":")[2].split()}
    return any(flag in flags for flag in FAST_BFLOAT16_FLAGS)


# The forward passes' dtype where speed matters more than the last digit (the demo's and the
# benchmark's budgets): bfloat16 where the CPU multiplies it natively (about twice as fast as
# float32 with AMX); elsewhere torch emulates it, several times slower (docs/EVOLVE.md).
FAST_EVAL_DTYPE = "bfloat16" if cpu_has_fast_bfloat16() else "float32"
# The machine's speed, in one number: seconds for 200 float32 matmuls of 1024x1024 on one
# thread (RESULTS.md and the benchmark's tables report it beside their wall times).
YARDSTICK_MATMULS, YARDSTICK_SIZE = 200, 1024


def matmul_yardstick() -> float:
    """Seconds this machine takes for the yardstick's matmuls on one thread, now."""
    import time

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        generator = torch.Generator().manual_seed(0)
        a = torch.randn(YARDSTICK_SIZE, YARDSTICK_SIZE, generator=generator)
        b = torch.randn(YARDSTICK_SIZE, YARDSTICK_SIZE, generator=generator)
        started = time.perf_counter()
        for _ in range(YARDSTICK_MATMULS):
            a @ b
        return time.perf_counter() - started
    finally:
        torch.set_num_threads(threads)


def available_memory(device: torch.device) -> int | None:
    """Bytes free on `device` now (None where it cannot be known, e.g. MPS)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type != "cpu":
        return None
    try:
        for line in MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024  # the kernel writes kB
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def tensor_bytes(specs, cast: torch.dtype | None = None) -> int:
    """Bytes of these tensors once read, with float ones cast to `cast` if given."""
    cast_size = None if cast is None else torch.finfo(cast).bits // 8
    return sum(s.numel * (cast_size if cast_size and s.is_float else DTYPE_SIZES[s.dtype])
               for s in specs)


def require_memory(needed: int, device: torch.device, what: str) -> None:
    """Raise ResourceError, with both numbers, when `needed` bytes will not fit."""
    free = available_memory(device)
    if free is not None and needed > free:
        raise ResourceError(f"{what} need about {human_bytes(needed)} of {device.type} memory, "
                            f"only {human_bytes(free)} available (use a smaller dtype, e.g. "
                            "--dtype bfloat16, or a bigger machine)")


def require_disk(out: Path, needed: int) -> None:
    """Refuse before starting when the child cannot fit (plus 5% for files and index)."""
    probe = out.parent if out.parent.exists() else Path.cwd()
    free = shutil.disk_usage(probe).free
    if free < needed * 1.05:
        raise ResourceError(f"{out}: not enough disk space (child needs about "
                            f"{needed / 1e9:.2f} GB, {free / 1e9:.2f} GB free)")


def human_bytes(count: int) -> str:
    """`1.23 GB` or `45.6 MB` (decimal units, as disks and cloud machines are sold)."""
    return f"{count / 1e9:.2f} GB" if count >= 1e9 else f"{count / 1e6:.1f} MB"
