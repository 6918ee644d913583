"""The local process pool and a real local Ray instance produce the same records for the same study."""

import json

import pytest

from spikebench.config import load_config
from spikebench.studies.runner import Plan, execute_plan

VOLATILE = {
    "train_seconds",
    "samples_per_second",
    "peak_memory_bytes",
    "peak_memory_total_bytes",
    "peak_memory_method",
}


def records(study):
    out = {}
    for summary in sorted((study / "runs").glob("*/summary.json")):
        data = json.loads(summary.read_text())
        metrics = [json.loads(x) for x in (summary.parent / "metrics.jsonl").read_text().splitlines()]
        for m in metrics:
            m.pop("seconds"), m.pop("samples_per_second")
        out[summary.parent.name] = ({k: v for k, v in data.items() if k not in VOLATILE}, metrics)
    return out


def test_local_pool_and_ray_give_the_same_records(fake_data, tmp_path):
    pytest.importorskip("ray")
    plan = Plan("t", {})
    base = ["model.hidden=[12]", "data.timesteps=4", "data.limit_test=64"]
    plan.add_runs("grid", [load_config(None, [*base, f"rule.name={r}"]) for r in ("bptt", "fa")])
    execute_plan(plan, tmp_path / "local", engine="local", workers=2)
    execute_plan(plan, tmp_path / "ray", engine="ray", workers=2)
    local, ray = records(tmp_path / "local"), records(tmp_path / "ray")
    assert len(local) == 2 and local == ray
