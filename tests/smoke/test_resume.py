"""Kill and resume: a run killed (SIGKILL) after a checkpoint and resumed equals an uninterrupted run;
a study killed mid-way and rerun retrains only what was in flight and yields the same records."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from spikebench.cli import main

VOLATILE = {
    "train_seconds",
    "samples_per_second",
    "peak_memory_bytes",
    "peak_memory_total_bytes",
    "peak_memory_method",
    "resumed_from_epoch",
    "tracking",
}
ARGS = [
    "--set",
    "model.hidden=[32]",
    "--set",
    "data.timesteps=6",
    "--set",
    "train.batch_size=16",
    "--set",
    "train.epochs=5",
    "--set",
    "data.encoder=rate",
    "--set",
    "train.track=[cka,grad_alignment]",
    "--set",
    "train.track_every=5",
    "--set",
    "train.probe_size=32",
]


def spikebench(*args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "spikebench.cli", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def comparable(run: Path) -> tuple:
    summary = {k: v for k, v in json.loads((run / "summary.json").read_text()).items() if k not in VOLATILE}
    metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    for m in metrics:
        m.pop("seconds"), m.pop("samples_per_second")
    align = [json.loads(x) for x in (run / "alignment.jsonl").read_text().splitlines()]
    weights = torch.load(run / "checkpoint.pt", weights_only=True)["model"]
    return summary, metrics, align, {k: v.tolist() for k, v in weights.items()}


def wait_for(predicate, timeout: float = 120.0) -> None:
    end = time.time() + timeout
    while not predicate():
        assert time.time() < end, "timed out"
        time.sleep(0.05)


def test_killed_run_resumes_to_the_uninterrupted_result(fake_data, tmp_path):
    whole = tmp_path / "whole"
    assert main(["train", "-q", *ARGS, "--out", str(whole)]) == 0

    out = tmp_path / "killed"
    partial = tmp_path / ".killed.partial"
    proc = spikebench("train", "-q", *ARGS, "--out", str(out))

    def checkpointed_epoch() -> int:
        # the checkpoint is written atomically after the epoch's metrics line: read the epoch it holds
        ckpt = partial / "checkpoint.pt"
        return torch.load(ckpt, weights_only=True)["epoch"] if ckpt.exists() else 0

    wait_for(lambda: checkpointed_epoch() >= 2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists() and partial.exists()  # killed before completion
    state = torch.load(partial / "checkpoint.pt", weights_only=True)
    assert 2 <= state["epoch"] < 5

    assert main(["train", "-q", *ARGS, "--out", str(out)]) == 1  # refused: an interrupted run exists
    assert main(["train", "-q", "--resume", str(out)]) == 0
    assert not partial.exists()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resumed_from_epoch"] == state["epoch"]
    assert comparable(out) == comparable(whole)
    assert main(["train", "--resume", str(out)]) == 1  # already complete


def test_sigterm_stops_cleanly_and_keeps_the_checkpoint(fake_data, tmp_path):
    out = tmp_path / "run"
    partial = tmp_path / ".run.partial"
    proc = spikebench("train", "-q", *ARGS, "--set", "train.epochs=50", "--out", str(out))
    wait_for(lambda: (partial / "checkpoint.pt").exists())
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and err.decode().strip() == "spikebench: interrupted"
    assert (partial / "checkpoint.pt").exists() and not out.exists()


STUDY = [
    "study",
    "tradeoff",
    "--quick",
    "-q",
    "--workers",
    "1",
    "--set",
    "model.hidden=[16]",
    "--set",
    "data.timesteps=4",
    "--set",
    "data.limit_train=128",
    "--set",
    "data.limit_test=64",
    "--set",
    "train.probe_size=32",
    "--set",
    "train.fisher_size=4",
    "--set",
    "train.epochs=2",
]


def study_records(study: Path) -> dict:
    return {p.name: comparable(p)[:2] for p in sorted((study / "runs").iterdir()) if p.is_dir()}


def test_killed_study_reruns_only_what_was_in_flight(fake_data, tmp_path):
    whole = tmp_path / "whole"
    assert main([*STUDY, "--out", str(whole)]) == 0

    killed = tmp_path / "killed"
    proc = spikebench(*STUDY, "--out", str(killed))

    def finished() -> list[Path]:
        return sorted((killed / "runs").glob("*/summary.json")) if (killed / "runs").exists() else []

    wait_for(lambda: len(finished()) >= 3, timeout=300)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = {p.parent.name: p.stat().st_mtime_ns for p in finished()}
    assert len(done) < 14

    assert main([*STUDY, "--out", str(killed)]) == 0
    outcomes = json.loads((killed / "outcomes.json").read_text())["outcomes"]
    assert sum(o["status"] == "cached" for o in outcomes) == len(done)
    for key, mtime in done.items():  # finished runs were not trained again
        assert (killed / "runs" / key / "summary.json").stat().st_mtime_ns == mtime
    assert study_records(killed) == study_records(whole)
    assert (killed / "report" / "report.html").exists()
