"""Every dataset's loader on generated files in its real on-disk format: shapes, dtypes, labels, binning."""

import dataclasses
import functools
import hashlib
import http.server
import json
import math
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from spikebench.cli import main
from spikebench.components import load_config
from spikebench.config import ConfigError, DataConfig
from spikebench.data import (
    DATASETS,
    DataError,
    Encoding,
    InputDomain,
    dataset_spec,
    datasets,
    input_domain,
    load_dataset,
    load_test,
)
from spikebench.data.encoders import Direct
from spikebench.data.events import bin_events
from tests.conftest import make_fashion_like


def check_split(x: torch.Tensor, y: torch.Tensor, shape: tuple[int, ...], n_classes: int) -> None:
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert tuple(x.shape[1:]) == shape and x.shape[0] == y.shape[0] > 0
    assert x.min() >= 0 and 0 <= int(y.min()) and int(y.max()) < n_classes


def test_every_dataset_has_a_description():
    assert set(DATASETS.names()) >= {
        "fashion-mnist",
        "mnist",
        "digits",
        "sequential-fashion-mnist",
        "sequential-mnist",
        "nmnist",
        "shd",
        "dvs-gesture",
    }
    for name in DATASETS:
        assert DATASETS.describe(name)


def test_fashion_mnist_images(fake_data):
    ds = load_dataset(DataConfig(name="fashion-mnist", limit_test=50))
    check_split(ds.train.x, ds.train.y, (1, 28, 28), 10)
    assert len(ds.test) == 50 and ds.train.x.max() <= 1
    assert not ds.sequential and ds.input_shape == (1, 28, 28) and ds.timesteps is None


def test_mnist_same_loader_under_its_own_name(tmp_path, monkeypatch):
    monkeypatch.setenv("SPIKEBENCH_NO_DOWNLOAD", "1")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("SPIKEBENCH_DATA", raising=False)
    make_fashion_like(tmp_path / "data" / "mnist", n_train=40, n_test=20)
    ds = load_dataset(DataConfig(name="mnist", root=str(tmp_path / "data")))
    assert ds.name == "mnist" and len(ds.train) == 40 and len(ds.test) == 20
    check_split(ds.test.x, ds.test.y, (1, 28, 28), 10)


def test_mnist_missing_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("SPIKEBENCH_NO_DOWNLOAD", "1")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("SPIKEBENCH_DATA", raising=False)
    with pytest.raises(DataError, match="mnist not found") as err:
        load_dataset(DataConfig(name="mnist", root=str(tmp_path)))
    assert "\n" not in str(err.value) and "Debian" not in str(err.value)


@pytest.fixture
def file_server(tmp_path):
    """A local HTTP server over ``tmp_path / "served"`` (the download path, without a network)."""
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    thread.join()


@pytest.mark.parametrize("tamper", [None, "t10k-labels-idx1-ubyte"])
def test_download_is_checked_against_the_official_md5(tmp_path, monkeypatch, file_server, tamper):
    """A download whose compressed bytes do not match the official MD5 is an error and leaves no file."""
    served, url = file_server
    make_fashion_like(served, n_train=30, n_test=10)
    md5 = {f.name[:-3]: hashlib.md5(f.read_bytes()).hexdigest() for f in served.glob("*.gz")}
    if tamper:
        md5[tamper] = "0" * 32
    src = dataclasses.replace(datasets.MNIST, url=url, md5_gz=md5)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("SPIKEBENCH_DATA", raising=False)
    monkeypatch.delenv("SPIKEBENCH_NO_DOWNLOAD", raising=False)
    cfg = DataConfig(name="mnist", root=str(tmp_path / "nowhere"))
    if tamper is None:
        ds = datasets.load_idx_dataset(src, cfg)
        assert len(ds.train) == 30 and len(ds.test) == 10
        assert ds.source == str(tmp_path / "cache" / "spikebench" / "mnist")
    else:
        with pytest.raises(DataError, match="MD5") as err:
            datasets.load_idx_dataset(src, cfg)
        assert "\n" not in str(err.value)
        assert not list((tmp_path / "cache" / "spikebench" / "mnist").glob(f"*{tamper}*"))


def test_mnist_records_the_official_md5_of_every_file():
    assert set(datasets.MNIST.md5_gz) == set(datasets.IDX_FILES)
    assert all(len(v) == 32 for v in datasets.MNIST.md5_gz.values())


