"""Writing files so that nothing half-written ever stands under the final name.

Every writer builds the file as a temporary file in the destination folder and renames it into place
(``os.replace`` is atomic within one filesystem). Files get mode ``0666`` minus the umask, as an ordinary
``open`` would give them. A full disk (``ENOSPC``) or a full quota becomes :class:`DiskFullError`, one
line naming the file that could not be written.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from spikebench.registry import SpikebenchError

_FULL = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(SpikebenchError, OSError):
    """No space left on the device (or quota exceeded) while writing a file."""

    def __str__(self) -> str:  # OSError would format errno and filename into the message
        return str(self.args[0])


_fdopen = os.fdopen  # the one place bytes reach the disk (tests replace it to simulate a full disk)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def disk_full(exc: BaseException, path: Path | str) -> DiskFullError | None:
    """A :class:`DiskFullError` naming ``path`` when ``exc`` is ENOSPC/EDQUOT, else None."""
    if isinstance(exc, OSError) and exc.errno in _FULL:
        err = DiskFullError(f"no space left on device writing {path}")
        err.errno, err.filename = exc.errno, str(path)
        return err
    return None


def atomic_write(path: Path | str, write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write(f)`` on a binary temporary file beside ``path``, then rename it to ``path``."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise disk_full(exc, path) or exc from exc
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes the file private; records follow the umask
        with _fdopen(fd, "wb") as f:
            write(f)
            f.flush()
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        full = disk_full(exc, path)
        if full is not None:
            raise full from exc
        raise


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: Path | str, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path | str, data: Any) -> None:
    """JSON with two-space indentation and a final newline."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


#: what ``savefig`` stamps into a file that would make the same figure differ between two builds
_REPRODUCIBLE = {"png": {}, "svg": {"Date": None}, "pdf": {"CreationDate": None}}


def _savefig(fig: Any, f: IO[bytes], fmt: str, **kwargs: Any) -> None:
    import matplotlib

    # SVG element ids are random unless salted; no date in SVG or PDF metadata: the same records give
    # the same bytes (a published report is checked by rebuilding it).
    with matplotlib.rc_context({"svg.hashsalt": "spikebench"}):
        fig.savefig(f, format=fmt, metadata=_REPRODUCIBLE.get(fmt, {}), **kwargs)


def atomic_save_fig(fig: Any, path: Path | str, **kwargs: Any) -> None:
    """A matplotlib figure as PNG, reproducibly (``kwargs`` go to ``savefig``)."""
    atomic_write(path, lambda f: _savefig(fig, f, "png", **kwargs))


def save_figure(
    fig: Any, path: Path | str, formats: tuple[str, ...] = ("png", "svg"), **kwargs: Any
) -> list[Path]:
    """A matplotlib figure in each of ``formats`` (``path``'s suffix replaced), each atomically and
    reproducibly (the same figure gives the same bytes); returns the paths in the order of ``formats``."""
    paths = [Path(path).with_suffix(f".{fmt}") for fmt in formats]
    for out, fmt in zip(paths, formats, strict=True):
        atomic_write(out, lambda f, fmt=fmt: _savefig(fig, f, fmt, **kwargs))
    return paths


def atomic_torch_save(obj: Any, path: Path | str) -> None:
    """``torch.save`` into memory, then written like any other file: a full disk is reported as such
    (torch's own file writer reports it as an unrelated ``inline_container`` error)."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getbuffer())


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_hashes(folder: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """``relative path -> sha256`` of every file under ``folder`` except the relative paths ``skip``."""
    files = sorted(p for p in Path(folder).rglob("*") if p.is_file())
    rel = {p: p.relative_to(folder).as_posix() for p in files}
    return {rel[p]: sha256(p) for p in files if rel[p] not in skip}
