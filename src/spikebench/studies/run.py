"""A study from start to finish: plan, checks before anything runs, jobs, the analyses and the report.

This is what ``spikebench study`` runs; a library caller gets the same analyses and report. It sits
above :mod:`spikebench.report` (it builds the report), so the rest of :mod:`spikebench.studies` stays
below it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from spikebench.config import Config
from spikebench.report import build_report
from spikebench.studies.analysis_step import analyze_study
from spikebench.studies.definitions import Mode, plan_study
from spikebench.studies.executors import default_workers
from spikebench.studies.jobs import Outcome
from spikebench.studies.lock import StudyLock
from spikebench.studies.preflight import preflight
from spikebench.studies.runner import Progress, check_plugins, execute_plan, job_label


@dataclass
class StudyResult:
    """What a finished study gives back: the job outcomes and the report files by format."""

    outcomes: list[Outcome]
    paths: dict[str, Path] = field(default_factory=dict)

    @property
    def report(self) -> Path:
        """The HTML report (the Markdown one when only that was built)."""
        return self.paths.get("html", self.paths.get("md"))  # type: ignore[return-value]

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)


def run_study(
    name: str,
    base: Config,
    mode: Mode,
    out: Path,
    *,
    rules: tuple[str, ...] | None = None,
    engine: str = "local",
    workers: int | None = None,
    address: str | None = None,
    progress: Callable[[dict[str, str]], Progress] | None = None,
    wait: bool = False,
    argv: list[str] | None = None,
) -> StudyResult:
    """Plan the study ``name`` on ``base``, check it (:func:`~spikebench.studies.preflight.preflight`),
    run its jobs in ``out`` (cached ones are reused), then its analyses and its report, all under the
    directory's lock. ``progress`` builds the progress display from the jobs' labels (id -> label);
    ``workers`` defaults to :func:`~spikebench.studies.executors.default_workers`; ``argv``: the command's
    arguments, recorded in ``study.json`` (:func:`~spikebench.studies.runner.execute_plan`)."""
    check_plugins(out)  # before planning: the plan may name a plugin's rule
    plan = plan_study(name, base, mode, rules=rules)
    preflight(list(plan.runs.values()), out)
    labels = {job.id: job_label(job, plan.runs) for job in plan.all_jobs()}
    with StudyLock(out, wait=wait):
        outcomes = execute_plan(
            plan,
            out,
            engine=engine,
            workers=workers or default_workers(),
            address=address,
            progress=None if progress is None else progress(labels),
            lock=False,
            argv=argv,
        )
        analyze_study(out)
        paths = build_report(out)
    return StudyResult(outcomes, paths)
