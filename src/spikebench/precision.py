"""Numerical precision of the dense and convolution products: float32, or bfloat16 mixed precision.

``train.precision`` (and ``--precision`` of ``eval`` and ``attack``):

- ``fp32`` (default): everything in float32;
- ``bf16``: the dense and convolution products (layer currents, the recurrent product, the readout's
  projection, the online rules' learning signals and dense outer products) take bfloat16 operands and
  accumulate in float32 (``torch.autocast``); their results are bfloat16 (an online rule's convolution
  weight gradient stays a float32 correlation, and e-prop's products with its per-sample eligibility
  traces stay float32: a bf16 cast of the [B, N, D] trace would cost more than the product). Membrane
  potentials, the readout's integration, traces, gradients, parameters and the optimiser's state stay
  float32: every product result is added into a float32 state. Spikes are exactly 0 or 1 in bf16: the
  fused scan returns them in bf16, in training and in inference, so the next product takes them without
  a cast (and the gradient it hands back is bf16, as it would be after the cast). Refused,
  with one line, where the device cannot do bf16;
- ``auto``: ``bf16`` where the device supports it, otherwise ``fp32`` with one logged line saying so.

A CPU supports it when it has the AVX512-BF16 or AMX-BF16 instructions (Linux ``/proc/cpuinfo`` flags);
elsewhere torch would emulate bf16 products, slower than float32. A CUDA device when
``torch.cuda.is_bf16_supported()``. Float64 computations (the equivalence tests) are never touched.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor

from spikebench.registry import SpikebenchError

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "auto")
LOW = (torch.bfloat16, torch.float16)


class PrecisionError(SpikebenchError):
    """bf16 asked for on a device that cannot compute in it."""


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux ``/proc/cpuinfo``; empty where it cannot be read)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def bf16_supported(device: torch.device | str) -> bool:
    """Whether ``device`` computes bf16 products natively (see the module docstring)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())
    return False


def resolve(precision: str, device: torch.device | str) -> str:
    """The precision a run on ``device`` uses for the requested ``precision``: ``fp32`` or ``bf16``.

    ``bf16`` on a device without bf16 raises :class:`PrecisionError`; ``auto`` there logs one line and
    gives ``fp32``."""
    if precision not in PRECISIONS:
        raise PrecisionError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    if precision == "fp32":
        return "fp32"
    if bf16_supported(device):
        return "bf16"
    what = f"{torch.device(device).type} device" if torch.device(device).type != "cpu" else "CPU"
    if precision == "bf16":
        raise PrecisionError(
            f"precision bf16: this {what} has no bf16 support (no avx512_bf16/amx_bf16); "
            "use fp32, or auto to fall back to it"
        )
    log.warning("precision auto: this %s has no bf16 support; running in fp32", what)
    return "fp32"


def compute(precision: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """The context the products run in: bf16 autocast for ``bf16``, nothing for ``fp32`` (an already
    resolved precision, :func:`resolve`)."""
    if precision == "bf16":
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def as_state(x: Tensor) -> Tensor:
    """``x`` as state is kept: a bf16/fp16 product result becomes float32; float32 and float64 as they are."""
    return x.float() if x.dtype in LOW else x


def low_precision() -> bool:
    """Whether products are now computed in bf16 (inside :func:`compute` with ``bf16``)."""
    return torch.is_autocast_enabled("cpu") or (
        torch.cuda.is_available() and torch.is_autocast_enabled("cuda")
    )


@contextlib.contextmanager
def full_precision(device_type: str) -> Iterator[None]:
    """Products inside run in their operands' precision (bf16 autocast off): for state arithmetic
    written as products, such as the readout's leaky integration."""
    with torch.autocast(device_type, enabled=False):
        yield


def add_mm_(out: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """``out += a @ b`` in place; under bf16 the product is computed in bf16 (``addmm_`` is not)."""
    if low_precision():
        return out.add_(a @ b)
    return out.addmm_(a, b)
