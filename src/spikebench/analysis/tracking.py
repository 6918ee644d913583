"""Recording analyses while a run trains (``train.track``), into its run directory.

- ``cka``: hidden-layer spike counts on the probe set (:mod:`spikebench.analysis.probes`) before
  training and after every epoch, ``probes/epoch_EEE.pt``;
- ``grad_alignment``: every ``train.track_every`` batches, on the batch about to be trained on and the
  current weights, the rule's update against the exact BPTT gradient per layer
  (:mod:`spikebench.analysis.alignment`), one JSON line per measurement in ``alignment.jsonl``:
  ``{"step", "epoch", "layers": {layer: {"cosine", "norm_ratio", "rule_norm", "bptt_norm"}},
  "objective"}``; ``objective`` names the rule's own objective (``sequence``: bptt's; ``per-step``: the
  online rules'), and when it is not bptt's, ``"own"`` holds the same comparison with the exact gradient
  of that objective (``bptt_norm`` then being that gradient's norm); ``sizes``: parameters per layer
  (the dimension of each cosine);
- ``fisher``: trace of the empirical Fisher information per layer and time prefix on the first
  ``train.fisher_size`` test samples (:mod:`spikebench.analysis.fisher`) before training and after every
  epoch, one JSON line per epoch in ``fisher.jsonl``: ``{"epoch", "samples", "total", "layers",
  "prefix", "prefix_layers"}``.

Tracking never changes the training trajectory: it has its own random generators, restores ``.grad``
and the global random state, and never steps the weights (tested: tracked and untracked runs end with
identical weights). Its time is kept out of the training time and reported in the run summary.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from spikebench import components
from spikebench.analysis.alignment import layer_sizes, measure_alignments
from spikebench.analysis.errors import AnalysisError
from spikebench.analysis.fisher import FisherInfo, fisher_from_chunks
from spikebench.analysis.probes import PROBE_CHUNK, encoded_chunks, epoch_file, probe_meta, spike_counts
from spikebench.config import Config
from spikebench.data import Split
from spikebench.io import atomic_write_json
from spikebench.nn import Network
from spikebench.records import ALIGNMENT_LOG, FISHER_LOG
from spikebench.rules import LearningRule
from spikebench.train.seeding import generator

ALIGNMENT_STREAM = 5
"""Random stream (:func:`spikebench.train.seeding.generator`) of the encoder used for alignment."""


def probe_fisher(net: Network, cfg: Config, split: Split) -> FisherInfo:
    """Fisher information of ``net`` on ``split`` encoded as a probe set (the same steps for every run)."""
    device = next(net.parameters()).device
    chunks = encoded_chunks(cfg, split.x, device)
    return fisher_from_chunks(net, zip(chunks, split.y.to(device).split(PROBE_CHUNK), strict=True))


def _append_jsonl(path: Path, record: dict[str, Any]) -> None:
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")


class Tracker:
    """Records the analyses named in ``cfg.train.track`` during :func:`spikebench.train.loop.fit`.

    ``run_dir`` is the run directory being built; ``test`` the test split the probe sets come from.
    """

    def __init__(self, cfg: Config, run_dir: Path, test: Split, device: torch.device) -> None:
        if len(test) == 0:
            raise AnalysisError("train.track needs test samples for its probe set")
        if "fisher" in cfg.train.track and cfg.model.arch != "mlp":
            raise AnalysisError(f"train.track=[fisher] supports model.arch=mlp, not {cfg.model.arch}")
        self.cfg, self.run_dir = cfg, run_dir
        self.track = tuple(dict.fromkeys(cfg.train.track))
        self.probe = test.head(cfg.train.probe_size)
        self.fisher_split = test.head(cfg.train.fisher_size)
        self.enc = components.build_encoding(cfg, generator(cfg.train.seed, ALIGNMENT_STREAM, device))
        self.seconds = {name: 0.0 for name in self.track}
        self._epoch = 0  # the last completed epoch

    def due(self, step: int) -> bool:
        """Whether to measure gradient alignment before training on batch ``step``."""
        return "grad_alignment" in self.track and step % self.cfg.train.track_every == 0

    def batch(self, step: int, net: Network, rule: LearningRule, x: Tensor, labels: Tensor) -> None:
        """Gradient alignment of ``rule`` with BPTT on the batch ``x`` [B, ...], ``labels`` [B]."""
        start = time.perf_counter()
        m = measure_alignments(net, rule, x, labels, self.enc)
        row = {"step": step, "epoch": self._epoch + 1, "layers": m["bptt"], "objective": m["objective"]}
        row["sizes"] = layer_sizes(net)
        if m["objective"] != "sequence":
            row["own"] = m["own"]
        _append_jsonl(self.run_dir / ALIGNMENT_LOG, row)
        self.seconds["grad_alignment"] += time.perf_counter() - start

    def epoch(self, epoch: int, net: Network) -> None:
        """Probe spike counts and Fisher information after ``epoch`` (0: before training)."""
        self._epoch = epoch
        if "cka" in self.track:
            start = time.perf_counter()
            counts = spike_counts(net, self.cfg, self.probe.x)
            path = epoch_file(self.run_dir, epoch)
            if not path.parent.exists():
                path.parent.mkdir()
                atomic_write_json(path.parent / "meta.json", probe_meta(self.cfg, self.probe, list(counts)))
            torch.save(counts, path)
            self.seconds["cka"] += time.perf_counter() - start
        if "fisher" in self.track:
            start = time.perf_counter()
            info = probe_fisher(net, self.cfg, self.fisher_split)
            _append_jsonl(self.run_dir / FISHER_LOG, {"epoch": epoch, **info.to_dict()})
            self.seconds["fisher"] += time.perf_counter() - start

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint needs to continue tracking exactly: time spent, last epoch, random stream."""
        gen = self.enc.gen
        return {
            "seconds": dict(self.seconds),
            "epoch": self._epoch,
            "generator": None if gen is None else gen.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint: records written after it (by the interrupted run) are dropped."""
        self.seconds.update(state["seconds"])
        self._epoch = int(state["epoch"])
        if state["generator"] is not None and self.enc.gen is not None:
            self.enc.gen.set_state(state["generator"])
        for name in ("alignment.jsonl", "fisher.jsonl"):
            path = self.run_dir / name
            if path.exists():
                rows = [
                    r for r in path.read_text().splitlines() if r and json.loads(r)["epoch"] <= self._epoch
                ]
                path.write_text("".join(r + "\n" for r in rows))

    def summary(self, train_seconds: float) -> dict[str, Any]:
        """What tracking cost, for the run summary."""
        total = sum(self.seconds.values())
        return {
            "analyses": list(self.track),
            "seconds": total,
            "seconds_by_analysis": dict(self.seconds),
            "fraction_of_training_time": total / max(train_seconds, 1e-9),
            "track_every": self.cfg.train.track_every,
            "probe_samples": len(self.probe),
            "fisher_samples": len(self.fisher_split),
        }
