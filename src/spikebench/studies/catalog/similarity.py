"""C1, the ``similarity`` study: similarity of training to bptt, between an untrained floor and a bptt
ceiling."""

from __future__ import annotations

from spikebench.config import Config
from spikebench.records import PART_SIMILARITY, REFERENCE_RULE, SIMILARITY_CONTROLS
from spikebench.report.build import similarity_section
from spikebench.report.records import StudyRecords
from spikebench.report.verdicts import C1_MARGIN, Verdict, c1_similarity, n_test_samples
from spikebench.studies.definitions import Mode, grid, rules
from spikebench.studies.runner import Plan
from spikebench.studies.study import Claim, study


def decide(records: StudyRecords) -> Verdict:
    return c1_similarity(
        records.analyses.get(SIMILARITY_CONTROLS), n_test_samples(records.part(PART_SIMILARITY))
    )


C1 = Claim(
    "C1",
    decide,
    compared_parts=(PART_SIMILARITY,),
    short_test="similarity index between floor and ceiling; hierarchical bootstrap",
    effect_label="similarity index (0 = untrained floor, 1 = bptt ceiling)",
    null=1 - C1_MARGIN,
    draw_margin=False,  # the null is the margin
)


@study("similarity", parts=(PART_SIMILARITY,), section=similarity_section, claims=(C1,))
def similarity(plan: Plan, base: Config, mode: Mode) -> None:
    """C1: every rule with CKA, gradient-alignment and Fisher tracking during training, and bptt with at
    least two seeds (even in quick mode, unless ``--set train.seed`` pins one), so that every network is
    compared with bptt of another seed and bptt against bptt gives the ceiling
    (:mod:`spikebench.analysis.controls`)."""
    configs = grid(base, mode, rule__name=rules(), model__recurrent=[False])
    seeds = {cfg.train.seed for cfg in configs}
    if len(seeds) < 2 and "train.seed" not in mode.user_keys:  # a seed the user pinned stays the only one
        extra = [s for s in range(2) if s not in seeds]
        configs += grid(base, mode, rule__name=[REFERENCE_RULE], model__recurrent=[False], train__seed=extra)
    plan.add_runs(PART_SIMILARITY, configs)
