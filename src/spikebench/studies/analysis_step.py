"""Study-level analyses that span runs (CKA against the bptt run, alignment summaries), written to
``analysis/`` in the study directory before the report is built."""

from __future__ import annotations

from pathlib import Path


def analyze_study(study_dir: Path) -> None:
    """Compute the cross-run analyses of a study from its runs' recorded probes."""
    (study_dir / "analysis").mkdir(exist_ok=True)
