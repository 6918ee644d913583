"""Shared fixtures: small generated datasets in the real file formats, no network."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.cpp_extension import get_default_build_root

from spikebench.data.idx import write_idx

# One build of the compiled LIF kernel (spikebench.dynamics.fused) for the whole session: its default
# place follows XDG_CACHE_HOME, which fixtures point at temporary folders, so every command run in a
# subprocess would compile it again.
os.environ.setdefault("TORCH_EXTENSIONS_DIR", get_default_build_root())


def make_fashion_like(folder: Path, n_train: int = 256, n_test: int = 128, seed: int = 0) -> Path:
    """Write four gzip IDX files of a learnable 10-class problem (class = which block is bright)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, size=n).astype(np.uint8)
        images = rng.integers(0, 60, size=(n, 28, 28)).astype(np.uint8)
        for i, c in enumerate(labels):
            r, col = divmod(int(c), 5)
            images[i, 4 + 10 * r : 12 + 10 * r, 1 + 5 * col : 5 + 5 * col] = 230
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return folder


@pytest.fixture
def fake_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A generated Fashion-MNIST-format folder, named by $SPIKEBENCH_DATA; downloads disabled."""
    folder = make_fashion_like(tmp_path / "data")
    monkeypatch.setenv("SPIKEBENCH_DATA", str(folder))
    monkeypatch.setenv("SPIKEBENCH_NO_DOWNLOAD", "1")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return folder


# Test tensors are tiny: one intra-op thread is fastest and avoids oversubscribing the cores.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _torch_defaults():
    torch.set_default_dtype(torch.float32)
    yield
    torch.set_default_dtype(torch.float32)
