"""Training-step time of one rule in fp32 and bf16 under two source trees, alternating fresh processes
(a benchmark, not a test).

Each round runs one process per tree (the order alternating between rounds); a process builds perf's
trainer of the rule on the default network (T = 25, batch 128, one torch thread, the commands' heap
setting), warms up, then times ``--calls`` rounds of two batches per precision, alternating, by process
CPU time, and reports the medians. Printed per tree: the medians over rounds and bf16 over fp32.
``--env-b KEY=VALUE`` sets an environment variable for the second tree's processes only (so one tree
can be compared with itself under another setting).

    git worktree add /tmp/base <revision>
    PYTHONPATH=src .venv/bin/python benchmarks/step_ab.py /tmp/base/src src --rounds 6
    PYTHONPATH=src .venv/bin/python benchmarks/step_ab.py src src --env-b SPIKEBENCH_KERNEL=off
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = """
import json, statistics, sys, time, torch
from spikebench import heap
heap.keep_freed_memory()
from spikebench.perf.harness import _config, _Trainer
torch.set_num_threads(1)
rule, calls = sys.argv[1], int(sys.argv[2])
tr = {p: _Trainer(_config(rule, 25, 128, False, "cpu"), torch.device("cpu"), precision=p) for p in ("fp32", "bf16")}
for _ in range(8):
    for p in tr:
        tr[p]()
ts = {p: [] for p in tr}
for _ in range(calls):
    for p in tr:
        for _ in range(2):
            c0 = time.process_time()
            tr[p]()
            ts[p].append(time.process_time() - c0)
print(json.dumps({p: statistics.median(v) * 1e3 for p, v in ts.items()}))
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trees", nargs=2, help="two source directories (each holding the spikebench package)")
    ap.add_argument("--rule", default="bptt")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--calls", type=int, default=25, help="timed rounds per process (two batches each)")
    ap.add_argument("--env-b", action="append", default=[], metavar="KEY=VALUE", help="for the second tree")
    args = ap.parse_args(argv)
    env_b = dict(kv.split("=", 1) for kv in args.env_b)
    labels = ["A " + args.trees[0], "B " + args.trees[1] + "".join(f" {k}={v}" for k, v in env_b.items())]
    results: dict[str, list[dict[str, float]]] = {label: [] for label in labels}
    for r in range(args.rounds):
        for i in (0, 1) if r % 2 == 0 else (1, 0):
            tree = args.trees[i]
            env = {**os.environ, "PYTHONPATH": tree, **(env_b if i == 1 else {})}
            done = subprocess.run(
                [sys.executable, "-c", CHILD, args.rule, str(args.calls)],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            ms = json.loads(done.stdout.strip().splitlines()[-1])
            results[labels[i]].append(ms)
            print(f"{labels[i]} round {r}: fp32 {ms['fp32']:.2f} ms, bf16 {ms['bf16']:.2f} ms", flush=True)
    for label, rows in results.items():
        fp32 = statistics.median(m["fp32"] for m in rows)
        bf16 = statistics.median(m["bf16"] for m in rows)
        print(
            f"{label}: {args.rule} fp32 {fp32:.2f} ms, bf16 {bf16:.2f} ms per batch, bf16/fp32 {fp32 / bf16:.3f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
