"""Thin network modules over the dynamics core."""

from spikebench.nn.conv import SpikingConv
from spikebench.nn.layers import SpikingLayer
from spikebench.nn.network import NetState, NetStep, Network, Readout, Rollout, SpikingLinear

__all__ = [
    "NetState",
    "NetStep",
    "Network",
    "Readout",
    "Rollout",
    "SpikingConv",
    "SpikingLayer",
    "SpikingLinear",
]
