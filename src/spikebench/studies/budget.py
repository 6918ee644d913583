"""Estimated cost of a study plan: job counts by kind and the wall time on a given number of workers.

A cost model, not a measurement. Its figures are a least-squares fit to the 974 job times of an evidence
study (6 seeds) on a 2-core machine running two workers (median error 34% per training job; the sums
match by construction):

- training: about 0.3 ms per image and epoch at 25 time steps (feed-forward bptt, default network, with
  evaluation and data handling), plus about 6.5 s per run of start-up; other rules and the recurrent
  network in proportion to their measured training throughput (:data:`THROUGHPUT`); cost proportional
  to the time steps;
- a measurement of the training trackers (CKA, gradient alignment, Fisher) about 1.1 s;
- an attack job about 1.7 s of start-up, then about 0.09 ms per sample and gradient step (forward and
  backward through the unrolled network) and 0.076 ms per sample and query of a gradient-free attack, at
  25 time steps.

The machine's other load changes every figure: read the estimate as a size, not a promise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from spikebench.attacks.base import ATTACKS
from spikebench.config import Config
from spikebench.studies.jobs import AttackJob, TrainJob

TRAIN_SECONDS_PER_IMAGE_EPOCH = 2.95e-4
TRAIN_START_SECONDS = 6.5
TRACK_SECONDS = 1.1
ATTACK_START_SECONDS = 1.7
GRADIENT_STEP_SECONDS = 8.8e-5  # per sample
QUERY_SECONDS = 7.6e-5  # per sample
REFERENCE_TIMESTEPS = 25
#: training samples/s at T = 25, feed-forward and recurrent, two runs at a time on 2 cores (README's
#: table of the full-data runs): each rule's cost relative to feed-forward bptt
THROUGHPUT = {
    "bptt": (3074, 1130),
    "tbptt": (2693, 1440),
    "fa": (3290, 1305),
    "ottt": (2457, 1494),
    "eprop": (1024, 512),
    "dfa": (2719, 1293),
    "decolle": (1604, 1316),
}
#: training images of the datasets whose size a config does not cap
DATASET_TRAIN = {"fashion-mnist": 60000, "mnist": 60000, "sequential-fashion-mnist": 60000, "digits": 1437}


@dataclass
class Budget:
    """Job counts by kind and the estimated seconds, summed over jobs and as wall time on ``workers``."""

    workers: int
    counts: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def total_seconds(self) -> float:
        return sum(self.seconds.values())

    @property
    def wall_seconds(self) -> float:
        return self.total_seconds / max(1, self.workers)

    def lines(self) -> list[str]:
        """One line per job kind and a total, for printing."""
        out = [
            f"{kind:<28} {self.counts[kind]:>5} jobs  {self.seconds[kind] / 60:>7.1f} job-minutes"
            for kind in sorted(self.counts)
        ]
        out.append(
            f"{'total':<28} {sum(self.counts.values()):>5} jobs  {self.total_seconds / 60:>7.1f} job-minutes; "
            f"about {_hm(self.wall_seconds)} on {self.workers} worker{'s' if self.workers != 1 else ''}"
        )
        return out


def _hm(seconds: float) -> str:
    m = math.ceil(seconds / 60)
    return f"{m // 60} h {m % 60:02d} min" if m >= 60 else f"{m} min"


def _steps(cfg: Config) -> float:
    """Time steps relative to the reference, times the cost of one step relative to the reference's
    (the dense products of a feed-forward pass: a sequential dataset feeds 28 features per step, not 784)."""
    if cfg.data.name.startswith("sequential-"):
        return 28 / REFERENCE_TIMESTEPS * _dense(cfg, 28) / _dense(cfg, 784)
    return cfg.data.timesteps / REFERENCE_TIMESTEPS


def _dense(cfg: Config, n_in: int) -> int:
    widths = [n_in, *cfg.model.hidden, 10]
    return sum(a * b for a, b in zip(widths, widths[1:], strict=False))


def _rule_factor(cfg: Config) -> float:
    """Cost of the rule and architecture relative to feed-forward bptt (unknown rules count as bptt)."""
    ff, rec = THROUGHPUT.get(cfg.rule.name, THROUGHPUT["bptt"])
    return THROUGHPUT["bptt"][0] / (rec if cfg.model.recurrent else ff)


def _scale(cfg: Config) -> float:
    """Cost of one sample's forward and backward pass relative to the reference network (feed-forward
    bptt at 25 steps), for attacks: the recurrent network's exact gradient is bptt's."""
    ff, rec = THROUGHPUT["bptt"]
    return _steps(cfg) * (ff / rec if cfg.model.recurrent else 1.0)


def train_seconds(cfg: Config) -> float:
    """Estimated seconds of one training run of ``cfg``."""
    images = cfg.data.limit_train or DATASET_TRAIN.get(cfg.data.name, 60000)
    batches = math.ceil(images / cfg.train.batch_size) * cfg.train.epochs
    tracked = (batches // max(1, cfg.train.track_every)) if cfg.train.track else 0
    return (
        TRAIN_START_SECONDS
        + TRAIN_SECONDS_PER_IMAGE_EPOCH * images * cfg.train.epochs * _steps(cfg) * _rule_factor(cfg)
        + TRACK_SECONDS * tracked * _scale(cfg)
    )


def attack_seconds(job: AttackJob, cfg: Config) -> float:
    """Estimated seconds of one attack job on a network of ``cfg``."""
    request = job.request
    n, rows, calls = request.n or 1000, len(request.sweep), ATTACKS.get(request.attack).calls(request.options)
    if request.kind == "noise":
        work = QUERY_SECONDS * 10
    elif request.kind == "query":
        work = QUERY_SECONDS * calls
    else:
        work = GRADIENT_STEP_SECONDS * calls
    return ATTACK_START_SECONDS + n * rows * work * _scale(cfg)


def estimate(plan, workers: int = 2) -> Budget:
    """The :class:`Budget` of every job of ``plan`` (a :class:`~spikebench.studies.runner.Plan`)."""
    b = Budget(workers)
    for job in plan.all_jobs():
        if isinstance(job, TrainJob):
            kind, secs = "train", train_seconds(plan.runs[job.key])
        elif isinstance(job, AttackJob):
            kind = job.id.split(" ", 1)[0].split("@", 1)[0]
            kind = kind + (" (surrogate sweep)" if job.request.surrogate else "")
            secs = attack_seconds(job, plan.runs[job.key])
        else:
            kind, secs = type(job).__name__, 0.0
        b.counts[kind] = b.counts.get(kind, 0) + 1
        b.seconds[kind] = b.seconds.get(kind, 0.0) + secs
    return b
