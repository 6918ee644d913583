"""Each verdict on constructed records: supported, not supported, inconclusive and not computed, with the
traps the controls exist for (rules that never left their initialisation for C1; more parameters for C3)."""

import json

import numpy as np
import pytest

from spikebench.report.records import RunRecord
from spikebench.report.verdicts import (
    INCONCLUSIVE,
    NOT_COMPUTED,
    NOT_SUPPORTED,
    SUPPORTED,
    Verdict,
    _decide_pooled,
    _pooled,
    c1_similarity,
    c2_tradeoff,
    c3_recurrence,
    c4_gap,
    c4_transport,
    worst_case,
)

LOCALITY = {  # rank, temporal, weight transport
    "bptt": (0, "full", True),
    "tbptt": (1, "truncated", True),
    "fa": (1, "full", False),
    "ottt": (2, "online", True),
    "eprop": (3, "online", False),
    "dfa": (4, "online", False),
    "decolle": (4, "online", False),
}
RULES = list(LOCALITY)
FIELDS = {*Verdict.__dataclass_fields__}


def run(rule, recurrent=False, seed=0, acc=0.8, dataset="fashion-mnist", attacks=None, parameters=None):
    rank, temporal, wt = LOCALITY[rule]
    cfg = {
        "rule": {"name": rule},
        "model": {"recurrent": recurrent},
        "train": {"seed": seed},
        "data": {"name": dataset},
    }
    summary = {
        "test_accuracy": acc,
        "test_samples": 1000,
        "train_seconds": 1.0 + rank,
        "peak_memory_bytes": 2**20,
        "parameters": parameters or (269322 if recurrent else 203786),
        "locality": {"rank": rank, "temporal": temporal, "weight_transport": wt, "memory": "O(1)"},
    }
    rec = RunRecord(f"{rule}-{recurrent}-{seed}-{dataset}-{parameters}", cfg, summary)
    for stem, curve in (attacks or {}).items():
        rows = []
        for e, a in curve.items():
            rows.append(
                {"eps": e, "accuracy": a}
                if not isinstance(a, str)
                else {"eps": e, "accuracy": a.count("1") / len(a), "correct": a}
            )
        rows.append({"eps": 1.0, "accuracy": 0.0, "sanity": True})
        rec.attacks[stem] = {"records": rows}
    return rec


def check_fields(v):
    d = vars(v)
    assert FIELDS <= set(d)
    json.dumps(d)  # serialisable as written to verdicts.json
    if v.status == INCONCLUSIVE:
        assert v.decide and "seeds" in v.decide
    if v.status == NOT_COMPUTED:
        assert v.reason
    else:
        assert v.ci95[0] <= v.ci95[1] and v.sentence and np.isfinite(v.effect)


# ---------------------------------------------------------------- attacks' worst case


def test_worst_case_ands_correct_strings_and_skips_sanity_rows():
    r = run("bptt", attacks={"pgd-exact": {0.1: "1100"}, "square": {0.1: "0011"}})
    assert worst_case(r, ["pgd-exact", "square"]) == 0.0  # each alone at 0.5, together nothing survives
    r = run("bptt", attacks={"pgd-exact": {0.1: "1110"}, "square": {0.1: "1011"}})
    assert worst_case(r, ["pgd-exact", "square"]) == pytest.approx(0.5)
    r = run("bptt", attacks={"pgd-exact": {0.03: 0.4, 0.1: 0.2}, "square": {0.03: 0.5, 0.1: 0.1}})
    assert worst_case(r, ["pgd-exact", "square"]) == pytest.approx((0.4 + 0.1) / 2)  # no strings: lowest
    assert worst_case(r, ["nes"]) is None


# ---------------------------------------------------------------- C1


def controls(rule_cka, seeds=(0, 1, 2), ceiling=0.95, floor=0.6, accuracy=0.8, chance=0.1, epochs=2):
    """Similarity controls with per-seed CKA ``rule_cka(rule, seed)`` at the last layer, last epoch."""
    rng = np.random.default_rng(0)
    cka = []
    for s in seeds:
        for e in range(epochs):
            last = e == epochs - 1
            for layer in (0, 1):
                cka.append(
                    {
                        "rule": "bptt",
                        "seed": s,
                        "layer": layer,
                        "epoch": e,
                        "kind": "ceiling",
                        "value": ceiling + 0.005 * rng.standard_normal() if last else 0.99,
                    }
                )
                cka.append(
                    {
                        "rule": "bptt",
                        "seed": s,
                        "layer": layer,
                        "epoch": e,
                        "kind": "floor",
                        "value": floor + 0.005 * rng.standard_normal(),
                    }
                )
                for rule in RULES[1:]:
                    cka.append(
                        {
                            "rule": rule,
                            "seed": s,
                            "layer": layer,
                            "epoch": e,
                            "kind": "rule",
                            "value": rule_cka(rule, s) if last else 0.99,
                        }
                    )
    acc = {r: {str(s): (accuracy(r) if callable(accuracy) else accuracy) for s in seeds} for r in RULES}
    return {"schema": 1, "layers": [0, 1], "cka": cka, "alignment": [], "accuracy": acc, "chance": chance}


