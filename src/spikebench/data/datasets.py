"""Datasets (registry "dataset"): each loader turns a :class:`~spikebench.config.DataConfig` into a
:class:`Dataset` held in memory as tensors: float32 inputs and int64 labels.

A sample is either **static**, ``x`` [N, C, H, W] for images (values in [0, 1]) -- the encoder spreads it
over T steps -- or a **sequence**, ``x`` [N, T, ...] (``Dataset.sequential``): image rows, one per step,
or event frames binned into T steps (:mod:`spikebench.data.events`). ``Dataset.input_shape`` is the
shape of what the network sees at one step either way.

Each registered dataset is a :class:`DatasetSpec`: its loader plus what is known before loading (is it
sequential, does the data fix T, its :class:`InputDomain`), so that configs and attack requests are
checked before anything is loaded.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import logging
import math
import os
import tempfile
import urllib.request
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from spikebench.config import ConfigError, DataConfig
from spikebench.data.encoders import ENCODERS
from spikebench.data.idx import DataError, parse_idx, read_bytes
from spikebench.registry import Registry

log = logging.getLogger(__name__)


@dataclass
class Split:
    """One split: ``x`` [N, ...] float32 (static [N, C, H, W] or sequence [N, T, ...]), ``y`` [N] int64."""

    x: Tensor
    y: Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def head(self, n: int | None) -> Split:
        return self if n is None or n >= len(self) else Split(self.x[:n], self.y[:n])


@dataclass
class Dataset:
    """Both splits of a dataset, its number of classes, where it was read from, and its kind."""

    name: str
    train: Split
    test: Split
    n_classes: int
    source: str = ""
    sequential: bool = False  # samples are sequences x [N, T, ...] rather than static inputs
    validation: Split | None = None  # images held out of the training split (``data.validation``)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of the network input at one step: ``x.shape[1:]``, or ``x.shape[2:]`` for sequences."""
        return tuple(self.train.x.shape[2 if self.sequential else 1 :])

    @property
    def timesteps(self) -> int | None:
        """Length T of the sequences (None for static inputs, whose T the config chooses)."""
        return int(self.train.x.shape[1]) if self.sequential else None


Loader = Callable[[DataConfig], Dataset]


@dataclass(frozen=True)
class InputDomain:
    """The values an input feature can take: the interval [``lo``, ``hi``] (``hi`` may be infinite, e.g.
    event counts), and ``binary`` when the data hold only ``lo`` and ``hi`` (binarised events). Attacks
    perturb inside the interval (:class:`~spikebench.attacks.threat.ThreatModel`); for binary data that
    is the continuous relaxation of {lo, hi}."""

    lo: float = 0.0
    hi: float = 1.0
    binary: bool = False

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lo) and self.lo < self.hi):
            raise ConfigError(f"an input domain needs a finite lo below hi, got [{self.lo}, {self.hi}]")
        if self.binary and not math.isfinite(self.hi):
            raise ConfigError("a binary input domain needs a finite hi")

    @property
    def bounds(self) -> tuple[float, float]:
        return (self.lo, self.hi)


