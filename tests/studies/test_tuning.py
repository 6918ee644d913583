"""Accuracy at equal tuning: the validation split held out of the training set, the learning-rate choice
on it (never on test data), the tuned C2 runs, and a study that resumes without training again."""

import dataclasses
import gzip
import json
import shutil

import numpy as np
import pytest
import torch

from spikebench.config import ConfigError, DataConfig, load_config, to_dict
from spikebench.data.datasets import DataError, load_dataset, validation_indices
from spikebench.data.idx import parse_idx, write_idx
from spikebench.report import build_report
from spikebench.studies import Mode, execute_plan, plan_study
from spikebench.studies.tuning import choose, read_tuning
from tests.conftest import make_fashion_like

TINY = ["model.hidden=[16]", "data.timesteps=4", "train.batch_size=64"]


def test_validation_indices_partition_the_training_split_deterministically():
    held, kept = validation_indices(100, 30)
    again = validation_indices(100, 30)
    assert torch.equal(held, again[0]) and torch.equal(kept, again[1])
    assert len(held) == 30 and len(kept) == 70
    assert sorted(torch.cat([held, kept]).tolist()) == list(range(100))  # disjoint and complete
    assert held.tolist() != list(range(70, 100)) and held.tolist() != list(range(30))  # drawn, not a block
    assert len(validation_indices(100, 0.25)[0]) == 25
    for bad in (100, 101):
        with pytest.raises(DataError, match="data.validation"):
            validation_indices(100, bad)


def test_validation_config_is_checked():
    assert DataConfig(validation=10).validation == 10 and DataConfig(validation=0.1).validation == 0.1
    for bad in (0, -5, 1.0, 1.5, 0.0):
        with pytest.raises(ConfigError, match="data.validation"):
            DataConfig(validation=bad)
    assert load_config(None, ["data.validation=0.2"]).data.validation == 0.2
    with pytest.raises(ConfigError, match="data.validation"):
        load_config(None, ["data.validation=yes"])


def test_validation_split_is_disjoint_from_train_and_test(fake_data):
    raw = load_dataset(DataConfig())
    ds = load_dataset(DataConfig(validation=64))
    held, kept = validation_indices(len(raw.train), 64)
    assert ds.validation is not None and len(ds.validation) == 64 and len(ds.train) == len(raw.train) - 64
    assert torch.equal(ds.validation.x, raw.train.x[held]) and torch.equal(ds.validation.y, raw.train.y[held])
    assert torch.equal(ds.train.x, raw.train.x[kept])
    assert torch.equal(ds.test.x, raw.test.x) and torch.equal(ds.test.y, raw.test.y)  # test untouched
    assert raw.validation is None
    limited = load_dataset(DataConfig(validation=64, limit_train=50))
    assert torch.equal(limited.train.x, raw.train.x[kept[:50]])  # the limit takes from the rest
    assert torch.equal(limited.validation.x, ds.validation.x)  # the same images whatever the limit


def test_choice_rule():
    c = [{"lr": 1e-3, "validation_accuracy": 0.5}, {"lr": 2e-3, "validation_accuracy": 0.7}]
    assert choose([*c, {"lr": 4e-3, "validation_accuracy": 0.6}], 2e-3)[0] == 2e-3
    assert choose([*c, {"lr": 4e-3, "validation_accuracy": 0.8}], 2e-3)[0] == 4e-3
    tie = [{"lr": 1e-3, "validation_accuracy": 0.7}, {"lr": 2e-3, "validation_accuracy": 0.7}]
    assert choose(tie, 2e-3) == (2e-3, "tie at validation accuracy 0.7000: the default learning rate")
    tie = [{"lr": 4e-3, "validation_accuracy": 0.7}, {"lr": 1e-3, "validation_accuracy": 0.7}]
    assert choose([*tie, {"lr": 2e-3, "validation_accuracy": 0.1}], 2e-3)[0] == 1e-3
    failed = [{"lr": 1e-3, "validation_accuracy": None}, {"lr": 4e-3, "validation_accuracy": 0.2}]
    assert choose(failed, 2e-3)[0] == 4e-3  # a failed run is never chosen
    assert choose([{"lr": 1e-3, "validation_accuracy": None}], 2e-3)[0] == 2e-3


def tuned_mode(seeds: int, user: tuple[str, ...] = ()) -> Mode:
    return dataclasses.replace(
        Mode.make(True, seeds, user), tune_lrs=(0.5, 1.0, 4.0), tune_validation=64, limit_train=None
    )


def run_tuned(study, seeds=2, rules=("bptt", "dfa")):
    base = load_config(None, TINY)
    plan = plan_study("tradeoff", base, tuned_mode(seeds, tuple(s.split("=")[0] for s in TINY)), rules=rules)
    outcomes = execute_plan(plan, study, workers=1)
    return plan, outcomes


