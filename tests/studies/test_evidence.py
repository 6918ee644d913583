"""The evidence mode plans the stated sizes; a study records where it came from; the report header says
what the runs used (not the mode) and a methods section is generated from the records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spikebench import heap, records
from spikebench.cli import main
from spikebench.config import Config
from spikebench.dynamics import fused
from spikebench.studies.budget import estimate, train_seconds
from spikebench.studies.definitions import EVIDENCE_SEEDS, Mode, plan_study
from spikebench.studies.jobs import AttackJob
from spikebench.studies.runner import StudyError


def test_evidence_plan_has_the_stated_seeds_parts_and_budgets():
    mode = Mode.make(False, None, evidence=True)
    plan = plan_study("all", Config(), mode)
    assert mode.evidence and not mode.quick and mode.seeds == EVIDENCE_SEEDS == 10
    assert set(plan.parts) == {
        "tradeoff",
        "similarity",
        "recurrence",
        "recurrence-sequential",
        "recurrence-matched",
        "attacks",
        "backdoor",
    }
    core = [plan.runs[k] for k in plan.parts["tradeoff"]]
    assert len(core) == 7 * 2 * 10  # every rule, ff and rec, 10 seeds
    for cfg in core:
        assert (cfg.data.limit_train, cfg.data.limit_test, cfg.train.epochs) == (8000, 2000, 3)
        assert cfg.data.timesteps == 10 and cfg.train.track_every == 50
    assert {cfg.train.seed for cfg in core} == set(range(10))
    seq = [plan.runs[k] for k in plan.parts["recurrence-sequential"]]
    assert {c.rule.name for c in seq} == {"bptt", "ottt"} and {c.data.timesteps for c in seq} == {28}
    assert len(seq) == 2 * 2 * 10
    matched = [plan.runs[k] for k in plan.parts["recurrence-matched"]]
    assert {c.rule.name for c in matched} == {"bptt", "ottt", "dfa"} and len(matched) == 3 * 10
    backdoor = [plan.runs[k] for k in plan.parts["backdoor"]]
    assert {c.train.seed for c in backdoor} == {0, 1} and len(backdoor) == 7 * 2
    attacks = [j for j in plan.jobs if isinstance(j, AttackJob)]
    requests = [j.request for j in attacks]
    assert {r.n for r in requests} == {400} and {r.eps for r in requests} == {(0.03,)}
    pgd = [r for r in requests if r.attack == "pgd" and r.surrogate is None and r.grad_source == "exact"]
    assert {(r.options.steps, r.options.restarts, r.sanity_eps) for r in pgd} == {(20, 1, 0.5)}
    assert {r.options.steps for r in requests if r.attack == "apgd"} == {20}
    assert {r.options.queries for r in requests if r.attack == "square"} == {200}
    # every network of C3 faces the same attacks, so the paired worst case covers the same set
    per_key: dict[str, set[str]] = {}
    for j in attacks:
        per_key.setdefault(j.key, set()).add(j.stem)
    c3 = {"pgd-exact", "apgd-exact", "pgd-exact@fast_sigmoid-8", "fgsm-exact", "square", "gaussian-noise"}
    for part in ("recurrence", "recurrence-sequential", "recurrence-matched"):
        assert all(c3 <= per_key[k] for k in plan.parts[part])


def test_the_attack_stems_the_report_reads_are_those_the_studies_write():
    full = plan_study("all", Config(), Mode.make(False, None))
    planned = {j.stem for j in full.jobs if isinstance(j, AttackJob)}
    assert set(records.ATTACK_STEMS) <= planned
    assert {v for k, v in vars(records).items() if k.startswith("STEM_")} == set(records.ATTACK_STEMS)
    pgd = next(j for j in full.jobs if isinstance(j, AttackJob) and j.stem == records.STEM_PGD_EXACT)
    assert pgd.record(Path("s")) == Path("s/runs") / pgd.key / records.ATTACKS_DIR / "pgd-exact.json"


def test_evidence_estimate_is_within_two_hours_on_two_workers():
    plan = plan_study("all", Config(), Mode.make(False, None, evidence=True))
    b = estimate(plan, workers=2)
    assert sum(b.counts.values()) == len(plan.all_jobs())
    assert 0.75 * 3600 < b.wall_seconds < 2 * 3600
    quick = estimate(plan_study("all", Config(), Mode.make(True, None)), workers=2)
    assert quick.wall_seconds < b.wall_seconds / 4


def test_cost_model_grows_with_data_epochs_and_steps():
    base = Config()
    cfg = plan_study("tradeoff", base, Mode.make(True, None)).runs
    one = next(iter(cfg.values()))
    import dataclasses

    more = dataclasses.replace(one, train=dataclasses.replace(one.train, epochs=2))
    assert train_seconds(more) > train_seconds(one)
    rec = dataclasses.replace(one, model=dataclasses.replace(one.model, recurrent=True))
    assert train_seconds(rec) > train_seconds(one)


def test_seeds_and_user_keys_apply_to_the_evidence_mode():
    mode = Mode.make(False, 8, ("data.limit_train",), evidence=True)
    plan = plan_study("tradeoff", Config(), mode)
    assert {c.train.seed for c in plan.runs.values()} == set(range(8))
    assert {c.data.limit_train for c in plan.runs.values()} == {None}
    with pytest.raises(StudyError, match="exclude"):
        Mode.make(True, None, evidence=True)


def test_plan_flag_prints_counts_and_estimate_and_runs_nothing(tmp_path, capsys):
    out = tmp_path / "ev"
    assert main(["study", "all", "--evidence", "--plan", "--workers", "2", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "224 runs" in text and "1614 jobs" in text and "on 2 workers" in text
    assert not out.exists()


def test_quick_and_evidence_exclude_each_other(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["study", "all", "--quick", "--evidence"])
    assert exc.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


STUDY = [
    "study",
    "tradeoff",
    "--quick",
    "--rules",
    "bptt",
    "--workers",
    "1",
    "-q",
    "--set",
    "model.hidden=[12]",
    "--set",
    "data.timesteps=4",
    "--set",
    "data.limit_train=100",
    "--set",
    "data.limit_test=40",
    "--set",
    "train.probe_size=16",
    "--set",
    "train.fisher_size=4",
]


def test_header_states_what_runs_used_and_methods_records_provenance(tmp_path, fake_data, capsys):
    out = tmp_path / "s"
    assert main([*STUDY, "--out", str(out)]) == 0
    capsys.readouterr()
    manifest = json.loads((out / "study.json").read_text())
    assert manifest["settings"]["mode"]["limit_train"] == 4000  # the mode's size, which the user replaced
    (call,) = manifest["invocations"]
    assert (
        call["command"].startswith("spikebench study tradeoff --quick")
        and "data.limit_train=100" in call["command"]
    )
    assert call["started"] <= call["finished"] and call["seconds"] >= 0
    assert call["hardware"]["cores"] >= 1 and call["versions"]["torch"]
    assert call["heap"] == heap.describe() and call["lif_forward"] == fused.describe()
    md = (out / "report" / "report.md").read_text()
    header = md.split("## Verdicts")[0]
    assert "100 training and 40 test images" in header and "4,000" not in header
    assert "T = 4 time steps" in header and "1 epoch;" in header and "1 seed (0)" in header
    assert "Planned as a quick study" in header
    methods = md.split("## Methods")[1]
    for text in ("### Data", "### Network", "### Rules", "### Training", "### Provenance", "fast_sigmoid"):
        assert text in methods
    assert call["command"] in methods
    assert "No hyper-parameter was tuned" in methods
    # a rerun keeps the first command and adds the second
    assert main([*STUDY, "--out", str(out)]) == 0
    calls = json.loads((out / "study.json").read_text())["invocations"]
    assert len(calls) == 2 and calls[0] == call
    assert "over 2 commands" in (out / "report" / "report.md").read_text()


def test_quick_report_first_screen_says_it_decides_nothing_and_names_the_evidence_study(
    tmp_path, fake_data, capsys
):
    out = tmp_path / "s"
    assert main([*STUDY, "--out", str(out)]) == 0
    html = (out / "report" / "report.html").read_text()
    first = html[: html.index("<h2>Verdicts")]
    assert "decides nothing" in first and "<code>spikebench study all --evidence</code>" in first
