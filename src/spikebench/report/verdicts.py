"""A verdict for each of the paper's claims, decided from records by a stated test.

Every claim is a pooled effect with a 95% confidence interval over seeds (the unit of replication) and a
stated margin. The decision is the same for all claims:

- **supported**: the interval excludes the null in the claimed direction and the claim's controls hold;
- **not supported**: the interval lies on the other side, or inside the equivalence margin (so "no effect"
  is a finding with a margin);
- **inconclusive**: otherwise, with ``decide`` naming the number of seeds at which a paired t-test would
  reach 80% power for an effect the size of the margin, at the observed spread; for an effect pooled over
  rules (C3, C4), the number of seeds at which the interval would narrow enough to decide at the observed
  effect, or that no number would because the spread between rules alone keeps it too wide;
- **not computed**: the records the claim needs are absent (``reason`` says which).

Fewer than two seeds never decides a claim. Margins are the named constants below. Which study decides
which claim, from which of its records, is declared with the study (:mod:`spikebench.studies.catalog`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats as st

from spikebench.analysis import stats
from spikebench.analysis.controls import alignment_summary
from spikebench.attacks import evidence
from spikebench.records import REFERENCE_RULE, STEM_PGD_EXACT, STEM_PGD_RULE, STEM_PGD_TRANSFER
from spikebench.report.records import RunRecord

SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE, NOT_COMPUTED = (
    "supported",
    "not supported",
    "inconclusive",
    "not computed",
)

#: C1: the similarity index (0 = untrained floor, 1 = bptt-vs-bptt ceiling) must exceed 1 - this margin
C1_MARGIN = 0.1
#: C2: Spearman rho between locality rank and accuracy inside +-this margin counts as no trade-off
C2_MARGIN = 0.2
#: C3: recurrent minus feed-forward robust accuracy inside +-this margin counts as no effect
C3_MARGIN = 0.01
#: C4: accuracy differences (rule-source overestimate; gap difference) inside +-this margin count as none
C4_MARGIN = 0.02
#: significance level of every test, after Holm's correction where there is a family
ALPHA = 0.05
#: power at which ``decide`` sizes a study
POWER = 0.8
#: bootstrap replicates for every interval
N_BOOT = 4000
#: the command whose size decides the claims that a small study cannot
DECIDING_COMMAND = "spikebench study all --evidence"

#: gradient-based and gradient-free attack stems (by name before the first "-"); noise is no attack
GRADIENT_ATTACKS = ("pgd", "apgd", "fgsm")
GRADIENT_FREE_ATTACKS = ("square", "nes", "spsa")


@dataclass
class Verdict:
    claim: str
    statement: str
    status: str
    test: str
    effect: float | None = None
    ci95: list[float] | None = None
    p: float | None = None
    n: dict[str, Any] = field(default_factory=dict)
    margin: float | None = None
    controls: dict[str, Any] = field(default_factory=dict)
    per_rule: dict[str, Any] = field(default_factory=dict)
    sentence: str = ""
    decide: str | None = None
    reason: str | None = None


# ---------------------------------------------------------------- helpers on records


def is_online(locality: dict[str, Any]) -> bool:
    """An online rule: temporal credit ``online`` (forward in time, no unroll)."""
    return str(locality.get("temporal", "")).startswith("online")


def has_weight_transport(locality: dict[str, Any]) -> bool:
    """Whether the rule sends errors back through the transposed forward weights."""
    wt = locality.get("weight_transport")
    return wt if isinstance(wt, bool) else str(wt).strip().lower().startswith("yes")


def _family(stem: str) -> str:
    return stem.split("-", 1)[0].split("@", 1)[0]


def _rows(run: RunRecord, stem: str) -> dict[float, dict[str, Any]]:
    rec = run.attacks.get(stem) or {}
    return {float(r["eps"]): r for r in rec.get("records", []) if not r.get("sanity")}


def worst_case(run: RunRecord, stems: Iterable[str]) -> float | None:
    """Robust accuracy under the strongest of ``stems``: at each eps all of them share, the share of samples
    correct under every attack (AND of the ``correct`` strings), or, where a record lacks ``correct``, the
    lowest accuracy (an upper bound of the per-sample worst case); averaged over those eps."""
    rows = [_rows(run, s) for s in stems]
    rows = [r for r in rows if r]
    if not rows:
        return None
    eps = set.intersection(*(set(r) for r in rows))
    if not eps:
        return None
    vals = []
    for e in sorted(eps):
        recs = [r[e] for r in rows]
        strings = [r.get("correct") for r in recs]
        if all(isinstance(c, str) and c for c in strings) and len({len(c) for c in strings}) == 1:
            vals.append(evidence.accuracy(evidence.all_correct(strings)))
        else:
            vals.append(min(float(r["accuracy"]) for r in recs))
    return float(np.mean(vals))


def _stems(run: RunRecord, families: tuple[str, ...]) -> set[str]:
    return {s for s in run.attacks if _family(s) in families}


def _seed_groups(values: dict[str, dict[int, float]]) -> dict[str, list[float]]:
    return {k: [v[s] for s in sorted(v)] for k, v in values.items() if v}


def _n_seeds(values: dict[str, dict[int, float]]) -> int:
    seeds = [len(v) for v in values.values() if v]
    return min(seeds) if seeds else 0


def _per_seed_pooled(values: dict[str, dict[int, float]]) -> list[float]:
    """The pooled effect seed by seed (mean over groups holding that seed): its spread sizes ``decide``."""
    seeds = sorted({s for v in values.values() for s in v})
    return [float(np.mean([v[s] for v in values.values() if s in v])) for s in seeds]


def _decide_text(sd: float, margin: float, seeds: int) -> str:
    if seeds < 2 or not math.isfinite(sd):
        return f"at least 2 seeds are needed to estimate the spread; run `{DECIDING_COMMAND}`"
    if sd <= 0:
        return (
            f"the {seeds} seeds agree exactly, so the spread cannot size the study; at n seeds the smallest "
            "two-sided sign-flip p of one rule is 2/2^n, before Holm's correction"
        )
    n = stats.required_n(margin, sd, ALPHA, POWER)
    mde = stats.minimum_detectable_effect(sd, seeds, ALPHA, POWER)
    return (
        f"about {n} seeds would detect an effect of {margin:g} at {POWER:.0%} power (paired t, observed "
        f"seed-to-seed sd {sd:.3g}); at {seeds} seeds the minimum detectable effect is {mde:.3g}"
    )


def _decide_pooled(
    values: dict[str, dict[int, float]], est: float, lo: float, hi: float, margin: float
) -> str:
    """``decide`` of an effect pooled over rules whose interval resamples rules and seeds: more seeds
    narrow only the seeds' share of it. With the two-way decomposition ``x[r, s] = m + a_r + b_s + e``
    (ANOVA mean squares over the rules and seeds all of them hold), the pooled mean's variance at ``n``
    seeds is ``var_a / R + var_b / n + var_e / (R n)``; the observed half-width is scaled by it to the
    half-width that would put the interval inside the margin (or clear of 0) at the observed effect."""
    seeds = _n_seeds(values)
    common = sorted(set.intersection(*(set(v) for v in values.values() if v)))
    x = np.array([[v[s] for s in common] for v in values.values() if v])
    R, n = x.shape
    if R < 2 or n < 2 or not (math.isfinite(lo) and math.isfinite(hi)):
        sd = float(np.std(_per_seed_pooled(values), ddof=1)) if seeds >= 2 else math.nan
        return _decide_text(sd, margin, seeds)
    resid = x - x.mean(1, keepdims=True) - x.mean(0, keepdims=True) + x.mean()
    ms_e = float((resid**2).sum()) / ((R - 1) * (n - 1))
    var_a = max((n * float(x.mean(1).var(ddof=1)) - ms_e) / n, 0.0)
    var_b = max((R * float(x.mean(0).var(ddof=1)) - ms_e) / R, 0.0)
    per_seed = var_b + ms_e / R  # the part of n * variance that more seeds divide

    def variance(m: float) -> float:
        return var_a / R + per_seed / m

    half = (hi - lo) / 2
    if variance(n) <= 0 or half <= 0:
        return _decide_text(0.0, margin, seeds)
    floor = half * math.sqrt(var_a / R / variance(n))
    need = max(margin - abs(est), abs(est))
    head = (
        f"the 95% interval is +-{half:.2g}; the spread between its {R} rule groups alone keeps about "
        f"+-{floor:.2g} of it, which more seeds do not narrow"
    )
    if floor >= need or per_seed <= 0:
        return (
            f"{head}: no number of seeds would narrow it to +-{need:.2g} (inside the +-{margin:g} margin, "
            "or clear of 0, at this effect); more rules would"
        )
    target = (need / half) ** 2 * variance(n)  # the variance of a half-width of `need`
    m = max(math.ceil(per_seed / (target - var_a / R)), n + 1)
    return f"{head}: about {m} seeds would narrow it to +-{need:.2g}, deciding it if the effect stays at {est:+.2g}"


def _status(
    lo: float,
    hi: float,
    seeds: int,
    margin: float,
    direction: int,
    null: float = 0.0,
    controls_ok: bool = True,
) -> str:
    """The decision rule of the module docstring; ``direction`` +1 / -1 for a one-directional claim, 0 for
    "differs"; ``null`` the value the claim is tested against."""
    if seeds < 2:
        return INCONCLUSIVE
    lo, hi = lo - null, hi - null
    if direction == 0:
        excluded = lo > 0 or hi < 0
        against = False
    else:
        excluded = direction * (lo if direction > 0 else hi) > 0
        against = direction * (hi if direction > 0 else lo) < 0
    if excluded and controls_ok:
        return SUPPORTED
    if against or (-margin < lo and hi < margin):
        return NOT_SUPPORTED
    return INCONCLUSIVE


def _group_test(
    values: dict[str, dict[int, float]], alternative: str = "two-sided"
) -> tuple[dict[str, dict[str, Any]], float, float, float]:
    """Per group: mean, seed-bootstrap CI, sign-flip p and Holm-adjusted p; and the hierarchical pooled
    effect with its CI."""
    groups = _seed_groups(values)
    per: dict[str, dict[str, Any]] = {}
    ps = []
    for name, xs in groups.items():
        lo, hi = stats.bootstrap_ci(xs, method="percentile", n_boot=N_BOOT)
        p = stats.sign_flip_p(xs, alternative) if len(xs) >= 2 else 1.0
        ps.append(p)
        per[name] = {
            "effect": float(np.mean(xs)),
            "ci95": [lo, hi],
            "p": p,
            "seeds": len(xs),
            "values": [float(x) for x in xs],
        }
    if ps:
        for name, adj in zip(per, stats.holm(ps), strict=True):
            per[name]["p_holm"] = float(adj)
    est, lo, hi = _pooled(values)
    return per, est, lo, hi


def _pooled(values: dict[str, dict[int, float]]) -> tuple[float, float, float]:
    """Pooled effect over groups with its CI: rules and seeds resampled, seeds jointly across rules."""
    seeds = sorted({s for v in values.values() for s in v})
    matrix = [[v.get(s, math.nan) for s in seeds] for v in values.values() if v]
    return stats.crossed_bootstrap(matrix, n_boot=N_BOOT)


def _signed(x: float) -> str:
    return f"{x:+.3f}"


def _interval(est: float, lo: float, hi: float, seeds: int, fmt: str = "+.3f") -> str:
    """``est [lo, hi]``; with one seed the spread over seeds is unknown, so no interval is printed."""
    if seeds < 2:
        return f"{est:{fmt}} (1 seed: no CI)"
    return f"{est:{fmt}} [{lo:{fmt}}, {hi:{fmt}}]"


def _not_computed(claim: str, statement: str, test: str, reason: str, margin: float) -> Verdict:
    return Verdict(
        claim,
        statement,
        NOT_COMPUTED,
        test,
        margin=margin,
        reason=reason,
        sentence=f"not computed: {reason}",
    )


# ---------------------------------------------------------------- C1


C1_STATEMENT = "Learning methods of varying locality share similarities during training."
C1_TEST = (
    "similarity index per rule and seed = (CKA(rule, bptt of another seed) - floor) / (ceiling - floor), "
    "last hidden layer, last epoch; ceiling: bptt against bptt of another seed; floor: the untrained network "
    "against trained bptt of another seed. A rule whose accuracy is not above chance (one-sided exact "
    f"binomial, p < {ALPHA}) counts as index 0. Pooled over rules by a hierarchical bootstrap (rules, then "
    f"seeds jointly across rules); supported if the 95% CI's lower bound exceeds 1 - {C1_MARGIN}, not supported if its upper "
    "bound is below it."
)


def c1_similarity(controls: dict[str, Any] | None, n_test: int | None = None) -> Verdict:
    """C1 from ``analysis/similarity_controls.json`` (``controls``); ``n_test``: test samples behind each
    accuracy, for the above-chance gate (the gate is not applied when unknown)."""
    if not controls or not controls.get("cka"):
        return _not_computed("C1", C1_STATEMENT, C1_TEST, "no similarity controls", C1_MARGIN)
    layer = (controls.get("layers") or [max(r["layer"] for r in controls["cka"])])[-1]
    rows = [r for r in controls["cka"] if r["layer"] == layer]
    last: dict[tuple[str, str, int], tuple[int, float]] = {}
    for r in rows:
        k = (r["kind"], r["rule"], int(r["seed"]))
        if k not in last or r["epoch"] > last[k][0]:
            last[k] = (r["epoch"], float(r["value"]))
    ceiling = {s: v for (kind, _, s), (_, v) in last.items() if kind == "ceiling"}
    floor = {s: v for (kind, _, s), (_, v) in last.items() if kind == "floor"}
    if not ceiling or not floor:
        return _not_computed(
            "C1",
            C1_STATEMENT,
            C1_TEST,
            "the controls lack a ceiling (bptt against bptt of another seed: train at least 2 seeds) "
            "or a floor (an untrained network)",
            C1_MARGIN,
        )
    c_mean, f_mean = float(np.mean(list(ceiling.values()))), float(np.mean(list(floor.values())))
    chance = float(controls.get("chance", 0.1))
    accuracy = controls.get("accuracy") or {}
    index: dict[str, dict[int, float]] = {}
    gated: dict[str, list[int]] = {}
    degenerate = []
    for (kind, rule, s), (_, v) in sorted(last.items()):
        if kind != "rule" or rule == REFERENCE_RULE:
            continue
        c, f = ceiling.get(s, c_mean), floor.get(s, f_mean)
        if c - f <= 1e-6:
            degenerate.append(s)
            continue
        acc = (accuracy.get(rule) or {}).get(str(s))
        at_chance = (
            n_test is not None
            and acc is not None
            and stats.above_chance_p(round(acc * n_test), n_test, chance) >= ALPHA
        )
        if at_chance:
            gated.setdefault(rule, []).append(s)
        index.setdefault(rule, {})[s] = 0.0 if at_chance else (v - f) / (c - f)
    if not index:
        reason = "ceiling and floor coincide" if degenerate else "no rule compared with bptt"
        return _not_computed("C1", C1_STATEMENT, C1_TEST, reason, C1_MARGIN)
    seeds = _n_seeds(index)
    per, est, lo, hi = _group_test(index)
    for rule, d in per.items():
        d["at_chance_seeds"] = gated.get(rule, [])
        d["accuracy"] = {k: float(v) for k, v in (accuracy.get(rule) or {}).items()}
    alignment = alignment_summary(controls, n_boot=N_BOOT)
    for a in alignment:
        if a["reference"] == REFERENCE_RULE and a["layer"] == layer and a["rule"] in per:
            per[a["rule"]]["gradient_cosine"] = a["cosine"]
            per[a["rule"]]["gradient_cosine_ci95"] = a["ci95"]
            per[a["rule"]]["random_baseline"] = a["random_baseline"]
    controls_out = {
        "ceiling": c_mean,
        "floor": f_mean,
        "ceiling_minus_floor": c_mean - f_mean,
        "layer": layer,
        "rules_at_chance": sorted(gated),
        "compared_with_other_seeds": True,
        "alignment": alignment,
    }
    status = _status(lo, hi, seeds, C1_MARGIN, +1, null=1 - C1_MARGIN)
    sd = float(np.std(_per_seed_pooled(index), ddof=1)) if seeds >= 2 else math.nan
    n_above = sum(1 for d in per.values() if d["ci95"][0] > 1 - C1_MARGIN)
    v = Verdict(
        "C1",
        C1_STATEMENT,
        status,
        C1_TEST,
        est,
        [lo, hi],
        None,
        {"rules": len(per), "seeds": seeds},
        C1_MARGIN,
        controls_out,
        per,
    )
    v.sentence = (
        f"similarity index {_interval(est, lo, hi, seeds, '.2f')} between the untrained floor (CKA {f_mean:.3f}) and "
        f"the bptt ceiling (CKA {c_mean:.3f}); {n_above} of {len(per)} rules above {1 - C1_MARGIN:g}"
        + (f"; at chance: {', '.join(sorted(gated))}" if gated else "")
    )
    if status == INCONCLUSIVE:
        v.decide = _decide_text(sd, C1_MARGIN, seeds)
    return v


# ---------------------------------------------------------------- C2


C2_STATEMENT = "Learning methods trade biological plausibility (locality) against performance."
C2_TEST = (
    "Spearman rho between the rules' derived locality rank and their mean test accuracy, for feed-forward "
    "and recurrent networks; p: exact permutation over orderings (one-sided, rho < 0), Holm over the two; "
    "CI: bootstrap over seeds of the mean rho. Supported if the CI's upper bound is below 0 and both "
    f"Holm-adjusted p < {ALPHA}; not supported if the CI lies above 0 or inside +-{C2_MARGIN}."
)


def c2_tradeoff(runs: list[RunRecord]) -> Verdict:
    ok = [r for r in runs if r.ok]
    archs: dict[bool, dict[str, dict[int, float]]] = {}
    ranks: dict[str, float] = {}
    cost: dict[str, dict[str, list[float]]] = {}
    for r in ok:
        archs.setdefault(r.recurrent, {}).setdefault(r.rule, {})[r.seed] = float(r.summary["test_accuracy"])
        ranks[r.rule] = float(r.summary["locality"]["rank"])
        c = cost.setdefault(r.rule, {"train_seconds": [], "memory_mib": []})
        c["train_seconds"].append(float(r.summary.get("train_seconds", math.nan)))
        mem = r.summary.get("peak_batch_tensor_bytes") or r.summary.get("peak_memory_bytes")
        if mem is not None:
            c["memory_mib"].append(mem / 2**20)
    if not archs:
        return _not_computed("C2", C2_STATEMENT, C2_TEST, "no completed runs", C2_MARGIN)
    archs = {a: rules for a, rules in archs.items() if len(rules) >= 3}
    if not archs:
        v = Verdict("C2", C2_STATEMENT, INCONCLUSIVE, C2_TEST, margin=C2_MARGIN, n={"rules": len(ranks)})
        v.sentence = f"a rank correlation needs at least 3 rules; {len(ranks)} completed"
        v.decide = f"at least 3 rules (of different locality) with completed runs; run `{DECIDING_COMMAND}`"
        return v
    seeds = sorted(set.intersection(*(set(s) for rules in archs.values() for s in rules.values())))
    if not seeds:
        return _not_computed("C2", C2_STATEMENT, C2_TEST, "no seed shared by every rule", C2_MARGIN)

    def rhos(chosen: list[int]) -> list[float]:
        out = []
        for rules in archs.values():
            names = sorted(rules)
            acc = [np.mean([rules[n][s] for s in chosen]) for n in names]
            out.append(stats.spearman([ranks[n] for n in names], acc))
        return out

    observed = rhos(seeds)
    per_arch = {}
    ps = []
    for (rec, rules), rho in zip(archs.items(), observed, strict=True):
        names = sorted(rules)
        acc = [float(np.mean([rules[n][s] for s in seeds])) for n in names]
        _, p = stats.spearman_test([ranks[n] for n in names], acc, "less")
        ps.append(p)
        per_arch["recurrent" if rec else "feed-forward"] = {"rho": rho, "p": p, "rules": len(names)}
    for d, adj in zip(per_arch.values(), stats.holm(ps), strict=True):
        d["p_holm"] = float(adj)
    est = float(np.mean(observed))
    lo, hi = _rho_bootstrap(archs, ranks, seeds) if len(seeds) > 1 else (est, est)
    p_all = max(d["p_holm"] for d in per_arch.values())
    status = _status(lo, hi, len(seeds), C2_MARGIN, -1)
    if status == SUPPORTED and p_all >= ALPHA:
        status = INCONCLUSIVE
    per_rule = {}
    for name in sorted(ranks, key=lambda n: ranks[n]):
        per_rule[name] = {
            "rank": ranks[name],
            **{
                ("accuracy_rec" if rec else "accuracy_ff"): float(np.mean([rules[name][s] for s in seeds]))
                for rec, rules in archs.items()
                if name in rules
            },
            "train_seconds": float(np.nanmean(cost[name]["train_seconds"])),
            "memory_mib": float(np.mean(cost[name]["memory_mib"])) if cost[name]["memory_mib"] else None,
        }
    v = Verdict(
        "C2",
        C2_STATEMENT,
        status,
        C2_TEST,
        est,
        [lo, hi],
        p_all,
        {"rules": len(ranks), "seeds": len(seeds), "architectures": len(archs)},
        C2_MARGIN,
        {"architectures": per_arch},
        per_rule,
    )
    v.sentence = (
        f"Spearman rho of locality rank and accuracy {_interval(est, lo, hi, len(seeds), '+.2f')}, "
        + ", ".join(f"{a} {d['rho']:+.2f} (p {d['p_holm']:.2g} Holm)" for a, d in per_arch.items())
    )
    if status == INCONCLUSIVE and len(seeds) >= 2 and hi < 0 and p_all >= ALPHA:
        # the seeds bound rho; the permutation p is a function of the ordering of the rules' mean
        # accuracies alone, which more seeds refine but whose p over k rules they cannot lower below
        # that of the observed ordering
        v.decide = (
            f"the CI over seeds already lies below 0, but the exact permutation test over the orderings of "
            f"{len(ranks)} rules gives p {p_all:.2g} (Holm) for these orderings: more seeds narrow the CI, "
            "not this p; more rules of distinct locality, or a stronger trade-off, would decide it"
        )
    elif status == INCONCLUSIVE:
        # per-seed rho of the mean, its spread sizes the study
        per_seed = [float(np.mean(rhos([s]))) for s in seeds]
        sd = float(np.nanstd(per_seed, ddof=1)) if len(seeds) >= 2 else math.nan
        v.decide = _decide_text(sd, C2_MARGIN, len(seeds))
    return v


def _rho_bootstrap(
    archs: dict[bool, dict[str, dict[int, float]]], ranks: dict[str, float], seeds: list[int]
) -> tuple[float, float]:
    """Percentile CI of the mean (over architectures) Spearman rho, resampling seeds jointly."""
    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(seeds), size=(N_BOOT, len(seeds)))
    per_arch = []
    for rules in archs.values():
        names = sorted(rules)
        acc = np.array([[rules[n][s] for s in seeds] for n in names])  # rules x seeds
        means = acc[:, idx].mean(axis=2).T  # replicates x rules
        rx = st.rankdata([ranks[n] for n in names])
        ry = st.rankdata(means, axis=1)
        rx, ry = rx - rx.mean(), ry - ry.mean(axis=1, keepdims=True)
        den = np.sqrt((rx**2).sum() * (ry**2).sum(axis=1))
        with np.errstate(invalid="ignore", divide="ignore"):
            per_arch.append((ry @ rx) / den)
    boots = np.mean(per_arch, axis=0)
    boots = boots[np.isfinite(boots)]
    if boots.size == 0:
        return math.nan, math.nan
    lo, hi = np.quantile(boots, [0.025, 0.975])
    return float(lo), float(hi)


# ---------------------------------------------------------------- C3


C3_STATEMENT = "Adding explicit recurrent weights to an SNN makes it more robust."
C3_TEST = (
    "paired difference (recurrent - feed-forward) per rule, dataset and seed of the robust accuracy under "
    "the per-sample worst case over every gradient and gradient-free attack both networks faced (mean over "
    "eps); pooled by a hierarchical bootstrap (rules, then seeds jointly across rules); per rule a two-sided sign-flip test with "
    "Holm. Control: the feed-forward twin with about the recurrent network's parameter count; supported if "
    "the pooled CI lies above 0 for recurrent - feed-forward and for recurrent - parameter-matched; not "
    f"supported if either lies below 0 or inside +-{C3_MARGIN}."
)


def _pair_differences(
    a_runs: list[RunRecord], b_runs: list[RunRecord], what: str = "robust"
) -> dict[str, dict[int, float]]:
    """``a - b`` per "rule (dataset)" and seed, robust accuracy under the attacks both faced (or clean)."""
    a_by = {(r.dataset, r.rule, r.seed): r for r in a_runs if r.ok}
    out: dict[str, dict[int, float]] = {}
    for b in b_runs:
        a = a_by.get((b.dataset, b.rule, b.seed))
        if not b.ok or a is None:
            continue
        if what == "clean":
            x, y = float(a.summary["test_accuracy"]), float(b.summary["test_accuracy"])
        else:
            families = GRADIENT_ATTACKS + GRADIENT_FREE_ATTACKS
            common = _stems(a, families) & _stems(b, families)
            x, y = worst_case(a, common), worst_case(b, common)
            if x is None or y is None:
                continue
        out.setdefault(f"{b.rule} ({b.dataset})", {})[b.seed] = x - y
    return out


def c3_recurrence(runs: list[RunRecord], matched: list[RunRecord] | None = None) -> Verdict:
    """C3 from the feed-forward/recurrent pairs of ``runs`` and the parameter-matched feed-forward twins."""
    ff = [r for r in runs if r.ok and not r.recurrent]
    rec = [r for r in runs if r.ok and r.recurrent]
    diffs = _pair_differences(rec, ff)
    if not diffs:
        return _not_computed("C3", C3_STATEMENT, C3_TEST, "no paired attack records", C3_MARGIN)
    seeds = _n_seeds(diffs)
    per, est, lo, hi = _group_test(diffs)
    clean = _pair_differences(rec, ff, "clean")
    for k, d in per.items():
        if clean.get(k):
            d["clean_difference"] = float(np.mean(list(clean[k].values())))
    c_est, c_lo, c_hi = _pooled(clean) if clean else (math.nan, math.nan, math.nan)
    controls: dict[str, Any] = {"clean_difference": {"effect": c_est, "ci95": [c_lo, c_hi]}}
    matched_diffs = _pair_differences(rec, [r for r in matched or [] if r.ok])
    if matched_diffs:
        m_per, m_est, m_lo, m_hi = _group_test(matched_diffs)
        for k, d in m_per.items():
            if k in per:
                per[k]["minus_matched"] = d["effect"]
        twins = [r for r in matched or [] if r.ok]
        controls["parameter_matched"] = {
            "effect": m_est,
            "ci95": [m_lo, m_hi],
            "parameters_ff": _mean_params(ff),
            "parameters_rec": _mean_params(rec),
            "parameters_matched": _mean_params(twins),
        }
        m_status = _status(m_lo, m_hi, _n_seeds(matched_diffs), C3_MARGIN, +1)
    else:
        controls["parameter_matched"] = None
        m_status = INCONCLUSIVE
    status = _status(lo, hi, seeds, C3_MARGIN, +1, controls_ok=m_status == SUPPORTED)
    if status == SUPPORTED and not matched_diffs:
        status = INCONCLUSIVE
    if status != NOT_SUPPORTED and m_status == NOT_SUPPORTED and seeds >= 2:
        status = NOT_SUPPORTED  # recurrence does no better than the same number of feed-forward parameters
    positive = sum(1 for d in per.values() if d["effect"] > 0 and d.get("p_holm", 1.0) < ALPHA)
    v = Verdict(
        "C3",
        C3_STATEMENT,
        status,
        C3_TEST,
        est,
        [lo, hi],
        float(stats.sign_flip_p(_per_seed_pooled(diffs))) if seeds >= 2 else None,
        {"rules": len(per), "seeds": seeds, "samples": _attack_n(ff + rec)},
        C3_MARGIN,
        controls,
        per,
    )
    v.sentence = (
        f"recurrent minus feed-forward robust accuracy {_interval(est, lo, hi, seeds)}, "
        f"{positive} of {len(per)} rules positive after Holm; clean accuracy {_signed(c_est)}"
        + (
            f"; recurrent minus parameter-matched "
            f"{_interval(controls['parameter_matched']['effect'], *controls['parameter_matched']['ci95'], seeds)}"
            if matched_diffs
            else "; parameter-matched control not run"
        )
    )
    if status == INCONCLUSIVE:
        v.decide = _decide_pooled(diffs, est, lo, hi, C3_MARGIN)
        if not matched_diffs:
            v.decide = "the parameter-matched control (study part recurrence-matched) is needed; " + v.decide
    return v


def _mean_params(runs: list[RunRecord]) -> float | None:
    ps = [r.summary["parameters"] for r in runs if r.ok and "parameters" in r.summary]
    return float(np.mean(ps)) if ps else None


def _attack_n(runs: list[RunRecord]) -> int | None:
    for r in runs:
        for rec in r.attacks.values():
            for row in rec.get("records", []):
                if isinstance(row.get("correct"), str):
                    return len(row["correct"])
            if "n" in rec:
                return int(rec["n"])
    return None


# ---------------------------------------------------------------- C4


C4_STATEMENT = "Local learning methods behave differently under gradient-based and gradient-free attacks."
C4I_TEST = (
    "(i) per rule without weight transport and seed: robust accuracy under PGD through the rule's own credit "
    "path minus the per-sample worst case of exact-gradient and transfer PGD (mean over eps); pooled by a "
    "hierarchical bootstrap; per rule a one-sided sign-flip test with Holm. Supported if the pooled CI lies "
    f"above 0 (the rule path overestimates robustness); not supported if it lies below 0 or inside +-{C4_MARGIN}."
)
C4II_TEST = (
    "(ii) per online rule and seed: (worst case over the gradient-free attacks - worst case over the "
    "gradient attacks) minus bptt's gap at the same seed; pooled by a hierarchical bootstrap; per rule a "
    "two-sided sign-flip test with Holm. Supported if the pooled CI excludes 0; not supported if it lies "
    f"inside +-{C4_MARGIN}."
)


def c4_transport(runs: list[RunRecord]) -> Verdict:
    """C4 (i): rule-source gradients overestimate the robustness of rules without weight transport."""
    values: dict[str, dict[int, float]] = {}
    for r in runs:
        if not r.ok or has_weight_transport(r.summary["locality"]):
            continue
        rule_src = worst_case(r, [s for s in r.attacks if s.startswith(STEM_PGD_RULE)])
        ref = worst_case(r, [s for s in (STEM_PGD_EXACT, STEM_PGD_TRANSFER) if s in r.attacks])
        if rule_src is not None and ref is not None:
            values.setdefault(f"{r.rule} ({r.dataset})", {})[r.seed] = rule_src - ref
    claim = "C4.i"
    if not values:
        return _not_computed(
            claim,
            C4_STATEMENT,
            C4I_TEST,
            "no rule-source attack records of rules without weight transport",
            C4_MARGIN,
        )
    return _c4_verdict(
        claim, C4I_TEST, values, +1, "greater", "rule-path minus exact/transfer robust accuracy"
    )


def c4_gap(runs: list[RunRecord]) -> Verdict:
    """C4 (ii): the gradient-free minus gradient gap of online rules differs from bptt's."""
    gaps: dict[tuple[str, str, int], float] = {}
    online: dict[str, bool] = {}
    for r in runs:
        if not r.ok:
            continue
        free = worst_case(r, _stems(r, GRADIENT_FREE_ATTACKS))
        grad = worst_case(r, _stems(r, GRADIENT_ATTACKS) - {s for s in r.attacks if "-rule" in s})
        if free is not None and grad is not None:
            gaps[(r.dataset, r.rule, r.seed)] = free - grad
            online[r.rule] = is_online(r.summary["locality"])
    values: dict[str, dict[int, float]] = {}
    for (ds, rule, seed), g in gaps.items():
        ref = gaps.get((ds, REFERENCE_RULE, seed))
        if online.get(rule) and ref is not None:
            values.setdefault(f"{rule} ({ds})", {})[seed] = g - ref
    claim = "C4.ii"
    if not values:
        return _not_computed(
            claim,
            C4_STATEMENT,
            C4II_TEST,
            "no gradient-free and gradient records of bptt and an online rule",
            C4_MARGIN,
        )
    return _c4_verdict(claim, C4II_TEST, values, 0, "two-sided", "online-rule gap minus bptt's gap")


