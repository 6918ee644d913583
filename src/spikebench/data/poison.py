"""Backdoor poisoning (Gu, Dolan-Gavitt & Garg 2017, "BadNets"): a trigger patch in a fraction of the
training images, relabelled to a target class.

The trigger is a ``size x size`` square of value ``value`` in the bottom-right corner of every channel
of an image (samples seen as (C, H, W) by :func:`~spikebench.data.layout.image_layout`: [C, H, W]
images, row sequences [T, F], event frames); inputs without an image layout get their last ``size^2``
features set instead. Exactly ``round(fraction * N)`` of the N training samples, drawn by a generator
seeded from the run's seed, are triggered and relabelled. The attack success rate (ASR) is measured by
:func:`spikebench.train.backdoor.evaluate_backdoor` on :func:`triggered_test`: the test samples whose
class is not the target, with the trigger set (the training split is not needed for it).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from spikebench.config import BackdoorConfig, ConfigError
from spikebench.data.datasets import Dataset, Split
from spikebench.data.layout import image_layout

BACKDOOR_STREAM = 6  # the random stream (see :func:`spikebench.train.seeding.generator`) of poisoning


def check_trigger(cfg: BackdoorConfig, sample_shape: tuple[int, ...], n_classes: int) -> None:
    """Raise :class:`ConfigError` if the trigger does not fit samples of ``sample_shape`` or the target
    is not a class."""
    if not 0 <= cfg.target < n_classes:
        raise ConfigError(f"data.backdoor.target must be a class in 0..{n_classes - 1}, got {cfg.target}")
    _, H, W = image_layout(sample_shape)
    if H == 1:
        if cfg.size**2 > W:
            raise ConfigError(f"data.backdoor.size={cfg.size} needs {cfg.size**2} features, inputs have {W}")
    elif cfg.size > min(H, W):
        raise ConfigError(f"data.backdoor.size={cfg.size} does not fit {H}x{W} inputs")


def apply_trigger(x: Tensor, cfg: BackdoorConfig) -> Tensor:
    """A copy of ``x`` [N, ...] with the trigger patch set (see the module docstring)."""
    n = x.shape[0]
    C, H, W = image_layout(tuple(x.shape[1:]))
    out = x.clone()
    if H == 1:
        out.reshape(n, -1)[:, -(cfg.size**2) :] = cfg.value
    else:
        out.reshape(n, C, H, W)[:, :, H - cfg.size :, W - cfg.size :] = cfg.value
    return out


def triggered_test(test: Split, cfg: BackdoorConfig) -> Split:
    """The samples of ``test`` whose true class is not ``cfg.target``, in order, with the trigger set and
    their true labels: what the attack success rate is measured on."""
    keep = test.y != cfg.target
    return Split(apply_trigger(test.x[keep], cfg), test.y[keep])


def poison(split: Split, cfg: BackdoorConfig, gen: torch.Generator) -> tuple[Split, Tensor]:
    """Trigger and relabel exactly ``round(fraction * N)`` samples drawn without replacement by ``gen``.
    Returns the poisoned split (a copy) and the indices poisoned [k]."""
    k = round(cfg.fraction * len(split))
    idx = torch.randperm(len(split), generator=gen)[:k]
    x, y = split.x.clone(), split.y.clone()
    x[idx] = apply_trigger(x[idx], cfg)
    y[idx] = cfg.target
    return Split(x, y), idx


def poison_dataset(data: Dataset, cfg: BackdoorConfig, gen: torch.Generator) -> Dataset:
    """``data`` with its training split poisoned by ``gen`` (a run draws it from its random stream
    ``BACKDOOR_STREAM``; unchanged when ``cfg.fraction`` is 0); the test split stays clean."""
    if cfg.fraction == 0:
        return data
    check_trigger(cfg, tuple(data.train.x.shape[1:]), data.n_classes)
    train, _ = poison(data.train, cfg, gen)
    return dataclasses.replace(data, train=train)
