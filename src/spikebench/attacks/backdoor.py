"""Backdoor poisoning (Gu, Dolan-Gavitt & Garg 2017, "BadNets"): a trigger patch in a fraction of the
training images, relabelled to a target class.

The trigger is a ``size x size`` square of value ``value`` in the bottom-right corner of every channel
of an image (samples seen as (C, H, W) by :func:`~spikebench.data.layout.image_layout`: [C, H, W]
images, row sequences [T, F], event frames); inputs without an image layout get their last ``size^2``
features set instead. Exactly ``round(fraction * N)`` of the N training samples, drawn by a generator
seeded from the run's seed, are triggered and relabelled. The attack success rate (ASR) is the fraction
of triggered test samples whose true class is not the target that the network assigns to the target.
"""

from spikebench.data.poison import (
    BACKDOOR_STREAM,
    apply_trigger,
    check_trigger,
    poison,
    poison_dataset,
    triggered_test,
)
from spikebench.train.backdoor import evaluate_backdoor

__all__ = [
    "BACKDOOR_STREAM",
    "apply_trigger",
    "check_trigger",
    "evaluate_backdoor",
    "poison",
    "poison_dataset",
    "triggered_test",
]