def _c4_verdict(
    claim: str, test: str, values: dict[str, dict[int, float]], direction: int, alternative: str, what: str
) -> Verdict:
    seeds = _n_seeds(values)
    per, est, lo, hi = _group_test(values, alternative)
    status = _status(lo, hi, seeds, C4_MARGIN, direction)
    significant = sum(1 for d in per.values() if d.get("p_holm", 1.0) < ALPHA)
    v = Verdict(
        claim,
        C4_STATEMENT,
        status,
        test,
        est,
        [lo, hi],
        float(stats.sign_flip_p(_per_seed_pooled(values), alternative)) if seeds >= 2 else None,
        {"rules": len(per), "seeds": seeds},
        C4_MARGIN,
        {},
        per,
    )
    v.sentence = (
        f"{what} {_interval(est, lo, hi, seeds)}, {significant} of {len(per)} rules significant after Holm"
    )
    if status == INCONCLUSIVE:
        v.decide = _decide_pooled(values, est, lo, hi, C4_MARGIN)
    return v


# ---------------------------------------------------------------- all claims


def n_test_samples(runs: Iterable[RunRecord]) -> int | None:
    """Test samples behind the runs' accuracies (the smallest, if they differ)."""
    ns = [int(r.summary["test_samples"]) for r in runs if r.ok and "test_samples" in r.summary]
    return min(ns) if ns else None


