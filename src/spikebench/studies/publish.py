"""Publishing a finished study: its records without the bulky raw tensors, and its report built from them.

:func:`publish_study` copies a study's records -- ``study.json``, every run's config, summary, metrics,
tracking logs, checksums, attack and failure records, and the study-level analyses with their plots and
provenance -- and leaves out what a reader does not need to check the verdicts: each run's checkpoint, its raw probe
tensors and its attack plots (:data:`OMIT`; hundreds of MB for an evidence study, a few MB without them).
``published.json`` lists every file left out with its SHA-256 and size, so what remains is still checked
against each run's ``checksums.json`` (:func:`spikebench.studies.validate.check_run`), and the analyses,
whose raw inputs are now partly absent, are used as recorded because the inputs that remain hash as
recorded (:mod:`spikebench.studies.analysis_step`); the report says so. The report is built in the copy
from the copy alone, so ``spikebench report DEST`` rebuilds the same bytes.
"""

from __future__ import annotations

import json
import shutil
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from spikebench.io import atomic_write_json, sha256
from spikebench.provenance import invocation, now
from spikebench.records import (
    ANALYSIS_DIR,
    ATTACKS_DIR,
    CHECKPOINT,
    MANIFEST,
    PROBES_DIR,
    PUBLISHED,
    REPORT_DIR,
    RUNS_DIR,
)
from spikebench.registry import SpikebenchError
from spikebench.report import build_report
from spikebench.report.records import load_study
from spikebench.studies.analysis_step import analyze_study
from spikebench.studies.lock import StudyLock

PUBLISHED_SCHEMA = 1
#: files of a run directory left out of a published study (globs relative to the run directory): the
#: checkpoint, the raw probe tensors, and the per-run attack plots (drawn again from their records by
#: ``spikebench attack``; the report draws its own)
OMIT = (CHECKPOINT, f"{PROBES_DIR}/epoch_*.pt", f"{ATTACKS_DIR}/*.png")


class PublishError(SpikebenchError):
    """A study that cannot be published as it stands."""


def _omit(rel_in_run: str) -> bool:
    return any(fnmatch(rel_in_run, pattern) for pattern in OMIT)


def _records(study_dir: Path) -> tuple[list[Path], dict[str, dict[str, Any]]]:
    """The files to copy and the files left out (with their hashes), paths relative to ``study_dir``."""
    keep = [Path(MANIFEST)]
    left: dict[str, dict[str, Any]] = {}
    manifest = json.loads((study_dir / MANIFEST).read_text())
    for key in sorted(manifest.get("runs", {})):
        failed = Path(RUNS_DIR) / f"{key}.failed.json"
        if (study_dir / failed).is_file():
            keep.append(failed)
        run = study_dir / RUNS_DIR / key
        for path in sorted(p for p in run.rglob("*") if p.is_file()) if run.is_dir() else []:
            rel = path.relative_to(study_dir)
            if _omit(path.relative_to(run).as_posix()):
                left[rel.as_posix()] = {"sha256": sha256(path), "bytes": path.stat().st_size}
            elif not path.name.startswith("."):  # a writer's temporary file
                keep.append(rel)
    analysis = study_dir / ANALYSIS_DIR
    keep += sorted(
        p.relative_to(study_dir) for p in analysis.rglob("*") if p.is_file() and not p.name.startswith(".")
    )
    return keep, left


def publish_study(study_dir: Path, dest: Path, argv: list[str] | None = None) -> Path:
    """Copy the records of the finished study at ``study_dir`` to ``dest`` (which must not exist), leaving
    out :data:`OMIT`, and build the report there; returns the HTML report's path. Refused, writing
    nothing, while any run of the study is not complete and valid, or while the study is in use."""
    study_dir, dest = Path(study_dir), Path(dest)
    if dest.exists():
        raise PublishError(f"{dest} exists: publish into a new directory")
    with StudyLock(study_dir):
        analyze_study(study_dir)  # the analyses, from the full records, before their inputs are left out
        records = load_study(study_dir)
        bad = records.problems
        if bad:
            raise PublishError(
                f"{study_dir} is not complete ({len(bad)} record(s) left out, e.g. {bad[0]}): "
                "finish the study (rerun its command) before publishing it"
            )
        keep, left = _records(study_dir)
        partial = dest.with_name(f".{dest.name}.partial")  # renamed into place when whole
        shutil.rmtree(partial, ignore_errors=True)
        try:
            for rel in keep:
                (partial / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(study_dir / rel, partial / rel)
            atomic_write_json(
                partial / PUBLISHED,
                {
                    "schema": PUBLISHED_SCHEMA,
                    "omitted": left,
                    "published": {**invocation(argv), "finished": now()},
                },
            )
            analyze_study(partial)
            build_report(partial)
            partial.rename(dest)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
    return dest / REPORT_DIR / "report.html"
