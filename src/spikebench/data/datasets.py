"""Datasets (registry "dataset"): each loader turns a :class:`~spikebench.config.DataConfig` into a
:class:`Dataset` of analogue inputs in [0, 1] and integer labels, held in memory as tensors.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import tempfile
import urllib.request
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from spikebench.config import DataConfig
from spikebench.data.idx import DataError, parse_idx, read_bytes
from spikebench.registry import Registry

log = logging.getLogger(__name__)

DATASETS: Registry[Callable[[DataConfig], Dataset]] = Registry("dataset")


@dataclass
class Split:
    """One split: ``x`` [N, ...] float32 in [0, 1], ``y`` [N] int64."""

    x: Tensor
    y: Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def head(self, n: int | None) -> Split:
        return self if n is None or n >= len(self) else Split(self.x[:n], self.y[:n])


@dataclass
class Dataset:
    name: str
    train: Split
    test: Split
    n_classes: int
    source: str = ""

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.x.shape[1:])


def load_dataset(cfg: DataConfig) -> Dataset:
    """Load ``cfg.name`` and apply ``limit_train`` / ``limit_test`` (first N samples)."""
    ds = DATASETS.get(cfg.name)(cfg)
    return Dataset(
        ds.name,
        ds.train.head(cfg.limit_train),
        ds.test.head(cfg.limit_test),
        ds.n_classes,
        ds.source,
    )


# ---------------------------------------------------------------------------------------------
# IDX datasets (Fashion-MNIST): local folders first, then a download into the cache

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
    Debian's, differ in their compressed bytes but not in content).
    """

    name: str
    url: str
    system_dirs: tuple[str, ...]
    sha256: dict[str, str]
    counts: tuple[int, int]  # (train, test)


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
            content = gzip.decompress(Path(tmp).read_bytes())
            if hashlib.sha256(content).hexdigest() != src.sha256[stem]:
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
        if array.shape[0] == official_count and hashlib.sha256(content).hexdigest() != src.sha256[stem]:
            raise DataError(f"{path} is corrupt: its content does not match the official {src.name} checksum")
        arrays.append(array)
    images, labels = arrays
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise DataError(f"{src.name} {split}: {images.shape[0]} images but {labels.shape[0]} labels")
    if labels.size and labels.max() > 9:
        raise DataError(f"{src.name} {split}: label {labels.max()} out of range 0..9")
    x = torch.from_numpy(images.reshape(images.shape[0], -1).astype(np.float32) / 255.0)
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
        how = (
            f"install Debian's dataset-{src.name} or put the four IDX files in a folder named "
            f"by $SPIKEBENCH_DATA or data.root"
        )
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


@DATASETS.register("fashion-mnist")
def fashion_mnist(cfg: DataConfig) -> Dataset:
    """Fashion-MNIST (Xiao et al. 2017): 28x28 grey images of 10 clothing classes, 60k/10k."""
    return load_idx_dataset(FASHION_MNIST, cfg)