def test_quick_mode_does_not_tune_and_full_mode_does():
    assert Mode.make(True, None).tune_lrs == ()
    quick = plan_study("tradeoff", load_config(None, []), Mode.make(True, None))
    assert set(quick.parts) == {"tradeoff"} and not quick.followups
    full = Mode.make(False, None)
    assert full.tune_lrs == (0.5, 1.0, 2.0) and full.tune_validation == 5000
    plan = plan_study("tradeoff", load_config(None, []), full)
    assert set(plan.parts) == {"tuning"} and len(plan.followups) == 1
    assert {c.data.validation for c in plan.runs.values()} == {5000}
    assert {c.train.seed for c in plan.runs.values()} == {0}
    assert sorted({c.train.lr for c in plan.runs.values()}) == [1e-3, 2e-3, 4e-3]
    # a learning rate the user pins is not tuned
    pinned = plan_study(
        "tradeoff", load_config(None, ["train.lr=0.01"]), dataclasses.replace(full, user_keys=("train.lr",))
    )
    assert set(pinned.parts) == {"tradeoff"} and {c.train.lr for c in pinned.runs.values()} == {0.01}


def test_tuned_study_records_and_uses_the_chosen_lr_and_resumes(fake_data, tmp_path):
    study = tmp_path / "study"
    plan, outcomes = run_tuned(study)
    assert all(o.status == "done" for o in outcomes), outcomes
    tuning = read_tuning(study)
    assert tuning["validation_samples"] == 64 and tuning["multipliers"] == [0.5, 1.0, 4.0]
    chosen = {(c["rule"], c["recurrent"]): c for c in tuning["chosen"]}
    assert set(chosen) == {("bptt", False), ("bptt", True), ("dfa", False), ("dfa", True)}
    manifest = json.loads((study / "study.json").read_text())
    assert set(manifest["parts"]) == {"tuning", "tradeoff"}
    (call,) = manifest["invocations"]  # kept when the follow-up step rewrote the manifest
    assert call["started"] <= call["finished"] and call["seconds"] >= 0
    for c in chosen.values():
        accs = [x["validation_accuracy"] for x in c["candidates"]]
        assert len(accs) == 3 and c["validation_accuracy"] == max(accs)
        for x in c["candidates"]:  # the recorded number is the run's own
            summary = json.loads((study / "runs" / x["key"] / "summary.json").read_text())
            assert summary["validation_accuracy"] == x["validation_accuracy"]
            assert summary["validation_samples"] == 64 and summary["train_samples"] == 256 - 64
    tradeoff = manifest["parts"]["tradeoff"]
    assert len(tradeoff) == 2 * 4  # every seed of every rule and architecture
    for key in tradeoff:
        cfg = manifest["runs"][key]
        c = chosen[(cfg["rule"]["name"], cfg["model"]["recurrent"])]
        assert cfg["train"]["lr"] == c["lr"] and cfg["data"]["validation"] == 64
        if cfg["train"]["seed"] == 0:  # the tuning run at the chosen lr is the seed-0 run
            assert key == next(x["key"] for x in c["candidates"] if x["lr"] == c["lr"])
        assert (study / "runs" / key / "summary.json").exists()
    paths = build_report(study)
    md = paths["md"].read_text()
    assert "accuracy at equal tuning: lr chosen per rule on 64 held-out training images" in md
    verdicts = json.loads((study / "report" / "verdicts.json").read_text())
    (c2,) = [v for v in verdicts if v["claim"] == "C2"]
    assert c2["controls"]["tuning"]["validation_samples"] == 64
    assert "64 held-out training images" in c2["sentence"]

    before = (study / "analysis" / "tuning.json").read_bytes()
    _, again = run_tuned(study)  # a rerun trains nothing and chooses the same
    assert {o.status for o in again} == {"cached"} and len(again) == 12 + 4
    assert (study / "analysis" / "tuning.json").read_bytes() == before

    # interrupted after the tuning part: the tradeoff runs of seed 1 are trained when the study resumes
    lost = [k for k in tradeoff if manifest["runs"][k]["train"]["seed"] == 1]
    for key in lost:
        shutil.rmtree(study / "runs" / key)
    _, resumed = run_tuned(study)
    done = {o.job for o in resumed if o.status == "done"}
    assert done == {f"train {k}" for k in lost}


def test_tuning_never_reads_test_data(fake_data, tmp_path, monkeypatch):
    """Poisoned test labels change the test accuracies but not the validation accuracies or the choice."""
    _, outcomes = run_tuned(tmp_path / "clean", seeds=1)
    assert all(o.status == "done" for o in outcomes)
    poisoned = make_fashion_like(tmp_path / "poisoned")
    labels_path = poisoned / "t10k-labels-idx1-ubyte.gz"
    labels = parse_idx(gzip.decompress(labels_path.read_bytes()), "labels")
    write_idx(labels_path, ((labels.astype(np.int64) + 3) % 10).astype(np.uint8))
    monkeypatch.setenv("SPIKEBENCH_DATA", str(poisoned))
    _, outcomes = run_tuned(tmp_path / "poisoned-study", seeds=1)
    assert all(o.status == "done" for o in outcomes)
    clean, dirty = read_tuning(tmp_path / "clean"), read_tuning(tmp_path / "poisoned-study")

    def choice(t):
        return [
            (c["rule"], c["recurrent"], c["lr"], [x["validation_accuracy"] for x in c["candidates"]])
            for c in t["chosen"]
        ]

    assert choice(clean) == choice(dirty)

    def test_accs(study):
        m = json.loads((study / "study.json").read_text())
        return [
            json.loads((study / "runs" / k / "summary.json").read_text())["test_accuracy"]
            for k in m["parts"]["tuning"]
        ]

    assert test_accs(tmp_path / "clean") != test_accs(tmp_path / "poisoned-study")  # the test data did differ
    assert to_dict(load_config(None, TINY))["data"]["validation"] is None
