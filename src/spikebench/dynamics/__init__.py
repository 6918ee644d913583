"""Pure neuron dynamics: no modules, no I/O."""

from spikebench.dynamics.lif import LIFParams, LIFState, scan, scan_steps, step, zero_state
from spikebench.dynamics.surrogate import SURROGATES, Surrogate, make_surrogate

__all__ = [
    "LIFParams",
    "LIFState",
    "SURROGATES",
    "Surrogate",
    "make_surrogate",
    "scan",
    "scan_steps",
    "step",
    "zero_state",
]
