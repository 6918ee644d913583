"""Fuzzing the CLI with random and mutated configs and dataset files: every outcome is a success or
one clean error line with a non-zero exit; never a traceback, never a partial run left behind."""

import gzip
import json
import random

import pytest
import yaml

from spikebench.cli import main
from spikebench.config import Config, to_dict

VALUES = [
    -1,
    0,
    1,
    2,
    3,
    0.5,
    1e9,
    -0.0,
    "x",
    "bptt",
    "rate",
    "soft",
    "",
    None,
    True,
    [],
    [2],
    [2, "a"],
    {"a": 1},
    "fa",
    "eprop",
    "triangle",
    "sequential-fashion-mnist",
    "digits",
    "conv",
]
SMALL = {
    "model": {"hidden": [4]},
    "data": {"timesteps": 3, "limit_train": 48, "limit_test": 16},
    "train": {"epochs": 1, "batch_size": 16},
}


def mutate(rng: random.Random) -> dict:
    data = to_dict(Config())
    for section, values in SMALL.items():
        data[section].update(values)
    for _ in range(rng.randint(1, 3)):
        section = rng.choice(list(data))
        roll = rng.random()
        if roll < 0.15:
            data[section][rng.choice(["nme", "epoch", "hiden", "zzz"])] = rng.choice(VALUES)
        elif roll < 0.2:
            data[rng.choice(["trian", "extra"])] = {"x": 1}
        elif isinstance(data[section], dict):
            key = rng.choice(list(data[section]))
            data[section][key] = rng.choice(VALUES)
    return data


def check_clean(code: int, err: str, out_dir) -> str:
    lines = [x for x in err.strip().splitlines() if x]
    if code == 0:
        assert (out_dir / "summary.json").exists()
        return "ok"
    assert code in (1, 2), code
    assert len(lines) == 1 and lines[0].startswith("spikebench: error:"), err
    assert "Traceback" not in err
    assert not out_dir.exists()
    return "error"


def leftovers(root) -> list[str]:
    return [p.name for p in root.iterdir() if ".partial" in p.name or ".tmp" in p.name]


def test_random_configs(fake_data, tmp_path, capsys):
    rng = random.Random(1234)
    outcomes = {"ok": 0, "error": 0}
    for i in range(40):
        path = tmp_path / f"c{i}.yaml"
        text = yaml.safe_dump(mutate(rng))
        if rng.random() < 0.1:  # and some that are not even YAML mappings
            text = text[: rng.randint(0, len(text))] + rng.choice(["[", "{", ":", "\t- x", "\x00"])
        path.write_text(text)
        out = tmp_path / f"run{i}"
        code = main(["train", "-q", "-c", str(path), "--out", str(out)])
        outcomes[check_clean(code, capsys.readouterr().err, out)] += 1
    assert outcomes["ok"] > 0 and outcomes["error"] > 0, outcomes
    print("random configs:", outcomes)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("seed", range(4))
def test_mutated_dataset_files(fake_data, tmp_path, capsys, seed):
    rng = random.Random(seed)
    outcomes = []
    for i in range(6):
        name = rng.choice(
            [
                "train-images-idx3-ubyte.gz",
                "train-labels-idx1-ubyte.gz",
                "t10k-images-idx3-ubyte.gz",
                "t10k-labels-idx1-ubyte.gz",
            ]
        )
        path = fake_data / name
        original = path.read_bytes()
        raw = bytearray(gzip.decompress(original))
        kind = rng.choice(["truncate", "flip", "header", "garbage", "empty"])
        if kind == "truncate":
            raw = raw[: rng.randint(0, len(raw) - 1)]
        elif kind == "flip":
            for _ in range(8):
                raw[rng.randrange(len(raw))] ^= 0xFF
        elif kind == "header":
            raw[rng.randrange(4, 16)] = rng.randrange(256)
        elif kind == "garbage":
            raw = bytearray(rng.randbytes(200))
        else:
            raw = bytearray()
        packed = gzip.compress(bytes(raw)) if rng.random() < 0.8 else bytes(raw[:50])
        path.write_bytes(packed)
        out = tmp_path / f"run{i}"
        code = main(
            ["train", "-q", "--set", "model.hidden=[4]", "--set", "data.timesteps=3", "--out", str(out)]
        )
        outcomes.append(check_clean(code, capsys.readouterr().err, out))
        path.write_bytes(original)
    assert leftovers(tmp_path) == []
    (tmp_path / "outcomes.json").write_text(json.dumps(outcomes))
