"""Hostile and malformed input: one clear error line, a non-zero exit, nothing half-written, nothing
executed."""

import json
import os
import pickle
from pathlib import Path

import pytest
import torch

from spikebench.cli import main

QUICK = ["--set", "model.hidden=[16]", "--set", "data.timesteps=4", "-q"]


class Payload:
    """Unpickling this object would create a file: the exploit a weights-only loader must refuse."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoint_with_code_payload_is_refused_unexecuted(fake_data, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *QUICK, "--out", str(out)]) == 0
    marker = tmp_path / "pwned"
    torch.save({"model": Payload(marker)}, out / "checkpoint.pt", _use_new_zipfile_serialization=True)
    assert main(["eval", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert "cannot load checkpoint" in err and len(err.splitlines()) == 1
    assert not marker.exists()
    # and the same bytes through plain pickle would have run it: the test can fail
    with open(out / "checkpoint.pt", "rb") as f:
        assert f.read(2) == b"PK"
    pickle.loads(pickle.dumps(Payload(marker)))
    assert marker.exists()


def test_truncated_checkpoint(fake_data, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *QUICK, "--out", str(out)]) == 0
    data = (out / "checkpoint.pt").read_bytes()
    (out / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    assert main(["eval", str(out)]) == 1
    assert "cannot load checkpoint" in capsys.readouterr().err


def test_full_disk_leaves_nothing_half_written(fake_data, tmp_path, monkeypatch, capsys):
    import errno

    real = torch.save

    def no_space(obj, f, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(f))

    monkeypatch.setattr(torch, "save", no_space)
    out = tmp_path / "run"
    assert main(["train", *QUICK, "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert "No space left on device" in err and len(err.splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "data"] or sorted(
        p.name for p in tmp_path.iterdir()
    ) == ["data"]
    monkeypatch.setattr(torch, "save", real)


def test_unwritable_output_directory(fake_data, tmp_path, capsys):
    if os.geteuid() == 0:
        parent = Path("/proc/spikebench-no-such-dir")  # root ignores permission bits; /proc refuses mkdir
    else:
        parent = tmp_path / "ro"
        parent.mkdir()
        parent.chmod(0o500)
    assert main(["train", *QUICK, "--out", str(parent / "run")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and ("cannot create" in err or "not writable" in err)


@pytest.mark.parametrize(
    "text",
    [
        "train: [1, 2",
        "\x00\x01binary",
        "- a\n- b\n",
        "rule: {name: 3}",
        "train: {epochs: 1e400}",
        "model: {hidden: [a]}",
    ],
)
def test_malformed_config_files(fake_data, tmp_path, capsys, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    out = tmp_path / "run"
    assert main(["train", "-c", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("spikebench: error:") and len(err.splitlines()) == 1
    assert not out.exists()


def test_summary_is_valid_json_after_success(fake_data, tmp_path):
    out = tmp_path / "run"
    assert main(["train", *QUICK, "--out", str(out)]) == 0
    json.loads((out / "summary.json").read_text())
