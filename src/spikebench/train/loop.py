"""The training loop: the only one. Every rule runs through :func:`fit`."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from spikebench.config import TrainConfig
from spikebench.data import Encoding, Split
from spikebench.nn import Network
from spikebench.precision import compute
from spikebench.registry import SpikebenchError
from spikebench.rules import LearningRule
from spikebench.train.memory import PeakMemory


class TrainingDiverged(SpikebenchError):
    """The loss became NaN or infinite."""

    def __init__(self, epoch: int, batch: int) -> None:
        super().__init__(f"training diverged: non-finite loss at epoch {epoch}, batch {batch}")
        self.epoch, self.batch = epoch, batch


@dataclass
class EpochRecord:
    """One line of ``metrics.jsonl``."""

    epoch: int
    train_loss: float
    train_accuracy: float
    test_accuracy: float
    seconds: float
    samples_per_second: float

    def to_dict(self) -> dict:
        return asdict(self)


class Hooks(Protocol):
    """What the loop tells its caller (the CLI draws progress bars with it; the library never prints)."""

    def epoch_start(self, epoch: int, n_batches: int) -> None: ...

    def batch_end(self, loss: float, accuracy: float, samples_per_second: float) -> None: ...

    def epoch_end(self, record: EpochRecord) -> None: ...


class Tracker(Protocol):
    """Measurements taken during training (``train.track``; :class:`spikebench.analysis.tracking.Tracker`).

    ``epoch(0, net)`` runs before training and ``epoch(e, net)`` after epoch e; ``batch`` runs before
    training on a batch whenever ``due(step)`` (``step`` counts batches from 0 over the whole run). Both
    must leave the training trajectory unchanged; their time and memory are not counted as training.
    """

    def due(self, step: int) -> bool: ...

    def batch(self, step: int, net: Network, rule: LearningRule, x: Tensor, labels: Tensor) -> None: ...

    def epoch(self, epoch: int, net: Network) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def _aside(memory: PeakMemory | None, fn: Callable[..., None], *args: object) -> float:
    """Run ``fn(*args)`` outside the training measurement (memory paused); return its seconds."""
    if memory is not None:
        memory.pause()
    start = time.perf_counter()
    fn(*args)
    seconds = time.perf_counter() - start
    if memory is not None:
        memory.resume()
    return seconds


class NoHooks:
    def epoch_start(self, epoch: int, n_batches: int) -> None:
        pass

    def batch_end(self, loss: float, accuracy: float, samples_per_second: float) -> None:
        pass

    def epoch_end(self, record: EpochRecord) -> None:
        pass


FUSED_DEVICES = ("cpu", "cuda")  # where torch has a fused kernel for SGD, Adam and AdamW


def make_optimizer(cfg: TrainConfig, params) -> torch.optim.Optimizer:
    """The optimiser of ``cfg`` over the parameters that require a gradient: SGD (momentum 0.9), Adam or
    AdamW. On CPUs and CUDA GPUs it is torch's fused implementation, which updates each parameter in
    one pass (the per-tensor loop takes ten or so; the same update up to float rounding)."""
    params = [p for p in params if p.requires_grad]
    fused = bool(params) and all(p.device.type in FUSED_DEVICES and p.is_floating_point() for p in params)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay, fused=fused)
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)


def lr_factor(cfg: TrainConfig, total_batches: int) -> Callable[[int], float]:
    """Multiplier of the learning rate after a number of batches (cosine decays to 0 at the end)."""
    if cfg.schedule == "constant":
        return lambda i: 1.0
    return lambda i: 0.5 * (1.0 + math.cos(math.pi * min(i, total_batches) / total_batches))


@torch.no_grad()
def predict(net: Network, x: Tensor, enc: Encoding, batch_size: int) -> Tensor:
    """Time-averaged readout [N, C] for inputs ``x`` [N, ...] (fresh state per batch)."""
    device = next(net.parameters()).device
    out = []
    for i in range(0, x.shape[0], batch_size):
        xb = x[i : i + batch_size].to(device, non_blocking=True)
        out.append(net(enc.sequence(xb)).logits)
    return torch.cat(out)


def evaluate(net: Network, split: Split, enc: Encoding, batch_size: int, precision: str = "fp32") -> float:
    """Accuracy of the decision rule shared by all rules: argmax of the time-averaged readout;
    ``precision``: of the products (``fp32`` or ``bf16``, :mod:`spikebench.precision`)."""
    if len(split) == 0:
        return float("nan")
    with compute(precision, next(net.parameters()).device):
        logits = predict(net, split.x, enc, batch_size)
    return (logits.argmax(1).cpu() == split.y).double().mean().item()


def fit(
    cfg: TrainConfig,
    net: Network,
    rule: LearningRule,
    train: Split,
    test: Split,
    enc: Encoding,
    eval_enc: Encoding,
    shuffle: torch.Generator,
    hooks: Hooks | None = None,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    memory: PeakMemory | None = None,
    tracker: Tracker | None = None,
    checkpoint: Callable[[dict[str, Any]], None] | None = None,
    resume: dict[str, Any] | None = None,
    precision: str = "fp32",
) -> list[EpochRecord]:
    """Train ``net`` with ``rule`` for ``cfg.epochs`` epochs; evaluate on ``test`` after each.

    The rule fills ``.grad``; the optimiser steps whenever the rule calls ``apply``. The learning-rate
    schedule advances once per batch. ``memory``, if given, is paused during evaluation so that it
    measures training alone. ``tracker``, if given, measures before training, every
    ``tracker.due`` batch and after each epoch, outside the training time and memory.

    ``checkpoint``, if given, receives the full training state (:func:`training_state`) after every
    ``cfg.checkpoint_every``-th epoch and after the last; ``resume`` is such a state to continue from.
    Continuing from it on CPU gives exactly the records of an uninterrupted run (the batch order,
    encodings, optimiser and schedule are restored with it).

    ``precision`` (resolved: ``fp32`` or ``bf16``, :mod:`spikebench.precision`) is that of the products
    in training and evaluation; tracked analyses run in float32.
    """
    hooks = hooks or NoHooks()
    device = next(net.parameters()).device
    optimizer = make_optimizer(cfg, net.parameters())
    n = len(train)
    n_batches = math.ceil(n / cfg.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg, n_batches * cfg.epochs))

    def apply() -> None:
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    streams = {"shuffle": shuffle, "encoding": enc.gen, "evaluation": eval_enc.gen}
    records: list[EpochRecord] = []
    start_epoch = 0
    if resume is not None:
        start_epoch, records = restore_state(resume, net, rule, optimizer, sched, streams, tracker)
    if tracker is not None and start_epoch == 0:
        _aside(memory, tracker.epoch, 0, net)
    for epoch in range(start_epoch, cfg.epochs):
        net.train()
        hooks.epoch_start(epoch + 1, n_batches)
        order = torch.randperm(n, generator=shuffle)
        t0 = time.perf_counter()
        loss_sum, correct, seen = 0.0, 0, 0
        for b in range(n_batches):
            idx = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            xb = train.x[idx].to(device, non_blocking=True)
            yb = train.y[idx].to(device, non_blocking=True)
            step = epoch * n_batches + b
            if tracker is not None and tracker.due(step):
                t0 += _aside(memory, tracker.batch, step, net, rule, xb, yb)  # not training time
            optimizer.zero_grad(set_to_none=True)
            with compute(precision, device):
                result = rule.train_batch(net, xb, yb, enc, apply)
            if not math.isfinite(result.loss):
                raise TrainingDiverged(epoch + 1, b + 1)
            sched.step()
            loss_sum += result.loss * len(idx)
            correct += int((result.logits.argmax(1) == yb).sum())
            seen += len(idx)
            hooks.batch_end(result.loss, correct / seen, seen / (time.perf_counter() - t0))
        seconds = time.perf_counter() - t0
        if memory is not None:
            memory.pause()
        net.eval()
        record = EpochRecord(
            epoch + 1,
            loss_sum / seen,
            correct / seen,
            evaluate(net, test, eval_enc, cfg.eval_batch_size, precision),
            seconds,
            seen / seconds,
        )
        if tracker is not None:
            tracker.epoch(epoch + 1, net)
        if memory is not None:
            memory.resume()
        records.append(record)
        hooks.epoch_end(record)
        if on_epoch is not None:
            on_epoch(record)
        last = epoch + 1 == cfg.epochs
        if checkpoint is not None and (
            last or (cfg.checkpoint_every and (epoch + 1) % cfg.checkpoint_every == 0)
        ):
            checkpoint(training_state(epoch + 1, records, net, rule, optimizer, sched, streams, tracker))
    return records


def training_state(
    epoch: int,
    records: list[EpochRecord],
    net: Network,
    rule: LearningRule,
    optimizer: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
    streams: dict[str, torch.Generator | None],
    tracker: Tracker | None,
) -> dict[str, Any]:
    """Everything needed to continue training exactly after ``epoch`` (tensors and plain data only, so
    that it loads with ``weights_only=True``); also a valid model checkpoint (keys ``model``, ``rule``)."""
    return {
        "epoch": epoch,
        "records": [r.to_dict() for r in records],
        "model": net.state_dict(),
        "rule": rule.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": sched.state_dict(),
        "rng": {
            "torch": torch.get_rng_state(),
            **{name: g.get_state() for name, g in streams.items() if g is not None},
        },
        "tracker": None if tracker is None else tracker.state_dict(),
    }


def restore_state(
    state: dict[str, Any],
    net: Network,
    rule: LearningRule,
    optimizer: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
    streams: dict[str, torch.Generator | None],
    tracker: Tracker | None,
) -> tuple[int, list[EpochRecord]]:
    """Load a :func:`training_state` into the objects of a fresh run; returns the epoch and records."""
    net.load_state_dict(state["model"])
    rule.load_state_dict(state["rule"])
    optimizer.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    # random-number states are CPU byte tensors whatever device the generator draws on
    torch.set_rng_state(state["rng"]["torch"].cpu())
    for name, g in streams.items():
        if g is not None:
            g.set_state(state["rng"][name].cpu())
    if tracker is not None and state.get("tracker") is not None:
        tracker.load_state_dict(state["tracker"])
    return int(state["epoch"]), [EpochRecord(**r) for r in state["records"]]
