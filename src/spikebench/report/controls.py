"""The C1 controls in the report: tables and plots from ``analysis/similarity_controls.json``
(:mod:`spikebench.analysis.controls`) and the problems ``analysis/provenance.json`` records."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from spikebench.records import ANALYSIS_DIR, REFERENCE_RULE, SIMILARITY_CONTROLS
from spikebench.report.document import Block, Heading, Image, Para, Table


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _f(v: float | None) -> str:
    return "–" if v is None else f"{v:.3f}"


def position(rule: float | None, floor: float | None, ceiling: float | None) -> float | None:
    """Where ``rule`` lies between ``floor`` (0) and ``ceiling`` (1); None when undefined."""
    if rule is None or floor is None or ceiling is None or ceiling == floor:
        return None
    return (rule - floor) / (ceiling - floor)


def cka_rows(record: dict[str, Any]) -> list[list[str]]:
    """Per rule and layer at the last epoch: the rule's CKA with bptt of another seed, the ceiling and
    the floor (means over seeds), the rule's position between them, and its accuracy over chance."""
    rows = record["cka"]
    if not rows:
        return []
    last = max(r["epoch"] for r in rows)
    at = [r for r in rows if r["epoch"] == last]
    out = []
    for layer in record["layers"]:
        here = [r for r in at if r["layer"] == layer]
        ceiling = _mean([r["value"] for r in here if r["kind"] == "ceiling"])
        floor = _mean([r["value"] for r in here if r["kind"] == "floor"])
        for rule in dict.fromkeys(r["rule"] for r in here if r["kind"] == "rule"):
            value = _mean([r["value"] for r in here if r["kind"] == "rule" and r["rule"] == rule])
            acc = _mean(list(record["accuracy"].get(rule, {}).values()))
            out.append(
                [rule, layer, _f(value), _f(ceiling), _f(floor), _f(position(value, floor, ceiling)), _f(acc)]
            )
    return out


def _with_ci(entry: dict[str, Any] | None) -> str:
    if entry is None:
        return "–"
    if entry["ci95"] is None:
        return f"{entry['cosine']:.3f} (1 seed)" if entry["seeds"] == 1 else _f(entry["cosine"])
    lo, hi = entry["ci95"]
    return f"{entry['cosine']:.3f} [{lo:.3f}, {hi:.3f}]"


def alignment_rows(record: dict[str, Any]) -> list[list[str]]:
    """Per rule and layer: the mean cosine over seeds with bptt's gradient and with the rule's own
    objective's, each with its bootstrap 95% CI over seeds
    (:func:`~spikebench.analysis.controls.alignment_summary`), and the random-direction baseline."""
    from spikebench.analysis.controls import alignment_summary

    summary = alignment_summary(record)
    out = []
    for rule, layer in dict.fromkeys((a["rule"], a["layer"]) for a in summary):
        mine = {a["reference"]: a for a in summary if a["rule"] == rule and a["layer"] == layer}
        base = max(a["random_baseline"] for a in mine.values())
        out.append(
            [rule, str(layer), _with_ci(mine.get(REFERENCE_RULE)), _with_ci(mine.get("own")), f"{base:.3g}"]
        )
    return out


def controls_section(study_dir: Path) -> list[Block]:
    """The C1 controls of a study (nothing when it has none)."""
    analysis = study_dir / ANALYSIS_DIR
    record = _read(analysis / f"{SIMILARITY_CONTROLS}.json")
    provenance = _read(analysis / "provenance.json") or {}
    blocks: list[Block] = []
    problems = provenance.get("problems") or []
    if record is None and not problems:
        return blocks
    blocks.append(Heading("C1 controls", 3))
    if problems:
        blocks.append(Para("Analysis problems: " + "; ".join(problems)))
    if record is None:
        return blocks
    chance = record.get("chance")
    partners = ", ".join(f"{s} -> {p}" for s, p in (record.get("partners") or {}).items())
    blocks.append(
        Para(
            "Every network is compared with bptt of another seed (seed -> bptt seed: "
            f"{partners}). Ceiling: bptt against bptt of another seed; floor: the untrained network "
            "against trained bptt; position = (rule - floor) / (ceiling - floor). Linear CKA at the last "
            f"epoch, means over seeds; chance accuracy {_f(chance)}. Gradient alignment: per-layer cosines "
            "averaged over the last epoch's measurements, mean over seeds with a bootstrap 95% CI over seeds."
        )
    )
    rows = cka_rows(record)
    if rows:
        blocks.append(Table(["rule", "layer", "CKA", "ceiling", "floor", "position", "test accuracy"], rows))
    rows = alignment_rows(record)
    if rows:
        blocks.append(
            Table(
                [
                    "rule",
                    "layer",
                    "cosine with bptt [95% CI]",
                    "cosine with own objective [95% CI]",
                    "random baseline (97.5%)",
                ],
                rows,
            )
        )
    for png in sorted((analysis / "controls").glob("*.png")):
        blocks.append(Image(png, png.stem))
    return blocks
