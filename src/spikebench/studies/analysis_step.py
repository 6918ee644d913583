"""Study-level analyses that span runs, written to ``analysis/`` in the study directory before the
report is built, from the study's ``similarity`` runs: CKA of every run with the bptt run (per layer and
epoch, from the probes recorded during training), gradient alignment with BPTT over training, Fisher
information over time prefixes -- each with its plots -- two small summaries (``cka_reference.json``,
``alignment_summary.json``), and the C1 controls (``similarity_controls.json``,
:mod:`spikebench.analysis.controls`, with their plots in ``controls/``).

``provenance.json`` records, per analysis, the SHA-256 of every input file of the part's runs (paths
relative to the study directory), the files it wrote, and the problems of the last pass. An analysis is
reused only when its inputs hash as recorded; when some recorded inputs are absent and the others are
unchanged (raw probes deleted, say) the recorded result is kept and a problem says so; otherwise it is
computed again from the runs whose records validate (a changed record leaves its run out), and when
that fails its old outputs are removed, so that no report shows a result of inputs that are gone or
changed.
"""

from __future__ import annotations

import json
import logging
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import spikebench
from spikebench.analysis.analyze import AnalyzeOptions, run_analysis
from spikebench.analysis.control_plots import plot_controls
from spikebench.analysis.controls import similarity_controls
from spikebench.io import atomic_write_json, sha256
from spikebench.records import (
    ALIGNMENT_LOG,
    ANALYSIS_DIR,
    CHECKPOINT,
    FISHER_LOG,
    PART_SIMILARITY,
    PROBES_DIR,
    RUNS_DIR,
    SIMILARITY_CONTROLS,
    SUMMARY,
)
from spikebench.registry import SpikebenchError
from spikebench.studies.validate import check_run, omitted_files, run_omissions

log = logging.getLogger(__name__)

PROVENANCE_SCHEMA = 1
#: the files of a run each analysis reads (globs relative to the run directory)
INPUTS: dict[str, tuple[str, ...]] = {
    "cka": (SUMMARY, f"{PROBES_DIR}/meta.json", f"{PROBES_DIR}/epoch_*.pt"),
    "alignment": (SUMMARY, ALIGNMENT_LOG),
    "fisher": (SUMMARY, CHECKPOINT, FISHER_LOG),
    "controls": (SUMMARY, CHECKPOINT, f"{PROBES_DIR}/meta.json", f"{PROBES_DIR}/epoch_*.pt", ALIGNMENT_LOG),
}


def _completed(study_dir: Path, part: str) -> list[Path]:
    """The runs of ``part`` whose records pass :func:`~spikebench.studies.validate.check_run` (a run with
    a changed or truncated tracking record is left out, not read)."""
    manifest = json.loads((study_dir / "study.json").read_text())
    keys = manifest.get("parts", {}).get(part, [])
    runs = manifest.get("runs", {})
    dirs = {k: study_dir / RUNS_DIR / k for k in keys}
    left_out = omitted_files(study_dir)
    return [
        d
        for k, d in dirs.items()
        if check_run(d, runs.get(k), omitted=run_omissions(study_dir, d, left_out)) is None
    ]


def _by_rule(values: list[tuple[str, float | None]]) -> dict[str, float]:
    out: dict[str, list[float]] = {}
    for rule, v in values:
        if v is not None:
            out.setdefault(rule, []).append(v)
    return {rule: statistics.fmean(vs) for rule, vs in out.items()}


def _listed(study_dir: Path, part: str) -> list[Path]:
    """Every run directory of ``part`` that exists, valid or not (what the inputs are hashed over)."""
    manifest = json.loads((study_dir / "study.json").read_text())
    return [
        study_dir / RUNS_DIR / k
        for k in manifest.get("parts", {}).get(part, [])
        if (study_dir / RUNS_DIR / k).is_dir()
    ]


def input_hashes(study_dir: Path, runs: list[Path], name: str) -> dict[str, str]:
    """SHA-256 of every file of ``runs`` that analysis ``name`` reads, by path relative to ``study_dir``."""
    out = {}
    for run in runs:
        for pattern in INPUTS[name]:
            for path in sorted(run.glob(pattern)):
                if path.is_file():
                    out[path.relative_to(study_dir).as_posix()] = sha256(path)
    return out


def load_provenance(study_dir: Path) -> dict[str, Any]:
    path = study_dir / ANALYSIS_DIR / "provenance.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data.get("analyses", {}) if isinstance(data, dict) else {}


