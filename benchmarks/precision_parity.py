"""Accuracy parity of bf16 and fp32 training, per rule, on the same seeds (a benchmark, not a test).

Every rule trains the default network on Fashion-MNIST (the first ``--limit-train`` training and
``--limit-test`` test samples) for ``--epochs`` epochs, once with ``train.precision=fp32`` and once with
``bf16``, for each seed: the same initial weights, batch order and encodings, so each seed's pair differs
only in the products' precision. Writes ``benchmarks/results/precision_parity.json`` (every pair, and per
rule and over rules the mean difference bf16 - fp32 in percentage points with its spread) and a short
``.md`` beside it. The target: within 0.5 points on average. ``--limit-train 0`` / ``--limit-test 0``
take the whole split (60,000 / 10,000 images); the file is rewritten after every pair, so an
interrupted run keeps what it measured.

    PYTHONPATH=src .venv/bin/python benchmarks/precision_parity.py            # 7 rules x 3 seeds x 2
    PYTHONPATH=src .venv/bin/python benchmarks/precision_parity.py --rules bptt,eprop --seeds 0
    PYTHONPATH=src .venv/bin/python benchmarks/precision_parity.py --limit-train 0 --limit-test 0 \
        --out benchmarks/results/precision_parity_full.json        # the full-data table
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from scipy import stats

from spikebench.components import load_config
from spikebench.io import atomic_write_json, atomic_write_text
from spikebench.precision import bf16_supported
from spikebench.rules import RULES
from spikebench.rundir import git_revision
from spikebench.train.run import train_run

HERE = Path(__file__).resolve().parent
TARGET_PP = 0.5


def train(rule: str, seed: int, precision: str, args: argparse.Namespace) -> dict:
    cfg = load_config(
        None,
        [
            f"rule.name={rule}",
            f"train.seed={seed}",
            f"train.precision={precision}",
            f"train.epochs={args.epochs}",
            "train.device=cpu",
            *(
                f"data.{k}={n}"
                for k, n in (("limit_train", args.limit_train), ("limit_test", args.limit_test))
                if n
            ),
            *args.set,
        ],
    )
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        summary = train_run(cfg, Path(scratch) / "run")
    return {
        "test_accuracy": summary["test_accuracy"],
        "train_seconds": summary["train_seconds"],
        "seconds": time.perf_counter() - t0,
        "precision": summary["precision"],
    }


def spread(values: list[float]) -> dict:
    """Mean, sd, range and a 95% t interval of the mean (None for fewer than two values)."""
    n = len(values)
    mean, sd = statistics.fmean(values), statistics.stdev(values) if n > 1 else None
    half = None if sd is None else float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
    return {
        "mean": mean,
        "sd": sd,
        "ci95": None if half is None else [mean - half, mean + half],
        "min": min(values),
        "max": max(values),
        "n": n,
    }


def summarise(pairs: list[dict]) -> dict:
    """Per rule and over rules, the bf16 - fp32 differences of the pairs measured so far."""
    rules = list(dict.fromkeys(p["rule"] for p in pairs))
    per_rule = {}
    for rule in rules:
        mine = [p for p in pairs if p["rule"] == rule]
        per_rule[rule] = {
            "fp32_mean": statistics.fmean(p["fp32"]["test_accuracy"] for p in mine),
            "bf16_mean": statistics.fmean(p["bf16"]["test_accuracy"] for p in mine),
            "difference_pp": spread([p["difference_pp"] for p in mine]),
        }
    means = [r["difference_pp"]["mean"] for r in per_rule.values()]
    time_ratio = sum(p["bf16"]["train_seconds"] for p in pairs) / sum(
        p["fp32"]["train_seconds"] for p in pairs
    )
    return {
        "pairs": pairs,
        "rules": per_rule,
        "over_rules": {
            "mean_difference_pp": statistics.fmean(means),
            "sd_of_rule_means_pp": statistics.stdev(means) if len(means) > 1 else None,
            "mean_abs_difference_pp": statistics.fmean(abs(m) for m in means),
            "all_pairs_pp": spread([p["difference_pp"] for p in pairs]),
            "within_target": abs(statistics.fmean(means)) <= TARGET_PP,
            "target_pp": TARGET_PP,
            "time_ratio": time_ratio,
        },
    }


def markdown(rec: dict) -> str:
    s = rec["settings"]
    lines = [
        "# bf16 vs fp32 accuracy parity",
        "",
        f"Fashion-MNIST, {_part(s['limit_train'], 'training')} / {_part(s['limit_test'], 'test')} samples, "
        f"{s['epochs']} epoch(s), seeds {', '.join(map(str, s['seeds']))}, default network and rule options; "
        f"{rec['created']}, {rec['cpu']}, torch {rec['torch_version']}, git {rec['git_revision']}.",
        "Difference = bf16 - fp32 test accuracy of the same seed, in percentage points (pp).",
        "",
        "| rule | fp32 accuracy (mean) | bf16 accuracy (mean) | difference, mean (pp) | sd (pp) | min .. max (pp) |",
        "|---|---|---|---|---|---|",
    ]
    for rule, r in rec["rules"].items():
        d = r["difference_pp"]
        sd = "-" if d["sd"] is None else f"{d['sd']:.2f}"
        lines.append(
            f"| {rule} | {100 * r['fp32_mean']:.2f}% | {100 * r['bf16_mean']:.2f}% | {d['mean']:+.2f} | {sd} | "
            f"{d['min']:+.2f} .. {d['max']:+.2f} |"
        )
    o = rec["over_rules"]
    lines += [
        "",
        f"Over rules (mean of the per-rule means): {o['mean_difference_pp']:+.2f} pp; mean |difference| "
        f"per rule {o['mean_abs_difference_pp']:.2f} pp; target within {TARGET_PP} pp on average: "
        f"{'met' if o['within_target'] else 'not met'}. {_interval(o['all_pairs_pp'])} bf16 training took "
        f"{o['time_ratio']:.2f}x the fp32 time (the same machine, loaded by other work; a rough figure).",
        "",
    ]
    if not rec.get("complete", True):
        lines += [f"Incomplete: {len(rec['pairs'])} of {len(s['rules']) * len(s['seeds'])} pairs so far.", ""]
    return "\n".join(lines)


def _part(limit: int | None, split: str) -> str:
    return f"first {limit} {split}" if limit else f"all {split}"


def _interval(d: dict) -> str:
    if d["ci95"] is None:
        return ""
    lo, hi = d["ci95"]
    return f"Over all {d['n']} pairs: {d['mean']:+.2f} pp, 95% t interval [{lo:+.2f}, {hi:+.2f}]."


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rules", default=",".join(sorted(RULES, key=lambda n: RULES.get(n).locality.rank)))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--limit-train", type=int, default=4000)
    ap.add_argument("--limit-test", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="more config overrides")
    ap.add_argument("--out", default=str(HERE / "results" / "precision_parity.json"))
    args = ap.parse_args(argv)
    if not bf16_supported("cpu"):
        print("precision_parity: this CPU has no bf16 support (avx512_bf16/amx_bf16)", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    revision = git_revision()  # of the code imported now, not of a checkout changed meanwhile
    rules = [r for r in args.rules.split(",") if r]
    seeds = [int(s) for s in args.seeds.split(",") if s]
    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in ln
        ),
        "unknown CPU",
    )
    head = {
        "schema": 1,
        "created": time.strftime("%Y-%m-%d"),
        "cpu": cpu,
        "torch_version": torch.__version__,
        "git_revision": revision,
        "settings": {
            "rules": rules,
            "seeds": seeds,
            "limit_train": args.limit_train or None,
            "limit_test": args.limit_test or None,
            "epochs": args.epochs,
            "threads": args.threads,
            "overrides": args.set,
        },
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    pairs: list[dict] = []
    for rule in rules:
        for seed in seeds:
            runs = {p: train(rule, seed, p, args) for p in ("fp32", "bf16")}
            diff = 100 * (runs["bf16"]["test_accuracy"] - runs["fp32"]["test_accuracy"])
            pairs.append({"rule": rule, "seed": seed, **runs, "difference_pp": diff})
            print(
                f"{rule} seed {seed}: fp32 {runs['fp32']['test_accuracy']:.4f} "
                f"bf16 {runs['bf16']['test_accuracy']:.4f} ({diff:+.2f} pp)",
                file=sys.stderr,
                flush=True,
            )
            rec = {**head, **summarise(pairs), "complete": len(pairs) == len(rules) * len(seeds)}
            atomic_write_json(out, rec)
            atomic_write_text(out.with_suffix(".md"), markdown(rec))
    print(markdown(rec))
    return 0


if __name__ == "__main__":
    sys.exit(main())
