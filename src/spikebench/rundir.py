"""A run directory on disk: its layout, and reading a finished run back.

A run directory holds ``config.yaml`` (the resolved config), ``metrics.jsonl`` (one
:class:`~spikebench.train.loop.EpochRecord` per epoch), ``checkpoint.pt`` (the full training state
of :func:`~spikebench.train.loop.training_state`: model, rule state, optimiser, schedule, random
streams, records; loadable with ``weights_only=True``) and ``summary.json`` (schema in
:func:`spikebench.train.run.summary_record`). It is built in ``.NAME.partial`` beside its destination
(:func:`partial_dir`) and renamed when complete, so nothing half-written ever stands under the final
name. ``checksums.json``, written last, holds the SHA-256 of every other file, so that a damaged or
changed record is detected before it is trusted. Training a run is :mod:`spikebench.train.run`; this
module imports nothing of the training loop.

Reading a finished run back (:func:`load_run`, for attacks, evaluation and analyses) rebuilds nothing of
its training: it reads the config and checkpoint and only the test samples the caller asks for, and
leaves every global random generator as it found it.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import spikebench
from spikebench import components, plugins
from spikebench.config import Config, ConfigError, from_dict, load_yaml, to_dict
from spikebench.data import Dataset, InputDomain, Split, dataset_spec, input_domain, load_dataset, load_test
from spikebench.data.poison import BACKDOOR_STREAM, poison_dataset
from spikebench.io import atomic_torch_save
from spikebench.nn import Network
from spikebench.precision import resolve as resolve_precision
from spikebench.records import CHECKPOINT, CONFIG, SUMMARY
from spikebench.registry import SpikebenchError
from spikebench.rules import RULES, LearningRule
from spikebench.train.resources import check_memory
from spikebench.train.seeding import generator, seed_everything, seeded_torch


class RunError(SpikebenchError):
    """A run directory that cannot be created, read or loaded."""


def git_revision() -> str | None:
    """The git revision of the source tree spikebench is imported from, when it is a checkout."""
    src = Path(spikebench.__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=src,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


@dataclass
class Built:
    """Everything a run needs, built from its config."""

    cfg: Config
    data: Dataset
    net: Network
    rule: LearningRule
    device: torch.device
    precision: str = "fp32"
    """The products' precision the run uses (``train.precision`` resolved for the device)."""

    @property
    def test(self) -> Split:
        return self.data.test

    @property
    def n_classes(self) -> int:
        return self.data.n_classes

    @property
    def domain(self) -> InputDomain:
        return input_domain(self.cfg.data)


@dataclass
class TrainedRun:
    """A finished run read back by :func:`load_run`: its config, the trained network and rule state, and
    its first test samples (``test``, as training evaluated them: same order, same values); nothing of
    its training split (a backdoor's triggered test samples derive from ``test``:
    :func:`spikebench.data.poison.triggered_test`). Attacks and analyses take it or a :class:`Built`,
    which has the same fields."""

    path: Path
    cfg: Config
    net: Network
    rule: LearningRule
    device: torch.device
    precision: str
    test: Split
    n_classes: int

    @property
    def domain(self) -> InputDomain:
        """The input domain of the run's dataset (:func:`spikebench.data.input_domain`)."""
        return input_domain(self.cfg.data)


def build(cfg: Config) -> Built:
    """Seed, load data, build network and rule on the configured device."""
    device = components.resolve_device(cfg.train.device)
    precision = resolve_precision(cfg.train.precision, device)  # before anything is loaded
    seed_everything(cfg.train.seed)
    data = poison_dataset(
        load_dataset(cfg.data), cfg.data.backdoor, generator(cfg.train.seed, BACKDOOR_STREAM)
    )
    memory_class = RULES.get(cfg.rule.name).locality.memory
    check_memory(cfg, data.input_shape, data.n_classes, memory_class, str(device))  # before allocating
    net = components.build_network(cfg.model, data.input_shape, data.n_classes).to(device)
    rule = components.build_rule(cfg, net, generator(cfg.train.seed, 2, device))
    return Built(cfg, data, net, rule, device, precision)


