"""Event datasets (N-MNIST, SHD, DVS Gesture): events read from local files and binned into T frames.

Each sample is a list of events (time, address, polarity). It becomes a sequence ``x`` [T, *frame] of
float32 event counts (clipped to 1 with ``data.binarize``; the input domain, :func:`event_domain`, is
[0, inf) for counts and binary [0, 1] for binarised frames): the sample's own time span
[t_first, t_last] is cut into T = ``data.timesteps`` equal bins (:func:`bin_events`), and addresses are
divided by ``data.downsample`` (integer factor; counts of merged addresses add up). Frame shapes:
N-MNIST (2, 34, 34) and DVS Gesture (2, 128, 128) (polarity, y, x; each spatial size divided by the
factor, rounded up), SHD (700,) channels (divided likewise).

The files are read from ``data.root`` or ``$SPIKEBENCH_DATA`` (the folder itself or a subfolder named as
tonic names it: ``NMNIST``, ``SHD``, ``DVSGesture``), in the layout tonic leaves after its download.
Nothing is downloaded. tonic's dataset classes insist on their archive files being present, so the
formats are read here: N-MNIST with tonic's own reader (:func:`tonic.io.read_mnist_file`), SHD's HDF5
files with h5py, DVS Gesture's NumPy files as tonic's ``DVSGesture`` reads them. These packages are the
optional extra ``events``, imported when an event dataset is loaded.

Samples are put in a fixed pseudo-random order (seed 0), so that ``data.limit_train`` / ``limit_test``
take a class-mixed subset, and only those samples are read. All frames are held in memory: N x T x
frame size x 4 bytes (N-MNIST train, T = 25, full resolution: about 14 GB; ``downsample: 2`` divides
that by 4).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch import Tensor

from spikebench.config import DataConfig
from spikebench.data.datasets import Dataset, InputDomain, Split, dataset
from spikebench.data.idx import DataError

log = logging.getLogger(__name__)

EXTRA = "install spikebench[events]"

# One event stream, ready to bin: times (any unit) and one integer index array per frame axis.
Events = tuple[np.ndarray, tuple[np.ndarray, ...]]


def bin_events(t: np.ndarray, index: Sequence[np.ndarray], shape: tuple[int, ...], T: int) -> np.ndarray:
    """Count events into T frames: ``t`` [n] times, ``index`` one [n] integer array per axis of
    ``shape`` -> [T, *shape] float32 counts.

    The span [t.min(), t.max()] is cut into T equal bins: an event goes to bin
    ``min(floor((t - t_min) / (t_max - t_min) * T), T - 1)`` (all to bin 0 when the span is 0), so every
    event is counted exactly once and the frames sum to ``n``. (tonic's ``ToFrame(n_time_bins=T)``
    uses half-open bins of a rounded-down width and drops the events at the end of the span.)
    Raises :class:`~spikebench.data.idx.DataError` for an address outside ``shape``.
    """
    frames = np.zeros((T, *shape), dtype=np.float32)
    if len(t) == 0:
        return frames
    t = np.asarray(t, dtype=np.float64)
    t0, span = t.min(), t.max() - t.min()
    if span > 0:
        b = np.minimum(((t - t0) * (T / span)).astype(np.int64), T - 1)
    else:
        b = np.zeros(len(t), dtype=np.int64)
    try:
        flat = np.ravel_multi_index((b, *(np.asarray(i, dtype=np.int64) for i in index)), (T, *shape))
    except ValueError as exc:
        raise DataError(f"event address outside the sensor of shape {shape}") from exc
    counts = np.bincount(flat, minlength=frames.size)
    return counts.reshape(frames.shape).astype(np.float32)


def event_domain(cfg: DataConfig) -> InputDomain:
    """Event counts are unbounded above, [0, inf); ``data.binarize`` makes frames binary in [0, 1]."""
    return InputDomain(0.0, 1.0, binary=True) if cfg.binarize else InputDomain(0.0, math.inf)


def _down(size: int, factor: int) -> int:
    return math.ceil(size / factor)


def find_folder(
    name: str, cfg: DataConfig, subfolders: tuple[str, ...], present: Callable[[Path], bool], layout: str
) -> Path:
    """The first of ``data.root``, ``$SPIKEBENCH_DATA`` (each itself or one of ``subfolders``) for which
    ``present`` holds; else a :class:`DataError` naming where it looked and the expected layout."""
    named = [p for p in (cfg.root, os.environ.get("SPIKEBENCH_DATA")) if p]
    if not named:
        raise DataError(
            f"{name}: no data folder; set data.root or $SPIKEBENCH_DATA to a folder with {layout}"
        )
    looked = []
    for base in named:
        for folder in (Path(base), *(Path(base) / s for s in subfolders)):
            if present(folder):
                return folder
            looked.append(str(folder))
    raise DataError(f"{name} not found (looked in {', '.join(looked)}); expected {layout}")


def _order(n: int, limit: int | None) -> np.ndarray:
    """A fixed pseudo-random order of ``n`` samples (seed 0), cut to ``limit``."""
    return np.random.default_rng(0).permutation(n)[:limit]


def _frames(
    items: Sequence[Any], read: Callable[[Any], Events], shape: tuple[int, ...], cfg: DataConfig
) -> Tensor:
    """Read and bin every item: [len(items), T, *shape] float32."""
    x = torch.zeros(len(items), cfg.timesteps, *shape)
    log.info("binning %d samples into %s frames (%.1f MB)", len(items), x.shape[1:], x.numel() * 4e-6)
    for i, item in enumerate(items):
        t, index = read(item)
        x[i] = torch.from_numpy(bin_events(t, index, shape, cfg.timesteps))
    return x.clamp_(max=1.0) if cfg.binarize else x


def _split_of_files(
    files: list[tuple[Path, int]],
    limit: int | None,
    read: Callable[[Path], Events],
    shape: tuple[int, ...],
    cfg: DataConfig,
) -> Split:
    """Read and bin the chosen files (fixed order, first ``limit``); labels given with each file."""
    chosen = [files[i] for i in _order(len(files), limit)]
    x = _frames([f for f, _ in chosen], read, shape, cfg)
    return Split(x, torch.tensor([label for _, label in chosen], dtype=torch.int64))


# ---------------------------------------------------------------------------------------------
# N-MNIST


def _tonic_io() -> ModuleType:
    try:
        import tonic.io
    except ImportError as exc:
        raise DataError(f"event datasets need tonic: {EXTRA}") from exc
    return tonic.io


NMNIST_LAYOUT = "Train/<digit>/*.bin and Test/<digit>/*.bin (tonic's NMNIST layout)"
NMNIST_DTYPE = np.dtype([("x", np.int64), ("y", np.int64), ("t", np.int64), ("p", np.int64)])


@dataset("nmnist", sequential=True, domain=event_domain)
def nmnist(cfg: DataConfig) -> Dataset:
    """N-MNIST (Orchard et al. 2015): MNIST digits seen by a moving event camera, 2x34x34, 60k/10k."""
    io = _tonic_io()
    folder = find_folder(
        "nmnist",
        cfg,
        ("NMNIST", "nmnist"),
        lambda p: (p / "Train").is_dir() and (p / "Test").is_dir(),
        NMNIST_LAYOUT,
    )
    f = cfg.downsample
    shape = (2, _down(34, f), _down(34, f))

    def read(path: Path) -> Events:
        ev = io.read_mnist_file(str(path), dtype=NMNIST_DTYPE)
        return ev["t"], (ev["p"], ev["y"] // f, ev["x"] // f)

    splits = []
    for sub, limit in (("Train", cfg.limit_train), ("Test", cfg.limit_test)):
        files = [(p, int(p.parent.name)) for p in sorted((folder / sub).glob("[0-9]/*.bin"))]
        if not files:
            raise DataError(f"nmnist: no .bin files in {folder / sub}; expected {NMNIST_LAYOUT}")
        splits.append(_split_of_files(files, limit, read, shape, cfg))
    return Dataset("nmnist", splits[0], splits[1], 10, str(folder), sequential=True)


# ---------------------------------------------------------------------------------------------
# SHD


def _h5py() -> ModuleType:
    try:
        import h5py
    except ImportError as exc:
        raise DataError(f"dataset 'shd' needs h5py: {EXTRA}") from exc
    return h5py


SHD_LAYOUT = "shd_train.h5 and shd_test.h5 (datasets spikes/times, spikes/units, labels)"
SHD_CHANNELS = 700


def _shd_split(path: Path, limit: int | None, shape: tuple[int], cfg: DataConfig) -> Split:
    h5py = _h5py()
    try:
        with h5py.File(path, "r") as h5:
            labels = h5["labels"][()]
            chosen = _order(len(labels), limit)
            times, units = h5["spikes/times"], h5["spikes/units"]
            events = [(times[i], units[i]) for i in chosen]
    except (OSError, KeyError) as exc:
        raise DataError(f"cannot read {path}: not an SHD file ({exc})") from exc
    y = torch.from_numpy(labels[chosen].astype(np.int64))
    if len(y) and (y.min() < 0 or y.max() >= 20):
        raise DataError(f"{path}: labels out of range 0..19")
    f = cfg.downsample
    return Split(_frames(events, lambda ev: (ev[0], (ev[1] // f,)), shape, cfg), y)


@dataset("shd", sequential=True, domain=event_domain)
def shd(cfg: DataConfig) -> Dataset:
    """Spiking Heidelberg Digits (Cramer et al. 2020): spoken digits as spikes of 700 channels, 20 classes."""
    _h5py()
    folder = find_folder(
        "shd",
        cfg,
        ("SHD", "shd"),
        lambda p: (p / "shd_train.h5").is_file() and (p / "shd_test.h5").is_file(),
        SHD_LAYOUT,
    )
    shape = (_down(SHD_CHANNELS, cfg.downsample),)
    train = _shd_split(folder / "shd_train.h5", cfg.limit_train, shape, cfg)
    test = _shd_split(folder / "shd_test.h5", cfg.limit_test, shape, cfg)
    return Dataset("shd", train, test, 20, str(folder), sequential=True)


# ---------------------------------------------------------------------------------------------
# DVS Gesture

DVS_LAYOUT = (
    "ibmGestureTrain/<user>_<lighting>/<label>.npy and ibmGestureTest/... "
    "(tonic's DVSGesture layout; rows of x, y, polarity, time)"
)


@dataset("dvs-gesture", sequential=True, domain=event_domain)
def dvs_gesture(cfg: DataConfig) -> Dataset:
    """DVS128 Gesture (Amir et al. 2017): 11 hand and arm gestures by an event camera, 2x128x128."""
    folder = find_folder(
        "dvs-gesture",
        cfg,
        ("DVSGesture", "dvs-gesture"),
        lambda p: (p / "ibmGestureTrain").is_dir() and (p / "ibmGestureTest").is_dir(),
        DVS_LAYOUT,
    )
    f = cfg.downsample
    shape = (2, _down(128, f), _down(128, f))

    def read(path: Path) -> Events:
        try:
            ev = np.load(path)
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read {path}: {exc}") from exc
        if ev.ndim != 2 or ev.shape[1] != 4:
            raise DataError(f"{path}: expected rows of (x, y, polarity, time), got shape {ev.shape}")
        xs, ys, ps = (ev[:, k].astype(np.int64) for k in range(3))
        return ev[:, 3], (ps, ys // f, xs // f)

    splits = []
    for sub, limit in (("ibmGestureTrain", cfg.limit_train), ("ibmGestureTest", cfg.limit_test)):
        files = sorted((folder / sub).glob("*/*.npy"))
        if not files:
            raise DataError(f"dvs-gesture: no .npy files in {folder / sub}; expected {DVS_LAYOUT}")
        bad = [p for p in files if not (p.stem.isdigit() and int(p.stem) < 11)]
        if bad:
            raise DataError(f"dvs-gesture: {bad[0]} is not named by a class label 0..10")
        splits.append(_split_of_files([(p, int(p.stem)) for p in files], limit, read, shape, cfg))
    return Dataset("dvs-gesture", splits[0], splits[1], 11, str(folder), sequential=True)
