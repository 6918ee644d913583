"""Checks that a study's records are whole and of the expected schema before they are trusted.

A study skips a job only when its record passes these checks, and a report reads only records that
pass them; everything else is named with the reason. Each check returns ``None`` for a valid record or
a one-line reason.

A finished run's ``checksums.json`` lists the SHA-256 of every other file the run wrote, so that a
truncated ``metrics.jsonl``, a damaged checkpoint or an edited tracking record is detected, not only a
damaged summary. In a published study (:mod:`spikebench.studies.publish`) the checkpoints and raw probes
are left out: ``published.json`` lists them with their hashes (:func:`run_omissions`), and a file listed
there with the hash ``checksums.json`` gives it counts as present; everything else is checked as usual.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from spikebench.io import sha256
from spikebench.records import (
    ATTACKS_DIR,
    CHECKPOINT,
    CHECKSUMS,
    CONFIG,
    METRICS,
    PUBLISHED,
    SUMMARY,
    SUMMARY_SCHEMA,
)

_NUMBER = (int, float)
# key -> accepted types (None: the value may be null)
SUMMARY_FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "schema": ((int,), False),
    "status": ((str,), False),
    "rule": ((str,), False),
    "dataset": ((str,), False),
    "recurrent": ((bool,), False),
    "seed": ((int,), False),
    "epochs": ((int,), False),
    "train_samples": ((int,), False),
    "test_samples": ((int,), False),
    "test_accuracy": (_NUMBER, False),
    "train_accuracy": (_NUMBER, False),
    "train_loss": (_NUMBER, False),
    "train_seconds": (_NUMBER, False),
    "samples_per_second": (_NUMBER, False),
    "peak_memory_bytes": ((int,), True),
    "parameters": ((int,), False),
    "spikebench_version": ((str,), False),
    "locality": ((dict,), False),
    "tracking": ((dict,), True),
    "backdoor": ((dict,), True),
}
ACCURACIES = ("test_accuracy", "train_accuracy")


def _type_name(types: tuple[type, ...]) -> str:
    return " or ".join("number" if t is float else t.__name__ for t in types)


def _read_json(path: Path) -> tuple[Any, str | None]:
    try:
        text = path.read_text()
    except OSError as exc:
        return None, f"{path.name} is unreadable ({exc.strerror or exc})"
    try:
        return json.loads(text), None
    except ValueError as exc:
        what = "empty" if not text.strip() else f"not valid JSON ({str(exc).splitlines()[0][:80]})"
        return None, f"{path.name} is {what}"


REPORT_FIELDS = ("test_accuracy", "locality")
"""What a report cannot do without (a record written by hand may omit the rest)."""


def check_summary(summary: Any, config: dict[str, Any] | None = None, strict: bool = True) -> str | None:
    """Schema and types of a parsed ``summary.json``; with ``config``, that it is that config's run.
    ``strict=False`` requires only :data:`REPORT_FIELDS` (fields present are still type-checked)."""
    if not isinstance(summary, dict):
        return f"summary.json holds a {type(summary).__name__}, not an object"
    for key, (types, nullable) in SUMMARY_FIELDS.items():
        if key not in summary:
            if key in ("tracking", "backdoor") or (not strict and key not in REPORT_FIELDS):
                continue
            return f"summary.json has no {key!r}"
        value = summary[key]
        if value is None and nullable:
            continue
        ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
        if not ok:
            return f"summary.json field {key!r} is {type(value).__name__}, expected {_type_name(types)}"
    if summary.get("schema", SUMMARY_SCHEMA) != SUMMARY_SCHEMA:
        return f"summary.json has schema {summary['schema']}, expected {SUMMARY_SCHEMA}"
    if summary.get("status", "completed") != "completed":
        return f"summary.json has status {summary['status']!r}"
    for key in ACCURACIES:
        if key in summary and not 0.0 <= float(summary[key]) <= 1.0:
            return f"summary.json field {key!r} = {summary[key]} is not an accuracy in [0, 1]"
    if config is not None:
        expect = {
            "rule": config.get("rule", {}).get("name"),
            "dataset": config.get("data", {}).get("name"),
            "seed": config.get("train", {}).get("seed"),
            "epochs": config.get("train", {}).get("epochs"),
            "recurrent": config.get("model", {}).get("recurrent"),
        }
        for key, value in expect.items():
            if value is not None and key in summary and summary[key] != value:
                return f"summary.json says {key}={summary[key]!r}, but the run's config has {value!r}"
    return None


def check_metrics(path: Path, epochs: int) -> str | None:
    """``metrics.jsonl``: one JSON object per epoch."""
    try:
        lines = [line for line in path.read_text().splitlines() if line.strip()]
    except OSError as exc:
        return f"metrics.jsonl is unreadable ({exc.strerror or exc})"
    if len(lines) != epochs:
        return f"metrics.jsonl has {len(lines)} epoch record(s), expected {epochs}"
    for i, line in enumerate(lines, 1):
        try:
            if not isinstance(json.loads(line), dict):
                raise ValueError
        except ValueError:
            return f"metrics.jsonl line {i} is not a JSON object"
    return None


def omitted_files(study_dir: Path) -> dict[str, dict[str, Any]]:
    """The files a published study left out (path relative to the study -> ``sha256``, ``bytes``), from
    its ``published.json``; empty for a study that was not published."""
    data, problem = _read_json(study_dir / PUBLISHED)
    files = data.get("omitted") if problem is None and isinstance(data, dict) else None
    return files if isinstance(files, dict) else {}


def run_omissions(
    study_dir: Path, run_dir: Path, files: dict[str, dict[str, Any]] | None = None
) -> dict[str, str]:
    """The files of ``run_dir`` that publishing left out: path relative to the run -> SHA-256.
    ``files``: :func:`omitted_files` of the study, read once by a caller that checks many runs."""
    prefix = run_dir.relative_to(study_dir).as_posix() + "/"
    return {
        rel.removeprefix(prefix): str(meta.get("sha256"))
        for rel, meta in (omitted_files(study_dir) if files is None else files).items()
        if rel.startswith(prefix) and isinstance(meta, dict)
    }


def check_run(
    run_dir: Path,
    config: dict[str, Any] | None = None,
    strict: bool = True,
    omitted: Mapping[str, str] | None = None,
) -> str | None:
    """A finished run directory: its summary, its per-epoch metrics, its checkpoint, and the hashes of
    every file the summary lists. ``None`` when valid, else the first problem found.

    ``strict=False`` (reports): a run without ``checksums.json`` (not written by a training run) needs
    only a summary with the fields a report reads. ``omitted`` (a published run, :func:`run_omissions`):
    files left out on purpose, by relative path, with the SHA-256 they had; such a file listed in
    ``checksums.json`` must be listed there with that hash, and is then not required."""
    omitted = omitted or {}
    if not run_dir.is_dir():
        return "the run directory is missing"
    summary, problem = _read_json(run_dir / SUMMARY)
    if problem:
        return problem
    problem = check_summary(summary, config, strict)
    if problem:
        return problem
    checksums = run_dir / CHECKSUMS
    if not strict and not checksums.exists():
        return None
    for name in (CONFIG, CHECKPOINT):
        if not (run_dir / name).is_file() and name not in omitted:
            return f"{name} is missing"
    problem = check_metrics(run_dir / METRICS, summary["epochs"])
    if problem:
        return problem
    files, problem = _read_json(checksums)
    if problem:
        return problem
    if not isinstance(files, dict) or SUMMARY not in files:
        return f"{CHECKSUMS} does not list the run's files"
    for rel, digest in files.items():
        path = run_dir / rel
        if not path.is_file() and rel in omitted:
            if omitted[rel] != digest:
                return f"{rel} is left out by publishing with a hash that differs from {CHECKSUMS}"
            continue
        if not path.is_file():
            return f"{rel} is missing"
        if not isinstance(digest, str) or sha256(path) != digest:
            return f"{rel} does not match its checksum in {CHECKSUMS} (changed or truncated)"
    return None


def check_attack(record: Any) -> str | None:
    """An attack record: ``records``, a list of rows with a numeric ``eps`` and an ``accuracy`` in [0, 1]
    (and ``correct``, when present, a string of 0/1)."""
    if not isinstance(record, dict):
        return "the record is not a JSON object"
    rows = record.get("records")
    if not isinstance(rows, list) or not rows:
        return "the record has no 'records' list"
    for row in rows:
        if not isinstance(row, dict):
            return "a row of 'records' is not an object"
        eps, acc = row.get("eps"), row.get("accuracy")
        if not isinstance(eps, _NUMBER) or isinstance(eps, bool) or not math.isfinite(eps):
            return f"a row has eps {eps!r}, not a number"
        if not isinstance(acc, _NUMBER) or isinstance(acc, bool) or not 0.0 <= acc <= 1.0:
            return f"the row at eps {eps} has accuracy {acc!r}, not a number in [0, 1]"
        correct = row.get("correct")
        if correct is not None and (not isinstance(correct, str) or set(correct) - {"0", "1"}):
            return f"the row at eps {eps} has a 'correct' field that is not a string of 0/1"
    return None


def check_record(path: Path) -> str | None:
    """A job's JSON record file: well-formed, and an attack record's schema when it is one."""
    data, problem = _read_json(path)
    if problem:
        return problem
    if path.parent.name == ATTACKS_DIR:
        problem = check_attack(data)
        return None if problem is None else f"{path.name}: {problem}"
    return None if isinstance(data, dict) else f"{path.name} is not a JSON object"
