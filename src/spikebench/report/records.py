"""Reading a study directory back as records: the manifest, each run's summary (or failure record),
its attack records, and the study-level analyses. Reports are built from these alone.

Every record is checked as it is read (:mod:`spikebench.studies.validate`): a run whose summary is
truncated, of the wrong schema or types, or whose files do not match their checksums is *corrupt* and
is left out like a failed one, with the reason (``RunRecord.status`` / ``reason``); so is a corrupt attack
record. ``StudyRecords.problems`` lists them all, one line each."""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spikebench.records import ANALYSIS_DIR, ATTACKS_DIR, PUBLISHED, RUNS_DIR, SUMMARY
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
    corrupt: str | None = None  # why the run's records were not trusted
    bad_attacks: dict[str, str] = field(default_factory=dict)  # attack stem -> why it was left out

    @property
    def ok(self) -> bool:
        return self.summary is not None

    @property
    def status(self) -> str:
        """``ok``, ``failed``, ``corrupt`` or ``missing``."""
        if self.summary is not None:
            return "ok"
        if self.corrupt is not None:
            return "corrupt"
        return "failed" if self.failure is not None else "missing"

    @property
    def reason(self) -> str:
        """Why the run is not ``ok`` (empty when it is)."""
        if self.status == "corrupt":
            return str(self.corrupt)
        if self.status == "failed":
            return str((self.failure or {}).get("reason", "failed"))
        return "not run" if self.status == "missing" else ""

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
    published: dict[str, Any] | None = None  # ``published.json`` of a published study

    def part(self, name: str) -> list[RunRecord]:
        return [self.runs[k] for k in self.manifest.get("parts", {}).get(name, []) if k in self.runs]

    @property
    def failed(self) -> list[RunRecord]:
        return [r for r in self.runs.values() if r.failure is not None]

    @property
    def missing(self) -> list[RunRecord]:
        return [r for r in self.runs.values() if r.status == "missing"]

    @property
    def corrupt(self) -> list[RunRecord]:
        return [r for r in self.runs.values() if r.status == "corrupt"]

    @property
    def problems(self) -> list[str]:
        """One line per run or attack record left out: missing, corrupt or failed (rule, seed, key)."""
        out = []
        for r in self.runs.values():
            where = f"{r.label} seed {r.seed} ({r.dataset}, run {r.key})"
            if r.status != "ok":
                out.append(f"{r.status} run: {where}: {r.reason}")
            for stem, why in r.bad_attacks.items():
                out.append(f"corrupt attack record {stem} of {where}: {why}")
        return out

    def unusable(self, parts: Iterable[str]) -> list[RunRecord]:
        """Runs of the ``parts`` that are not ``ok``."""
        keys = {k for p in parts for k in self.manifest.get("parts", {}).get(p, [])}
        return [self.runs[k] for k in keys if k in self.runs and not self.runs[k].ok]


def load_study(path: Path) -> StudyRecords:
    """Read and check every record of the study at ``path`` (see the module docstring)."""
    from spikebench.studies.validate import check_attack, check_run, omitted_files, run_omissions

    manifest = _read(path / "study.json")
    if (
        not isinstance(manifest, dict)
        or not isinstance(manifest.get("runs"), dict)
        or not all(isinstance(c, dict) for c in manifest["runs"].values())
    ):
        raise ReportError(f"{path} is not a study directory (no readable study.json)")
    runs = {}
    left_out = omitted_files(path)  # a published study's omitted files, read once
    for key, config in manifest["runs"].items():
        run_dir = path / RUNS_DIR / key
        failure = _read(path / RUNS_DIR / f"{key}.failed.json")
        rec = RunRecord(key, config, None, failure if isinstance(failure, dict) else None, path=run_dir)
        if (run_dir / SUMMARY).exists():
            problem = check_run(run_dir, config, strict=False, omitted=run_omissions(path, run_dir, left_out))
            if problem is None:
                rec.summary = _read(run_dir / SUMMARY)
            else:
                rec.corrupt = problem
        for f in sorted((run_dir / ATTACKS_DIR).glob("*.json")) if rec.ok and run_dir.is_dir() else []:
            data = _read(f)
            problem = "not valid JSON" if data is None else check_attack(data)
            if problem is None:
                rec.attacks[f.stem] = data
            else:
                rec.bad_attacks[f.stem] = problem
        runs[key] = rec
    analyses = (
        {f.stem: _read(f) for f in sorted((path / ANALYSIS_DIR).glob("*.json"))}
        if (path / ANALYSIS_DIR).is_dir()
        else {}
    )
    published = _read(path / PUBLISHED)
    return StudyRecords(path, manifest, runs, analyses, published if isinstance(published, dict) else None)


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
