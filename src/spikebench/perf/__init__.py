"""Performance measurement: training throughput and memory of every rule, the Open Neuromorphic SNN
library benchmark protocol beside snnTorch, Norse and SpikingJelly, and GEMM efficiency."""

from spikebench.perf.harness import PERF_SCHEMA, PerfOptions, run_perf, training_flops
from spikebench.train.tensor_memory import MemoryResult, TensorMemory, measure_peak

__all__ = [
    "PERF_SCHEMA",
    "MemoryResult",
    "PerfOptions",
    "TensorMemory",
    "measure_peak",
    "run_perf",
    "training_flops",
]