def test_c1_supported_when_rules_reach_the_ceiling():
    v = c1_similarity(controls(lambda r, s: 0.95 - 0.003 * s), n_test=1000)
    assert v.status == SUPPORTED and v.effect > 0.95
    assert v.controls["ceiling"] == pytest.approx(0.95, abs=0.01) and v.controls["floor"] == pytest.approx(
        0.6, abs=0.01
    )
    check_fields(v)


def test_c1_shared_initialisation_trap():
    """Rules that never moved from their initialisation sit at the floor when compared with bptt of other
    seeds, and are at chance: C1 must not be supported."""
    v = c1_similarity(controls(lambda r, s: 0.6 + 0.002 * s, accuracy=0.1), n_test=1000)
    assert v.status == NOT_SUPPORTED
    assert set(v.controls["rules_at_chance"]) == set(RULES[1:])
    check_fields(v)


def test_c1_rule_at_chance_cannot_count_as_similar():
    v = c1_similarity(
        controls(lambda r, s: 0.95, accuracy=lambda r: 0.105 if r in ("dfa", "fa") else 0.8), 1000
    )
    assert v.per_rule["dfa"]["effect"] == 0.0 and v.status != SUPPORTED
    assert v.controls["rules_at_chance"] == ["dfa", "fa"]


def test_c1_inconclusive_and_one_seed():
    spread = {0: 0.7, 1: 0.95, 2: 0.85}
    v = c1_similarity(controls(lambda r, s: 0.6 + 0.35 * spread[s]), n_test=1000)
    assert v.status == INCONCLUSIVE
    check_fields(v)
    one = c1_similarity(controls(lambda r, s: 0.95, seeds=(0,)), n_test=1000)
    assert one.status == INCONCLUSIVE and "2 seeds" in one.decide


def test_c1_not_computed():
    assert c1_similarity(None).status == NOT_COMPUTED
    c = controls(lambda r, s: 0.9)
    c["cka"] = [row for row in c["cka"] if row["kind"] != "ceiling"]
    v = c1_similarity(c)
    assert v.status == NOT_COMPUTED and "ceiling" in v.reason
    check_fields(v)


# ---------------------------------------------------------------- C2


def tradeoff_runs(acc_of_rank, seeds=(0, 1, 2), noise=0.003):
    rng = np.random.default_rng(1)
    return [
        run(
            r,
            rec,
            s,
            acc_of_rank(LOCALITY[r][0]) + noise * rng.standard_normal() + 0.001 * RULES.index(r) * -1,
        )
        for r in RULES
        for rec in (False, True)
        for s in seeds
    ]


def test_c2_supported_not_supported_inconclusive():
    v = c2_tradeoff(tradeoff_runs(lambda k: 0.9 - 0.03 * k))
    assert v.status == SUPPORTED and v.effect < -0.8 and v.p < 0.05
    assert v.per_rule["dfa"]["train_seconds"] == 5.0  # cost axes beside accuracy
    check_fields(v)
    v = c2_tradeoff(tradeoff_runs(lambda k: 0.7 + 0.03 * k, noise=0.0005))
    assert v.status == NOT_SUPPORTED
    mixed = {0: 0.80, 1: 0.86, 2: 0.78, 3: 0.88, 4: 0.79}
    v = c2_tradeoff(tradeoff_runs(lambda k: mixed[k], noise=0.03))
    assert v.status in (INCONCLUSIVE, NOT_SUPPORTED)
    check_fields(v)


def test_c2_one_seed_never_decides():
    v = c2_tradeoff(tradeoff_runs(lambda k: 0.9 - 0.03 * k, seeds=(0,)))
    assert v.status == INCONCLUSIVE and "2 seeds" in v.decide
    assert c2_tradeoff([]).status == NOT_COMPUTED
    few = c2_tradeoff([run("bptt"), run("fa")])
    assert few.status == INCONCLUSIVE and "3 rules" in few.decide


