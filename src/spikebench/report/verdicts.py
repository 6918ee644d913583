"""A verdict for each of the paper's claims, computed from records by a stated rule.

Each function returns a :class:`Verdict`: ``supported``, ``not supported`` or ``inconclusive``, the
rule that decided it (as text, shown in the report), and the numbers behind it. Rules are fixed in
advance and deliberately simple; thresholds are named constants.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from spikebench.report.records import RunRecord, StudyRecords, group

SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE = "supported", "not supported", "inconclusive"

#: C1: mean final-epoch CKA (last hidden layer) with the bptt run above which similarity is supported
C1_CKA_HIGH, C1_CKA_LOW = 0.5, 0.3
#: C2: Spearman correlation between locality rank and accuracy at or below which the trade-off holds
C2_RHO = -0.5
#: C3 / C4: share of rules that must agree in sign
AGREE = 2 / 3
#: C4: difference of the (gradient-free minus gradient) accuracy gap between local rules and bptt
C4_GAP = 0.05


@dataclass
class Verdict:
    claim: str
    statement: str
    status: str
    rule: str
    numbers: dict[str, Any] = field(default_factory=dict)


def spearman(xs: list[float], ys: list[float]) -> float | None:
    """Spearman rank correlation (average ranks for ties); None when undefined."""
    if len(xs) < 3:
        return None

    def ranks(v: list[float]) -> list[float]:
        order = sorted(range(len(v)), key=lambda i: v[i])
        r = [0.0] * len(v)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for k in range(i, j + 1):
                r[order[k]] = (i + j) / 2
            i = j + 1
        return r

    rx, ry = ranks(xs), ranks(ys)
    mx, my = statistics.fmean(rx), statistics.fmean(ry)
    sx = sum((a - mx) ** 2 for a in rx) ** 0.5
    sy = sum((b - my) ** 2 for b in ry) ** 0.5
    if sx == 0 or sy == 0:
        return None
    return sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True)) / (sx * sy)


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def c1_similarity(records: StudyRecords) -> Verdict:
    statement = "Learning methods of varying locality share similarities during training."
    rule = (
        f"supported if the mean final-epoch linear CKA of the last hidden layer between each rule and bptt "
        f"is >= {C1_CKA_HIGH} and every rule's mean gradient-alignment cosine with bptt is > 0; not supported "
        f"if that mean CKA is < {C1_CKA_LOW} or some rule's mean cosine is <= 0; inconclusive otherwise."
    )
    cka = records.analyses.get("cka_reference") or {}
    align = records.analyses.get("alignment_summary") or {}
    per_rule = {r: v for r, v in (cka.get("final_last_layer") or {}).items() if r != "bptt"}
    cos = {r: v for r, v in (align.get("mean_cosine") or {}).items() if r != "bptt"}
    numbers = {"cka_with_bptt": per_rule, "mean_cosine": cos}
    if not per_rule or not cos:
        return Verdict(
            "C1", statement, INCONCLUSIVE, rule, {**numbers, "note": "no CKA or alignment records"}
        )
    mean_cka = statistics.fmean(per_rule.values())
    numbers["mean_cka"] = mean_cka
    if mean_cka >= C1_CKA_HIGH and all(v > 0 for v in cos.values()):
        status = SUPPORTED
    elif mean_cka < C1_CKA_LOW or any(v <= 0 for v in cos.values()):
        status = NOT_SUPPORTED
    else:
        status = INCONCLUSIVE
    return Verdict("C1", statement, status, rule, numbers)


def c2_tradeoff(runs: list[RunRecord]) -> Verdict:
    statement = "Learning methods trade biological plausibility (locality) against performance."
    rule = (
        f"for feed-forward and recurrent networks separately, the Spearman correlation rho between the rules' "
        f"locality rank and their mean test accuracy; supported if rho <= {C2_RHO} for both, not supported if "
        f"rho >= 0 for both, inconclusive otherwise."
    )
    numbers: dict[str, Any] = {}
    rhos = []
    for recurrent in (False, True):
        by_rule = group([r for r in runs if r.ok and r.recurrent == recurrent], lambda r: r.rule)
        if len(by_rule) < 3:
            continue
        ranks = [rs[0].summary["locality"]["rank"] for rs in by_rule.values()]
        accs = [statistics.fmean(r.summary["test_accuracy"] for r in rs) for rs in by_rule.values()]
        rho = spearman(ranks, accs)
        numbers["rho_recurrent" if recurrent else "rho_feedforward"] = rho
        numbers["accuracy_recurrent" if recurrent else "accuracy_feedforward"] = dict(
            zip(by_rule, accs, strict=True)
        )
        if rho is not None:
            rhos.append(rho)
    if not rhos:
        status = INCONCLUSIVE
    elif all(r <= C2_RHO for r in rhos):
        status = SUPPORTED
    elif all(r >= 0 for r in rhos):
        status = NOT_SUPPORTED
    else:
        status = INCONCLUSIVE
    return Verdict("C2", statement, status, rule, numbers)


def robust_accuracy(run: RunRecord, attack: str) -> float | None:
    """Accuracy under ``attack`` averaged over its eps sweep."""
    curve = run.attack_curve(attack)
    return statistics.fmean(curve.values()) if curve else None


def c3_recurrence(runs: list[RunRecord], attack: str = "pgd-exact") -> Verdict:
    statement = "Adding explicit recurrent weights to an SNN makes it more robust."
    rule = (
        f"for each rule and dataset, d = mean over seeds of (accuracy of the recurrent network - accuracy of the "
        f"feed-forward network) under {attack}, averaged over the eps sweep (pairs share seed and data); supported if "
        f"the mean d over rules is > 0 and at least {AGREE:.0%} of rules have d > 0; not supported if the mean d is "
        f"< 0 and at least {AGREE:.0%} have d < 0; inconclusive otherwise."
    )
    diffs: dict[str, list[float]] = {}
    by_pair = group([r for r in runs if r.ok], lambda r: (r.dataset, r.rule, r.seed))
    for (dataset, name, _seed), pair in by_pair.items():
        ff = [robust_accuracy(r, attack) for r in pair if not r.recurrent]
        rc = [robust_accuracy(r, attack) for r in pair if r.recurrent]
        if ff and rc and ff[0] is not None and rc[0] is not None:
            diffs.setdefault(f"{name} ({dataset})", []).append(rc[0] - ff[0])
    d = {k: statistics.fmean(v) for k, v in diffs.items()}
    spread = {k: (statistics.stdev(v) if len(v) > 1 else 0.0) for k, v in diffs.items()}
    numbers: dict[str, Any] = {
        "difference": d,
        "std_over_seeds": spread,
        "seeds": {k: len(v) for k, v in diffs.items()},
    }
    if not d:
        return Verdict("C3", statement, INCONCLUSIVE, rule, {**numbers, "note": "no paired attack records"})
    mean_d = statistics.fmean(d.values())
    numbers["mean_difference"] = mean_d
    pos = sum(v > 0 for v in d.values()) / len(d)
    neg = sum(v < 0 for v in d.values()) / len(d)
    if mean_d > 0 and pos >= AGREE:
        status = SUPPORTED
    elif mean_d < 0 and neg >= AGREE:
        status = NOT_SUPPORTED
    else:
        status = INCONCLUSIVE
    return Verdict("C3", statement, status, rule, numbers)


def c4_attacks(runs: list[RunRecord], local_rank: int = 3) -> Verdict:
    statement = "Local learning methods behave differently under gradient-based and gradient-free attacks."
    rule = (
        f"gap = accuracy under the gradient-free Square attack - accuracy under exact-gradient PGD (eps sweep "
        f"mean); supported if the mean gap of the online rules (locality rank >= {local_rank}) differs from bptt's "
        f"by more than {C4_GAP} in the same direction for at least {AGREE:.0%} of them; not supported if every "
        f"online rule's gap is within {C4_GAP / 2} of bptt's; inconclusive otherwise."
    )
    gaps: dict[str, list[float]] = {}
    for r in runs:
        if not r.ok:
            continue
        sq, pgd = robust_accuracy(r, "square"), robust_accuracy(r, "pgd-exact")
        if sq is not None and pgd is not None:
            gaps.setdefault(r.rule, []).append(sq - pgd)
    gap = {k: statistics.fmean(v) for k, v in gaps.items()}
    numbers: dict[str, Any] = {"gap": gap}
    ranks = {r.rule: r.summary["locality"]["rank"] for r in runs if r.ok}
    local = {k: v for k, v in gap.items() if ranks.get(k, 0) >= local_rank}
    if "bptt" not in gap or not local:
        return Verdict(
            "C4", statement, INCONCLUSIVE, rule, {**numbers, "note": "missing bptt or online-rule records"}
        )
    rel = {k: v - gap["bptt"] for k, v in local.items()}
    numbers["gap_minus_bptt"] = rel
    up = sum(v > C4_GAP for v in rel.values()) / len(rel)
    down = sum(v < -C4_GAP for v in rel.values()) / len(rel)
    if up >= AGREE or down >= AGREE:
        status = SUPPORTED
    elif all(abs(v) <= C4_GAP / 2 for v in rel.values()):
        status = NOT_SUPPORTED
    else:
        status = INCONCLUSIVE
    return Verdict("C4", statement, status, rule, numbers)
