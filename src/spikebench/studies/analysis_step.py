"""Study-level analyses that span runs, written to ``analysis/`` in the study directory before the
report is built: CKA of every run with the bptt run (per layer and epoch, from the probes recorded
during training), gradient alignment with BPTT over training, and Fisher information over time prefixes
-- each with its plots -- plus two small summaries the C1 verdict reads (``cka_reference.json``,
``alignment_summary.json``)."""

from __future__ import annotations

import json
import logging
import statistics
from pathlib import Path

from spikebench.analysis.analyze import AnalyzeOptions, run_analysis
from spikebench.registry import SpikebenchError
from spikebench.train.run import write_json

log = logging.getLogger(__name__)


def _completed(study_dir: Path, part: str) -> list[Path]:
    """The runs of ``part`` whose records pass :func:`~spikebench.studies.validate.check_run` (a run with
    a changed or truncated tracking record is left out, not read)."""
    from spikebench.studies.validate import check_run

    manifest = json.loads((study_dir / "study.json").read_text())
    keys = manifest.get("parts", {}).get(part, [])
    runs = manifest.get("runs", {})
    return [study_dir / "runs" / k for k in keys if check_run(study_dir / "runs" / k, runs.get(k)) is None]


def _by_rule(values: list[tuple[str, float | None]]) -> dict[str, float]:
    out: dict[str, list[float]] = {}
    for rule, v in values:
        if v is not None:
            out.setdefault(rule, []).append(v)
    return {rule: statistics.fmean(vs) for rule, vs in out.items()}


def analyze_study(study_dir: Path) -> list[str]:
    """Run the cross-run analyses of the study's ``similarity`` part; returns problems (one line each)
    instead of raising, so that a report can still be built from whatever records exist."""
    out = study_dir / "analysis"
    out.mkdir(exist_ok=True)
    runs = _completed(study_dir, "similarity")
    problems: list[str] = []
    if len(runs) < 2:
        return problems
    try:
        cka, _ = run_analysis("cka", runs, AnalyzeOptions(), out)
        rec = cka.record
        layer = rec["layers"][-1]
        row = rec["final"][layer][rec["reference"]]
        final = _by_rule([(r["rule"], row[i]) for i, r in enumerate(rec["runs"]) if i != rec["reference"]])
        write_json(
            out / "cka_reference.json",
            {"layer": layer, "reference": rec["runs"][rec["reference"]]["label"], "final_last_layer": final},
        )
    except SpikebenchError as exc:
        problems.append(f"cka: {exc}")
    try:
        align, _ = run_analysis("alignment", runs, AnalyzeOptions(), out)
        means = []
        for run, series in zip(align.record["runs"], align.record["series"], strict=True):
            cos = [c for c in series["layers"].get("all", {}).get("cosine", []) if c is not None]
            means.append((run["rule"], statistics.fmean(cos) if cos else None))
        write_json(out / "alignment_summary.json", {"layer": "all", "mean_cosine": _by_rule(means)})
    except SpikebenchError as exc:
        problems.append(f"alignment: {exc}")
    try:
        run_analysis("fisher", runs, AnalyzeOptions(), out)
    except SpikebenchError as exc:
        problems.append(f"fisher: {exc}")
    for p in problems:
        log.warning("study analysis: %s", p)
    return problems
