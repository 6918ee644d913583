"""C3, the ``recurrence`` study: explicit recurrence and robustness, with a parameter-matched control."""

from __future__ import annotations

from pathlib import Path

from spikebench.config import Config
from spikebench.records import PART_RECURRENCE, PART_RECURRENCE_MATCHED, PART_RECURRENCE_SEQUENTIAL
from spikebench.report.build import recurrence_section
from spikebench.report.document import Block
from spikebench.report.records import StudyRecords
from spikebench.report.verdicts import Verdict, c3_recurrence
from spikebench.rules import RULES
from spikebench.studies.definitions import (
    STATIC_FEATURES,
    Mode,
    add_recurrence_attacks,
    grid,
    matched_hidden,
    rules,
)
from spikebench.studies.runner import Plan
from spikebench.studies.study import Claim, study

PARTS = (PART_RECURRENCE, PART_RECURRENCE_SEQUENTIAL, PART_RECURRENCE_MATCHED)


def section(records: StudyRecords, out: Path) -> list[Block]:
    return recurrence_section(records.part(PART_RECURRENCE) + records.part(PART_RECURRENCE_SEQUENTIAL), out)


def decide(records: StudyRecords) -> Verdict:
    return c3_recurrence(
        records.part(PART_RECURRENCE) + records.part(PART_RECURRENCE_SEQUENTIAL),
        records.part(PART_RECURRENCE_MATCHED),
    )


C3 = Claim(
    "C3",
    decide,
    compared_parts=PARTS,
    short_test="paired worst-case robust accuracy; hierarchical bootstrap; sign-flip, Holm",
    effect_label="recurrent - feed-forward robust accuracy",
)


@study("recurrence", parts=PARTS, section=section, claims=(C3,))
def recurrence(plan: Plan, base: Config, mode: Mode) -> None:
    """C3: feed-forward vs recurrent under PGD/FGSM, Square and noise, on static and sequential data; and a
    feed-forward twin with about the recurrent network's parameter count on the static data (the control
    that separates recurrence from parameter count)."""
    static = plan.add_runs(
        PART_RECURRENCE, grid(base, mode, rule__name=rules(), model__recurrent=[False, True])
    )
    seq_rules = list(mode.seq_rules) if mode.seq_rules else rules()
    seq_rules = [r for r in seq_rules if r in RULES]
    sequential = plan.add_runs(
        PART_RECURRENCE_SEQUENTIAL,
        grid(
            base,
            mode,
            data__name=["sequential-fashion-mnist"],
            data__timesteps=[28],
            rule__name=seq_rules,
            model__recurrent=[False, True],
        ),
    )
    keys = [static, sequential]
    n_in = STATIC_FEATURES.get(base.data.name)
    if base.model.arch == "mlp" and n_in is not None:
        hidden = list(matched_hidden(base.model, n_in))
        twins = [r for r in (mode.matched_rules or rules()) if r in RULES]
        keys.append(
            plan.add_runs(
                PART_RECURRENCE_MATCHED,
                grid(base, mode, rule__name=twins, model__recurrent=[False], model__hidden=[hidden]),
            )
        )
    for k in keys:
        add_recurrence_attacks(plan, k, mode)
