"""The process's C heap: freed memory kept for the next training step instead of returned to the system.

PyTorch allocates CPU tensors with the C library's ``malloc``. glibc serves blocks above its mmap
threshold (128 KiB at start, raised as large blocks are freed, up to 32 MiB) with fresh mappings, and
hands the free memory at the top of its heap back to the system once more than its trim threshold is
free there. A training step allocates buffers of a few MiB ([T, B, N] potentials, spikes, currents and
their gradients) and frees them all when it ends, so every step writes to pages the system must map and
zero first, one fault per 4 KiB: about 3,000 faults per bptt step of the default network, which then
takes 1.28x as long (benchmarks/results/heap_ab.json).

:func:`keep_freed_memory` fixes glibc's mmap threshold at 32 MiB (its largest) and its trim threshold
at 1 GiB (``mallopt``), so that such buffers come from the heap and stay mapped from one step to the
next. The commands (:mod:`spikebench.cli`) and study workers call it; library code never does. It
changes no result: only where memory comes from, and that the process's resident size stays at its
peak rather than shrinking between steps. :class:`spikebench.train.memory.PeakMemory` calls
:func:`release` before it measures, so memory kept from earlier work is not counted as the block's own
(nor hidden by it). ``SPIKEBENCH_HEAP=system`` in the environment leaves the C library's defaults.
Elsewhere than glibc (musl, macOS) nothing is changed.
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform
from collections.abc import Callable

__all__ = ["ENV", "describe", "keep_freed_memory", "page_faults", "release"]

ENV = "SPIKEBENCH_HEAP"
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 1 << 30

_setting = "system default"


@functools.cache  # platform.libc_ver reads the interpreter's binary: once per process
def _glibc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def keep_freed_memory() -> str:
    """Set glibc's thresholds as the module docstring says (unless ``SPIKEBENCH_HEAP=system``); return
    :func:`describe`'s line. Once set they stay set for the process (glibc cannot restore its adaptive
    defaults), whatever later calls find in the environment."""
    global _setting
    if _setting.startswith("glibc"):
        return _setting
    libc = _glibc()
    if os.environ.get(ENV, "").strip().lower() == "system":
        _setting = f"system default ({ENV}=system)"
    elif libc is None:
        _setting = "system default (not glibc)"
    elif libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD):
        _setting = (
            f"glibc: mmap threshold {MMAP_THRESHOLD >> 20} MiB, trim threshold {TRIM_THRESHOLD >> 20} MiB"
        )
    else:
        _setting = "system default (mallopt refused)"
    return _setting


def describe() -> str:
    """How this process's heap is set: the glibc thresholds :func:`keep_freed_memory` set, or the
    system default and why."""
    return _setting


def release() -> bool:
    """Return the heap's free memory to the system (glibc ``malloc_trim(0)``); False where there is no
    such call."""
    libc = _glibc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True


def page_faults(fn: Callable[[], object], calls: int, warmup: int = 3) -> float | None:
    """Minor page faults of this process per call of ``fn``, over ``calls`` calls after ``warmup``
    untimed ones (``getrusage``); None where the count is not available."""
    try:
        import resource
    except ImportError:
        return None
    for _ in range(warmup):
        fn()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(calls):
        fn()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / calls
