"""Adversarial attacks on trained spiking networks (registry "attack") and backdoor poisoning.

:func:`spikebench.attacks.runner.run_attack` runs an :class:`AttackRequest` (a registered attack over a
list of eps) on a trained run and returns its records; the runner is imported on demand (it reads runs
back from disk).
"""

from spikebench.attacks import apgd, blackbox, gradient  # noqa: F401  (registers)
from spikebench.attacks.adapter import Classifier, ExactGradient, GradientSource, RuleGradient
from spikebench.attacks.base import ATTACKS, Attack, AttackOptions, AttackResult, Target, margin
from spikebench.attacks.request import AttackRequest
from spikebench.attacks.threat import NORMS, AttackError, ThreatModel, image_layout

__all__ = [
    "ATTACKS",
    "NORMS",
    "Attack",
    "AttackError",
    "AttackOptions",
    "AttackRequest",
    "AttackResult",
    "Classifier",
    "ExactGradient",
    "GradientSource",
    "RuleGradient",
    "Target",
    "ThreatModel",
    "image_layout",
    "margin",
]
