"""The heap setting of the commands (spikebench.heap): freed buffers are reused without page faults,
peak memory is still the measured block's own, and records say how the heap was set."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap

import pytest

from spikebench import heap, provenance

glibc = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="the setting is glibc's"
)

MIB = 1 << 20


def _python(code: str, env: dict[str, str] | None = None) -> str:
    src = os.path.join(os.path.dirname(heap.__file__), os.pardir)
    full = {**os.environ, "PYTHONPATH": os.path.abspath(src), **(env or {})}
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=full, capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


# Minor page faults per bptt training step on the default network (perf's trainer), after three steps
# in which the heap reaches its size.
STEPS = """
    import torch
    from spikebench import heap
    from spikebench.perf.harness import _Trainer, _config
    print(heap.keep_freed_memory())
    torch.set_num_threads(1)
    print(heap.page_faults(_Trainer(_config("bptt", 25, 128, False, "cpu"), torch.device("cpu")), 8))
"""


@glibc
def test_kept_heap_trains_without_page_faults():
    kept_line, kept = _python(STEPS).splitlines()[-2:]
    system_line, system = _python(STEPS, {heap.ENV: "system"}).splitlines()[-2:]
    assert kept_line.startswith("glibc: mmap threshold 32 MiB") and system_line.startswith("system default")
    # glibc's defaults hand MiBs back after a step and fault on them again in the next (1,000-3,000
    # faults per step measured); kept, the buffers stay mapped (0-200)
    assert float(system) > (1 << 20) // os.sysconf("SC_PAGE_SIZE")
    assert float(kept) < float(system) / 4


@glibc
def test_peak_memory_counts_the_block_after_memory_was_kept():
    """Memory freed earlier and kept by the heap must not hide the block's own allocations."""
    out = _python(
        """
        import torch
        from spikebench import heap
        from spikebench.train.memory import PeakMemory
        heap.keep_freed_memory()
        kept = [torch.ones(1 << 20) for _ in range(16)]  # 64 MiB, freed but kept by the heap
        del kept
        with PeakMemory(torch.device("cpu")) as pm:
            block = [torch.ones(1 << 19) for _ in range(16)]  # 32 MiB
            del block
        print(pm.peak_bytes)
        """
    )
    assert int(out) >= 28 * MIB


def test_records_say_how_the_heap_is_set():
    assert provenance.invocation(None)["heap"] == heap.describe()
    line = _python("from spikebench import heap; print(heap.keep_freed_memory())", {heap.ENV: "system"})
    assert line == f"system default ({heap.ENV}=system)"
