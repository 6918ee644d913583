"""CPU time of reading a finished run back for an attack: :func:`spikebench.rundir.load_run` (the
network from its config and checkpoint, the first n test samples) against rebuilding the run's training
set-up as reading did before (every split loaded, the training split poisoned, then the checkpoint).

    python benchmarks/read_run.py RUN_DIR [--n 1000] [--repeats 5]

Prints the median CPU seconds (``time.process_time``, one thread) of each way; CPU time, not wall time,
so that a busy machine does not change the comparison.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from spikebench.records import CHECKPOINT
from spikebench.rundir import build, load_checkpoint, load_run, read_config


def rebuild(run_dir: Path) -> None:
    built = build(read_config(run_dir))
    state = load_checkpoint(run_dir / CHECKPOINT)
    built.net.load_state_dict(state["model"])
    built.rule.load_state_dict(state.get("rule", {}))


def cpu_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--n", type=int, default=1000, help="test samples an attack reads (default 1000)")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    old = cpu_seconds(lambda: rebuild(args.run_dir), args.repeats)
    new = cpu_seconds(lambda: load_run(args.run_dir, n_test=args.n), args.repeats)
    print(
        f"rebuilding the run: {old:.3f} CPU s; load_run(n_test={args.n}): {new:.3f} CPU s ({old / new:.1f}x)"
    )


if __name__ == "__main__":
    main()
