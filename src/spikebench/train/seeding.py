"""Seeds and generators: one seed gives every random stream of a run."""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def generator(seed: int, stream: int, device: torch.device | str = "cpu") -> torch.Generator:
    """An independent generator for one purpose (``stream``: 0 shuffling, 1 encoding, 2 rule, ...)."""
    g = torch.Generator(device=device)
    g.manual_seed(seed * 1000 + stream)
    return g