def test_sequential_fashion_mnist_rows_are_steps(fake_data):
    images = load_dataset(DataConfig(name="fashion-mnist"))
    ds = load_dataset(DataConfig(name="sequential-fashion-mnist", timesteps=28))
    assert ds.sequential and ds.timesteps == 28 and ds.input_shape == (28,)
    check_split(ds.train.x, ds.train.y, (28, 28), 10)
    assert torch.equal(ds.train.x[3, 5], images.train.x[3, 0, 5])  # step 5 = row 5
    seq = Encoding(Direct(), 28, sequential=True).sequence(ds.train.x[:4])
    assert seq.shape == (28, 4, 28)


def test_sequential_needs_its_length_as_timesteps(fake_data):
    with pytest.raises(ConfigError, match="data.timesteps=28"):
        load_config(overrides=["data.name=sequential-fashion-mnist"])
    cfg = load_config(overrides=["data.name=sequential-fashion-mnist", "data.timesteps=28"])
    assert dataset_spec(cfg.data.name).timesteps == 28


@pytest.mark.parametrize("encoder", ["direct", "delta"])
def test_sequential_dataset_trains_end_to_end(fake_data, tmp_path, encoder):
    out = tmp_path / "seq"
    args = ["train", "-q", "--out", str(out), "--set", "data.name=sequential-fashion-mnist"]
    for kv in ("data.timesteps=28", f"data.encoder={encoder}", "model.hidden=[16]", "model.recurrent=true"):
        args += ["--set", kv]
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["timesteps"] == 28 and summary["dataset"] == "sequential-fashion-mnist"
    assert summary["train_samples"] == 256 and 0.0 <= summary["test_accuracy"] <= 1.0


@pytest.mark.parametrize(
    ("name", "encoder", "message"),
    [
        ("sequential-mnist", "latency", "static inputs only"),
        ("fashion-mnist", "delta", "sequences only"),
        ("nmnist", "latency", "static inputs only"),
    ],
)
def test_encoder_must_accept_the_kind_of_sample(name, encoder, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=[f"data.name={name}", f"data.encoder={encoder}", "data.timesteps=28"])


def test_digits_offline_fixed_split():
    pytest.importorskip("sklearn")
    ds = load_dataset(DataConfig(name="digits"))
    assert (len(ds.train), len(ds.test)) == (1438, 359)
    check_split(ds.train.x, ds.train.y, (1, 8, 8), 10)
    assert ds.train.x.max() == 1.0
    again = load_dataset(DataConfig(name="digits", limit_train=10))
    assert torch.equal(again.train.x, ds.train.x[:10]) and set(ds.test.y.tolist()) == set(range(10))


# ---------------------------------------------------------------------------------------------
# event binning


