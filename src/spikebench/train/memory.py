"""Peak memory of a block of code, measured.

On CUDA: the caching allocator's peak (``torch.cuda.max_memory_allocated``), reset at the start.
On CPU (Linux): the process's peak resident set size (``VmHWM`` in ``/proc/self/status``), whose
high-water mark is reset at the start by writing ``5`` to ``/proc/self/clear_refs``. The reported
``peak_bytes`` is the peak during the block minus the resident size at its start, i.e. the memory
the block itself needed on top of what was already there (libraries, dataset, model);
``peak_total_bytes`` is the absolute peak. :meth:`PeakMemory.pause` / :meth:`PeakMemory.resume`
leave evaluation between epochs out of the measurement. Where neither source exists both are None.
On CPU the C heap's free memory is handed back to the system at the start of every segment
(:func:`spikebench.heap.release`), so memory kept from what ran before (:mod:`spikebench.heap`) is
neither counted as the block's nor reused unseen by it.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from spikebench import heap

_STATUS = Path("/proc/self/status")


def _status_kib(field: str) -> int | None:
    try:
        m = re.search(rf"^{field}:\s+(\d+) kB", _STATUS.read_text(), re.M)
    except OSError:
        return None
    return int(m.group(1)) if m else None


class PeakMemory:
    """Context manager: ``with PeakMemory(device) as pm: ...`` then ``pm.peak_bytes``."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak_bytes: int | None = None
        self.peak_total_bytes: int | None = None
        self.method = "none"

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
            self.method = "cuda.max_memory_allocated"
        else:
            heap.release()  # free memory the heap keeps (spikebench.heap) is not the block's
            try:
                Path("/proc/self/clear_refs").write_text("5")
                self.method = "VmHWM"
            except OSError:
                self.method = "VmHWM (not reset)"
            rss = _status_kib("VmRSS")
            self._start = None if rss is None else rss * 1024
        return self

    def pause(self) -> None:
        """Record the peak so far; what runs until :meth:`resume` (evaluation) is not counted."""
        self.sample()

    def resume(self) -> None:
        """Start a new measurement segment: the reported peak is the maximum over segments."""
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            heap.release()
            try:
                Path("/proc/self/clear_refs").write_text("5")
            except OSError:
                pass

    def sample(self) -> None:
        """Read the peak of the current segment and fold it into the overall peak."""
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            hwm = _status_kib("VmHWM")
            if hwm is None or self._start is None:
                return
            peak = hwm * 1024
        self.peak_total_bytes = max(peak, self.peak_total_bytes or 0)
        self.peak_bytes = max(0, self.peak_total_bytes - self._start)

    def __exit__(self, *exc: object) -> None:
        self.sample()
