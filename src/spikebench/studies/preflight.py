"""Checks that do not depend on any one job, run once before a study's grid starts: every device the
runs use exists, every dataset is present and loads to valid tensors, every run fits in memory, and the
study directory's filesystem has room. A failure is one line, instead of the same error from each job."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from spikebench import components
from spikebench.config import Config, to_dict
from spikebench.data import load_dataset
from spikebench.records import PUBLISHED
from spikebench.registry import SpikebenchError
from spikebench.rules import RULES
from spikebench.train.resources import check_memory

MIN_FREE_BYTES = 64 * 2**20


class PreflightError(SpikebenchError):
    """A study that cannot run on this machine as configured."""


def _existing(path: Path) -> Path:
    path = path.resolve()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def preflight(runs: list[Config], study_dir: Path) -> None:
    """Raise a one-line :class:`~spikebench.registry.SpikebenchError` when the study cannot run."""
    if (study_dir / PUBLISHED).exists():
        raise PreflightError(
            f"{study_dir} is a published study (its checkpoints are left out, see {PUBLISHED}): run the "
            "study into another directory; `spikebench report` rebuilds this one's report"
        )
    devices = {}
    for cfg in runs:
        if cfg.train.device not in devices:
            devices[cfg.train.device] = components.resolve_device(cfg.train.device)
    datasets = {}
    for cfg in runs:
        key = json.dumps({k: v for k, v in to_dict(cfg.data).items() if k != "backdoor"}, sort_keys=True)
        if key not in datasets:
            ds = load_dataset(cfg.data)
            datasets[key] = (ds.input_shape, ds.n_classes)
        shape, classes = datasets[key]
        memory_class = RULES.get(cfg.rule.name).locality.memory
        check_memory(cfg, shape, classes, memory_class, str(devices[cfg.train.device]))
    where = _existing(study_dir)
    free = shutil.disk_usage(where).free
    if free < MIN_FREE_BYTES:
        raise PreflightError(
            f"only {free / 2**20:.0f} MiB free on the filesystem of {where}; a study needs at least "
            f"{MIN_FREE_BYTES // 2**20} MiB"
        )
