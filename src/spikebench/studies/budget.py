"""Estimated cost of a study plan: job counts by kind and the wall time on a given number of workers.

A cost model, not a measurement. Its figures were measured on a 2-core machine running two workers:

- training: about 5 s per 1,000 images per epoch at 25 time steps (bptt, feed-forward, default network),
  plus about 8 s per run for start-up, data loading and evaluation; e-prop costs about twice as much per
  image; a recurrent network is taken as 1.5 times a feed-forward one; cost scales with the time steps;
- a measurement of the training trackers (CKA, gradient alignment, Fisher) about 1 s;
- an attack job about 3 s of start-up, then about 1 ms per sample and gradient step (forward and
  backward through the unrolled network) and 0.35 ms per sample and query of a gradient-free attack, at
  25 time steps.

The quick study's estimate is within a minute of its measured wall time (README "Evidence mode").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from spikebench.config import Config
from spikebench.studies.jobs import AttackJob, TrainJob

TRAIN_SECONDS_PER_IMAGE_EPOCH = 2.5e-3
TRAIN_START_SECONDS = 5.0
TRACK_SECONDS = 0.5
ATTACK_START_SECONDS = 3.0
GRADIENT_STEP_SECONDS = 1e-3  # per sample
QUERY_SECONDS = 3.5e-4  # per sample
REFERENCE_TIMESTEPS = 25
RULE_FACTOR = {"eprop": 2.0}
RECURRENT_FACTOR = 1.5
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


def _scale(cfg: Config) -> float:
    steps = cfg.data.timesteps if cfg.data.name != "sequential-fashion-mnist" else 28
    f = steps / REFERENCE_TIMESTEPS * RULE_FACTOR.get(cfg.rule.name, 1.0)
    return f * (RECURRENT_FACTOR if cfg.model.recurrent else 1.0)


def train_seconds(cfg: Config) -> float:
    """Estimated seconds of one training run of ``cfg``."""
    images = cfg.data.limit_train or DATASET_TRAIN.get(cfg.data.name, 60000)
    batches = math.ceil(images / cfg.train.batch_size) * cfg.train.epochs
    tracked = (batches // max(1, cfg.train.track_every)) if cfg.train.track else 0
    return (
        TRAIN_START_SECONDS
        + TRAIN_SECONDS_PER_IMAGE_EPOCH * images * cfg.train.epochs * _scale(cfg)
        + TRACK_SECONDS * tracked * _scale(cfg)
    )


def attack_seconds(job: AttackJob, cfg: Config) -> float:
    """Estimated seconds of one attack job on a network of ``cfg``."""
    n = job.n or 1000
    rows = len(job.eps) + (1 if job.sanity_eps is not None else 0)
    if job.attack in ("gaussian-noise", "uniform-noise"):
        work = QUERY_SECONDS * 10
    elif job.queries:  # gradient-free: queries per sample
        work = QUERY_SECONDS * job.queries
    else:
        work = GRADIENT_STEP_SECONDS * (job.steps or 1) * (job.restarts or 1)
    return ATTACK_START_SECONDS + n * rows * work * _scale(cfg)


def estimate(plan, workers: int = 2) -> Budget:
    """The :class:`Budget` of every job of ``plan`` (a :class:`~spikebench.studies.runner.Plan`)."""
    b = Budget(workers)
    for job in plan.all_jobs():
        if isinstance(job, TrainJob):
            kind, secs = "train", train_seconds(plan.runs[job.key])
        elif isinstance(job, AttackJob):
            kind = job.id.split(" ", 1)[0].split("@", 1)[0]
            kind = kind + (" (surrogate sweep)" if job.surrogate else "")
            secs = attack_seconds(job, plan.runs[job.key])
        else:
            kind, secs = type(job).__name__, 0.0
        b.counts[kind] = b.counts.get(kind, 0) + 1
        b.seconds[kind] = b.seconds.get(kind, 0.0) + secs
    return b
