"""Same seed, same run: identical summaries (timings and memory aside); another seed differs."""

import json

from spikebench.cli import main

VOLATILE = {"train_seconds", "samples_per_second", "peak_memory_bytes", "peak_memory_total_bytes"}


def run(tmp_path, name, seed, *extra):
    out = tmp_path / name
    args = [
        "train",
        "-q",
        "--set",
        "train.epochs=1",
        "--set",
        "model.hidden=[24]",
        "--set",
        "data.timesteps=5",
        "--set",
        f"train.seed={seed}",
        *extra,
        "--out",
        str(out),
    ]
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    for m in metrics:
        m.pop("seconds")
        m.pop("samples_per_second")
    return {k: v for k, v in summary.items() if k not in VOLATILE}, metrics


def test_same_seed_identical(fake_data, tmp_path):
    a = run(tmp_path, "a", 3, "--set", "data.encoder=rate")
    b = run(tmp_path, "b", 3, "--set", "data.encoder=rate")
    assert a == b
    c = run(tmp_path, "c", 4, "--set", "data.encoder=rate")
    assert c[1][0]["train_loss"] != a[1][0]["train_loss"]
