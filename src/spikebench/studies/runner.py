"""Run a study: plan its grid, execute the jobs (skipping those already recorded), and write the
manifest. Rerunning the same command continues where an interrupted study stopped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spikebench import plugins
from spikebench.config import Config, to_dict
from spikebench.io import atomic_write_json
from spikebench.records import MANIFEST, RUNS_DIR
from spikebench.registry import SpikebenchError
from spikebench.studies.executors import (
    Executor,
    LocalExecutor,
    RayExecutor,
    gpu_workers,
    uses_gpu,
    visible_gpus,
)
from spikebench.studies.grid import config_key
from spikebench.studies.jobs import Job, Outcome, TrainJob
from spikebench.studies.lock import LOCK_NAME, StudyLock

log = logging.getLogger("spikebench.study")


class StudyError(SpikebenchError):
    """A study directory that cannot be used (e.g. it holds a different study)."""


@dataclass
class Plan:
    """What a study will do: the runs (by key), which part of the study uses which runs, and the jobs
    that evaluate trained runs (attacks, analyses).

    ``followups``: steps ``step(plan, study_dir)`` that add runs and jobs depending on the records of the
    jobs planned before them (e.g. the tradeoff runs at learning rates chosen by the tuning runs,
    :mod:`spikebench.studies.tuning`); :func:`execute_plan` runs the jobs, then each step, then the jobs
    the step added. A step must plan from records alone, so that a rerun plans the same jobs."""

    study: str
    settings: dict[str, Any]
    runs: dict[str, Config] = field(default_factory=dict)
    parts: dict[str, list[str]] = field(default_factory=dict)
    jobs: list[Job] = field(default_factory=list)
    followups: list[Callable[[Plan, Path], None]] = field(default_factory=list)

    def add_runs(self, part: str, configs: list[Config]) -> list[str]:
        keys = []
        for cfg in configs:
            key = config_key(cfg)
            self.runs.setdefault(key, cfg)
            keys.append(key)
        self.parts.setdefault(part, []).extend(k for k in keys if k not in self.parts.get(part, []))
        return keys

    def all_jobs(self) -> list[Job]:
        train = [TrainJob(key, to_dict(cfg)) for key, cfg in self.runs.items()]
        seen, jobs = set(), []
        for job in [*train, *self.jobs]:
            if job.id not in seen:
                seen.add(job.id)
                jobs.append(job)
        return jobs

    def manifest(self) -> dict[str, Any]:
        """What ``study.json`` holds (``plugins``: those loaded here, :func:`spikebench.plugins.loaded`,
        present when there are any)."""
        loaded = plugins.loaded()
        return {
            "schema": 1,
            "study": self.study,
            "settings": self.settings,
            "parts": self.parts,
            "runs": {k: to_dict(c) for k, c in self.runs.items()},
            "jobs": [job.id for job in self.all_jobs()],
            **({"plugins": loaded} if loaded else {}),
        }


class Progress:
    """Hooks for a progress display over the jobs (the CLI draws it). ``running`` counts jobs a worker
    is executing, ``queued`` those submitted or waiting for the runs they need."""

    def start(self, total: int, cached: int) -> None: ...

    def update(self, outcome: Outcome, running: int, failed: int) -> None: ...

    def queued(self, running: int, queued: int) -> None: ...

    def close(self) -> None: ...


def make_executor(
    engine: str,
    workers: int,
    address: str | None,
    devices: tuple[str, ...] = (),
    workers_per_gpu: int = 1,
    gpu_count: int | None = None,
) -> Executor:
    """The executor of ``engine`` for runs on ``devices`` (their ``train.device`` values). On GPUs
    (``gpu_count``: visible ones, counted when None) a local pool runs at most ``workers_per_gpu``
    workers per GPU, each on its own GPU; Ray tasks request ``1 / workers_per_gpu`` GPU each."""
    if engine == "ray":
        return RayExecutor(workers, address, devices, 1.0 / workers_per_gpu)
    if engine != "local":
        raise StudyError(f"unknown engine {engine!r}; valid: local, ray")
    gpus = visible_gpus() if gpu_count is None else gpu_count
    if uses_gpu(set(devices), gpus):
        return LocalExecutor(gpu_workers(workers, gpus, workers_per_gpu), gpus)
    return LocalExecutor(workers)


def job_label(job: Job, runs: dict[str, Config] | None = None) -> str:
    """What a person calls a job: ``train bptt rec seed 0`` or ``pgd-exact fa seed 1 (digits)``."""
    key = getattr(job, "key", None)
    cfg = (runs or {}).get(key) if key is not None else None
    if cfg is None:
        return job.id
    what = "train" if isinstance(job, TrainJob) else job.id.split(" ", 1)[0]
    rec = " rec" if cfg.model.recurrent else ""
    return f"{what} {cfg.rule.name}{rec} seed {cfg.train.seed} ({cfg.data.name})"


def quarantine(study_dir: Path, path: Path) -> Path:
    """Move a corrupt record (file or run directory) to ``STUDY_DIR/corrupt/`` so that its job is done
    again while the damaged copy stays available for inspection."""
    dest_dir = study_dir / "corrupt"
    dest_dir.mkdir(exist_ok=True)
    stem = path.relative_to(study_dir).as_posix().replace("/", "__")
    dest = dest_dir / f"{stem}.{time.strftime('%Y%m%d-%H%M%S')}"
    n = 1
    while dest.exists():
        dest, n = dest_dir / f"{stem}.{time.strftime('%Y%m%d-%H%M%S')}-{n}", n + 1
    path.rename(dest)
    return dest


def check_records(jobs: list[Job], study_dir: Path, labels: dict[str, str] | None = None) -> list[dict]:
    """Verify every job's record; move corrupt ones aside (training runs first, whose attack records go
    with them). Returns one ``{"job", "label", "reason", "moved_to"}`` per corrupt record."""
    redone = []
    for train_first in (True, False):
        for job in jobs:
            if isinstance(job, TrainJob) != train_first:
                continue
            problem = job.problem(study_dir)
            if problem in (None, "missing"):
                continue
            path = job.record(study_dir)
            target = path.parent if isinstance(job, TrainJob) else path
            moved = quarantine(study_dir, target)
            label = (labels or {}).get(job.id, job.id)
            log.warning("%s: corrupt record (%s); moved to %s and done again", label, problem, moved)
            redone.append({"job": job.id, "label": label, "reason": problem, "moved_to": str(moved)})
    return redone


def run_jobs(
    jobs: list[Job],
    study_dir: Path,
    executor: Executor,
    progress: Progress,
    labels: dict[str, str] | None = None,
) -> list[Outcome]:
    """Run ``jobs`` respecting their ``needs`` (train keys); records that exist and are valid are not
    redone (corrupt ones are moved aside first, :func:`check_records`)."""
    labels = labels or {}
    check_records(jobs, study_dir, labels)
    outcomes: list[Outcome] = []
    trained = {j.key for j in jobs if isinstance(j, TrainJob) and j.problem(study_dir) is None}
    lost: set[str] = set()
    todo = []
    for job in jobs:
        if job.problem(study_dir) is None:
            outcomes.append(Outcome(job.id, "cached"))
        else:
            todo.append(job)
    progress.start(len(jobs), len(outcomes))
    submitted = 0
    failed = 0
    slots = max(1, getattr(executor, "slots", 1))

    def counts() -> tuple[int, int]:
        running = min(submitted, slots)
        return running, submitted - running + len(todo)

    def release() -> None:
        nonlocal submitted, failed
        for job in list(todo):
            if any(k in lost for k in job.needs):
                todo.remove(job)
                outcome = Outcome(job.id, "skipped", error="a run it needs failed")
                outcomes.append(outcome)
                progress.update(outcome, counts()[0], failed)
            elif all(k in trained for k in job.needs):
                todo.remove(job)
                executor.submit(job, str(study_dir))
                submitted += 1
        progress.queued(*counts())

    release()
    while submitted:
        job, outcome = executor.wait_any()
        submitted -= 1
        outcomes.append(outcome)
        if outcome.status in ("done", "cached") and isinstance(job, TrainJob):
            trained.add(job.key)
        elif outcome.status == "failed":
            failed += 1
            if isinstance(job, TrainJob):
                lost.add(job.key)
        progress.update(outcome, counts()[0], failed)
        release()
    for job in todo:  # needs that no job of this study provides
        outcomes.append(Outcome(job.id, "skipped", error="its runs are not part of the study"))
    progress.close()
    return outcomes


def check_plugins(study_dir: Path, manifest: dict[str, Any] | None = None) -> None:
    """Refuse to resume a study whose manifest (read from ``study_dir`` unless given) records plugins
    that this process has not loaded: its runs need them."""
    if manifest is None:
        import json

        try:
            manifest = json.loads((study_dir / MANIFEST).read_text())
        except (OSError, ValueError):
            return  # no manifest yet, or an unreadable one (prepare_study_dir says so)
    lost = plugins.missing(manifest.get("plugins") if isinstance(manifest, dict) else None)
    if lost:
        raise StudyError(
            f"{study_dir} was run with plugin(s) {', '.join(lost)}, not loaded now; "
            f"resume it with {plugins.hint(lost)}"
        )


def prepare_study_dir(study_dir: Path, plan: Plan, started: dict[str, Any] | None = None) -> None:
    """Create the directory and its manifest, or check that an existing one is the same study.
    ``started``: this command's :func:`~spikebench.provenance.invocation` record, appended to the
    manifest's ``invocations`` (those of earlier commands are kept)."""
    path = study_dir / MANIFEST
    manifest = plan.manifest()
    old: dict[str, Any] = {}
    if path.exists():
        import json

        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise StudyError(f"{path} is unreadable ({exc}); remove it or use another --out") from exc
        if old.get("study") != plan.study or old.get("settings") != plan.settings:
            raise StudyError(
                f"{study_dir} holds another study ({old.get('study')}, {old.get('settings')}); "
                "use another --out or the same options to resume it"
            )
        check_plugins(study_dir, old)
    elif study_dir.exists() and any(p.name != LOCK_NAME for p in study_dir.iterdir()):
        raise StudyError(f"{study_dir} exists and is not a study directory; use another --out")
    earlier = old.get("invocations")
    manifest["invocations"] = [
        *(earlier if isinstance(earlier, list) else []),
        *([started] if started else []),
    ]
    (study_dir / RUNS_DIR).mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, manifest)


