"""Accuracy at equal tuning: a small learning-rate selection per rule on images held out of the training
set, before the C2 (tradeoff) runs are planned.

The ``tuning`` part trains every rule, feed-forward and recurrent, at the study's first seed with the
learning rates ``train.lr x Mode.tune_lrs`` and ``data.validation = Mode.tune_validation`` training
images held out (:func:`~spikebench.data.datasets.split_validation`). Once those runs are done, the
runner calls :func:`plan_tuned` (a follow-up step of the plan): it picks, per rule and architecture, the
learning rate of the highest ``validation_accuracy`` (ties: the default learning rate, else the smallest
tied one; failed runs are never chosen; with none completed, the default), records the choice in
``STUDY_DIR/analysis/tuning.json`` and adds the ``tradeoff`` runs with that learning rate and the same
validation split. The choice reads the validation accuracies only, never a test-set number.

The tradeoff run of the first seed is the tuning run of the chosen learning rate (equal configs share a
key), and every run is cached by its config, so a rerun finds the same choice and trains nothing again.

``tuning.json``::

    {"schema": 1, "validation": <data.validation>, "validation_samples": N, "multipliers": [...], "default_lr": lr, "seed": s,
     "chosen": [{"rule", "recurrent", "lr", "multiplier", "validation_accuracy", "reason",
                 "candidates": [{"lr", "multiplier", "key", "validation_accuracy", "status"}]}]}
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from spikebench.config import Config, to_dict
from spikebench.io import atomic_write_json
from spikebench.records import ANALYSIS_DIR, PART_TRADEOFF, PART_TUNING, RUNS_DIR, SUMMARY, TUNING
from spikebench.studies.runner import Plan, StudyError

#: the study's grid of configs: ``grid(base, mode, **axes)``
Grid = Callable[..., list[Config]]

TUNING_SCHEMA = 1
TUNING_FILE = f"{TUNING}.json"


def tuning_axes(base: Config, mode: Any) -> dict[str, list]:
    """The axes every tuning and tuned tradeoff run shares: the validation split, the first seed and no
    tracking (keys the user set with ``--set`` stay theirs)."""
    axes: dict[str, list] = {}
    if "data.validation" not in mode.user_keys:
        axes["data__validation"] = [mode.tune_validation]
    elif base.data.validation is None:
        raise StudyError("learning-rate tuning needs data.validation; do not --set it to null")
    if "train.track" not in mode.user_keys:
        axes["train__track"] = [[]]
    return axes


def tuning_seed(base: Config, mode: Any) -> int:
    return base.train.seed if "train.seed" in mode.user_keys else 0


def add_tuning(plan: Plan, base: Config, mode: Any, rules: list[str], grid: Grid) -> None:
    """Add the ``tuning`` part's runs and the follow-up step that plans the tuned ``tradeoff`` runs;
    ``grid(base, mode, **axes)``: the study's grid of configs (:func:`spikebench.studies.definitions.grid`)."""
    lrs = [base.train.lr * m for m in mode.tune_lrs]
    axes = tuning_axes(base, mode)
    seed = {} if "train.seed" in mode.user_keys else {"train__seed": [0]}
    configs = grid(
        base, mode, rule__name=rules, model__recurrent=[False, True], train__lr=lrs, **axes, **seed
    )
    plan.add_runs(PART_TUNING, configs)
    plan.followups.append(lambda p, study_dir: plan_tuned(p, study_dir, base, mode, grid))


def _validation(study_dir: Path, key: str, config: dict[str, Any]) -> tuple[float | None, int | None, str]:
    """``(validation_accuracy, validation_samples, status)`` of the run ``key``, read from its summary
    only when its records validate."""
    from spikebench.studies.validate import check_run

    run = study_dir / RUNS_DIR / key
    problem = check_run(run, config)
    if problem is not None:
        failed = (study_dir / RUNS_DIR / f"{key}.failed.json").exists()
        return None, None, "failed" if failed else f"not usable ({problem})"
    summary = json.loads((run / SUMMARY).read_text())
    acc = summary.get("validation_accuracy")
    if acc is None:
        return None, None, "no validation accuracy"
    return float(acc), int(summary["validation_samples"]), "completed"


