"""Learning rules, one file each (registry "rule")."""

from spikebench.rules import bptt, decolle, dfa, eprop, fa, ottt, tbptt  # noqa: F401  (registers)
from spikebench.rules.base import RULES, BatchResult, LearningRule, Locality

__all__ = ["RULES", "BatchResult", "LearningRule", "Locality"]
