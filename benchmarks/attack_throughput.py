"""Time a query attack on a trained run and keep its results, to compare two versions of the code on
the same run and seed (a benchmark, not a test).

Runs ``spikebench.attacks.runner.run_attack`` (the attack alone, without the PGD reference) on the first
``--n`` test samples at L-inf ``--eps`` with ``--queries`` queries, in each of ``--precisions``, with one
torch thread by default. Each invocation adds its entries (``--label``, precision) to ``--out``: wall and
process CPU seconds of the attack, model calls, accuracy and the per-sample ``correct`` string, and the C
heap setting and LIF forward recursion it ran with. Entries of one precision whose ``correct`` strings
differ between labels are printed as such. The heap is set as the commands set it
(:func:`spikebench.heap.keep_freed_memory`), where the code measured has that module.

    spikebench train --set data.limit_train=3000 --set train.epochs=1 --out RUN
    PYTHONPATH=src .venv/bin/python benchmarks/attack_throughput.py --run RUN --label new
    PYTHONPATH=/path/to/old/src .venv/bin/python benchmarks/attack_throughput.py --run RUN --label old

Code from before ``AttackRequest`` is called with the keyword arguments its ``run_attack`` took.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

from spikebench.attacks import AttackOptions
from spikebench.attacks.runner import run_attack
from spikebench.io import atomic_write_json
from spikebench.precision import compute
from spikebench.rundir import load_run

HERE = Path(__file__).resolve().parent


def _attack(target, args: argparse.Namespace, options: AttackOptions) -> dict:
    """``run_attack`` through an AttackRequest, or with the keyword arguments code older than
    AttackRequest took (to time such a version on the same run)."""
    try:
        from spikebench.attacks.request import AttackRequest
    except ImportError:
        return run_attack(
            target, args.attack, (args.eps,), options=options, n=args.n, seed=args.seed, reference=False
        )
    request = AttackRequest(
        args.attack, (args.eps,), options=options, n=args.n, seed=args.seed, reference=False
    )
    return run_attack(target, request)


def _setting() -> dict[str, str]:
    """The commands' heap setting, applied as they apply it, and the forward recursion that runs (for
    code that has them; older code ran with neither)."""
    out = {
        "heap": "system default (no spikebench.heap)",
        "lif_forward": "PyTorch loop (no spikebench.dynamics.fused)",
    }
    try:
        from spikebench import heap

        out["heap"] = heap.keep_freed_memory()
    except ImportError:
        pass
    try:
        from spikebench.dynamics import fused

        out["lif_forward"] = fused.describe()
    except ImportError:
        pass
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="a trained run directory")
    ap.add_argument("--label", required=True, help="name of the code version measured (e.g. old, new)")
    ap.add_argument("--attack", default="square")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--eps", type=float, default=0.03)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    ap.add_argument("--out", default=str(HERE / "results" / "attack_throughput.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    setting = _setting()
    out = Path(args.out)
    rec = json.loads(out.read_text()) if out.exists() else {"schema": 1, "entries": []}
    for precision in [p for p in args.precisions.split(",") if p]:
        target = load_run(Path(args.run), "cpu", precision)
        options = AttackOptions(queries=args.queries)
        c0, t0 = time.process_time(), time.perf_counter()
        with compute(target.precision, target.device):
            report = _attack(target, args, options)
        r = report["records"][0]
        entry = {
            "label": args.label,
            "precision": target.precision,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "run": args.run,
            "attack": args.attack,
            "n": report["n"],
            "queries_budget": args.queries,
            "eps": args.eps,
            "seed": args.seed,
            "threads": args.threads,
            **setting,
            "attack_wall_s": r["seconds"],
            "total_wall_s": time.perf_counter() - t0,
            "total_cpu_s": time.process_time() - c0,
            "model_calls": r["queries"] * report["n"],
            "clean_accuracy": report["clean_accuracy"],
            "accuracy": r["accuracy"],
            "correct": r["correct"],
            "load_average": list(os.getloadavg()),
        }
        rec["entries"] = [
            e for e in rec["entries"] if (e["label"], e["precision"]) != (args.label, entry["precision"])
        ] + [entry]
        print(
            f"{args.label} {entry['precision']}: {args.attack} {args.queries} queries on {entry['n']} samples: "
            f"{entry['attack_wall_s']:.1f} s wall, {entry['total_cpu_s']:.1f} s CPU (with the clean pass), "
            f"{entry['model_calls']:.0f} calls, accuracy {entry['accuracy']:.4f}",
            flush=True,
        )
    for precision in {e["precision"] for e in rec["entries"]}:
        strings = {e["label"]: e["correct"] for e in rec["entries"] if e["precision"] == precision}
        if len(set(strings.values())) > 1:
            print(f"{precision}: correct strings differ between {', '.join(strings)}", flush=True)
        elif len(strings) > 1:
            print(f"{precision}: the same correct strings for {', '.join(strings)}", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, rec)
    return 0


if __name__ == "__main__":
    sys.exit(main())
