"""The evidence mode's plan, its estimated wall time, and the minimum detectable effect of its sizes.

    PYTHONPATH=src python benchmarks/evidence_budget.py [--workers 2]

Plans `spikebench study all --evidence` (runs nothing), prints the job counts and the cost model's
estimate (spikebench.studies.budget), then the minimum detectable effect (paired t-test, two-sided, alpha
0.05, power 0.8) at the mode's seeds from the seed-to-seed spreads measured for sizing (the calibration
figures quoted below). The README's "Evidence mode" table is this script's output.
"""

from __future__ import annotations

import argparse
import math

from spikebench.analysis.stats import minimum_detectable_effect, required_n
from spikebench.config import Config
from spikebench.report.verdicts import C3_MARGIN, C4_MARGIN
from spikebench.studies.budget import estimate
from spikebench.studies.definitions import Mode, plan_study

#: seed-to-seed sd of the recurrent minus feed-forward robust accuracy (PGD-20, eps 0.03, 1,000 attacked
#: samples, 1 epoch on 10,000 images): 0.013 (bptt) and 0.017 (dfa); 0.015 taken
C3_SD_AT_1000 = 0.015
#: seed-to-seed sd of the clean accuracy difference of two networks of a seed (same measurement)
CLEAN_SD = 0.005


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    mode = Mode.make(False, None, evidence=True)
    plan = plan_study("all", Config(), mode)
    print(f"spikebench study all --evidence: {len(plan.runs)} runs, {len(plan.all_jobs())} jobs")
    for part, keys in plan.parts.items():
        print(f"  part {part:<22} {len(keys):>4} runs")
    for line in estimate(plan, args.workers).lines():
        print("  " + line)

    n = mode.seeds
    static = len({cfg.rule.name for cfg in plan.runs.values()})
    groups = static + len(mode.seq_rules or ())
    # attacked samples: sampling noise of an accuracy grows as 1/sqrt(n); all of the measured spread is
    # taken as sampling noise (the conservative reading)
    sd_rule = C3_SD_AT_1000 * math.sqrt(1000 / mode.attack_n)
    sd_pooled = sd_rule / math.sqrt(groups)
    rows = [
        (
            "seeds (C3, per rule)",
            n,
            minimum_detectable_effect(sd_rule, n),
            f"sd {sd_rule:.3f} (0.015 at 1,000 samples, scaled to {mode.attack_n}); "
            f"{required_n(C3_MARGIN, sd_rule)} seeds would detect the margin {C3_MARGIN:g}",
        ),
        (
            f"seeds (C3 pooled over {groups} rule-datasets)",
            n,
            minimum_detectable_effect(sd_pooled, n),
            f"sd {sd_pooled:.4f} if rules vary independently; margin {C3_MARGIN:g}",
        ),
        (
            f"seeds (C4 pooled over {static} rules, C3's spread)",
            n,
            minimum_detectable_effect(sd_rule / math.sqrt(static), n),
            f"no separate calibration; margin {C4_MARGIN:g}",
        ),
        (
            "seeds (clean accuracy, C2 ordering)",
            n,
            minimum_detectable_effect(CLEAN_SD, n),
            f"sd {CLEAN_SD:g} of a paired clean difference",
        ),
        (
            "per-rule sign-flip test",
            n,
            math.nan,
            f"smallest two-sided p 2/2^{n} = {2 / 2**n:.4f}, Holm over {static} rules: "
            f"{min(1.0, static * 2 / 2**n):.3f}"
            + (
                " < 0.05: a rule whose seeds all agree in sign passes; the pooled CI decides each claim"
                if static * 2 / 2**n < 0.05
                else " > 0.05, so per-rule tests are descriptive; the pooled CI decides"
            ),
        ),
    ]
    print("\nsize -> minimum detectable effect (paired t, alpha 0.05, power 0.8)")
    for what, size, mde, why in rows:
        print(f"  {what:<46} {size:>3}  MDE {'-' if math.isnan(mde) else f'{mde:.4f}':>7}  {why}")


if __name__ == "__main__":
    main()
