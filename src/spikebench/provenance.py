"""Where a result came from: versions, the git revision of the source, the hardware, the command.

Recorded by a study in ``study.json`` (``invocations``: one entry per command that ran it) and stated in
its report's methods section.
"""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import time
from pathlib import Path
from typing import Any

import spikebench
from spikebench import heap


def versions() -> dict[str, str]:
    """Versions of Python, spikebench and the libraries its numbers depend on."""
    out = {"python": platform.python_version(), "spikebench": spikebench.__version__}
    for name in ("torch", "numpy", "scipy"):
        try:
            out[name] = __import__(name).__version__
        except ImportError:
            continue
    return out


def git_revision(path: Path | None = None) -> str | None:
    """The commit of the git checkout holding ``path`` (default: the spikebench source), with
    ``+dirty`` when tracked files differ from it; None outside a checkout or without git."""
    where = str(path or Path(spikebench.__file__).resolve().parent)
    try:
        rev = subprocess.run(
            ["git", "-C", where, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", where, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware() -> dict[str, Any]:
    """The machine: CPU model, cores usable by this process, memory, operating system, GPUs if any."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        memory = int(pages * size)
    except (ValueError, OSError, AttributeError):
        memory = None
    out: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cores": cores,
        "memory_bytes": memory,
        "os": f"{platform.system()} {platform.release()}",
    }
    import torch

    if torch.cuda.is_available():
        out["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return out


def command_line(argv: list[str] | None) -> str | None:
    """``spikebench ARGS`` quoted for a shell, or None without arguments."""
    return None if argv is None else shlex.join(["spikebench", *argv])


def now() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def invocation(argv: list[str] | None) -> dict[str, Any]:
    """The start of one command's record: command, start time, versions, git revision, hardware."""
    return {
        "command": command_line(argv),
        "started": now(),
        "versions": versions(),
        "git": git_revision(),
        "hardware": hardware(),
        "heap": heap.describe(),
    }
