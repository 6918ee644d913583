"""Executors run study jobs: a local process pool (default) or Ray (``--engine ray``).

Both take the same picklable jobs and call :func:`spikebench.studies.jobs.execute` in a worker, so
the records they write are the same. Workers pin PyTorch to ``threads`` intra-op threads each so that
``workers * threads`` does not oversubscribe the cores.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
from abc import ABC, abstractmethod
from typing import Any

from spikebench.registry import SpikebenchError
from spikebench.studies.jobs import Job, Outcome, execute


def default_workers() -> int:
    """What fits this machine's cores (at least one)."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int | None = None) -> bool:
    """Ask Linux to SIGKILL this process when its parent dies (``prctl(PR_SET_PDEATHSIG)``), so that
    workers never outlive a study killed by SIGKILL or the OOM killer; exits at once when the parent
    ``parent`` is already gone. Returns False where the call is unavailable (not Linux)."""
    import ctypes
    import signal
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        ok = libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False
    if parent is not None and os.getppid() != parent:  # the parent died before the call took effect
        os._exit(1)
    return ok


def _init_worker(threads: int, parent: int | None = None) -> None:
    import torch

    die_with_parent(parent)
    torch.set_num_threads(threads)


def _execute_with_threads(job: Job, study_dir: str, threads: int) -> Outcome:
    _init_worker(threads)
    return execute(job, study_dir)


class Executor(ABC):
    """Submit jobs, then wait for any one to finish. ``slots``: how many jobs run at once."""

    slots: int = 1

    @abstractmethod
    def submit(self, job: Job, study_dir: str) -> Any: ...

    @abstractmethod
    def wait_any(self) -> tuple[Job, Outcome]: ...

    @abstractmethod
    def close(self, cancel: bool = False) -> None: ...


class LocalExecutor(Executor):
    """A pool of ``workers`` processes (spawned, so no state is inherited from the parent)."""

    def __init__(self, workers: int) -> None:
        threads = max(1, default_workers() // workers)
        ctx = multiprocessing.get_context("spawn")
        self.slots = workers
        self.pool = cf.ProcessPoolExecutor(
            workers, mp_context=ctx, initializer=_init_worker, initargs=(threads, os.getpid())
        )
        self.pending: dict[cf.Future, Job] = {}

    def submit(self, job: Job, study_dir: str) -> None:
        self.pending[self.pool.submit(execute, job, study_dir)] = job

    def wait_any(self) -> tuple[Job, Outcome]:
        done, _ = cf.wait(list(self.pending), return_when=cf.FIRST_COMPLETED)
        fut = next(iter(done))
        job = self.pending.pop(fut)
        try:
            return job, fut.result()
        except Exception as exc:  # the worker process died (killed, out of memory)
            return job, Outcome(job.id, "failed", error=f"worker died: {type(exc).__name__}: {exc}"[:500])

    def close(self, cancel: bool = False) -> None:
        """Wait for the pool to finish; ``cancel``: drop queued jobs and stop the running ones now (an
        interrupted training run continues from its last epoch checkpoint when the study is rerun)."""
        if cancel:  # ProcessPoolExecutor has no public way to stop jobs in flight before Python 3.14
            for proc in list((getattr(self.pool, "_processes", None) or {}).values()):
                proc.terminate()
        self.pool.shutdown(wait=True, cancel_futures=cancel)


class RayExecutor(Executor):
    """Ray tasks, one CPU each. ``address`` joins an existing cluster (whose workers must see the study
    directory at the same path, e.g. on a shared filesystem); without it a local Ray instance is started
    with ``workers`` CPUs."""

    def __init__(self, workers: int, address: str | None = None) -> None:
        try:
            import ray
        except ImportError as exc:
            raise SpikebenchError("--engine ray needs Ray: pip install 'spikebench[ray]'") from exc
        self.ray = ray
        self.slots = workers
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            try:
                if address:
                    ray.init(address=address, **kwargs)
                else:
                    ray.init(num_cpus=workers, **kwargs)
            except Exception as exc:  # Ray raises many types (ConnectionError, RuntimeError, ...)
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
                where = f" at {address}" if address else ""
                raise SpikebenchError(f"cannot start Ray{where}: {first}") from exc
        self.remote = ray.remote(num_cpus=1)(_execute_with_threads)
        self.pending: dict[Any, Job] = {}

    def submit(self, job: Job, study_dir: str) -> None:
        self.pending[self.remote.remote(job, study_dir, 1)] = job

    def wait_any(self) -> tuple[Job, Outcome]:
        done, _ = self.ray.wait(list(self.pending), num_returns=1)
        job = self.pending.pop(done[0])
        try:
            return job, self.ray.get(done[0])
        except Exception as exc:  # a task whose worker died
            return job, Outcome(job.id, "failed", error=f"worker died: {type(exc).__name__}"[:500])

    def close(self, cancel: bool = False) -> None:
        if cancel:
            for ref in self.pending:
                self.ray.cancel(ref, force=True)
        self.ray.shutdown()
