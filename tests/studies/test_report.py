"""Reports are built from records alone; each verdict rule gives the expected verdict on constructed
records; the HTML report is one self-contained file."""

import json
import re

import pytest

from spikebench.report import build_report
from spikebench.report.records import RunRecord
from spikebench.report.verdicts import INCONCLUSIVE, NOT_COMPUTED

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
        "locality": {
            "rank": RANK[rule],
            "spatial": "s",
            "temporal": "t",
            "memory": "O(1)",
            "weight_transport": "yes",
        },
    }
    rec = RunRecord(key or f"{rule}-{recurrent}-{seed}-{dataset}", cfg, summary)
    for name, curve in (attacks or {}).items():
        rec.attacks[name] = {"records": [{"eps": e, "accuracy": a} for e, a in curve.items()]}
    return rec


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
    assert md.index("## Summary") < md.index("## Verdicts") < md.index("## C2")
    assert "decides nothing" in md and "spikebench study all --evidence" in md  # the quick-mode warning
    assert "| C2 | **inconclusive** |" in md  # one seed never decides
    scope = md.split("**What this study can and cannot say.**")[1].split("\n")[0]  # under the summary
    assert (
        md.index("## Summary") < md.index("**What this study can and cannot say.**") < md.index("## Verdicts")
    )
    assert "Mode: quick." in scope and "C3: " in scope and "upper bounds" in scope
    assert "Planned as a quick study" in md
    assert "| C1 | **not computed** (no similarity controls) |" not in md  # similarity not in this study
    assert "{" not in md.split("## Verdicts")[1].split("## C2")[0]  # no dict dumps in the verdicts
    assert "training diverged" in md and "Failed runs" in md
    html = paths["html"].read_text()
    assert "data:image/png;base64," in html
    assert "<code>spikebench study all --evidence</code>" in html and "`" not in html  # no literal backticks
    assert not re.search(r"(src|href)=['\"](?!data:)", html)  # nothing to fetch: one self-contained file
    verdicts = {v["claim"]: v for v in json.loads((study / "report" / "verdicts.json").read_text())}
    assert set(verdicts) == {"C2", "C3", "C4.i", "C4.ii"}
    assert verdicts["C3"]["status"] == INCONCLUSIVE and "seeds" in verdicts["C3"]["decide"]
    assert verdicts["C4.i"]["status"] == NOT_COMPUTED  # no rule-source attacks in these records
    for key in ("claim", "status", "effect", "ci95", "p", "test", "n", "margin", "controls", "per_rule"):
        assert key in verdicts["C3"]
    for f in (study / "report").iterdir():
        assert f.stat().st_mode & 0o044 == 0o044, f  # readable by others under the usual umask 022


def test_report_forest_plots_with_seeds(tmp_path):
    runs = []
    for seed in (0, 1, 2):
        for r in RANK:
            for rec in (False, True):
                runs.append(
                    run(
                        r,
                        rec,
                        seed,
                        acc=0.9 - 0.02 * RANK[r] + 0.004 * seed,
                        attacks={"pgd-exact": {0.03: 0.3 + 0.05 * rec + 0.01 * seed}, "square": {0.03: 0.6}},
                    )
                )
    keys = [r.key for r in runs]
    study = write_study(tmp_path, runs, {"tradeoff": keys, "recurrence": keys})
    md = build_report(study)["md"].read_text()
    assert "forest-C3.png" in md and (study / "report" / "forest-C3.svg").is_file()
    assert "| C2 | **supported** |" in md


def test_report_c1_from_similarity_controls(tmp_path):
    from tests.studies.test_verdicts import controls

    runs = [run(r, seed=s) for r in RANK for s in (0, 1, 2)]
    study = write_study(tmp_path, runs, {"similarity": [r.key for r in runs]})
    (study / "analysis").mkdir()
    (study / "analysis" / "similarity_controls.json").write_text(json.dumps(controls(lambda r, s: 0.6)))
    build_report(study)
    (c1,) = json.loads((study / "report" / "verdicts.json").read_text())
    assert c1["claim"] == "C1" and c1["status"] == "not supported"
    assert c1["controls"]["floor"] == pytest.approx(0.6, abs=0.01)
    assert (study / "report" / "forest-C1.svg").is_file()
