"""Training with tracking, then ``spikebench analyze`` end to end on generated data."""

import json
from pathlib import Path

import pytest
import torch

from spikebench.cli import main

QUICK = [
    "-q",
    "--set",
    "train.epochs=2",
    "--set",
    "model.hidden=[16,12]",
    "--set",
    "data.timesteps=4",
    "--set",
    "train.batch_size=64",
    "--set",
    "data.limit_test=64",
    "--set",
    "train.probe_size=40",
    "--set",
    "train.fisher_size=8",
    "--set",
    "train.track_every=2",
    "--set",
    "train.track=[cka,grad_alignment,fisher]",
]


def train(out: Path, *extra: str) -> None:
    assert main(["train", *QUICK, *extra, "--out", str(out)]) == 0


def test_track_then_analyze_cka_alignment_fisher(fake_data, tmp_path, capsys):
    bptt, rec = tmp_path / "bptt", tmp_path / "rec"
    train(bptt)
    train(rec, "--set", "model.recurrent=true")
    summary = json.loads((rec / "summary.json").read_text())
    assert summary["tracking"]["analyses"] == ["cka", "grad_alignment", "fisher"]
    assert summary["tracking"]["seconds"] > 0 and summary["tracking"]["probe_samples"] == 40
    counts = torch.load(rec / "probes" / "epoch_002.pt", weights_only=True)
    assert [tuple(v.shape) for v in counts.values()] == [(40, 16), (40, 12)]
    assert all(v.dtype == torch.uint8 and int(v.max()) <= 4 for v in counts.values())
    capsys.readouterr()

    out = tmp_path / "cka"
    assert main(["analyze", str(rec), str(bptt), "--out", str(out)]) == 0
    assert "CKA with bptt" in capsys.readouterr().out
    record = json.loads((out / "cka.json").read_text())
    assert [r["label"] for r in record["runs"]] == ["bptt rec", "bptt"] and record["reference"] == 1
    assert record["layers"] == ["layers.0", "layers.1"]
    for matrix in record["final"].values():
        assert matrix[0][0] == pytest.approx(1.0) and matrix[1][1] == pytest.approx(1.0)
        assert 0.0 <= matrix[0][1] <= 1.0
    assert sorted({p["epoch"] for p in record["pairs"]}) == [0, 1, 2]
    for name in ("cka_final_layers_0.png", "cka_final_layers_1.png", "cka_vs_reference.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    assert main(["analyze", str(bptt), str(rec), "--kernel", "rbf", "--debiased", "--out", str(out)]) == 0
    assert json.loads((out / "cka.json").read_text())["kernel"] == "rbf"

    assert main(["analyze", str(bptt), str(rec), "--analysis", "alignment", "--out", str(out)]) == 0
    series = json.loads((out / "alignment.json").read_text())["series"]
    assert series[0]["step"] == [0, 2, 4, 6]  # 4 batches per epoch, every 2nd
    assert all(abs(c - 1.0) < 1e-4 for c in series[0]["layers"]["all"]["cosine"])  # bptt vs bptt
    assert (out / "alignment.png").is_file()
    capsys.readouterr()

    assert main(["analyze", str(bptt), "--analysis", "fisher", "--json", "--out", str(out)]) == 0
    fisher = json.loads(capsys.readouterr().out)
    assert fisher == json.loads((out / "fisher.json").read_text())
    result = fisher["results"][0]
    assert len(result["final"]["prefix"]) == 4 and result["final"]["samples"] == 8
    assert [e["epoch"] for e in result["epochs"]] == [0, 1, 2]
    assert result["final"]["total"] == result["epochs"][-1]["total"]  # same network, same probe
    assert (out / "fisher_prefix.png").is_file() and (out / "fisher_epochs.png").is_file()


def test_analyze_errors_are_one_line_and_write_nothing(fake_data, tmp_path, capsys):
    a, b, plain = tmp_path / "a", tmp_path / "b", tmp_path / "plain"
    train(a)
    train(b, "--set", "data.timesteps=3")
    assert (
        main(["train", "-q", "--set", "model.hidden=[8]", "--set", "data.timesteps=3", "--out", str(plain)])
        == 0
    )
    capsys.readouterr()
    out = tmp_path / "out"
    for args, code, message in (
        ([str(a), str(b)], 1, "do not share a probe set"),
        ([str(a), str(plain)], 1, "has no recorded probes"),
        ([str(plain), "--analysis", "alignment"], 1, "train.track=[grad_alignment]"),
        ([str(a), "--analysis", "fishr"], 2, "did you mean 'fisher'"),
        ([str(a), "--kernel", "rbf", "--bandwidth", "0"], 2, "--bandwidth must be positive"),
        ([str(tmp_path / "missing")], 1, "not a run directory"),
    ):
        assert main(["analyze", *args, "--out", str(out)]) == code
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1
        assert not out.exists()