def equal_tuning_text(tuning: dict[str, Any] | None) -> str:
    """How the C2 runs' learning rates were chosen, in words."""
    if not tuning or not tuning.get("chosen"):
        return "every rule at the same learning rate (no tuning)"
    n = tuning.get("validation_samples")
    images = f"{n} held-out training images" if n else "held-out training images"
    return f"accuracy at equal tuning: lr chosen per rule on {images}"


def with_tuning(v: Verdict, tuning: dict[str, Any] | None) -> Verdict:
    """C2's verdict with the learning-rate choice of ``analysis/tuning.json`` in its controls and its
    sentence."""
    v.controls["tuning"] = None
    if tuning and tuning.get("chosen"):
        v.controls["tuning"] = {
            "validation_samples": tuning.get("validation_samples"),
            "multipliers": tuning.get("multipliers"),
            "default_lr": tuning.get("default_lr"),
            "lr": {f"{c['rule']} {'rec' if c['recurrent'] else 'ff'}": c["lr"] for c in tuning["chosen"]},
        }
    v.sentence = f"{v.sentence}; {equal_tuning_text(tuning)}" if v.sentence else equal_tuning_text(tuning)
    return v


__all__ = [
    "ALPHA",
    "C1_MARGIN",
    "C2_MARGIN",
    "C3_MARGIN",
    "C4_MARGIN",
    "INCONCLUSIVE",
    "NOT_COMPUTED",
    "NOT_SUPPORTED",
    "SUPPORTED",
    "Verdict",
    "c1_similarity",
    "c2_tradeoff",
    "c3_recurrence",
    "c4_gap",
    "c4_transport",
    "worst_case",
]
