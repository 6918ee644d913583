"""Thin network modules over the dynamics core."""

from spikebench.nn.network import NetState, Network, Readout, Rollout, SpikingLinear

__all__ = ["NetState", "Network", "Readout", "Rollout", "SpikingLinear"]
