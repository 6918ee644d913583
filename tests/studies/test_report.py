"""Reports are built from records alone; each verdict rule gives the expected verdict on constructed
records; the HTML report is one self-contained file."""

import json
import re

import pytest

from spikebench.report import build_report
from spikebench.report.records import RunRecord
from spikebench.report.verdicts import (
    INCONCLUSIVE,
    NOT_SUPPORTED,
    SUPPORTED,
    c2_tradeoff,
    c3_recurrence,
    c4_attacks,
    spearman,
)

RANK = {"bptt": 0, "tbptt": 1, "fa": 2, "ottt": 3, "eprop": 4, "dfa": 5, "decolle": 6}


def run(rule, recurrent=False, seed=0, acc=0.8, dataset="fashion-mnist", attacks=None, key=None):
    cfg = {
        "rule": {"name": rule},
        "model": {"recurrent": recurrent},
        "train": {"seed": seed},
        "data": {"name": dataset},
    }
    summary = {
        "test_accuracy": acc,
        "samples_per_second": 1000.0,
        "peak_memory_bytes": 2**20,
        "train_seconds": 1.0,
        "locality": {"rank": RANK[rule], "spatial": "s", "temporal": "t", "memory": "O(1)"},
    }
    rec = RunRecord(key or f"{rule}-{recurrent}-{seed}-{dataset}", cfg, summary)
    for name, curve in (attacks or {}).items():
        rec.attacks[name] = {"records": [{"eps": e, "accuracy": a} for e, a in curve.items()]}
    return rec


def test_spearman():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3], [1, 1, 1]) is None


@pytest.mark.parametrize(
    "accs,expected",
    [
        ([0.9, 0.88, 0.86, 0.8, 0.78, 0.75, 0.7], SUPPORTED),
        ([0.7, 0.75, 0.78, 0.8, 0.86, 0.88, 0.9], NOT_SUPPORTED),
        ([0.9, 0.7, 0.88, 0.75, 0.86, 0.78, 0.8], INCONCLUSIVE),
    ],
)
def test_c2_verdicts(accs, expected):
    runs = [run(r, rec, acc=a) for (r, a) in zip(RANK, accs, strict=True) for rec in (False, True)]
    v = c2_tradeoff(runs)
    assert v.status == expected and "rho_feedforward" in v.numbers


def pgd(value):
    return {"pgd-exact": {0.03: value, 0.1: value / 2}}


@pytest.mark.parametrize(
    "ff,rc,expected", [(0.3, 0.4, SUPPORTED), (0.4, 0.3, NOT_SUPPORTED), (None, None, INCONCLUSIVE)]
)
def test_c3_verdicts(ff, rc, expected):
    runs = []
    for seed in (0, 1, 2):
        for r in ("bptt", "fa", "eprop"):
            if ff is None:  # mixed signs across rules
                a, b = (0.3, 0.4) if r == "bptt" else (0.4, 0.3) if r == "fa" else (0.35, 0.35)
            else:
                a, b = ff + 0.01 * seed, rc + 0.01 * seed
            runs += [run(r, False, seed, attacks=pgd(a)), run(r, True, seed, attacks=pgd(b))]
    v = c3_recurrence(runs)
    assert v.status == expected
    if ff is not None:
        assert v.numbers["mean_difference"] == pytest.approx((rc - ff) * 0.75)
        assert all(s == pytest.approx(0.0, abs=1e-12) for s in v.numbers["std_over_seeds"].values())


def test_c3_without_attack_records_is_inconclusive():
    assert c3_recurrence([run("bptt"), run("bptt", True)]).status == INCONCLUSIVE


@pytest.mark.parametrize("local_gap,expected", [(0.3, SUPPORTED), (0.0, NOT_SUPPORTED), (0.04, INCONCLUSIVE)])
def test_c4_verdicts(local_gap, expected):
    runs = [run("bptt", attacks={"pgd-exact": {0.1: 0.1}, "square": {0.1: 0.2}})]
    for r in ("ottt", "eprop", "dfa"):
        runs.append(run(r, attacks={"pgd-exact": {0.1: 0.1}, "square": {0.1: 0.2 + local_gap}}))
    assert c4_attacks(runs).status == expected


def write_study(tmp_path, runs, parts):
    study = tmp_path / "study"
    (study / "runs").mkdir(parents=True)
    manifest = {
        "study": "all",
        "settings": {"mode": {"quick": True}},
        "parts": parts,
        "runs": {r.key: r.config for r in runs},
    }
    (study / "study.json").write_text(json.dumps(manifest))
    for r in runs:
        d = study / "runs" / r.key
        (d / "attacks").mkdir(parents=True)
        (d / "summary.json").write_text(json.dumps(r.summary))
        for name, data in r.attacks.items():
            (d / "attacks" / f"{name}.json").write_text(json.dumps(data))
    return study


def test_report_builds_from_records_and_html_is_self_contained(tmp_path):
    runs = [
        run(
            r,
            rec,
            acc=0.9 - 0.02 * RANK[r] + 0.01 * rec,
            attacks={"pgd-exact": {0.03: 0.3 + 0.05 * rec, 0.1: 0.1}, "square": {0.03: 0.6, 0.1: 0.4}},
        )
        for r in RANK
        for rec in (False, True)
    ]
    failed = run("bptt", seed=9, key="failedrun")
    failed.summary = None
    runs.append(failed)
    keys = [r.key for r in runs]
    study = write_study(
        tmp_path,
        runs,
        {"tradeoff": keys, "recurrence": keys, "attacks": [r.key for r in runs if not r.recurrent]},
    )
    (study / "runs" / "failedrun").rename(study / "runs" / "gone")
    (study / "runs" / "failedrun.failed.json").write_text(
        json.dumps(
            {
                "status": "failed",
                "reason": "training diverged: non-finite loss at epoch 2, batch 7",
                "epoch": 2,
            }
        )
    )
    paths = build_report(study)
    md = paths["md"].read_text()
    assert "| C2 |" in md and "**supported**" in md
    assert "training diverged" in md and "Failed runs" in md
    assert "**0.910**" in md  # best recurrent accuracy marked
    html = paths["html"].read_text()
    assert "data:image/png;base64," in html
    assert not re.search(r"(src|href)=['\"](?!data:)", html)  # nothing to fetch: one self-contained file
    verdicts = json.loads((study / "report" / "verdicts.json").read_text())
    assert {v["claim"]: v["status"] for v in verdicts}["C3"] == SUPPORTED
