"""The CLI end to end on generated IDX files: train, eval, ls, data, and bad input."""

import json
from pathlib import Path

import pytest
import torch

from spikebench.cli import main
from spikebench.data import datasets

QUICK = [
    "--set",
    "train.epochs=2",
    "--set",
    "model.hidden=[32]",
    "--set",
    "data.timesteps=6",
    "--set",
    "train.batch_size=32",
    "-q",
]


def train(out: Path, *extra: str) -> int:
    return main(["train", *QUICK, *extra, "--out", str(out)])


def test_train_writes_complete_run_and_eval_agrees(fake_data, tmp_path, capsys):
    out = tmp_path / "run"
    assert train(out, "--json") == 0
    summary = json.loads(capsys.readouterr().out)
    assert sorted(p.name for p in out.iterdir()) == [
        "checkpoint.pt",
        "checksums.json",
        "config.yaml",
        "metrics.jsonl",
        "summary.json",
    ]
    assert summary == json.loads((out / "summary.json").read_text())
    for key in (
        "rule",
        "dataset",
        "encoding",
        "recurrent",
        "seed",
        "epochs",
        "timesteps",
        "test_accuracy",
        "train_seconds",
        "samples_per_second",
        "peak_memory_bytes",
        "spikebench_version",
        "git_revision",
    ):
        assert key in summary
    assert summary["epochs"] == 2 and summary["timesteps"] == 6 and summary["rule"] == "bptt"
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2]
    assert set(lines[0]) >= {"epoch", "train_loss", "train_accuracy", "test_accuracy", "seconds"}
    assert summary["test_accuracy"] == lines[-1]["test_accuracy"]
    assert summary["test_accuracy"] > 0.3  # the generated problem is learnable
    assert main(["eval", str(out), "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["test_accuracy"] == pytest.approx(summary["test_accuracy"])
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_recurrent_train(fake_data, tmp_path):
    out = tmp_path / "rec"
    assert train(out, "--set", "model.recurrent=true") == 0
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert "layers.0.rec" in state["model"]


def test_existing_output_refused_without_force(fake_data, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    assert train(out) == 1
    assert "already exists" in capsys.readouterr().err
    assert train(out, "--force") == 0


@pytest.mark.parametrize(
    "args,code,message",
    [
        (["--set", "rule.name=nope"], 2, "unknown rule 'nope'"),
        (["--set", "train.epochs=0"], 2, "train.epochs must be positive"),
        (["--set", "model.hidden=[]"], 2, "at least one layer"),
        (["--set", "data.timesteps=-1"], 2, "data.timesteps must be positive"),
    ],
)
def test_bad_config_exits_2_and_writes_nothing(fake_data, tmp_path, capsys, args, code, message):
    out = tmp_path / "run"
    assert main(["train", *args, "--out", str(out)]) == code
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert list(tmp_path.iterdir()) == [tmp_path / "data"]


def test_corrupt_dataset_is_one_line_and_no_run(fake_data, tmp_path, capsys):
    target = fake_data / "train-images-idx3-ubyte.gz"
    target.write_bytes(target.read_bytes()[:100])
    out = tmp_path / "run"
    assert train(out) == 1
    err = capsys.readouterr().err.strip()
    assert "corrupt" in err and len(err.splitlines()) == 1
    assert not out.exists() and not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_missing_dataset_says_how_to_get_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SPIKEBENCH_DATA", str(tmp_path / "empty"))
    monkeypatch.setenv("SPIKEBENCH_NO_DOWNLOAD", "1")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(
        datasets,
        "FASHION_MNIST",
        datasets.IdxSource(**{**vars(datasets.FASHION_MNIST), "system_dirs": ()}),
    )
    assert main(["data", "--no-download"]) == 1
    err = capsys.readouterr().err.strip()
    assert "fashion-mnist not found" in err and "SPIKEBENCH_DATA" in err
    assert len(err.splitlines()) == 1


def test_unreadable_checkpoint(fake_data, tmp_path, capsys):
    out = tmp_path / "run"
    assert train(out) == 0
    (out / "checkpoint.pt").write_bytes(b"not a checkpoint")
    assert main(["eval", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert "cannot load checkpoint" in err and len(err.splitlines()) == 1


def test_eval_of_non_run_dir(tmp_path, capsys):
    assert main(["eval", str(tmp_path)]) == 1
    assert "not a run directory" in capsys.readouterr().err


def test_ls_and_data(fake_data, capsys):
    assert main(["ls", "rules"]) == 0
    out = capsys.readouterr().out
    assert "bptt" in out and "layer-local" in out and "Bellec" in out
    assert "extension to several layers" in out  # e-prop's multi-layer form is named as the project's
    assert main(["ls", "rules", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["bptt"]["archs"] == ["mlp", "conv"] and rows["eprop"]["archs"] == ["mlp"]
    assert {n: r["rank"] for n, r in rows.items()} == {
        "bptt": 0,
        "tbptt": 1,
        "fa": 1,
        "ottt": 2,
        "eprop": 3,
        "dfa": 4,
        "decolle": 4,
    }
    assert rows["dfa"]["weight_transport"] is False and rows["dfa"]["temporal"] == "online"
    assert rows["decolle"]["deviations"] and rows["decolle"]["paper"].startswith("Kaiser")
    for kind in ("datasets", "encoders", "surrogates"):
        assert main(["ls", kind]) == 0
        assert capsys.readouterr().out.strip()
    assert main(["ls", "rulez"]) == 2
    assert "did you mean 'rules'" in capsys.readouterr().err
    assert main(["data", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["train"] == 256 and info["source"] == str(fake_data)