IMAGES = InputDomain(0.0, 1.0)
"""Grey levels scaled to [0, 1]: the domain of the static image datasets and of row sequences."""


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset: its loader, whether its samples are sequences, the sequence length when
    the data fixes it (``timesteps``; None when ``data.timesteps`` chooses it), and its input domain
    (``domain``: an :class:`InputDomain`, or a function of the data config when options such as
    ``data.binarize`` choose it)."""

    load: Loader
    sequential: bool = False
    timesteps: int | None = None
    domain: InputDomain | Callable[[DataConfig], InputDomain] = IMAGES

    def __call__(self, cfg: DataConfig) -> Dataset:
        return self.load(cfg)

    def input_domain(self, cfg: DataConfig) -> InputDomain:
        """The domain of the inputs this dataset gives for ``cfg``."""
        return self.domain(cfg) if callable(self.domain) else self.domain


DATASETS: Registry[DatasetSpec] = Registry("dataset")


def dataset(
    name: str,
    *,
    sequential: bool = False,
    timesteps: int | None = None,
    domain: InputDomain | Callable[[DataConfig], InputDomain] = IMAGES,
) -> Callable[[Loader], Loader]:
    """Decorator: register a loader under ``name`` (description: its docstring's first line); the
    keywords are the :class:`DatasetSpec`'s."""

    def decorator(fn: Loader) -> Loader:
        doc = (fn.__doc__ or "").strip().splitlines()
        DATASETS.add(name, DatasetSpec(fn, sequential, timesteps, domain), doc[0] if doc else name)
        return fn

    return decorator


def dataset_spec(name: str) -> DatasetSpec:
    """The registered spec of ``name`` (a plain loader registered directly counts as static)."""
    entry = DATASETS.get(name)
    return entry if isinstance(entry, DatasetSpec) else DatasetSpec(entry)


#: seed of the permutation that draws the validation images (fixed: the same split for every run)
VALIDATION_SEED = 20170825


def validation_indices(n_train: int, validation: int | float) -> tuple[Tensor, Tensor]:
    """``(held_out, kept)`` indices into a training split of ``n_train`` samples: ``validation`` images
    (a count, or a fraction of ``n_train``, rounded) drawn by a fixed permutation, the rest in their
    original order. Raises :class:`DataError` when nothing would be left to train on."""
    n_val = round(validation * n_train) if isinstance(validation, float) else int(validation)
    if not 0 < n_val < n_train:
        raise DataError(
            f"data.validation={validation} holds out {n_val} of {n_train} training images; "
            "leave at least one to train on and hold out at least one"
        )
    perm = torch.randperm(n_train, generator=torch.Generator().manual_seed(VALIDATION_SEED))
    held = torch.sort(perm[:n_val]).values
    kept = torch.sort(perm[n_val:]).values
    return held, kept


def split_validation(ds: Dataset, validation: int | float | None) -> Dataset:
    """``ds`` with ``validation`` training images moved to ``ds.validation`` (:func:`validation_indices`)."""
    if validation is None:
        return ds
    held, kept = validation_indices(len(ds.train), validation)
    val = Split(ds.train.x[held], ds.train.y[held])
    return dataclasses.replace(ds, train=Split(ds.train.x[kept], ds.train.y[kept]), validation=val)


def load_dataset(cfg: DataConfig) -> Dataset:
    """Load ``cfg.name``, check what the loader returned (:func:`check_dataset`), hold out the validation
    images (``data.validation``, :func:`split_validation`), and apply ``limit_train`` / ``limit_test``
    (first N samples)."""
    spec = dataset_spec(cfg.name)
    ds = split_validation(check_dataset(cfg.name, spec(cfg), spec), cfg.validation)
    return dataclasses.replace(ds, train=ds.train.head(cfg.limit_train), test=ds.test.head(cfg.limit_test))


def input_domain(cfg: DataConfig) -> InputDomain:
    """The input domain of the dataset ``cfg`` names, known before anything is loaded."""
    return dataset_spec(cfg.name).input_domain(cfg)


def load_test(cfg: DataConfig, n: int | None = None) -> tuple[Split, int]:
    """The first ``n`` test samples (all for None) of what :func:`load_dataset` gives for ``cfg``, and
    the number of classes, without the training split: the loader is asked for one training sample
    (``limit_train=1``: event loaders read only that) and no validation images are held out, neither of
    which touches the test split. Costs what reading the test samples costs (IDX files are read
    whole)."""
    limit = n if cfg.limit_test is None else cfg.limit_test if n is None else min(n, cfg.limit_test)
    spec = dataset_spec(cfg.name)
    part = dataclasses.replace(cfg, limit_train=1, limit_test=limit)
    ds = check_dataset(cfg.name, spec(part), spec)
    return ds.test.head(limit), ds.n_classes


def check_dataset(name: str, ds: object, spec: DatasetSpec | None = None) -> Dataset:
    """What a loader must return: a :class:`Dataset` whose splits hold float32 ``x`` and int64 ``y`` with
    one label per sample, in ``[0, n_classes)``, the same sample shape in both splits, and finite
    inputs; a sequence dataset's samples are [T, ...]. Raises :class:`DataError` naming the dataset."""

    def fail(what: str) -> DataError:
        return DataError(f"dataset {name!r}: the loader returned {what}")

    if not isinstance(ds, Dataset):
        raise fail(f"a {type(ds).__name__}, not a Dataset")
    if not isinstance(ds.n_classes, int) or isinstance(ds.n_classes, bool) or ds.n_classes < 2:
        raise fail(f"n_classes={ds.n_classes!r} (needs an int >= 2)")
    sequential = spec.sequential if spec is not None else ds.sequential
    if ds.sequential != sequential:
        raise fail(f"sequential={ds.sequential}, but the dataset is registered with sequential={sequential}")
    shapes = []
    for split_name in ("train", "test"):
        split = getattr(ds, split_name)
        x, y = getattr(split, "x", None), getattr(split, "y", None)
        if not isinstance(x, Tensor) or not isinstance(y, Tensor):
            raise fail(f"a {split_name} split without tensors x and y")
        if x.dtype != torch.float32:
            raise fail(f"{split_name} inputs of dtype {x.dtype} (expected torch.float32)")
        if y.dtype != torch.int64:
            raise fail(f"{split_name} labels of dtype {y.dtype} (expected torch.int64)")
        if y.ndim != 1 or x.ndim < (3 if sequential else 2) or x.shape[0] != y.shape[0]:
            raise fail(f"{split_name} shapes x {tuple(x.shape)}, y {tuple(y.shape)} (one label per sample)")
        if len(y) == 0:
            raise fail(f"an empty {split_name} split")
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= ds.n_classes:
            raise fail(f"{split_name} labels in [{lo}, {hi}], outside [0, {ds.n_classes - 1}]")
        if not bool(torch.isfinite(x).all()):
            raise fail(f"non-finite {split_name} inputs")
        shapes.append(tuple(x.shape[1:]))
    if shapes[0] != shapes[1]:
        raise fail(f"train samples of shape {shapes[0]} but test samples of shape {shapes[1]}")
    return ds


def check_data_config(cfg: DataConfig) -> None:
    """Check a data config against what the dataset and encoder accept (raises :class:`ConfigError`).

    Sequences whose length the data fixes (image rows) need ``data.timesteps`` equal to it; the encoder
    must accept the dataset's kind of sample (``latency`` needs static inputs, ``delta`` sequences).
    """
    spec = dataset_spec(cfg.name)
    encoder = ENCODERS.get(cfg.encoder)
    if spec.timesteps is not None and cfg.timesteps != spec.timesteps:
        raise ConfigError(
            f"dataset {cfg.name!r} has {spec.timesteps} steps per sample: "
            f"set data.timesteps={spec.timesteps} (got {cfg.timesteps})"
        )
    if spec.sequential and not encoder.sequences:
        raise ConfigError(
            f"encoder {cfg.encoder!r} takes static inputs only; {cfg.name!r} is a sequence dataset"
        )
    if not spec.sequential and not encoder.static:
        raise ConfigError(f"encoder {cfg.encoder!r} takes sequences only; {cfg.name!r} has static inputs")


# ---------------------------------------------------------------------------------------------
# IDX datasets (Fashion-MNIST, MNIST): local folders first, then a download into the cache

IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


@dataclass(frozen=True)
class IdxSource:
    """Where an IDX dataset lives: its folder name, official URL prefix, and content checksums.

    ``sha256`` holds the SHA-256 of each file's *decompressed* content (repackaged .gz files, such as
    Debian's, differ in their compressed bytes but not in content); ``md5_gz`` the MD5 of the official
    compressed files, which every download must match. A local file without a content checksum is
    checked for structure, sample count and label range only.
    """

    name: str
    url: str
    system_dirs: tuple[str, ...]
    sha256: dict[str, str]
    counts: tuple[int, int]  # (train, test)
    md5_gz: dict[str, str] = field(default_factory=dict)


FASHION_MNIST = IdxSource(
    name="fashion-mnist",
    url="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    system_dirs=("/usr/share/datasets/fashion-mnist",),
    sha256={
        "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
    counts=(60000, 10000),
)

# MNIST (LeCun et al. 1998), official files from the PyTorch project's mirror. Downloads are checked
# against the MD5 sums of the official .gz files (the ones the MNIST mirrors publish); local copies,
# possibly recompressed, are checked for IDX structure, matching image and label counts and label range.
MNIST = IdxSource(
    name="mnist",
    url="https://ossci-datasets.s3.amazonaws.com/mnist/",
    system_dirs=(),
    sha256={},
    counts=(60000, 10000),
    md5_gz={
        "train-images-idx3-ubyte": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte": "ec29112dd5afa0611ce80d1b7f02629c",
    },
)


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "spikebench"


def _find_file(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def candidate_dirs(src: IdxSource, root: str | None) -> list[Path]:
    """Folders searched, in order: ``data.root``, ``$SPIKEBENCH_DATA``, system folders, the cache.

    A named folder counts whether it holds the files directly or in a subfolder named after the
    dataset.
    """
    dirs: list[Path] = []
    for named in (root, os.environ.get("SPIKEBENCH_DATA")):
        if named:
            dirs += [Path(named), Path(named) / src.name]
    dirs += [Path(d) for d in src.system_dirs]
    dirs.append(cache_dir() / src.name)
    return dirs


def _download(src: IdxSource, dest: Path) -> None:
    """Fetch the four official files into ``dest``, each checked and renamed into place atomically."""
    dest.mkdir(parents=True, exist_ok=True)
    for stem in IDX_FILES:
        if _find_file(dest, stem):
            continue
        url = f"{src.url}{stem}.gz"
        log.info("downloading %s", url)
        fd, tmp = tempfile.mkstemp(dir=dest, prefix=f".{stem}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=30) as resp:
                while chunk := resp.read(1 << 20):
                    out.write(chunk)
            packed = Path(tmp).read_bytes()
            expected_md5 = src.md5_gz.get(stem)
            if (
                expected_md5 is not None
                and hashlib.md5(packed, usedforsecurity=False).hexdigest() != expected_md5
            ):
                raise DataError(f"downloaded {url} does not match the official file's MD5 checksum")
            content = gzip.decompress(packed)
            expected = src.sha256.get(stem)
            if expected is not None and hashlib.sha256(content).hexdigest() != expected:
                raise DataError(f"downloaded {url} does not match the official content checksum")
            os.replace(tmp, dest / f"{stem}.gz")
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


def _read_split(files: dict[str, Path], src: IdxSource, split: str) -> Split:
    prefix = "train" if split == "train" else "t10k"
    arrays = []
    for kind in ("images", "labels"):
        stem = f"{prefix}-{kind}-idx{3 if kind == 'images' else 1}-ubyte"
        path = files[stem]
        content = read_bytes(path)
        array = parse_idx(content, str(path))
        official_count = src.counts[0 if split == "train" else 1]
        expected = src.sha256.get(stem)
        if (
            expected is not None
            and array.shape[0] == official_count
            and hashlib.sha256(content).hexdigest() != expected
        ):
            raise DataError(f"{path} is corrupt: its content does not match the official {src.name} checksum")
        arrays.append(array)
    images, labels = arrays
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise DataError(f"{src.name} {split}: {images.shape[0]} images but {labels.shape[0]} labels")
    if labels.size and labels.max() > 9:
        raise DataError(f"{src.name} {split}: label {labels.max()} out of range 0..9")
    x = torch.from_numpy(images[:, None].astype(np.float32) / 255.0)  # [N, 1, H, W]
    return Split(x, torch.from_numpy(labels.astype(np.int64)))


def load_idx_dataset(src: IdxSource, cfg: DataConfig) -> Dataset:
    """Find the four IDX files (or download them, unless ``$SPIKEBENCH_NO_DOWNLOAD`` is set),
    check their structure and, for files of the official size, their content checksums, and load."""
    searched = candidate_dirs(src, cfg.root)
    files, where = None, None
    for folder in searched:
        found = {stem: _find_file(folder, stem) for stem in IDX_FILES}
        if all(found.values()):
            files, where = found, folder
            break
    if files is None:
        where = cache_dir() / src.name
        looked = ", ".join(dict.fromkeys(str(d) for d in searched))
        debian = f"install Debian's dataset-{src.name} or " if src.system_dirs else ""
        how = f"{debian}put the four IDX files in a folder named by $SPIKEBENCH_DATA or data.root"
        if os.environ.get("SPIKEBENCH_NO_DOWNLOAD"):
            raise DataError(f"{src.name} not found (looked in {looked}); {how}")
        try:
            _download(src, where)
        except (OSError, ValueError, zlib.error) as exc:
            raise DataError(
                f"{src.name} not found (looked in {looked}) and the download failed ({exc}); {how}"
            ) from exc
        files = {stem: _find_file(where, stem) for stem in IDX_FILES}
    return Dataset(
        src.name, _read_split(files, src, "train"), _read_split(files, src, "test"), 10, str(where)
    )


@dataset("fashion-mnist")
def fashion_mnist(cfg: DataConfig) -> Dataset:
    """Fashion-MNIST (Xiao et al. 2017): 28x28 grey images of 10 clothing classes, 60k/10k."""
    return load_idx_dataset(FASHION_MNIST, cfg)


@dataset("mnist")
def mnist(cfg: DataConfig) -> Dataset:
    """MNIST (LeCun et al. 1998): 28x28 grey images of handwritten digits, 60k/10k."""
    return load_idx_dataset(MNIST, cfg)


def as_rows(ds: Dataset) -> Dataset:
    """Image dataset -> row sequences: ``x`` [N, C, H, W] -> [N, H, C*W], one image row per step
    (T = H): the row-wise form of sequential MNIST (Le, Jaitly & Hinton 2015 feed one pixel per step)."""

    def rows(split: Split) -> Split:
        n, c, h, w = split.x.shape
        return Split(split.x.permute(0, 2, 1, 3).reshape(n, h, c * w), split.y)

    return dataclasses.replace(
        ds, name=f"sequential-{ds.name}", train=rows(ds.train), test=rows(ds.test), sequential=True
    )


@dataset("sequential-fashion-mnist", sequential=True, timesteps=28)
def sequential_fashion_mnist(cfg: DataConfig) -> Dataset:
    """Fashion-MNIST read row by row: T = 28 steps of 28 inputs (needs data.timesteps=28)."""
    return as_rows(fashion_mnist(cfg))


@dataset("sequential-mnist", sequential=True, timesteps=28)
def sequential_mnist(cfg: DataConfig) -> Dataset:
    """MNIST read row by row: T = 28 steps of 28 inputs (needs data.timesteps=28)."""
    return as_rows(mnist(cfg))


DIGITS_TRAIN = 1438  # of 1797: a fixed 80/20 split


@dataset("digits")
def digits(cfg: DataConfig) -> Dataset:
    """scikit-learn's bundled 8x8 handwritten digits (UCI optdigits test set), 1438/359, offline."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise DataError("dataset 'digits' needs scikit-learn: pip install scikit-learn") from exc
    bunch = load_digits()
    x = torch.from_numpy((bunch.images / 16.0).astype(np.float32)[:, None])  # [1797, 1, 8, 8] in [0, 1]
    y = torch.from_numpy(bunch.target.astype(np.int64))
    order = torch.from_numpy(np.random.default_rng(0).permutation(len(y)))  # fixed, seeded split
    train, test = order[:DIGITS_TRAIN], order[DIGITS_TRAIN:]
    return Dataset("digits", Split(x[train], y[train]), Split(x[test], y[test]), 10, "scikit-learn (bundled)")
