"""Reading a study directory back as records: the manifest, each run's summary (or failure record),
its attack records, and the study-level analyses. Reports are built from these alone."""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spikebench.registry import SpikebenchError


class ReportError(SpikebenchError):
    """A directory that holds no readable study."""


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


@dataclass
class RunRecord:
    key: str
    config: dict[str, Any]
    summary: dict[str, Any] | None = None
    failure: dict[str, Any] | None = None
    attacks: dict[str, dict[str, Any]] = field(default_factory=dict)
    path: Path | None = None

    @property
    def ok(self) -> bool:
        return self.summary is not None

    @property
    def rule(self) -> str:
        return self.config["rule"]["name"]

    @property
    def recurrent(self) -> bool:
        return bool(self.config["model"]["recurrent"])

    @property
    def seed(self) -> int:
        return int(self.config["train"]["seed"])

    @property
    def dataset(self) -> str:
        return self.config["data"]["name"]

    @property
    def label(self) -> str:
        return self.rule + (" rec" if self.recurrent else "")

    def attack_curve(self, name: str) -> dict[float, float]:
        """eps -> accuracy for the attack record ``name`` (e.g. ``pgd-exact``); empty if absent. The
        sanity record (``sanity: true``, a large eps) is not part of the curve."""
        rec = self.attacks.get(name)
        if not rec:
            return {}
        return {float(r["eps"]): float(r["accuracy"]) for r in rec.get("records", []) if not r.get("sanity")}


@dataclass
class StudyRecords:
    path: Path
    manifest: dict[str, Any]
    runs: dict[str, RunRecord]
    analyses: dict[str, Any]

    def part(self, name: str) -> list[RunRecord]:
        return [self.runs[k] for k in self.manifest.get("parts", {}).get(name, []) if k in self.runs]

    @property
    def failed(self) -> list[RunRecord]:
        return [r for r in self.runs.values() if r.failure is not None]

    @property
    def missing(self) -> list[RunRecord]:
        return [r for r in self.runs.values() if r.summary is None and r.failure is None]


def load_study(path: Path) -> StudyRecords:
    manifest = _read(path / "study.json")
    if not isinstance(manifest, dict) or "runs" not in manifest:
        raise ReportError(f"{path} is not a study directory (no readable study.json)")
    runs = {}
    for key, config in manifest["runs"].items():
        run_dir = path / "runs" / key
        rec = RunRecord(
            key,
            config,
            _read(run_dir / "summary.json"),
            _read(path / "runs" / f"{key}.failed.json"),
            path=run_dir,
        )
        for f in sorted((run_dir / "attacks").glob("*.json")) if run_dir.is_dir() else []:
            data = _read(f)
            if isinstance(data, dict):
                rec.attacks[f.stem] = data
        runs[key] = rec
    analyses = (
        {f.stem: _read(f) for f in sorted((path / "analysis").glob("*.json"))}
        if (path / "analysis").is_dir()
        else {}
    )
    return StudyRecords(path, manifest, runs, analyses)


@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation over seeds (std 0 for one seed)."""

    mean: float
    std: float
    n: int

    def __str__(self) -> str:
        return f"{self.mean:.3f}" if self.n < 2 else f"{self.mean:.3f} ± {self.std:.3f}"


def stat(values: Iterable[float]) -> Stat | None:
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return Stat(statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0, len(vals))


def group(runs: Iterable[RunRecord], key: Callable[[RunRecord], Any]) -> dict[Any, list[RunRecord]]:
    out: dict[Any, list[RunRecord]] = {}
    for r in runs:
        out.setdefault(key(r), []).append(r)
    return out
