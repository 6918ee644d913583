"""The attack success rate of a backdoor trigger (:mod:`spikebench.data.poison`) on a trained network:
the fraction of triggered test samples whose true class is not the target that the network assigns to
the target."""

from __future__ import annotations

from typing import Any

from torch import nn

from spikebench.config import BackdoorConfig
from spikebench.data import Encoding, Split
from spikebench.data.poison import triggered_test
from spikebench.train.loop import evaluate, predict


def evaluate_backdoor(
    net: nn.Module, test: Split, enc: Encoding, cfg: BackdoorConfig, batch_size: int
) -> dict[str, Any]:
    """Clean test accuracy and attack success rate of the trigger of ``cfg`` on ``net``."""
    triggered = triggered_test(test, cfg)
    asr = float("nan")
    if len(triggered):
        preds = predict(net, triggered.x, enc, batch_size).argmax(1).cpu()
        asr = (preds == cfg.target).double().mean().item()
    return {
        "clean_accuracy": evaluate(net, test, enc, batch_size),
        "attack_success_rate": asr,
        "fraction": cfg.fraction,
        "target": cfg.target,
        "size": cfg.size,
        "value": cfg.value,
    }