# ---------------------------------------------------------------- C3


def robust(value):
    return {"pgd-exact": {0.03: value, 0.1: value / 2}, "square": {0.03: value + 0.1, 0.1: value}}


def c3_runs(gain_rec, gain_matched=None, seeds=(0, 1, 2, 3), rules=("bptt", "fa", "eprop", "ottt")):
    runs, matched = [], []
    rng = np.random.default_rng(2)
    for s in seeds:
        for r in rules:
            base = 0.3 + 0.02 * rng.standard_normal()
            g = gain_rec(r) if callable(gain_rec) else gain_rec
            runs += [run(r, False, s, attacks=robust(base)), run(r, True, s, attacks=robust(base + g))]
            if gain_matched is not None:
                matched.append(run(r, False, s, attacks=robust(base + gain_matched), parameters=270000))
    return runs, matched


def test_c3_supported_with_parameter_matched_control():
    v = c3_recurrence(*c3_runs(0.05, gain_matched=0.0))
    assert v.status == SUPPORTED
    assert v.effect == pytest.approx(0.05 * 0.75)  # robust = mean over eps of min(pgd, square): 0.75 value
    assert v.controls["parameter_matched"]["effect"] == pytest.approx(0.05 * 0.75)
    assert v.controls["parameter_matched"]["parameters_matched"] == 270000
    assert "0 of 4 rules positive after Holm" in v.sentence  # 4 seeds: the smallest sign-flip p is 2/16
    check_fields(v)


def test_c3_more_parameters_trap():
    """Recurrent networks beat feed-forward ones only as much as a feed-forward net with their parameter
    count does: not supported."""
    v = c3_recurrence(*c3_runs(0.05, gain_matched=0.05))
    assert v.status == NOT_SUPPORTED
    check_fields(v)


def test_c3_not_supported_inconclusive_and_missing_control():
    assert c3_recurrence(*c3_runs(-0.05, gain_matched=0.0)).status == NOT_SUPPORTED
    signs = {"bptt": 0.08, "fa": -0.08, "eprop": 0.06, "ottt": -0.03}
    v = c3_recurrence(*c3_runs(lambda r: signs[r], gain_matched=0.0))
    assert v.status == INCONCLUSIVE
    check_fields(v)
    # the seeds agree and the rules disagree: more seeds cannot decide it
    assert v.decide.startswith("the 95% interval is +-") and "no number of seeds" in v.decide
    assert "its 4 rule groups" in v.decide and "more rules would" in v.decide
    runs, _ = c3_runs(0.05)
    v = c3_recurrence(runs, [])
    assert v.status == INCONCLUSIVE and "not run" in v.sentence
    assert c3_recurrence([run("bptt"), run("bptt", True)]).status == NOT_COMPUTED


def test_decide_pooled_counts_only_the_seeds_share_of_the_interval():
    """Where seeds, not rules, make the interval wide, more seeds decide it: the more seed noise, the
    more seeds; where rules differ, no number of seeds does (above)."""
    rng = np.random.default_rng(0)

    seed_effect = rng.standard_normal(6)
    cell = rng.standard_normal((len(RULES), 6))

    def needed(noise):
        # every rule shares the seed's effect; the rules themselves barely differ
        values = {
            r: {s: 0.004 + noise * seed_effect[s] + 1e-4 * cell[i, s] for s in range(6)}
            for i, r in enumerate(RULES)
        }
        est, lo, hi = _pooled(values)
        text = _decide_pooled(values, est, lo, hi, 0.01)
        assert text.startswith("the 95% interval is +-") and "seeds would narrow it" in text
        return int(text.split("about ")[2].split(" seeds")[0])

    small, large = needed(0.02), needed(0.05)
    assert 6 < small < large


# ---------------------------------------------------------------- C4


def c4_runs(overestimate, gap, seeds=(0, 1, 2, 3)):
    runs = []
    rng = np.random.default_rng(3)
    for s in seeds:
        for r in RULES:
            base = 0.2 + 0.01 * rng.standard_normal()
            local = LOCALITY[r][1] == "online"
            over = overestimate if not LOCALITY[r][2] else 0.0
            runs.append(
                run(
                    r,
                    False,
                    s,
                    attacks={
                        "pgd-exact": {0.1: base},
                        "pgd-transfer": {0.1: base + 0.1},
                        "pgd-rule": {0.1: base + over},
                        "square": {0.1: base + 0.2 + (gap if local else 0.0)},
                    },
                )
            )
    return runs