def update_manifest(study_dir: Path, plan: Plan) -> None:
    """Rewrite the manifest for a plan that grew (a follow-up step planned more parts), keeping the
    ``invocations`` recorded so far."""
    import json

    path = study_dir / MANIFEST
    invocations = json.loads(path.read_text()).get("invocations", [])
    atomic_write_json(path, {**plan.manifest(), "invocations": invocations})


def finish_invocation(study_dir: Path, seconds: float) -> None:
    """Record the end time and wall seconds of the manifest's last invocation."""
    import json

    from spikebench.provenance import now

    path = study_dir / MANIFEST
    manifest = json.loads(path.read_text())
    if manifest.get("invocations"):
        manifest["invocations"][-1].update(finished=now(), seconds=round(seconds, 1))
        atomic_write_json(path, manifest)


def execute_plan(
    plan: Plan,
    study_dir: Path,
    *,
    engine: str = "local",
    workers: int = 1,
    address: str | None = None,
    progress: Progress | None = None,
    lock: bool = True,
    wait: bool = False,
    argv: list[str] | None = None,
) -> list[Outcome]:
    """Prepare ``study_dir`` and run every job of ``plan``; returns the outcomes (also in
    ``outcomes.json``). ``lock``: hold the directory's :class:`~spikebench.studies.lock.StudyLock`
    meanwhile (``wait`` for it instead of refusing); pass False when the caller holds it. ``argv``: the
    command's arguments, recorded with the start and end time, versions and hardware in ``study.json``."""
    if lock:
        with StudyLock(study_dir, wait=wait):
            return execute_plan(
                plan,
                study_dir,
                engine=engine,
                workers=workers,
                address=address,
                progress=progress,
                lock=False,
                argv=argv,
            )
    from spikebench.dynamics import fused
    from spikebench.provenance import invocation

    # how this machine computes the LIF recursion (the same results either way, other speeds)
    prepare_study_dir(study_dir, plan, {**invocation(argv), "lif_forward": fused.describe()})
    devices = tuple(sorted({cfg.train.device for cfg in plan.runs.values()}))
    executor = make_executor(engine, workers, address, devices)
    labels = {job.id: job_label(job, plan.runs) for job in plan.all_jobs()}
    t0 = time.time()
    try:
        outcomes = run_jobs(plan.all_jobs(), study_dir, executor, progress or Progress(), labels)
        while plan.followups:
            plan.followups.pop(0)(plan, study_dir)
            update_manifest(study_dir, plan)
            seen = {o.job for o in outcomes}
            new = [job for job in plan.all_jobs() if job.id not in seen]
            labels.update({job.id: job_label(job, plan.runs) for job in new})
            outcomes += run_jobs(new, study_dir, executor, progress or Progress(), labels)
    except BaseException:
        executor.close(cancel=True)
        raise
    executor.close()
    finish_invocation(study_dir, time.time() - t0)
    atomic_write_json(
        study_dir / "outcomes.json",
        {
            "seconds": time.time() - t0,
            "engine": engine,
            "workers": workers,
            "outcomes": [{**vars(o), "label": labels.get(o.job, o.job)} for o in outcomes],
        },
    )
    return outcomes


ProgressFactory = Callable[[], Progress]
