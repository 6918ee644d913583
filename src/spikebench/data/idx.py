"""Reading and writing IDX files (the format of MNIST and Fashion-MNIST), plain or gzip-compressed."""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from spikebench.registry import SpikebenchError

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09}


class DataError(SpikebenchError):
    """A dataset that is missing, unreadable or corrupt."""


def read_bytes(path: Path) -> bytes:
    """The decompressed content of ``path`` (gzip if it ends in .gz)."""
    try:
        raw = path.read_bytes()
        return gzip.decompress(raw) if path.suffix == ".gz" else raw
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise DataError(f"cannot read {path}: corrupt or truncated ({exc})") from exc


def parse_idx(content: bytes, source: str) -> np.ndarray:
    """Parse IDX bytes into an array, checking the header against the payload length."""
    if len(content) < 4 or content[0] != 0 or content[1] != 0 or content[2] not in _DTYPES:
        raise DataError(f"{source} is not an IDX file (bad magic number)")
    ndim = content[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(content) < header:
        raise DataError(f"{source} is corrupt: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", content[4:header])
    dtype = np.dtype(_DTYPES[content[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(content) - header != expected:
        raise DataError(
            f"{source} is corrupt: header says {shape} ({expected} bytes of data), "
            f"file holds {len(content) - header}"
        )
    return np.frombuffer(content, dtype=dtype, offset=header).reshape(shape)


def write_idx(path: Path, array: np.ndarray, compress: bool | None = None) -> None:
    """Write ``array`` (uint8 or int8) as IDX; gzip when ``path`` ends in .gz (or ``compress``)."""
    array = np.ascontiguousarray(array)
    code = _CODES[array.dtype]
    data = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data += array.tobytes()
    if compress if compress is not None else path.suffix == ".gz":
        data = gzip.compress(data, compresslevel=1)
    path.write_bytes(data)