@pytest.mark.parametrize("over,expected", [(0.1, SUPPORTED), (0.0, NOT_SUPPORTED), (-0.1, NOT_SUPPORTED)])
def test_c4_transport(over, expected):
    v = c4_transport(c4_runs(over, 0.0))
    assert v.status == expected and set(v.per_rule) == {
        f"{r} (fashion-mnist)" for r in ("fa", "eprop", "dfa", "decolle")
    }
    check_fields(v)


@pytest.mark.parametrize("gap,expected", [(0.1, SUPPORTED), (-0.1, SUPPORTED), (0.0, NOT_SUPPORTED)])
def test_c4_gap(gap, expected):
    v = c4_gap(c4_runs(0.0, gap))
    assert v.status == expected
    assert set(v.per_rule) == {f"{r} (fashion-mnist)" for r in ("ottt", "eprop", "dfa", "decolle")}
    check_fields(v)


def test_c4_inconclusive_and_not_computed():
    runs = c4_runs(0.0, 0.0)
    for r in runs:  # ottt's gap sometimes far above, sometimes far below bptt's
        if r.rule in ("ottt", "dfa"):
            r.attacks["square"]["records"][0]["accuracy"] += 0.15 if r.seed % 2 else -0.1
    v = c4_gap(runs)
    assert v.status == INCONCLUSIVE
    check_fields(v)
    assert c4_gap([run("bptt")]).status == NOT_COMPUTED
    assert c4_transport([run("bptt")]).status == NOT_COMPUTED


def _alignment_rows(cosines):
    """Alignment rows of ``cosines[(rule, layer, reference)] = [cosine per seed]``."""
    return [
        {"rule": rule, "seed": s, "layer": layer, "reference": ref, "cosine": c, "random_baseline": 0.05}
        for (rule, layer, ref), values in cosines.items()
        for s, c in enumerate(values)
    ]


def test_alignment_summary_gives_seed_bootstrap_cis_per_layer():
    from spikebench.analysis import stats
    from spikebench.analysis.controls import alignment_summary

    values = [0.91, 0.84, 0.88, 0.79]
    record = {
        "alignment": _alignment_rows(
            {("fa", "0", "bptt"): values, ("fa", "readout", "bptt"): [0.99] * 4, ("dfa", "0", "own"): [0.3]}
        )
    }
    by = {(a["rule"], a["layer"], a["reference"]): a for a in alignment_summary(record, n_boot=2000)}
    fa0 = by[("fa", "0", "bptt")]
    assert fa0["cosine"] == pytest.approx(np.mean(values), abs=1e-12) and fa0["seeds"] == 4
    assert fa0["ci95"] == pytest.approx(list(stats.bootstrap_ci(values, method="percentile", n_boot=2000)))
    assert min(values) <= fa0["ci95"][0] < fa0["cosine"] < fa0["ci95"][1] <= max(values)
    assert by[("fa", "readout", "bptt")]["ci95"] == [0.99, 0.99]  # no spread: a degenerate interval
    assert by[("dfa", "0", "own")]["ci95"] is None  # one seed: no interval
    assert by[("dfa", "0", "own")]["random_baseline"] == 0.05


def test_c1_verdict_carries_the_alignment_cis():
    c = controls(lambda r, s: 0.95 - 0.003 * s)
    c["alignment"] = _alignment_rows({("fa", 1, "bptt"): [0.5, 0.6, 0.7], ("fa", 1, "own"): [0.8, 0.9, 0.85]})
    v = c1_similarity(c, n_test=1000)
    rows = {(a["rule"], a["layer"], a["reference"]): a for a in v.controls["alignment"]}
    assert rows[("fa", 1, "bptt")]["cosine"] == pytest.approx(0.6)
    lo, hi = rows[("fa", 1, "bptt")]["ci95"]
    assert 0.5 <= lo < 0.6 < hi <= 0.7
    assert v.per_rule["fa"]["gradient_cosine"] == pytest.approx(0.6)
    assert v.per_rule["fa"]["gradient_cosine_ci95"] == [lo, hi]
    json.dumps(v.controls)  # verdicts.json carries it


def test_report_alignment_table_prints_the_cis():
    from spikebench.report.controls import alignment_rows

    record = {"alignment": _alignment_rows({("fa", "0", "bptt"): [0.5, 0.7], ("fa", "0", "own"): [0.9]})}
    (row,) = alignment_rows(record)
    assert row[:2] == ["fa", "0"]
    assert row[2].startswith("0.600 [") and row[2].endswith("]")
    assert row[3] == "0.900 (1 seed)" and row[4] == "0.05"
