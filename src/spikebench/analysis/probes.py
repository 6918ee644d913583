"""Probe sets: a fixed set of test inputs on which a network's hidden representations are recorded.

A probe set is the first ``train.probe_size`` samples of the test split, encoded with a fixed-seed
generator on the CPU in fixed-size chunks, so every run with the same data config sees exactly the same
T-step inputs, whatever its seed or device. The representation of hidden layer l is the per-neuron
spike count over the T steps, [n, N_l] (as in Lin et al. 2024, who compare layers by their firing
over a probe set); counts fit in uint8 for T <= 255.

On disk, in a run directory::

    probes/meta.json        dataset, encoder, timesteps, number of samples, digest of the inputs, layers
    probes/epoch_EEE.pt     {layer name: counts [n, N_l]} recorded after epoch EEE (000 = before training)
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from spikebench import components
from spikebench.analysis.errors import AnalysisError
from spikebench.config import Config
from spikebench.data import Split
from spikebench.nn import Network

PROBE_SEED = 1_000_003
"""Seed of the generator that encodes probe inputs (stochastic encoders); the same for every run."""
PROBE_CHUNK = 100
"""Probe inputs are encoded and run in chunks of this many samples (fixed: it fixes the random draws)."""
PROBE_SCHEMA = 1


def probe_digest(split: Split) -> str:
    """A short SHA-256 digest of the probe inputs and labels: equal digests mean the same probe set."""
    h = hashlib.sha256()
    h.update(split.x.detach().cpu().contiguous().numpy().tobytes())
    h.update(split.y.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def encoded_chunks(cfg: Config, x: Tensor, device: torch.device) -> Iterator[Tensor]:
    """Encode ``x`` [n, ...] reproducibly: yields [T, b, ...] chunks (b <= PROBE_CHUNK) on ``device``.

    Stochastic encoders draw on the CPU from a generator seeded with ``PROBE_SEED``, so the encoded
    steps do not depend on the run's seed or device; deterministic encoders encode on ``device``.
    """
    gen = torch.Generator().manual_seed(PROBE_SEED)
    enc = components.build_encoding(cfg, gen)
    for i in range(0, x.shape[0], PROBE_CHUNK):
        chunk = x[i : i + PROBE_CHUNK]
        if enc.encoder.stochastic:
            yield enc.sequence(chunk.cpu()).to(device)
        else:
            yield enc.sequence(chunk.to(device))


def count_dtype(timesteps: int) -> torch.dtype:
    """The smallest integer type that holds a spike count over ``timesteps`` steps."""
    return torch.uint8 if timesteps <= 255 else torch.int16 if timesteps <= 32767 else torch.int32


@torch.no_grad()
def spike_counts(net: Network, cfg: Config, x: Tensor) -> dict[str, Tensor]:
    """Per-neuron spike counts over the T steps of every hidden layer: {"layers.l": [n, N_l]} on the CPU.

    Runs the network's full forward pass (fresh state per input) on the probe encoding of ``x`` [n, ...].
    """
    device = next(net.parameters()).device
    dtype = count_dtype(cfg.data.timesteps)
    per_layer: list[list[Tensor]] = []
    for x_seq in encoded_chunks(cfg, x, device):
        spikes = net(x_seq).spikes
        if not per_layer:
            per_layer = [[] for _ in spikes]
        for acc, s in zip(per_layer, spikes, strict=True):
            acc.append(s.sum(0, dtype=torch.float32).reshape(s.shape[1], -1).round().to(dtype).cpu())
    return {f"layers.{i}": torch.cat(acc) for i, acc in enumerate(per_layer)}


def probe_meta(cfg: Config, split: Split, layers: list[str]) -> dict[str, Any]:
    """What identifies a probe set (runs can be compared only when these agree, ``layers`` aside)."""
    return {
        "schema": PROBE_SCHEMA,
        "dataset": cfg.data.name,
        "encoder": cfg.data.encoder,
        "timesteps": cfg.data.timesteps,
        "samples": len(split),
        "digest": probe_digest(split),
        "encoding_seed": PROBE_SEED,
        "layers": layers,
    }


def epoch_file(run_dir: Path, epoch: int) -> Path:
    return run_dir / "probes" / f"epoch_{epoch:03d}.pt"


@dataclass
class ProbeRecord:
    """The probes recorded in one run: ``meta`` and, per epoch, {layer name: counts [n, N_l]}."""

    meta: dict[str, Any]
    epochs: dict[int, dict[str, Tensor]]


def load_probes(run_dir: Path) -> ProbeRecord:
    """Read ``probes/`` of a run directory (counts loaded with ``weights_only=True``)."""
    folder = run_dir / "probes"
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        raise AnalysisError(f"{run_dir} has no recorded probes (train it with train.track=[cka])")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise AnalysisError(f"cannot read {meta_path}: {exc}") from exc
    epochs: dict[int, dict[str, Tensor]] = {}
    for path in sorted(folder.glob("epoch_*.pt")):
        m = re.fullmatch(r"epoch_(\d+)\.pt", path.name)
        if m is None:
            continue
        try:
            epochs[int(m.group(1))] = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many types for corrupt files
            raise AnalysisError(f"cannot load {path}: {type(exc).__name__}") from exc
    if not epochs:
        raise AnalysisError(f"{folder} holds no epoch_*.pt probe files")
    return ProbeRecord(meta, epochs)