def prepare_out_dir(out: Path, force: bool) -> None:
    """Refuse an existing destination (unless ``force``) and check its parent is writable."""
    if out.exists() and not force:
        raise RunError(f"output directory {out} already exists (use --force to replace it)")
    parent = out.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunError(f"cannot create {parent}: {exc.strerror or exc}") from exc
    if not os.access(parent, os.W_OK):
        raise RunError(f"output directory {parent} is not writable")


def partial_dir(out: Path) -> Path:
    """Where the run ``out`` is built until it is complete (and where an interrupted run waits)."""
    return out.resolve().parent / f".{out.name}.partial"


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """``torch.save`` atomically (:func:`spikebench.io.atomic_torch_save`; a full disk is one line)."""
    atomic_torch_save(state, path)


def load_checkpoint(path: Path, device: torch.device | None = None) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` (never runs pickled code); one-line errors.

    Every tensor is loaded to the CPU, whatever device it was saved from or ``device`` (kept for callers
    that name where the run lives): random-number states must be CPU byte tensors to be restored, and
    ``load_state_dict`` of the network, rule and optimiser copies the rest onto their parameters'
    device. So a checkpoint written on a GPU resumes or evaluates on a CPU-only machine and vice versa.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise RunError(f"{path.parent} has no checkpoint.pt") from exc
    except Exception as exc:  # torch raises many types for corrupt or unsafe files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RunError(f"cannot load checkpoint {path}: {first[:200]}") from exc


def read_config(run_dir: Path) -> Config:
    """The validated config of the run directory ``run_dir``."""
    if not (run_dir / CONFIG).is_file():
        raise RunError(f"{run_dir} is not a run directory (no config.yaml)")
    cfg = from_dict(load_yaml(run_dir / CONFIG))
    try:
        components.validate(cfg)
    except ConfigError as exc:  # e.g. a plugin's rule: say which plugin the run needs
        lost = plugins.missing(_recorded_plugins(run_dir))
        if lost:
            raise RunError(
                f"{run_dir} was trained with plugin(s) {', '.join(lost)}, not loaded now; "
                f"load it with {plugins.hint(lost)}"
            ) from exc
        raise
    return cfg


def _recorded_plugins(run_dir: Path) -> object:
    """The ``plugins`` its summary records (None when there is no readable summary)."""
    import json

    try:
        return json.loads((run_dir / SUMMARY).read_text()).get("plugins")
    except (OSError, ValueError, AttributeError):
        return None


def load_run(
    run_dir: Path, device: str | None = None, precision: str | None = None, n_test: int | None = None
) -> TrainedRun:
    """Read a finished run back: its config, the trained network and rule state, and its first
    ``n_test`` test samples (all for None; :func:`spikebench.data.load_test`). ``device`` and
    ``precision``, when given, replace the run's ``train.device`` and ``train.precision``.

    Nothing of training is redone: the training split is not read, nothing is poisoned, no training
    memory is estimated, and no global random generator changes. The network and rule are built exactly
    as training built them (torch's global generator seeded with ``train.seed`` for the layers' initial
    weights, inside :func:`spikebench.train.seeding.seeded_torch`), then take the checkpoint's state.
    """
    cfg = read_config(run_dir)
    changes = {k: v for k, v in (("device", device), ("precision", precision)) if v is not None}
    if changes:
        cfg = from_dict({**to_dict(cfg), "train": {**to_dict(cfg)["train"], **changes}})
    where = components.resolve_device(cfg.train.device)
    products = resolve_precision(cfg.train.precision, where)
    test, n_classes = load_test(cfg.data, n_test)
    sample = tuple(test.x.shape[1:])
    input_shape = sample[1:] if dataset_spec(cfg.data.name).sequential else sample
    with seeded_torch(cfg.train.seed, where):
        net = components.build_network(cfg.model, input_shape, n_classes).to(where)
        rule = components.build_rule(cfg, net, generator(cfg.train.seed, 2, where))
    path = run_dir / CHECKPOINT
    state = load_checkpoint(path, where)
    try:
        net.load_state_dict(state["model"])
        rule.load_state_dict(state.get("rule", {}))
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise RunError(f"cannot load checkpoint {path}: {first[:200]}") from exc
    return TrainedRun(run_dir, cfg, net, rule, where, products, test, n_classes)
