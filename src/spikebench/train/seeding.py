"""Seeds and generators: one seed gives every random stream of a run."""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices); on CUDA also no TF32 for convolutions and matrix
    products (float32 means float32) and deterministic cuDNN algorithms without autotuning. CPU and
    CUDA runs of one seed still differ: their generators draw different numbers."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def generator(seed: int, stream: int, device: torch.device | str = "cpu") -> torch.Generator:
    """An independent generator for one purpose (``stream``: 0 shuffling, 1 encoding, 2 rule, ...)."""
    g = torch.Generator(device=device)
    g.manual_seed(seed * 1000 + stream)
    return g
