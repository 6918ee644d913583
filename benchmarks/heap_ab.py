"""The heap setting of the commands (spikebench.heap) against the C library's defaults, on bptt
training of the default network and the same network from snnTorch layers (a benchmark, not a test).

Each round runs both settings, one after the other, in fresh processes (``SPIKEBENCH_HEAP=system`` for
the defaults): samples/s of spikebench's bptt and of the snnTorch network in fp32 and bf16 (perf's
measurement (a'), :func:`spikebench.perf.harness.measure_network_vs_snntorch`), the minor page faults
of four bptt steps after three warm-up steps, and the peak memory of ten steps as training measures it
(:class:`spikebench.train.memory.PeakMemory`). One torch thread.

    PYTHONPATH=src .venv/bin/python benchmarks/heap_ab.py --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from spikebench.io import atomic_write_json
from spikebench.provenance import git_revision

HERE = Path(__file__).resolve().parent

CHILD = """
import json, torch
from spikebench import heap
setting = heap.keep_freed_memory()
from spikebench.perf.harness import PerfOptions, _config, _Trainer, measure_network_vs_snntorch
from spikebench.train.memory import PeakMemory
torch.set_num_threads(1)
train = _Trainer(_config("bptt", 25, 128, False, "cpu"), torch.device("cpu"))
faults = heap.page_faults(train, 4)
with PeakMemory(torch.device("cpu")) as pm:
    for _ in range(10):
        train()
opts = PerfOptions(threads=1, repeats=15, min_repeats=10, budget_s=40)
pair = measure_network_vs_snntorch(opts, torch.device("cpu"), lambda msg: None)
out = {"heap": setting, "faults_per_step": faults, "peak_training_mib": pm.peak_bytes / 2**20}
for precision, entry in pair["precisions"].items():
    out[precision] = {
        "spikebench": entry["spikebench"]["samples_per_second"],
        "snntorch": entry["snntorch"]["samples_per_second"],
        "speedup": entry["speedup"],
        "speedup_cpu_time": entry["speedup_cpu_time"],
    }
print(json.dumps(out))
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=str(HERE / "results" / "heap_ab.json"))
    args = ap.parse_args(argv)
    entries = []
    for r in range(args.rounds):
        for setting in ("system", "keep"):
            env = {**os.environ, "SPIKEBENCH_HEAP": setting}
            done = subprocess.run(
                [sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True
            )
            entry = {"round": r, "setting": setting, **json.loads(done.stdout.strip().splitlines()[-1])}
            entry["load_average"] = list(os.getloadavg())
            entries.append(entry)
            print(json.dumps(entry), flush=True)
    summary = {}
    for setting in ("system", "keep"):
        rows = [e for e in entries if e["setting"] == setting]
        summary[setting] = {
            "faults_per_step": statistics.median(e["faults_per_step"] for e in rows),
            "peak_training_mib": statistics.median(e["peak_training_mib"] for e in rows),
            **{
                f"{p} {k}": statistics.median(e[p][k] for e in rows)
                for p in ("fp32", "bf16")
                for k in ("spikebench", "snntorch", "speedup")
            },
        }
    record = {
        "schema": 1,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": "PYTHONPATH=src .venv/bin/python benchmarks/heap_ab.py " + " ".join(argv or sys.argv[1:]),
        "git": git_revision(),
        "medians": summary,
        "entries": entries,
    }
    atomic_write_json(Path(args.out), record)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
