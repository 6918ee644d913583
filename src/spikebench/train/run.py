"""Training a run: build everything from its config, train, and write the run directory.

The directory's layout and reading a finished run back are :mod:`spikebench.rundir`. A run is built in
:func:`~spikebench.rundir.partial_dir` and renamed to its destination when complete; an interrupted run
continues from its last checkpoint (:func:`resume_run`). Measurements during training
(``train.track``) are taken by a tracker the caller passes (``make_tracker``, e.g.
:class:`spikebench.analysis.tracking.Tracker`), so training imports no analysis.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import spikebench
from spikebench import components, plugins
from spikebench.config import Config, from_dict, load_yaml, to_yaml
from spikebench.data import Split
from spikebench.io import atomic_write_bytes, atomic_write_json, file_hashes
from spikebench.precision import compute
from spikebench.records import CHECKPOINT, CHECKSUMS, CONFIG, METRICS, SUMMARY, SUMMARY_SCHEMA
from spikebench.rundir import (
    Built,
    RunError,
    TrainedRun,
    build,
    git_revision,
    load_checkpoint,
    load_run,
    partial_dir,
    prepare_out_dir,
    save_checkpoint,
)
from spikebench.train.backdoor import evaluate_backdoor
from spikebench.train.efficiency import OpEnergy, run_record
from spikebench.train.loop import EpochRecord, Hooks, Tracker, evaluate, fit
from spikebench.train.memory import PeakMemory
from spikebench.train.seeding import exact_numerics, generator
from spikebench.train.tensor_memory import measure_peak

TrackerFactory = Callable[[Config, Path, Split, torch.device], Tracker]
"""Builds the tracker of ``train.track`` from (config, partial run directory, test split, device)."""


def summary_record(
    built: Built, records: list[EpochRecord], mem: PeakMemory, train_seconds: float
) -> dict[str, Any]:
    """The ``summary.json`` of a finished run (schema version ``SUMMARY_SCHEMA``)."""
    cfg = built.cfg
    samples = sum(r.samples_per_second * r.seconds for r in records)
    return {
        "schema": SUMMARY_SCHEMA,
        "status": "completed",
        "rule": cfg.rule.name,
        "dataset": cfg.data.name,
        "encoding": cfg.data.encoder,
        "recurrent": cfg.model.recurrent,
        "arch": cfg.model.arch,
        "hidden": list(cfg.model.hidden),
        "seed": cfg.train.seed,
        "epochs": cfg.train.epochs,
        "timesteps": cfg.data.timesteps,
        "train_samples": len(built.data.train),
        "test_samples": len(built.data.test),
        "n_classes": built.data.n_classes,
        "test_accuracy": records[-1].test_accuracy,
        "train_accuracy": records[-1].train_accuracy,
        "train_loss": records[-1].train_loss,
        "train_seconds": train_seconds,
        "samples_per_second": samples / max(train_seconds, 1e-9),
        "peak_memory_bytes": mem.peak_bytes,
        "peak_memory_total_bytes": mem.peak_total_bytes,
        "peak_memory_method": mem.method,
        "device": str(built.device),
        "precision": built.precision,
        "parameters": sum(p.numel() for p in built.net.parameters()),
        "spikebench_version": spikebench.__version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "git_revision": git_revision(),
        "locality": type(built.rule).locality_for(cfg.rule).as_dict(),
        "paper": built.rule.paper,
        "deviations": list(built.rule.deviations),
        **({"plugins": plugins.loaded()} if plugins.loaded() else {}),
    }


def batch_memory(built: Built) -> dict[str, Any]:
    """Exact tensor memory one training batch of the rule needs (``peak_batch_tensor_bytes``), measured
    on the trained network with an update that is not applied (weights, gradients and random streams of
    the run are left as they were). Unlike the process-level ``peak_memory_bytes``, it does not depend on
    what the process ran before, so it compares rules fairly (:mod:`spikebench.train.tensor_memory`)."""
    cfg = built.cfg
    n = min(cfg.train.batch_size, len(built.data.train))
    x = built.data.train.x[:n].to(built.device)
    y = built.data.train.y[:n].to(built.device)
    enc = components.build_encoding(cfg, generator(cfg.train.seed, 7, built.device))
    rng = torch.get_rng_state()
    with compute(built.precision, built.device):
        result = measure_peak(
            lambda: built.rule.train_batch(built.net, x, y, enc, lambda: None), built.device
        )
    torch.set_rng_state(rng)
    for p in built.net.parameters():
        p.grad = None
    return {"peak_batch_tensor_bytes": result.peak_bytes, "peak_batch_tensor_method": result.method}


def efficiency(built: Built | TrainedRun, energy: OpEnergy | None = None) -> dict[str, Any]:
    """The run's ``efficiency`` record (:func:`spikebench.train.efficiency.run_record`) on its test set,
    with an encoding of its own random stream (the evaluation's stream is left as it was)."""
    cfg = built.cfg
    enc = components.build_encoding(cfg, generator(cfg.train.seed, 8, built.device))
    return run_record(built.net, built.rule, built.test.x, enc, cfg.train.eval_batch_size, energy)


def train_run(
    cfg: Config,
    out: Path,
    *,
    force: bool = False,
    hooks: Hooks | None = None,
    resume: bool = False,
    make_tracker: TrackerFactory | None = None,
) -> dict[str, Any]:
    """Train ``cfg`` and write the run directory ``out``; return its summary.

    The run is built in :func:`partial_dir` and renamed to ``out`` when complete. With ``resume``, an
    interrupted run of the same config found there continues from its last checkpoint; otherwise an
    interrupted run is refused unless ``force`` (which starts over). A run that fails is removed,
    unless it continued from a checkpoint: then the interrupted run and its checkpoint stay as they were
    found (a failed resume never deletes what an earlier attempt saved). One interrupted by the user
    (SIGINT/SIGTERM) or killed keeps its last checkpoint. A config with ``train.track`` needs
    ``make_tracker``.
    """
    components.validate(cfg)
    if cfg.train.track and make_tracker is None:
        raise RunError(
            f"train.track={list(cfg.train.track)} needs a tracker "
            "(make_tracker=spikebench.analysis.tracking.Tracker)"
        )
    prepare_out_dir(out, force)
    partial = partial_dir(out)
    state_path = partial / CHECKPOINT
    resumable = resume and state_path.exists() and (partial / CONFIG).read_text() == to_yaml(cfg)
    if partial.exists() and not resumable:
        if not (force or resume):
            raise RunError(
                f"an interrupted run of {out} exists; continue it with 'spikebench train --resume {out}' "
                "or start over with --force"
            )
        shutil.rmtree(partial)
    built = build(cfg)
    state = load_checkpoint(state_path, built.device) if resumable else None
    if state is None:
        partial.mkdir()
        (partial / CONFIG).write_text(to_yaml(cfg))
    try:
        metrics = (partial / METRICS).open("w")
        for record in [] if state is None else state["records"]:
            metrics.write(json.dumps(record) + "\n")

        def on_epoch(record: EpochRecord) -> None:
            metrics.write(json.dumps(record.to_dict()) + "\n")
            metrics.flush()

        enc = components.build_encoding(cfg, generator(cfg.train.seed, 1, built.device))
        eval_enc = components.build_encoding(cfg, generator(cfg.train.seed, 3, built.device))
        tracker = None
        if cfg.train.track and make_tracker is not None:
            tracker = make_tracker(cfg, partial, built.data.test, built.device)
        with metrics, PeakMemory(built.device) as mem:
            records = fit(
                cfg.train,
                built.net,
                built.rule,
                built.data.train,
                built.data.test,
                enc,
                eval_enc,
                generator(cfg.train.seed, 0),
                hooks,
                on_epoch=on_epoch,
                memory=mem,
                tracker=tracker,
                checkpoint=lambda st: save_checkpoint(st, state_path),
                resume=state,
                precision=built.precision,
            )
        train_seconds = sum(r.seconds for r in records)
        summary = summary_record(built, records, mem, train_seconds)
        summary["resumed_from_epoch"] = None if state is None else int(state["epoch"])
        summary.update(batch_memory(built))
        summary["efficiency"] = efficiency(built)
        summary["tracking"] = None if tracker is None else tracker.summary(train_seconds)
        backdoor = cfg.data.backdoor
        summary["backdoor"] = (
            evaluate_backdoor(built.net, built.data.test, eval_enc, backdoor, cfg.train.eval_batch_size)
            if backdoor.fraction > 0
            else None
        )
        summary["validation_samples"] = 0 if built.data.validation is None else len(built.data.validation)
        summary["validation_accuracy"] = (
            None
            if built.data.validation is None
            else evaluate(
                built.net,
                built.data.validation,
                components.build_encoding(cfg, generator(cfg.train.seed, 4, built.device)),
                cfg.train.eval_batch_size,
            )
        )
        atomic_write_json(partial / SUMMARY, summary)
        # what makes the run checkable later: the hash of every file it wrote (spikebench.studies.validate)
        atomic_write_json(partial / CHECKSUMS, file_hashes(partial, skip=(CHECKSUMS,)))
        if out.exists():
            shutil.rmtree(out)
        os.replace(partial, out)
    except KeyboardInterrupt:
        raise  # keep the partial run and its last checkpoint: it can be resumed
    except BaseException:
        if state is None:
            shutil.rmtree(partial, ignore_errors=True)
        raise
    return summary


def resume_run(
    out: Path, *, hooks: Hooks | None = None, make_tracker: TrackerFactory | None = None
) -> dict[str, Any]:
    """Continue the interrupted run ``out`` from its last checkpoint (its config is the one saved)."""
    partial = partial_dir(out)
    if not (partial / CONFIG).is_file():
        done = (out / SUMMARY).is_file()
        raise RunError(f"{out} is already complete" if done else f"no interrupted run of {out} to resume")
    cfg = from_dict(load_yaml(partial / CONFIG))
    return train_run(cfg, out, force=True, hooks=hooks, resume=True, make_tracker=make_tracker)


def eval_run(run_dir: Path, device: str | None = None, precision: str | None = None) -> dict[str, Any]:
    """Re-evaluate a run's checkpoint on its test set (on ``device``, in ``precision``, when given: a run
    trained on a GPU evaluates on a CPU-only machine); a run trained with a backdoor also gets its
    ``backdoor`` record again (:func:`~spikebench.train.backdoor.evaluate_backdoor`: ``summary.json``'s
    numbers for a deterministic encoder), on the triggered test samples, without poisoning the training
    split again."""
    built = load_run(run_dir, device, precision)
    cfg = built.cfg
    enc = components.build_encoding(cfg, generator(cfg.train.seed, 3, built.device))
    built.net.eval()
    with exact_numerics():
        acc = evaluate(built.net, built.test, enc, cfg.train.eval_batch_size, built.precision)
        backdoor = (
            evaluate_backdoor(built.net, built.test, enc, cfg.data.backdoor, cfg.train.eval_batch_size)
            if cfg.data.backdoor.fraction > 0
            else None
        )
    return {
        "run": str(run_dir),
        "rule": built.cfg.rule.name,
        "dataset": built.cfg.data.name,
        "test_samples": len(built.test),
        "test_accuracy": acc,
        "backdoor": backdoor,
        "device": str(built.device),
        "precision": built.precision,
    }


def efficiency_run(run_dir: Path, energy: OpEnergy | None = None) -> dict[str, Any]:
    """Measure a finished run's efficiency record again, e.g. with other energies per operation."""
    built = load_run(run_dir)
    with exact_numerics():
        record = efficiency(built, energy)
    return {"run": str(run_dir), "rule": built.cfg.rule.name, **record}


def export_run(run_dir: Path, out: Path | None = None, dt: float | None = None, readout: bool = True) -> Path:
    """Write a finished run's network as a NIR graph (:mod:`spikebench.nn.nir_io`); default file
    ``RUN_DIR.nir`` beside the run (the run directory itself stays as its checksums describe it).
    Nothing is written when the network cannot be exported exactly."""
    from spikebench.nn import nir_io

    built = load_run(run_dir, device="cpu", n_test=1)  # one sample: the network's input shape
    path = out if out is not None else run_dir.with_name(f"{run_dir.name}.nir")
    graph = nir_io.to_nir(built.net, nir_io.DT if dt is None else dt, readout)
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / "graph.nir"
        nir_io._nir().write(staged, graph)
        atomic_write_bytes(path, staged.read_bytes())
    return path


def import_run(
    graph_path: Path, out: Path, overrides: list[str] | tuple[str, ...] = (), force: bool = False
) -> dict[str, Any]:
    """Make a run directory from a NIR graph of LIF layers (:func:`spikebench.nn.nir_io.from_nir`), so
    that ``eval``, ``attack`` and ``analyze`` work on a network trained elsewhere. The config is the
    defaults plus ``overrides`` (``data.*`` chooses the dataset the graph's input must fit) with the
    model read from the graph; ``rule.name`` (default bptt) only decides the ``rule`` gradient source of
    attacks. ``summary.json`` has ``status: imported`` and the test accuracy."""
    from spikebench.config import load_config
    from spikebench.nn import nir_io

    net = nir_io.from_nir(nir_io.read(graph_path))
    p = net.layers[0].params
    model = [
        f"model.hidden={list(net.layers[i].n_out for i in range(len(net.layers)))}",
        f"model.recurrent={'true' if net.layers[0].rec is not None else 'false'}",
        f"model.alpha={p.alpha!r}",
        f"model.theta={p.theta!r}",
        "model.reset=zero",
        f"model.kappa={net.readout.kappa!r}",
    ]
    cfg = load_config(None, [*overrides, *model])
    components.validate(cfg)
    if cfg.model.arch != "mlp":
        raise RunError("a NIR graph of dense LIF layers imports as model.arch=mlp")
    prepare_out_dir(out, force)
    built = build(cfg)
    try:
        built.net.load_state_dict({k: v.to(built.device) for k, v in net.float().state_dict().items()})
    except RuntimeError as exc:
        first = (str(exc).strip().splitlines() or ["size mismatch"])[-1].strip()
        raise RunError(f"the graph does not fit {cfg.data.name}: {first[:200]}") from exc
    partial = partial_dir(out)
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir()
    try:
        (partial / CONFIG).write_text(to_yaml(cfg))
        save_checkpoint(
            {"model": built.net.state_dict(), "rule": built.rule.state_dict()}, partial / CHECKPOINT
        )
        enc = components.build_encoding(cfg, generator(cfg.train.seed, 3, built.device))
        built.net.eval()
        acc = evaluate(built.net, built.data.test, enc, cfg.train.eval_batch_size)
        summary = {
            "schema": SUMMARY_SCHEMA,
            "status": "imported",
            "source": str(graph_path),
            "rule": cfg.rule.name,
            "dataset": cfg.data.name,
            "recurrent": cfg.model.recurrent,
            "arch": cfg.model.arch,
            "hidden": list(cfg.model.hidden),
            "timesteps": cfg.data.timesteps,
            "test_samples": len(built.data.test),
            "test_accuracy": acc,
            "parameters": sum(q.numel() for q in built.net.parameters()),
            "spikebench_version": spikebench.__version__,
            "efficiency": efficiency(built),
        }
        atomic_write_json(partial / SUMMARY, summary)
        atomic_write_json(partial / CHECKSUMS, file_hashes(partial, skip=(CHECKSUMS,)))
        if out.exists():
            shutil.rmtree(out)
        os.replace(partial, out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return summary
