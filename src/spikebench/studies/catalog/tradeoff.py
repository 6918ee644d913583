"""C2, the ``tradeoff`` study: locality against performance and cost."""

from __future__ import annotations

from pathlib import Path

from spikebench.analysis.stats import fmt_value
from spikebench.config import Config
from spikebench.records import PART_TRADEOFF, PART_TUNING, TUNING
from spikebench.report.build import tradeoff_section
from spikebench.report.document import Block, Table
from spikebench.report.efficiency import efficiency_section
from spikebench.report.records import StudyRecords
from spikebench.report.verdicts import Verdict, c2_tradeoff, with_tuning
from spikebench.studies.definitions import Mode, grid, rules
from spikebench.studies.runner import Plan
from spikebench.studies.study import Claim, study


def section(records: StudyRecords, out: Path) -> list[Block]:
    runs = records.part(PART_TRADEOFF)
    return tradeoff_section(runs, out, records.analyses.get(TUNING)) + efficiency_section(runs, out)


def decide(records: StudyRecords) -> Verdict:
    return with_tuning(c2_tradeoff(records.part(PART_TRADEOFF)), records.analyses.get(TUNING))


def per_rule_table(v: Verdict) -> Table:
    """Rank, accuracy and cost per rule (C2's per-rule results are means, without an interval)."""
    return Table(
        ["rule", "locality rank", "accuracy (ff)", "accuracy (rec)", "train time (s)", "memory (MiB)"],
        [
            [
                name,
                f"{d['rank']:g}",
                fmt_value(d.get("accuracy_ff")),
                fmt_value(d.get("accuracy_rec")),
                fmt_value(d.get("train_seconds")),
                fmt_value(d.get("memory_mib")),
            ]
            for name, d in v.per_rule.items()
        ],
    )


C2 = Claim(
    "C2",
    decide,
    compared_parts=(PART_TRADEOFF,),
    short_test="Spearman rho; exact permutation p, Holm; seed bootstrap",
    effect_label="Spearman rho (locality rank, accuracy)",
    per_rule_table=per_rule_table,
)


@study("tradeoff", parts=(PART_TRADEOFF, PART_TUNING), section=section, claims=(C2,))
def tradeoff(plan: Plan, base: Config, mode: Mode) -> None:
    """C2: every rule x {feed-forward, recurrent}: accuracy, time, memory, ordered by locality. With
    ``mode.tune_lrs`` (and no ``--set train.lr``), each at the learning rate chosen on held-out training
    images by the ``tuning`` part (:mod:`spikebench.studies.tuning`)."""
    if mode.tune_lrs and "train.lr" not in mode.user_keys:
        from spikebench.studies.tuning import add_tuning

        add_tuning(plan, base, mode, rules(), grid)
        return
    plan.add_runs(PART_TRADEOFF, grid(base, mode, rule__name=rules(), model__recurrent=[False, True]))
