"""Exact peak tensor memory of a block of code, on any device, CPU included.

The resident set size (RSS) of a process is a coarse measure of what a computation needs: it includes
library initialisation, allocator caches and pages that were freed but not returned to the system,
and it never goes down. :class:`TensorMemory` instead counts the bytes of tensor storage that are
alive, exactly, at every operator call, and reports the maximum of that sum.

Method: a :class:`~torch.utils._python_dispatch.TorchDispatchMode` sees every ATen operator call made
while it is active -- the forward pass, the tensors autograd saves for backward (they are outputs of
forward operators and stay alive until the graph is freed), the backward pass including the backward
of custom :class:`torch.autograd.Function` nodes (it runs on the calling thread on CPU), and optimiser
updates. An operator's output whose storage is not one of its inputs' storages was allocated by that
operator; its storage bytes are added to the live total, and a :func:`weakref.finalize` on the storage
object subtracts them when the storage is freed (PyTorch keeps one Python object per storage for as
long as the storage lives). Storages that existed before the block (parameters, optimiser state,
inputs) are not counted: the peak is what the block needed on top of them. Memory that is not tensor
storage (allocator caches and fragmentation, BLAS workspaces, Python objects) is not counted either.

Every operator call goes through Python while the tracker is active, so time code without it.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from spikebench.train.memory import PeakMemory


def _storage(t: torch.Tensor) -> torch.UntypedStorage | None:
    try:
        return t.untyped_storage()
    except (RuntimeError, NotImplementedError):  # tensors without storage (e.g. sparse)
        return None


class TensorMemory(TorchDispatchMode):
    """Context manager: ``with TensorMemory() as tm: ...`` then ``tm.peak_bytes``.

    ``device``: count only storages on this device type (``"cpu"``, ``"cuda"``); None counts all.
    Attributes: ``peak_bytes`` (maximum of live bytes allocated inside the block), ``current_bytes``
    (live now), ``allocations`` (number of storages allocated).
    """

    method = "tensor storage tracker (TorchDispatchMode)"

    def __init__(self, device: str | torch.device | None = None) -> None:
        super().__init__()
        self.device_type = None if device is None else torch.device(device).type
        self.current_bytes = 0
        self.peak_bytes = 0
        self.allocations = 0
        self._live: dict[int, tuple[int, weakref.finalize]] = {}  # id(storage) -> (bytes, finalizer)

    def _free(self, key: int) -> None:
        entry = self._live.pop(key, None)
        if entry is not None:
            self.current_bytes -= entry[0]

    def _track(self, storage: torch.UntypedStorage) -> None:
        key = id(storage)
        nbytes = storage.nbytes()
        entry = self._live.get(key)
        if entry is not None:  # an output written in place may have been resized
            self.current_bytes += nbytes - entry[0]
            self._live[key] = (nbytes, entry[1])
        else:  # zero-size storages too: an ``out=`` argument may be resized later
            self._live[key] = (nbytes, weakref.finalize(storage, self._free, key))
            self.current_bytes += nbytes
            self.allocations += nbytes > 0
        self.peak_bytes = max(self.peak_bytes, self.current_bytes)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        inputs = {
            id(s)
            for t in tree_flatten((args, kwargs))[0]
            if isinstance(t, torch.Tensor) and (s := _storage(t)) is not None
        }
        fresh_input = func is torch.ops.aten.lift_fresh.default  # torch.tensor(...) data, made outside
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor):
                continue
            if self.device_type is not None and t.device.type != self.device_type:
                continue
            s = _storage(t)
            if s is None:
                continue
            if id(s) not in inputs or fresh_input or id(s) in self._live:
                self._track(s)
        return out

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        # Storages still alive keep their finalizers; they only update this object's counters.


@dataclass
class MemoryResult:
    """Peak memory of one call: ``peak_bytes`` by ``method`` (primary), ``rss_peak_bytes`` (CPU only:
    growth of the process's peak resident set size during the call, coarse, secondary)."""

    peak_bytes: int | None
    method: str
    rss_peak_bytes: int | None


def measure_peak(fn: Callable[[], object], device: torch.device) -> MemoryResult:
    """Peak memory that one call of ``fn`` needs on ``device``, on top of what exists before it.

    CUDA: the caching allocator's peak (``torch.cuda.max_memory_allocated``) minus what was allocated
    at the start. CPU: :class:`TensorMemory` (exact live tensor storage) and, as a secondary number,
    the resident-set-size growth measured by :class:`spikebench.train.memory.PeakMemory`.
    """
    if device.type == "cuda":
        with PeakMemory(device) as pm:
            fn()
        return MemoryResult(pm.peak_bytes, pm.method, None)
    with PeakMemory(device) as rss, TensorMemory(device.type) as tm:
        fn()
    return MemoryResult(tm.peak_bytes, TensorMemory.method, rss.peak_bytes)
