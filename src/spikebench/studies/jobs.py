"""Units of study work. Each job runs in a worker process (local pool or Ray), writes one record file,
and is skipped when that record exists and passes :mod:`spikebench.studies.validate`: this is the run
cache and what makes studies resumable. A record that exists but fails the checks is *corrupt*: the
study names it and does the job again.
"""

from __future__ import annotations

import dataclasses
import errno
import time
import traceback
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spikebench.attacks.request import AttackRequest
from spikebench.config import from_dict
from spikebench.io import atomic_write_json
from spikebench.records import RUNS_DIR, SUMMARY
from spikebench.registry import SpikebenchError


def run_dir(study_dir: Path, key: str) -> Path:
    return study_dir / RUNS_DIR / key


def failure_path(study_dir: Path, key: str) -> Path:
    return study_dir / RUNS_DIR / f"{key}.failed.json"


@dataclass(frozen=True)
class Outcome:
    """What came of one job: ``status`` is ``done``, ``cached``, ``failed`` or ``skipped``."""

    job: str
    status: str
    seconds: float = 0.0
    error: str | None = None


class Job(ABC):
    """A picklable unit of work with a record file as its completion marker."""

    #: run keys of the training jobs this job needs
    needs: tuple[str, ...] = ()

    @property
    @abstractmethod
    def id(self) -> str: ...

    @abstractmethod
    def record(self, study_dir: Path) -> Path:
        """The file whose existence means the job is done."""

    @abstractmethod
    def run(self, study_dir: Path) -> None: ...

    def problem(self, study_dir: Path) -> str | None:
        """Why the record is not usable (``"missing"`` or a one-line reason), or None when it is."""
        from spikebench.studies.validate import check_record

        path = self.record(study_dir)
        return "missing" if not path.exists() else check_record(path)


@dataclass(frozen=True)
class TrainJob(Job):
    """Train one run of the grid into ``runs/<key>`` (its ``summary.json`` marks it done).

    A run that raises or diverges leaves ``runs/<key>.failed.json`` with the reason (and the epoch, when
    the loss became non-finite) instead, so the study can continue and the report can list it.
    """

    key: str
    config: dict[str, Any] = field(hash=False, compare=False)

    @property
    def id(self) -> str:
        return f"train {self.key}"

    def record(self, study_dir: Path) -> Path:
        return run_dir(study_dir, self.key) / SUMMARY

    def problem(self, study_dir: Path) -> str | None:
        from spikebench.studies.validate import check_run

        out = run_dir(study_dir, self.key)
        return "missing" if not out.exists() else check_run(out, self.config)

    def run(self, study_dir: Path) -> None:
        from spikebench.analysis.tracking import Tracker
        from spikebench.train.run import train_run

        out = run_dir(study_dir, self.key)
        failure = failure_path(study_dir, self.key)
        try:
            train_run(from_dict(self.config), out, force=True, resume=True, make_tracker=Tracker)
        except (
            SpikebenchError,
            RuntimeError,
            TypeError,
            ValueError,
            FloatingPointError,
            OSError,
            MemoryError,
        ) as exc:
            record = {
                "key": self.key,
                "status": "failed",
                "reason": error_line(exc, out),
                "error_type": type(exc).__name__,
                "epoch": getattr(exc, "epoch", None),
                "config": self.config,
            }
            if not isinstance(exc, SpikebenchError):
                record["traceback"] = traceback.format_exc()[-4000:]
            try:
                atomic_write_json(failure, record)
            except OSError:  # e.g. the disk is full: the outcome still carries the reason
                pass
            raise
        if failure.exists():
            failure.unlink()


def error_line(exc: BaseException, where: Path | None = None) -> str:
    """One line for a failed job: a full disk names the file (or the run folder) it could not write."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        target = exc.filename or where
        return f"no space left on device writing {target}" if target else "no space left on device"
    if isinstance(exc, OSError) and exc.strerror and not isinstance(exc, SpikebenchError):
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return first[:500]


def execute(job: Job, study_dir: str) -> Outcome:
    """Run ``job`` unless its record exists and is valid; never raises (worker entry point)."""
    path = Path(study_dir)
    if job.problem(path) is None:
        return Outcome(job.id, "cached")
    t0 = time.perf_counter()
    try:
        job.run(path)
    except Exception as exc:  # a failed job is an outcome, not a crash of the study
        where = run_dir(path, job.key) if hasattr(job, "key") else path
        return Outcome(job.id, "failed", time.perf_counter() - t0, error_line(exc, where))
    return Outcome(job.id, "done", time.perf_counter() - t0)


@dataclass(frozen=True)
class AttackJob(Job):
    """Attack the trained run ``key`` as ``request`` asks; its record is ``runs/<key>/attacks/<stem>.json``,
    exactly the file :func:`~spikebench.attacks.runner.attack_run` writes
    (:meth:`~spikebench.attacks.request.AttackRequest.path`). ``source_key`` is the run whose gradients
    craft transfer examples (the request's ``source_run`` is set to it when the job runs)."""

    key: str
    request: AttackRequest
    source_key: str | None = None

    @property
    def needs(self) -> tuple[str, ...]:  # type: ignore[override]
        return (self.key,) if self.source_key is None else (self.key, self.source_key)

    @property
    def stem(self) -> str:
        return self.request.stem

    @property
    def id(self) -> str:
        return f"{self.stem} {self.key}"

    def record(self, study_dir: Path) -> Path:
        return self.request.path(run_dir(study_dir, self.key))

    def run(self, study_dir: Path) -> None:
        from spikebench.attacks.runner import attack_run

        source = None if self.source_key is None else run_dir(study_dir, self.source_key)
        # the job runs only when its record is missing or corrupt, so it overwrites (force)
        _, path = attack_run(
            run_dir(study_dir, self.key), dataclasses.replace(self.request, source_run=source), force=True
        )
        if path != self.record(study_dir):  # the cache would never find it
            raise RuntimeError(f"attack record written to {path}, expected {self.record(study_dir)}")
