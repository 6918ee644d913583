"""Backdoor poisoning (Gu, Dolan-Gavitt & Garg 2017, "BadNets"): a trigger patch in a fraction of the
training images, relabelled to a target class.

The trigger is a ``size x size`` square of value ``value`` in the bottom-right corner of every channel
of an image (samples seen as (C, H, W) by :func:`~spikebench.attacks.threat.image_layout`: [C, H, W]
images, row sequences [T, F], event frames); inputs without an image layout get their last ``size^2``
features set instead. Exactly ``round(fraction * N)`` of the N training samples, drawn by a generator
seeded from the run's seed, are triggered and relabelled. The attack success rate (ASR) is the fraction
of triggered test samples whose true class is not the target that the network assigns to the target.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor, nn

from spikebench.attacks.threat import image_layout
from spikebench.config import BackdoorConfig, ConfigError
from spikebench.data import Dataset, Encoding, Split
from spikebench.train.loop import evaluate, predict
from spikebench.train.seeding import generator

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


def poison(split: Split, cfg: BackdoorConfig, gen: torch.Generator) -> tuple[Split, Tensor]:
    """Trigger and relabel exactly ``round(fraction * N)`` samples drawn without replacement by ``gen``.
    Returns the poisoned split (a copy) and the indices poisoned [k]."""
    k = round(cfg.fraction * len(split))
    idx = torch.randperm(len(split), generator=gen)[:k]
    x, y = split.x.clone(), split.y.clone()
    x[idx] = apply_trigger(x[idx], cfg)
    y[idx] = cfg.target
    return Split(x, y), idx


def poison_dataset(data: Dataset, cfg: BackdoorConfig, seed: int) -> Dataset:
    """``data`` with its training split poisoned (unchanged when ``cfg.fraction`` is 0); the test split
    stays clean."""
    if cfg.fraction == 0:
        return data
    check_trigger(cfg, tuple(data.train.x.shape[1:]), data.n_classes)
    train, _ = poison(data.train, cfg, generator(seed, BACKDOOR_STREAM))
    return dataclasses.replace(data, train=train)


def evaluate_backdoor(
    net: nn.Module, test: Split, enc: Encoding, cfg: BackdoorConfig, batch_size: int
) -> dict[str, Any]:
    """Clean test accuracy and attack success rate of the trigger of ``cfg`` on ``net``."""
    keep = test.y != cfg.target
    triggered = apply_trigger(test.x[keep], cfg)
    asr = float("nan")
    if triggered.shape[0]:
        preds = predict(net, triggered, enc, batch_size).argmax(1).cpu()
        asr = (preds == cfg.target).double().mean().item()
    return {
        "clean_accuracy": evaluate(net, test, enc, batch_size),
        "attack_success_rate": asr,
        "fraction": cfg.fraction,
        "target": cfg.target,
        "size": cfg.size,
        "value": cfg.value,
    }