def _cka(runs: list[Path], out: Path) -> list[Path]:
    cka, written = run_analysis("cka", runs, AnalyzeOptions(), out)
    rec = cka.record
    layer = rec["layers"][-1]
    row = rec["final"][layer][rec["reference"]]
    final = _by_rule([(r["rule"], row[i]) for i, r in enumerate(rec["runs"]) if i != rec["reference"]])
    atomic_write_json(
        out / "cka_reference.json",
        {"layer": layer, "reference": rec["runs"][rec["reference"]]["label"], "final_last_layer": final},
    )
    return [*written, out / "cka_reference.json"]


def _alignment(runs: list[Path], out: Path) -> list[Path]:
    align, written = run_analysis("alignment", runs, AnalyzeOptions(), out)
    means = []
    for run, series in zip(align.record["runs"], align.record["series"], strict=True):
        cos = [c for c in series["layers"].get("all", {}).get("cosine", []) if c is not None]
        means.append((run["rule"], statistics.fmean(cos) if cos else None))
    atomic_write_json(out / "alignment_summary.json", {"layer": "all", "mean_cosine": _by_rule(means)})
    return [*written, out / "alignment_summary.json"]


def _fisher(runs: list[Path], out: Path) -> list[Path]:
    return run_analysis("fisher", runs, AnalyzeOptions(), out)[1]


def _controls(runs: list[Path], out: Path) -> list[Path]:
    record = similarity_controls(runs)
    path = out / f"{SIMILARITY_CONTROLS}.json"
    atomic_write_json(path, record)
    return [path, *plot_controls(record, out / "controls")]


STEPS: dict[str, Callable[[list[Path], Path], list[Path]]] = {
    "cka": _cka,
    "alignment": _alignment,
    "fisher": _fisher,
    "controls": _controls,
}


def _reusable(recorded: dict[str, Any] | None, current: dict[str, str], study_dir: Path) -> str | None:
    """``"current"`` when the recorded analysis is of exactly these inputs, ``"absent"`` when some of its
    inputs are gone and the rest unchanged, None when it must be computed again."""
    if not recorded or not all((study_dir / p).is_file() for p in recorded.get("outputs", [])):
        return None
    inputs = recorded.get("inputs", {})
    if inputs == current:
        return "current"
    if current and set(current) < set(inputs) and all(inputs[k] == v for k, v in current.items()):
        return "absent"
    return None


def analyze_study(study_dir: Path) -> list[str]:
    """Run (or reuse, see the module docstring) the cross-run analyses of the study's ``similarity``
    part; returns problems (one line each) instead of raising, so that a report can still be built from
    whatever records exist. The problems are also kept in ``provenance.json``."""
    out = study_dir / ANALYSIS_DIR
    out.mkdir(exist_ok=True)
    runs = _completed(study_dir, PART_SIMILARITY)
    listed = _listed(study_dir, PART_SIMILARITY)
    problems: list[str] = []
    if len(runs) < 2:
        return problems
    previous = load_provenance(study_dir)
    omitted = omitted_files(study_dir)
    analyses: dict[str, Any] = {}
    for name, step in STEPS.items():
        current = input_hashes(study_dir, listed, name)
        recorded = previous.get(name)
        state = _reusable(recorded, current, study_dir)
        if state is not None:
            analyses[name] = recorded
            if state == "absent":
                gone = sorted(set(recorded["inputs"]) - set(current))
                if set(gone) <= set(omitted):
                    problems.append(
                        f"{name}: computed before the study was published; its {len(gone)} raw input "
                        f"file(s) left out by publishing, the others unchanged: the recorded result is used"
                    )
                else:
                    problems.append(
                        f"{name}: {len(gone)} input file(s) absent (e.g. {gone[0]}); the recorded analysis is used"
                    )
            continue
        try:
            written = step(runs, out)
        except SpikebenchError as exc:
            problems.append(f"{name}: {exc}")
            for p in (recorded or {}).get("outputs", []):
                (study_dir / p).unlink(missing_ok=True)
            continue
        analyses[name] = {
            "inputs": current,
            "outputs": [p.relative_to(study_dir).as_posix() for p in written],
            "spikebench_version": spikebench.__version__,
        }
    atomic_write_json(
        out / "provenance.json", {"schema": PROVENANCE_SCHEMA, "analyses": analyses, "problems": problems}
    )
    for p in problems:
        log.warning("study analysis: %s", p)
    return problems