def test_binning_conserves_events():
    rng = np.random.default_rng(0)
    n = 5000
    t = np.sort(rng.integers(0, 300_000, n))
    x, y, p = rng.integers(0, 34, n), rng.integers(0, 34, n), rng.integers(0, 2, n)
    for T in (1, 7, 25):
        frames = bin_events(t, (p, y, x), (2, 34, 34), T)
        assert frames.shape == (T, 2, 34, 34) and frames.sum() == n
    frames = bin_events(t, (p, y // 4, x // 4), (2, 9, 9), 10)
    assert frames.sum() == n and frames[-1].sum() > 0  # the last event lands in the last bin
    same_time = bin_events(np.full(9, 5.0), (np.arange(9),), (9,), 4)
    assert same_time[0].sum() == 9 and same_time[1:].sum() == 0


def test_binning_counts_by_time_and_address():
    t = np.array([0.0, 1.0, 1.0, 9.9, 10.0])
    frames = bin_events(t, (np.array([0, 1, 1, 2, 2]),), (3,), 2)
    assert frames.tolist() == [[1, 2, 0], [0, 0, 2]]


def test_binning_rejects_addresses_outside_the_sensor():
    with pytest.raises(DataError, match="outside"):
        bin_events(np.array([0, 1]), (np.array([0, 5]),), (4,), 2)


# ---------------------------------------------------------------------------------------------
# N-MNIST: 40-bit events in Train/<digit>/*.bin (Orchard et al. 2015; tonic's NMNIST layout)


def write_nmnist_bin(path: Path, x, y, t, p) -> None:
    """Each event: x (8 bits), y (8 bits), polarity (1 bit), timestamp in us (23 bits), big-endian."""
    t = np.asarray(t, dtype=np.uint32)
    raw = np.stack(
        [
            np.asarray(x, np.uint8),
            np.asarray(y, np.uint8),
            ((np.asarray(p, np.uint32) << 7) | ((t >> 16) & 0x7F)).astype(np.uint8),
            ((t >> 8) & 0xFF).astype(np.uint8),
            (t & 0xFF).astype(np.uint8),
        ],
        axis=1,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(raw.tobytes())


def make_nmnist(folder: Path, per_class: int = 2, seed: int = 0) -> dict[str, int]:
    """Random events for digits 0..4; returns the event count of each file (by path)."""
    rng = np.random.default_rng(seed)
    counts = {}
    for split in ("Train", "Test"):
        for digit in range(5):
            for k in range(per_class):
                n = int(rng.integers(50, 300))
                path = folder / split / str(digit) / f"{k:05d}.bin"
                t = np.sort(rng.integers(0, 300_000, n))
                write_nmnist_bin(
                    path, rng.integers(0, 34, n), rng.integers(0, 34, n), t, rng.integers(0, 2, n)
                )
                counts[str(path)] = n
    return counts


def test_nmnist_from_bin_files(tmp_path, monkeypatch):
    pytest.importorskip("tonic")
    monkeypatch.delenv("SPIKEBENCH_DATA", raising=False)
    counts = make_nmnist(tmp_path / "NMNIST")
    ds = load_dataset(DataConfig(name="nmnist", root=str(tmp_path), timesteps=8))
    assert ds.sequential and ds.timesteps == 8 and ds.input_shape == (2, 34, 34)
    check_split(ds.train.x, ds.train.y, (8, 2, 34, 34), 10)
    assert len(ds.train) == len(ds.test) == 10 and set(ds.train.y.tolist()) == set(range(5))
    # every event of every file is in its frames
    assert sorted(ds.train.x.sum(dim=(1, 2, 3, 4)).long().tolist()) == sorted(
        n for path, n in counts.items() if "/Train/" in path
    )
    small = load_dataset(DataConfig(name="nmnist", root=str(tmp_path), timesteps=8, downsample=4))
    assert small.input_shape == (2, 9, 9)
    assert torch.equal(small.train.x.sum(dim=(2, 3, 4)), ds.train.x.sum(dim=(2, 3, 4)))
    binary = load_dataset(
        DataConfig(name="nmnist", root=str(tmp_path), timesteps=8, binarize=True, limit_train=3)
    )
    assert len(binary.train) == 3 and binary.train.x.max() == 1.0
    assert torch.equal(binary.train.x, ds.train.x[:3].clamp(max=1))


def test_nmnist_missing_folder_names_it_and_the_layout(tmp_path, monkeypatch):
    pytest.importorskip("tonic")
    monkeypatch.delenv("SPIKEBENCH_DATA", raising=False)
    with pytest.raises(DataError, match="Train/<digit>/\\*.bin") as err:
        load_dataset(DataConfig(name="nmnist", root=str(tmp_path)))
    assert str(tmp_path) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(DataError, match="set data.root or \\$SPIKEBENCH_DATA"):
        load_dataset(DataConfig(name="nmnist"))


def test_missing_tonic_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "tonic", None)  # import tonic -> ImportError
    with pytest.raises(DataError, match=r"install spikebench\[events\]"):
        load_dataset(DataConfig(name="nmnist", root=str(tmp_path)))


# ---------------------------------------------------------------------------------------------
# SHD: HDF5 with spikes/times (s), spikes/units, labels (Cramer et al. 2020)


def make_shd(folder: Path, n: int = 12, seed: int = 0) -> dict[str, list[int]]:
    h5py = pytest.importorskip("h5py")
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    counts = {}
    for part in ("train", "test"):
        sizes = rng.integers(20, 200, n)
        with h5py.File(folder / f"shd_{part}.h5", "w") as f:
            times = f.create_dataset("spikes/times", (n,), dtype=h5py.vlen_dtype(np.float64))
            units = f.create_dataset("spikes/units", (n,), dtype=h5py.vlen_dtype(np.uint16))
            for i, k in enumerate(sizes):
                times[i] = np.sort(rng.uniform(0, 1.0, k))
                units[i] = rng.integers(0, 700, k).astype(np.uint16)
            f.create_dataset("labels", data=rng.integers(0, 20, n).astype(np.uint16))
        counts[part] = sizes.tolist()
    return counts


def test_shd_from_hdf5(tmp_path):
    counts = make_shd(tmp_path / "SHD")
    ds = load_dataset(DataConfig(name="shd", root=str(tmp_path), timesteps=10))
    assert ds.n_classes == 20 and ds.input_shape == (700,)
    check_split(ds.train.x, ds.train.y, (10, 700), 20)
    assert sorted(ds.test.x.sum(dim=(1, 2)).long().tolist()) == sorted(counts["test"])
    small = load_dataset(DataConfig(name="shd", root=str(tmp_path), timesteps=10, downsample=7, limit_test=4))
    assert small.input_shape == (100,) and len(small.test) == 4
    assert torch.equal(small.train.x.sum(dim=2), ds.train.x.sum(dim=2))


def test_shd_corrupt_file_is_a_data_error(tmp_path):
    pytest.importorskip("h5py")
    (tmp_path / "shd_train.h5").write_bytes(b"not hdf5")
    (tmp_path / "shd_test.h5").write_bytes(b"not hdf5")
    with pytest.raises(DataError, match="shd_train.h5"):
        load_dataset(DataConfig(name="shd", root=str(tmp_path)))


# ---------------------------------------------------------------------------------------------
# DVS Gesture: tonic's layout, ibmGesture{Train,Test}/<user>_<lighting>/<label>.npy, rows (x, y, p, t)


def make_dvs_gesture(folder: Path, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for sub, users in (
        ("ibmGestureTrain", ("user01_fluorescent", "user02_led")),
        ("ibmGestureTest", ("user24_led",)),
    ):
        for user in users:
            (folder / sub / user).mkdir(parents=True)
            for label in (0, 3, 10):
                n = int(rng.integers(100, 400))
                ev = np.stack(
                    [
                        rng.integers(0, 128, n),
                        rng.integers(0, 128, n),
                        rng.integers(0, 2, n),
                        np.sort(rng.integers(0, 6000, n)),
                    ],
                    axis=1,
                ).astype(np.float64)
                np.save(folder / sub / user / f"{label}.npy", ev)


def test_dvs_gesture_from_npy(tmp_path):
    make_dvs_gesture(tmp_path / "DVSGesture")
    ds = load_dataset(DataConfig(name="dvs-gesture", root=str(tmp_path), timesteps=6, downsample=4))
    assert ds.n_classes == 11 and ds.input_shape == (2, 32, 32)
    check_split(ds.train.x, ds.train.y, (6, 2, 32, 32), 11)
    assert len(ds.train) == 6 and len(ds.test) == 3 and set(ds.test.y.tolist()) == {0, 3, 10}
    events = sorted(len(np.load(p)) for p in (tmp_path / "DVSGesture" / "ibmGestureTest").glob("*/*.npy"))
    assert sorted(ds.test.x.sum(dim=(1, 2, 3, 4)).long().tolist()) == events


# ---------------------------------------------------------------------------------------------
# input domains, and reading the test split alone


def test_datasets_declare_their_input_domain():
    assert input_domain(DataConfig()) == InputDomain(0.0, 1.0) == datasets.IMAGES
    assert input_domain(DataConfig(name="digits")) == datasets.IMAGES
    assert input_domain(DataConfig(name="sequential-mnist", timesteps=28)) == datasets.IMAGES
    for name in ("nmnist", "shd", "dvs-gesture"):  # event counts are not bounded by 1
        assert input_domain(DataConfig(name=name)) == InputDomain(0.0, math.inf)
        assert input_domain(DataConfig(name=name, binarize=True)) == InputDomain(0.0, 1.0, binary=True)
    for lo, hi in ((1.0, 0.0), (-math.inf, 1.0)):
        with pytest.raises(ConfigError, match="input domain"):
            InputDomain(lo, hi)


def test_load_test_reads_the_first_test_samples_and_one_training_sample(tmp_path, monkeypatch):
    make_shd(tmp_path / "SHD")
    cfg = DataConfig(name="shd", root=str(tmp_path), timesteps=10, limit_test=6, validation=2)
    full = load_dataset(cfg)
    asked = []
    spec = dataset_spec("shd")
    monkeypatch.setitem(
        DATASETS._items, "shd", dataclasses.replace(spec, load=lambda c: asked.append(c) or spec.load(c))
    )
    test, n_classes = load_test(cfg, 4)
    assert n_classes == 20 and torch.equal(test.x, full.test.x[:4]) and torch.equal(test.y, full.test.y[:4])
    assert [(c.limit_train, c.limit_test) for c in asked] == [(1, 4)]
    everything, _ = load_test(cfg)
    assert torch.equal(everything.x, full.test.x) and len(everything) == 6
    assert input_domain(cfg).hi == math.inf and full.test.x.max() > 1  # counts above 1
