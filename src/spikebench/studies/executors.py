"""Executors run study jobs: a local process pool (default) or Ray (``--engine ray``).

Both take the same picklable jobs and call :func:`spikebench.studies.jobs.execute` in a worker, so
the records they write are the same. Workers pin PyTorch to ``threads`` intra-op threads each so that
``workers * threads`` does not oversubscribe the cores.

GPUs: a study whose runs use one (``train.device`` ``cuda``, or ``auto`` where a GPU is visible) runs at
most ``workers_per_gpu`` local workers per GPU (default one: each worker creates its own CUDA context),
and each worker sees only its own GPU (``CUDA_VISIBLE_DEVICES``, assigned round-robin), so workers do
not all land on ``cuda:0``. Ray tasks then request ``1 / workers_per_gpu`` GPU each (without it Ray
hides every GPU from a task).

Plugins: a worker imports the plugins the study's process loaded (:func:`spikebench.plugins.loaded`)
before it reads a job, so that a plugin's rule, dataset or attack is registered there too -- a local
worker in its initializer, a Ray task before it runs (a plugin file must then be at the same path on
every node of the cluster, like the study directory, and a plugin module importable there).
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
from abc import ABC, abstractmethod
from typing import Any

from spikebench import heap, plugins
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


def uses_gpu(devices: set[str] | list[str], gpu_count: int) -> bool:
    """Whether runs on ``devices`` (``train.device`` values) use a GPU where ``gpu_count`` are visible."""
    return gpu_count > 0 and any(d == "cuda" or d.startswith("cuda:") or d == "auto" for d in devices)


def visible_gpus() -> int:
    """How many CUDA devices this process sees (0 without CUDA; does not initialise CUDA)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def gpu_workers(workers: int, gpu_count: int, workers_per_gpu: int = 1) -> int:
    """The local worker count for a study on ``gpu_count`` GPUs: at most ``workers_per_gpu`` per GPU."""
    if workers_per_gpu < 1:
        raise SpikebenchError(f"workers per GPU must be positive, got {workers_per_gpu}")
    return max(1, min(workers, gpu_count * workers_per_gpu))


def gpu_for_worker(index: int, gpu_count: int, visible: str | None) -> str:
    """The ``CUDA_VISIBLE_DEVICES`` value of local worker ``index`` (round-robin over the GPUs; ``visible``
    is the parent's own ``CUDA_VISIBLE_DEVICES``, whose entries are kept)."""
    ids = [v.strip() for v in visible.split(",") if v.strip()] if visible else []
    ids = ids or [str(i) for i in range(gpu_count)]
    return ids[index % len(ids)]


def _init_worker(
    threads: int,
    parent: int | None = None,
    plugin_specs: tuple[str, ...] = (),
    counter: Any = None,
    gpu_count: int = 0,
    visible: str | None = None,
) -> None:
    if counter is not None:  # before torch touches CUDA in this process: the worker sees one GPU
        with counter.get_lock():
            index = counter.value
            counter.value += 1
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu_for_worker(index, gpu_count, visible)
    import torch

    die_with_parent(parent)
    heap.keep_freed_memory()
    torch.set_num_threads(threads)
    plugins.load_all(plugin_specs)


def _execute_with_threads(
    job: Job, study_dir: str, threads: int, plugin_specs: tuple[str, ...] = ()
) -> Outcome:
    _init_worker(threads, plugin_specs=plugin_specs)
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
    """A pool of ``workers`` processes (spawned, so no state is inherited from the parent: each imports
    this process's plugins first). With ``gpu_count`` > 0, each worker is given one of the GPUs,
    round-robin (see the module docstring)."""

    def __init__(self, workers: int, gpu_count: int = 0) -> None:
        threads = max(1, default_workers() // workers)
        ctx = multiprocessing.get_context("spawn")
        self.slots = workers
        gpu_args: tuple[Any, ...] = ()
        if gpu_count > 0:
            gpu_args = (ctx.Value("i", 0), gpu_count, os.environ.get("CUDA_VISIBLE_DEVICES"))
        self.pool = cf.ProcessPoolExecutor(
            workers,
            mp_context=ctx,
            initializer=_init_worker,
            initargs=(threads, os.getpid(), tuple(plugins.loaded()), *gpu_args),
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
    """Ray tasks, one CPU each, and ``gpus`` GPU each when the study's runs use a GPU (``devices``:
    their ``train.device`` values; ``auto`` asks for one where the cluster has GPUs). ``address`` joins
    an existing cluster (whose workers must see the study directory at the same path, e.g. on a shared
    filesystem); without it a local Ray instance is started with ``workers`` CPUs."""

    def __init__(
        self, workers: int, address: str | None = None, devices: tuple[str, ...] = (), gpus: float = 1.0
    ) -> None:
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
        cluster_gpus = int(ray.cluster_resources().get("GPU", 0))
        self.num_gpus = gpus if uses_gpu(set(devices), cluster_gpus) else 0
        self.remote = ray.remote(num_cpus=1, num_gpus=self.num_gpus)(_execute_with_threads)
        self.plugin_specs = tuple(plugins.loaded())
        self.pending: dict[Any, Job] = {}

    def submit(self, job: Job, study_dir: str) -> None:
        self.pending[self.remote.remote(job, study_dir, 1, self.plugin_specs)] = job

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
