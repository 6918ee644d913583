"""The CUDA path, checked on the CPU where it can be: checkpoints load for another device, a failed
resume keeps its checkpoint, study train jobs record a TypeError, Ray tasks ask for GPUs when the runs
use them, and local workers are spread over the GPUs (with a fake GPU count)."""

from __future__ import annotations

import json
import sys
import types

import pytest
import torch

from spikebench.config import load_config, to_dict
from spikebench.studies import executors, jobs, runner
from spikebench.train import loop, run

ARGS = ["model.hidden=[16]", "data.timesteps=3", "train.epochs=2", "train.batch_size=64"]


class StopAfterFirstEpoch:
    """Training hooks that interrupt the run (as Ctrl-C does) when its second epoch starts."""

    def epoch_start(self, epoch: int, n_batches: int) -> None:
        if epoch == 2:
            raise KeyboardInterrupt

    def batch_end(self, loss: float, accuracy: float, samples_per_second: float) -> None:
        pass

    def epoch_end(self, record) -> None:
        pass


def interrupted_run(tmp_path):
    cfg = load_config(None, ARGS)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        run.train_run(cfg, out, hooks=StopAfterFirstEpoch())
    checkpoint = run.partial_dir(out) / "checkpoint.pt"
    assert checkpoint.exists()
    return cfg, out, checkpoint


def test_a_checkpoint_loads_for_another_device_with_cpu_random_states(fake_data, tmp_path):
    """Asked for a CUDA device (absent here, or present), the checkpoint loads: its random-number
    states are CPU byte tensors, as ``torch.set_rng_state`` and ``Generator.set_state`` require."""
    _, _, checkpoint = interrupted_run(tmp_path)
    state = run.load_checkpoint(checkpoint, torch.device("cuda"))
    assert state["epoch"] == 1
    for value in state["rng"].values():
        assert value.device.type == "cpu" and value.dtype == torch.uint8
    torch.set_rng_state(state["rng"]["torch"])


def test_a_failed_resume_keeps_the_checkpoint_and_a_later_resume_completes(fake_data, tmp_path, monkeypatch):
    cfg, out, checkpoint = interrupted_run(tmp_path)
    saved = checkpoint.read_bytes()

    def broken(*args, **kwargs):
        raise TypeError("'torch.cuda.ByteTensor' is not a 'torch.ByteTensor'")

    with monkeypatch.context() as m:
        m.setattr(loop, "restore_state", broken)
        with pytest.raises(TypeError):
            run.train_run(cfg, out, force=True, resume=True)
    assert checkpoint.read_bytes() == saved
    summary = run.train_run(cfg, out, force=True, resume=True)
    assert summary["resumed_from_epoch"] == 1 and summary["epochs"] == 2


def test_a_study_train_job_records_a_type_error(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise TypeError("set_state expects a CPU ByteTensor")

    monkeypatch.setattr(run, "train_run", broken)
    job = jobs.TrainJob("k", to_dict(load_config(None, ["model.hidden=[8]"])))
    (tmp_path / "runs").mkdir()
    outcome = jobs.execute(job, str(tmp_path))
    assert outcome.status == "failed" and "CPU ByteTensor" in outcome.error
    record = json.loads(jobs.failure_path(tmp_path, "k").read_text())
    assert record["error_type"] == "TypeError" and record["reason"] == "set_state expects a CPU ByteTensor"


def fake_ray(monkeypatch, gpus: int) -> dict:
    seen: dict = {}

    def remote(**kwargs):
        seen.update(kwargs)
        return lambda fn: fn

    module = types.SimpleNamespace(
        is_initialized=lambda: True, cluster_resources=lambda: {"CPU": 4, "GPU": gpus}, remote=remote
    )
    monkeypatch.setitem(sys.modules, "ray", module)
    return seen


@pytest.mark.parametrize(
    ("devices", "gpus", "want"),
    [
        (("cuda",), 2, 1.0),
        (("auto",), 2, 1.0),
        (("auto",), 0, 0),
        (("cpu",), 2, 0),
        (("cpu", "cuda"), 1, 1.0),
    ],
)
def test_ray_tasks_request_a_gpu_when_the_runs_use_one(monkeypatch, devices, gpus, want):
    seen = fake_ray(monkeypatch, gpus)
    executor = executors.RayExecutor(2, devices=devices)
    assert seen == {"num_cpus": 1, "num_gpus": want} and executor.num_gpus == want


def test_ray_tasks_share_a_gpu_when_asked(monkeypatch):
    seen = fake_ray(monkeypatch, 1)
    runner.make_executor("ray", 4, None, ("cuda",), workers_per_gpu=2)
    assert seen["num_gpus"] == 0.5


def test_local_workers_are_one_per_gpu_and_spread_round_robin():
    assert executors.gpu_workers(16, 2) == 2
    assert executors.gpu_workers(16, 2, workers_per_gpu=3) == 6
    assert executors.gpu_workers(1, 4) == 1
    assert [executors.gpu_for_worker(i, 2, None) for i in range(4)] == ["0", "1", "0", "1"]
    assert [executors.gpu_for_worker(i, 2, "4,5") for i in range(3)] == ["4", "5", "4"]
    assert executors.uses_gpu({"auto"}, 1) and executors.uses_gpu({"cuda"}, 1)
    assert not executors.uses_gpu({"auto"}, 0) and not executors.uses_gpu({"cpu"}, 8)
    gpu = runner.make_executor("local", 16, None, ("auto",), gpu_count=2)
    cpu = runner.make_executor("local", 3, None, ("cpu",), gpu_count=2)
    try:
        assert (gpu.slots, cpu.slots) == (2, 3)
    finally:
        gpu.close(cancel=True)
        cpu.close(cancel=True)


def test_eval_runs_on_a_named_device(fake_data, tmp_path, capsys):
    from spikebench.cli import main

    out = tmp_path / "run"
    assert (
        main(["train", "-q", "--set", "model.hidden=[16]", "--set", "data.timesteps=3", "--out", str(out)])
        == 0
    )
    capsys.readouterr()
    assert main(["eval", str(out), "--device", "cpu", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["device"] == "cpu" and result["precision"] == "fp32"
