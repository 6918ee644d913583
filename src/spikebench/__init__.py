"""spikebench: learning rules of varying locality for spiking neural networks, benchmarked.

Train SNNs with BPTT, truncated BPTT, feedback alignment, direct feedback alignment, e-prop, OTTT and
DECOLLE through one dynamics core and one training loop, and measure accuracy, cost, similarity of
training and robustness.
"""

__version__ = "0.2.0"
