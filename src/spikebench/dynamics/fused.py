"""The forward recursion of a LIF layer without recurrent weights as one compiled call.

:func:`spikebench.dynamics.lif._advance` hands its loop over time here when :func:`advance` applies:
CPU tensors, float32 potentials, float32 or bf16 currents (all T steps, or one time-constant frame
broadcast over T), the plain Heaviside spike ``z = 1[v >= theta]``, no recurrent weights. The kernel
(``lif_kernel.cpp``) performs the loop's floating-point operations in the loop's order, so spikes and
potentials are the same bit for bit (``tests/unit/test_fused.py`` checks every case against the
PyTorch loop), and gradients, trained weights and attack results do not depend on which ran. What it
removes is the loop's cost: a few kernel launches per time step, and under bf16 a conversion of every
step's currents to float32 and of its spikes back to bf16. Instead, each block of neurons goes through
all T steps while its state stays in cache, and bf16 values are widened and written by bit shifts.

The kernel is compiled from ``lif_kernel.cpp`` the first time a process needs it, with
``torch.utils.cpp_extension`` (a C++ compiler and ninja; once per kind of CPU, Python and torch
version and source, cached in a folder of torch's extensions directory, ``TORCH_EXTENSIONS_DIR``), and
registered as the torch operator ``spikebench::lif_forward``. Processes take turns at the build under
an OS file lock, which a killed process releases, and remove the lock file torch's builder leaves
behind when it is killed (torch would otherwise wait for it forever). Where it cannot be built, one
warning line says why and the PyTorch loop runs, with the same results. ``SPIKEBENCH_KERNEL=off`` in
the environment keeps the PyTorch loop.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import platform
import sys
from pathlib import Path

import torch
from torch import Tensor

__all__ = ["ENV", "advance", "describe", "enabled"]

ENV = "SPIKEBENCH_KERNEL"
SOURCE = Path(__file__).with_name("lif_kernel.cpp")
FLAGS = ("-O3", "-march=native", "-fopenmp-simd", "-ffp-contract=off")  # no contraction: the loop's rounding

log = logging.getLogger(__name__)


def enabled() -> bool:
    """False when ``SPIKEBENCH_KERNEL=off`` (read at every call, so a test or a user can switch)."""
    return os.environ.get(ENV, "").strip().lower() != "off"


@functools.cache
def _load() -> str | None:
    """Build (or load the cached build of) the kernel once per process; None when it is there, else why
    not (logged once)."""
    try:
        import fcntl  # POSIX; elsewhere the import fails and the loop runs

        from torch.utils.cpp_extension import get_default_build_root, load

        build = build_directory(os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root())
        build.mkdir(parents=True, exist_ok=True)
        with open(build / "spikebench.lock", "a") as turn:
            fcntl.flock(turn, fcntl.LOCK_EX)  # released by the OS whatever happens to this process
            (build / "lock").unlink(missing_ok=True)  # torch's own: only a killed builder leaves it here
            load(
                name="spikebench_lif",
                sources=[str(SOURCE)],
                extra_cflags=list(FLAGS),
                build_directory=str(build),
                is_python_module=False,
                verbose=False,
            )
        torch.ops.spikebench.lif_forward  # noqa: B018 (raises if the operator did not register)
    except Exception as exc:  # a missing compiler, ninja or header: any build failure means the loop
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        log.warning("fused LIF kernel unavailable, the PyTorch loop runs instead (same results): %s", reason)
        return reason
    return None


def _cpu_tag() -> str:
    """A short digest of the CPU's instruction-set flags: the build targets the CPU it runs on
    (``-march=native``), so machines sharing a home folder but not a CPU get builds of their own."""
    try:
        flags = next(
            (line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), ""
        )
    except OSError:
        flags = ""
    return hashlib.sha256((platform.machine() + flags).encode()).hexdigest()[:10]


def build_directory(root: str | Path) -> Path:
    """Where the kernel is built under the extensions directory ``root``: one folder per Python and
    torch version (a build is only valid for the torch it was compiled against) and kind of CPU."""
    py = f"py{sys.version_info.major}{sys.version_info.minor}"
    torch_version = torch.__version__.replace("+", "_")
    return Path(root) / f"spikebench_lif_{py}_torch{torch_version}_cpu{_cpu_tag()}"


def describe() -> str:
    """One line for records and perf output: which forward recursion runs."""
    if not enabled():
        return f"PyTorch loop ({ENV}=off)"
    reason = _load()
    return "compiled kernel (spikebench::lif_forward)" if reason is None else f"PyTorch loop ({reason})"


def advance(
    currents: Tensor,
    v0: Tensor,
    z0: Tensor,
    low: torch.dtype | None,
    vs: Tensor | None,
    alpha: float,
    theta: float,
    soft: bool,
) -> tuple[Tensor, Tensor] | None:
    """``lif._advance`` of a layer without recurrent weights whose spike is the plain Heaviside step (the
    caller checks both), by the kernel: the same arguments (the LIF parameters as ``alpha``, ``theta``
    and ``soft`` reset), the same results. None where the kernel does not apply (then the caller runs
    the loop)."""
    if (
        currents.shape[0] == 0
        or currents.device.type != "cpu"
        or currents.dtype not in (torch.float32, torch.bfloat16)
        or v0.dtype != torch.float32
        or low not in (None, torch.bfloat16)
        or (vs is not None and (vs.dtype != torch.float32 or not vs.is_contiguous()))
        or not enabled()
        or _load() is not None
    ):
        return None
    # one time-constant frame (broadcast over T with stride 0) is read at every step, not copied T times
    c = currents[0] if currents.stride(0) == 0 else currents
    v = v0.detach().to(torch.float32, memory_format=torch.contiguous_format, copy=True)
    z = z0.detach().to(torch.float32, memory_format=torch.contiguous_format, copy=True)
    zs = torch.empty(currents.shape, dtype=low or torch.float32, device=currents.device)
    torch.ops.spikebench.lif_forward(c.contiguous(), v, z, zs, vs, alpha, theta, soft)
    return zs, v
