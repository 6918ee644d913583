"""The error analyses report to a user."""

from spikebench.registry import SpikebenchError


class AnalysisError(SpikebenchError):
    """An analysis that cannot run on its input (too few samples, runs without records, mismatched
    probe sets, unsupported network)."""