def choose(candidates: list[dict[str, Any]], default_lr: float) -> tuple[float, str]:
    """The chosen learning rate of ``candidates`` (``{"lr", "validation_accuracy"}``, None for a run that
    did not complete) and why: the highest validation accuracy; ties go to ``default_lr``, else to the
    smallest tied learning rate; no completed candidate: ``default_lr``."""
    done = [c for c in candidates if c["validation_accuracy"] is not None]
    if not done:
        return default_lr, "no tuning run completed: the default learning rate"
    best = max(c["validation_accuracy"] for c in done)
    tied = sorted(c["lr"] for c in done if c["validation_accuracy"] == best)
    if len(tied) > 1:
        if any(abs(lr - default_lr) <= 1e-12 * default_lr for lr in tied):
            return default_lr, f"tie at validation accuracy {best:.4f}: the default learning rate"
        return tied[0], f"tie at validation accuracy {best:.4f}: the smallest tied learning rate"
    return tied[0], f"highest validation accuracy ({best:.4f})"


def tuning_record(plan: Plan, study_dir: Path, base: Config, mode: Any) -> dict[str, Any]:
    """The choice per rule and architecture from the completed tuning runs of ``plan``."""
    groups: dict[tuple[str, bool], list[dict[str, Any]]] = {}
    samples = set()
    for key in plan.parts.get(PART_TUNING, []):
        cfg = plan.runs[key]
        acc, n, status = _validation(study_dir, key, to_dict(cfg))
        if n is not None:
            samples.add(n)
        groups.setdefault((cfg.rule.name, cfg.model.recurrent), []).append(
            {
                "lr": cfg.train.lr,
                "multiplier": cfg.train.lr / base.train.lr,
                "key": key,
                "validation_accuracy": acc,
                "status": status,
            }
        )
    chosen = []
    for (rule, recurrent), candidates in groups.items():
        candidates.sort(key=lambda c: c["lr"])
        lr, reason = choose(candidates, base.train.lr)
        at = next((c for c in candidates if c["lr"] == lr), None)
        chosen.append(
            {
                "rule": rule,
                "recurrent": recurrent,
                "lr": lr,
                "multiplier": lr / base.train.lr,
                "validation_accuracy": None if at is None else at["validation_accuracy"],
                "reason": reason,
                "candidates": candidates,
            }
        )
    first = plan.runs[plan.parts[PART_TUNING][0]] if plan.parts.get(PART_TUNING) else base
    return {
        "schema": TUNING_SCHEMA,
        "validation": first.data.validation,
        "validation_samples": max(samples) if samples else None,
        "multipliers": list(mode.tune_lrs),
        "default_lr": base.train.lr,
        "seed": tuning_seed(base, mode),
        "chosen": chosen,
    }


def plan_tuned(plan: Plan, study_dir: Path, base: Config, mode: Any, grid: Grid) -> None:
    """Write ``analysis/tuning.json`` from the tuning runs and add the ``tradeoff`` runs, every seed of
    the mode, each rule and architecture at its chosen learning rate."""
    record = tuning_record(plan, study_dir, base, mode)
    (study_dir / ANALYSIS_DIR).mkdir(exist_ok=True)
    atomic_write_json(study_dir / ANALYSIS_DIR / TUNING_FILE, record)
    axes = tuning_axes(base, mode)
    for c in record["chosen"]:
        configs = grid(
            base, mode, rule__name=[c["rule"]], model__recurrent=[c["recurrent"]], train__lr=[c["lr"]], **axes
        )
        plan.add_runs(PART_TRADEOFF, configs)


def read_tuning(study_dir: Path) -> dict[str, Any] | None:
    """``analysis/tuning.json`` of a study, None when absent or unreadable."""
    try:
        data = json.loads((study_dir / ANALYSIS_DIR / TUNING_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
