"""Seeds and generators: one seed gives every random stream of a run."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices); on CUDA also no TF32 for convolutions and matrix
    products (float32 means float32) and deterministic cuDNN algorithms without autotuning. CPU and
    CUDA runs of one seed still differ: their generators draw different numbers."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    _set_numerics(EXACT_NUMERICS)


EXACT_NUMERICS = (False, False, True, False)
"""(matmul TF32, cuDNN TF32, cuDNN deterministic, cuDNN benchmark) as :func:`seed_everything` sets them."""


def _numerics() -> tuple[bool, bool, bool, bool]:
    b = torch.backends
    return (b.cuda.matmul.allow_tf32, b.cudnn.allow_tf32, b.cudnn.deterministic, b.cudnn.benchmark)


def _set_numerics(values: tuple[bool, bool, bool, bool]) -> None:
    b = torch.backends
    b.cuda.matmul.allow_tf32, b.cudnn.allow_tf32, b.cudnn.deterministic, b.cudnn.benchmark = values


@contextmanager
def exact_numerics() -> Iterator[None]:
    """Inside: float32 products without TF32 and deterministic cuDNN, as :func:`seed_everything` sets
    them for training; after: the settings as they were. Code that reads a trained run back computes
    inside it, so that it computes as training did without changing the caller's settings."""
    before = _numerics()
    _set_numerics(EXACT_NUMERICS)
    try:
        yield
    finally:
        _set_numerics(before)


def generator(seed: int, stream: int, device: torch.device | str = "cpu") -> torch.Generator:
    """An independent generator for one purpose (``stream``: 0 shuffling, 1 encoding, 2 rule, ...)."""
    g = torch.Generator(device=device)
    g.manual_seed(seed * 1000 + stream)
    return g


@contextmanager
def seeded_torch(seed: int, device: torch.device) -> Iterator[None]:
    """Inside: torch's global generator of the CPU (and of ``device`` when it is a GPU) seeded as
    :func:`seed_everything` seeds it; after: every global generator as it was before (Python's and
    NumPy's are not touched). For code that draws from the global generators, such as the default
    initialisation of torch layers, without changing what the caller draws next."""
    devices = []
    if device.type == "cuda":
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=devices):
        torch.default_generator.manual_seed(seed)
        for index in devices:
            with torch.cuda.device(index):
                torch.cuda.manual_seed(seed)
        yield
