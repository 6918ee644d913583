"""C4, the ``attacks`` study: gradient-based and gradient-free attacks, and backdoors."""

from __future__ import annotations

from pathlib import Path

from spikebench.config import Config
from spikebench.records import PART_ATTACKS, PART_BACKDOOR, REFERENCE_RULE
from spikebench.report.build import attacks_section
from spikebench.report.document import Block
from spikebench.report.records import StudyRecords
from spikebench.report.verdicts import c4_gap, c4_transport
from spikebench.studies.definitions import Mode, add_blackbox_attacks, add_gradient_attacks, grid, rules
from spikebench.studies.runner import Plan
from spikebench.studies.study import Claim, study


def section(records: StudyRecords, out: Path) -> list[Block]:
    return attacks_section(records.part(PART_ATTACKS), records.part(PART_BACKDOOR), out)


C4_TRANSPORT = Claim(
    "C4.i",
    lambda records: c4_transport(records.part(PART_ATTACKS)),
    compared_parts=(PART_ATTACKS,),
    short_test="paired rule-path overestimate; hierarchical bootstrap; sign-flip, Holm",
    effect_label="rule-path - exact/transfer robust accuracy",
)
C4_GAP = Claim(
    "C4.ii",
    lambda records: c4_gap(records.part(PART_ATTACKS)),
    compared_parts=(PART_ATTACKS,),
    short_test="paired gap difference vs bptt; hierarchical bootstrap; sign-flip, Holm",
    effect_label="(gradient-free - gradient) gap minus bptt's",
)


@study("attacks", parts=(PART_ATTACKS, PART_BACKDOOR), section=section, claims=(C4_TRANSPORT, C4_GAP))
def attacks(plan: Plan, base: Config, mode: Mode) -> None:
    """C4: every rule under exact, rule and transfer gradients, gradient-free attacks, and backdoors."""
    configs = grid(base, mode, rule__name=rules(), model__recurrent=[False])
    keys = plan.add_runs(PART_ATTACKS, configs)
    bptt_by_seed = {
        cfg.train.seed: key for cfg, key in zip(configs, keys, strict=True) if cfg.rule.name == REFERENCE_RULE
    }
    transfer = {key: bptt_by_seed.get(cfg.train.seed) for cfg, key in zip(configs, keys, strict=True)}
    add_gradient_attacks(plan, keys, mode, ("exact", "rule", "transfer"), transfer)
    add_blackbox_attacks(plan, keys, mode, mode.blackbox)
    seeds = {} if mode.backdoor_seeds is None else {"train__seed": list(range(mode.backdoor_seeds))}
    if "train.seed" in mode.user_keys:
        seeds = {}
    plan.add_runs(
        PART_BACKDOOR,
        grid(
            base,
            mode,
            rule__name=rules(),
            model__recurrent=[False],
            data__backdoor__fraction=[0.05],
            **seeds,
        ),
    )
