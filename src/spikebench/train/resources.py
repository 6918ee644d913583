"""A run's memory, estimated from its config before anything large is allocated.

The estimate is deliberately coarse (within a small factor), enough to refuse in one line a config that
cannot fit -- ``data.timesteps=100000000`` or ``model.hidden=[100000000]`` -- instead of failing deep in
an allocation. It counts:

- parameters: weights, gradients and two optimiser moments (4 copies, float32);
- per-step state kept for the backward pass: ``STATE_COPIES`` float32 values per neuron and sample for
  every step the rule's memory class keeps (``O(T)``: T steps, ``O(k)``: ``rule.k``, ``O(1)``: one);
- the encoded input of one batch (T steps of the input).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from spikebench.config import Config
from spikebench.registry import SpikebenchError

FLOAT = 4
PARAM_COPIES = 4
STATE_COPIES = 6


class ResourceError(SpikebenchError):
    """A run that needs more memory than the machine has."""


@dataclass(frozen=True)
class Estimate:
    parameters: int
    neurons: int  # per sample and step
    steps_kept: int
    bytes: int


def _conv_neurons(cfg: Config, input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(neurons per step, parameters, flattened output) of the conv blocks."""
    c, h, w = (tuple(input_shape) + (1, 1, 1))[:3] if len(input_shape) == 3 else (1, *input_shape[-2:])
    neurons = params = 0
    for out in cfg.model.channels:
        params += c * out * cfg.model.kernel**2 + out
        neurons += out * h * w
        h, w, c = max(1, h // cfg.model.pool), max(1, w // cfg.model.pool), out
    return neurons, params, c * h * w


def estimate(cfg: Config, input_shape: tuple[int, ...], n_classes: int, memory_class: str) -> Estimate:
    """The estimated peak bytes of training ``cfg`` on inputs of ``input_shape`` (one step)."""
    t = int(cfg.data.timesteps)
    batch = int(cfg.train.batch_size)
    fan_in = math.prod(input_shape)
    neurons = params = 0
    if cfg.model.arch == "conv":
        neurons, params, fan_in = _conv_neurons(cfg, input_shape)
    for width in (*cfg.model.hidden, n_classes):
        params += fan_in * width + width
        if cfg.model.recurrent and width != n_classes:
            params += width * width
        neurons += width
        fan_in = width
    kept = {"O(T)": t, "O(k)": min(t, int(getattr(cfg.rule, "k", 1) or 1))}.get(memory_class, 1)
    total = (
        PARAM_COPIES * FLOAT * params
        + STATE_COPIES * FLOAT * batch * neurons * kept
        + FLOAT * batch * t * math.prod(input_shape)
    )
    return Estimate(params, neurons, kept, total)


def available_memory(device: str = "cpu") -> int | None:
    """Bytes available for a new run: free GPU memory on CUDA, ``MemAvailable`` on Linux; None when
    unknown."""
    if str(device).startswith("cuda"):
        import torch

        if torch.cuda.is_available():
            return int(torch.cuda.mem_get_info()[0])
        return None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _fmt(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"


def check_memory(
    cfg: Config, input_shape: tuple[int, ...], n_classes: int, memory_class: str, device: str = "cpu"
) -> Estimate:
    """Raise :class:`ResourceError` (one line) when the estimate exceeds the available memory."""
    est = estimate(cfg, input_shape, n_classes, memory_class)
    free = available_memory(device)
    if free is not None and est.bytes > free:
        raise ResourceError(
            f"a {cfg.rule.name} run with data.timesteps={cfg.data.timesteps}, train.batch_size="
            f"{cfg.train.batch_size}, model.hidden={list(cfg.model.hidden)} needs about {_fmt(est.bytes)} "
            f"of memory, more than the {_fmt(free)} available on {device}; reduce those settings"
        )
    return est
