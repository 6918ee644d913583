"""Grid expansion, config keys, the run cache, resuming, and the executors' records."""

import json
import os
import time

import pytest
import torch

from spikebench.config import Config, load_config
from spikebench.studies.executors import LocalExecutor
from spikebench.studies.grid import config_key, expand
from spikebench.studies.jobs import TrainJob, execute, failure_path
from spikebench.studies.runner import Plan, Progress, StudyError, execute_plan, prepare_study_dir, run_jobs

TINY = ["model.hidden=[12]", "data.timesteps=4", "train.batch_size=64", "data.limit_test=64"]


def tiny(*extra: str) -> Config:
    return load_config(None, [*TINY, *extra])


def test_equal_configs_share_a_key_and_any_field_changes_it():
    a, b = tiny(), tiny()
    assert a is not b and config_key(a) == config_key(b)
    variants = [
        "train.seed=1",
        "model.recurrent=true",
        "rule.name=fa",
        "data.encoder=rate",
        "model.alpha=0.8",
        "train.lr=0.001",
        "data.limit_train=10",
        "rule.k=3",
        "model.hidden=[13]",
    ]
    keys = {config_key(tiny(v)) for v in variants}
    assert len(keys) == len(variants) and config_key(a) not in keys


def test_expand_is_a_cartesian_product_without_duplicates():
    cfgs = expand(
        tiny(), {"rule.name": ["bptt", "fa"], "model.recurrent": [False, True], "train.seed": [0, 0]}
    )
    assert len(cfgs) == 4
    assert [(c.rule.name, c.model.recurrent) for c in cfgs] == [
        ("bptt", False),
        ("bptt", True),
        ("fa", False),
        ("fa", True),
    ]
    assert all(c.model.hidden == (12,) for c in cfgs)


def test_plan_shares_runs_between_parts():
    plan = Plan("t", {})
    a = plan.add_runs("one", [tiny(), tiny("train.seed=1")])
    b = plan.add_runs("two", [tiny()])
    assert len(plan.runs) == 2 and b[0] == a[0]
    assert len([j for j in plan.all_jobs() if isinstance(j, TrainJob)]) == 2


class Count(Progress):
    def __init__(self):
        self.statuses = []

    def update(self, outcome, running, failed):
        self.statuses.append(outcome.status)


def test_cache_skips_finished_runs_and_resume_trains_only_the_rest(fake_data, tmp_path):
    plan = Plan("t", {"x": 1})
    plan.add_runs("grid", [tiny("train.seed=0"), tiny("train.seed=1")])
    study = tmp_path / "study"
    first = execute_plan(plan, study, workers=1)
    assert sorted(o.status for o in first) == ["done", "done"]
    keys = sorted(plan.runs)
    stamp = {k: os.stat(study / "runs" / k / "summary.json").st_mtime_ns for k in keys}
    # an interrupted study: one run lost (as if killed in flight), then the same command again
    import shutil

    shutil.rmtree(study / "runs" / keys[1])
    second = execute_plan(plan, study, workers=1)
    assert sorted(o.status for o in second) == ["cached", "done"]
    assert os.stat(study / "runs" / keys[0] / "summary.json").st_mtime_ns == stamp[keys[0]]
    third = execute_plan(plan, study, workers=1)
    assert [o.status for o in third] == ["cached", "cached"]


def test_failed_run_is_recorded_and_study_continues(fake_data, tmp_path):
    plan = Plan("t", {})
    plan.add_runs(
        "grid",
        [tiny("train.lr=1e38", "train.optimizer=sgd", "train.schedule=constant", "train.epochs=3"), tiny()],
    )
    study = tmp_path / "study"
    outcomes = execute_plan(plan, study, workers=1)
    assert sorted(o.status for o in outcomes) == ["done", "failed"]
    bad = next(k for k, c in plan.runs.items() if c.train.lr > 1)
    record = json.loads(failure_path(study, bad).read_text())
    assert record["status"] == "failed" and "non-finite" in record["reason"] and record["epoch"] >= 1
    assert not (study / "runs" / bad).exists()


def test_other_study_in_directory_is_refused(fake_data, tmp_path):
    plan = Plan("t", {"a": 1})
    plan.add_runs("grid", [tiny()])
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "study.json").write_text(json.dumps({"study": "t", "settings": {"a": 2}}))
    with pytest.raises(StudyError, match="another study"):
        execute_plan(plan, tmp_path / "s", workers=1)


def test_execute_records_a_job_once(fake_data, tmp_path):
    cfg = tiny()
    job = TrainJob(config_key(cfg), __import__("spikebench.config", fromlist=["to_dict"]).to_dict(cfg))
    assert execute(job, str(tmp_path)).status == "done"
    assert execute(job, str(tmp_path)).status == "cached"


def test_local_pool_with_two_workers(fake_data, tmp_path):
    plan = Plan("t", {})
    plan.add_runs("grid", [tiny(f"train.seed={s}") for s in range(3)])
    ex = LocalExecutor(2)
    progress = Count()
    outcomes = run_jobs(plan.all_jobs(), tmp_path, ex, progress)
    ex.close()
    assert [o.status for o in outcomes] == ["done"] * 3 and progress.statuses == ["done"] * 3


def test_cancel_stops_the_job_in_flight_and_the_rerun_continues_it(fake_data, tmp_path):
    """Ctrl-C (or SIGTERM) on a study stops the running worker at once; rerunning the study continues
    the interrupted run from its last epoch checkpoint instead of starting it again."""
    plan = Plan("t", {})
    (key,) = plan.add_runs("grid", [tiny("train.epochs=150", "data.limit_train=64")])
    study = tmp_path / "study"
    prepare_study_dir(study, plan)
    ex = LocalExecutor(1)
    ex.submit(plan.all_jobs()[0], str(study))
    checkpoint = study / "runs" / f".{key}.partial" / "checkpoint.pt"
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    workers = list(ex.pool._processes.values())
    ex.close(cancel=True)
    assert workers and not any(p.is_alive() for p in workers)
    assert not (study / "runs" / key).exists()
    stopped_at = torch.load(checkpoint, weights_only=False)["epoch"]
    assert 1 <= stopped_at < 150
    (outcome,) = execute_plan(plan, study, workers=1)
    assert outcome.status == "done"
    summary = json.loads((study / "runs" / key / "summary.json").read_text())
    assert summary["resumed_from_epoch"] >= stopped_at
