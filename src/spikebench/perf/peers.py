"""The same spiking layers and networks built with spikebench and with peer libraries.

Peers are snnTorch, Norse and SpikingJelly. They are optional: each is imported lazily, and one that
is missing (or whose import needs something missing, e.g. torchvision) is reported with a note and
skipped. Install them for benchmarking with ``pip install --no-deps snntorch norse spikingjelly``
plus their small import-time dependencies (see the README, "Performance").

Two things are built:

- a *protocol layer* (Open Neuromorphic SNN library benchmark: one Linear + one LIF layer) mapping
  inputs [T, B, n] to spikes [T, B, n]. Every library gets the Linear current of all steps as one
  matrix product (what each does with ``nn.Linear`` on a [T, B, n] tensor); only the neuron differs:
  spikebench's fused scan, ``snntorch.Leaky`` stepped over time, ``norse.torch.LIF`` (Norse's
  multi-step LIF, which also integrates a synaptic current) and SpikingJelly's multi-step
  ``neuron.LIFNode`` on its PyTorch (CPU) path;
- the default network (784-256-256-10 with a leaky readout) built from snnTorch layers as snnTorch's
  tutorials build it (:class:`SnnTorchMLP`), numerically the same model as spikebench's
  :class:`~spikebench.nn.network.Network`.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

import torch
from torch import Tensor, nn

from spikebench.dynamics.lif import LIFParams
from spikebench.dynamics.surrogate import FastSigmoid
from spikebench.nn.network import Network, SpikingLinear
from spikebench.registry import SpikebenchError

PEERS = ("snntorch", "norse", "spikingjelly")

# What each peer's benchmarked code imports.
_IMPORTS = {
    "snntorch": ("snntorch", "snntorch.surrogate"),
    "norse": ("norse.torch",),
    "spikingjelly": ("spikingjelly.activation_based.neuron", "spikingjelly.activation_based.functional"),
}


class PeerError(SpikebenchError):
    """A peer library cannot build what was asked."""


@dataclass(frozen=True)
class PeerInfo:
    """Whether a peer can be used here: its version, or a note saying why not."""

    name: str
    version: str | None
    note: str | None

    @property
    def available(self) -> bool:
        return self.note is None


def peer_info(name: str) -> PeerInfo:
    """Try to import peer ``name`` (one of :data:`PEERS`) and say whether it can be benchmarked."""
    if name == "spikingjelly":
        _quiet_triton_notice()
    try:
        for module in _IMPORTS[name]:
            importlib.import_module(module)
    except ImportError as exc:
        missing = getattr(exc, "name", None)
        if missing and missing.split(".")[0] != name:
            note = f"{name} is installed but its import needs {missing.split('.')[0]!r}, which is not"
        else:
            note = f"{name} is not installed"
        return PeerInfo(name, None, note)
    except Exception as exc:  # a broken install raises anything at import time
        return PeerInfo(name, None, f"{name} failed to import: {type(exc).__name__}: {exc}"[:200])
    version = getattr(importlib.import_module(name), "__version__", None) or _dist_version(name)
    return PeerInfo(name, str(version) if version is not None else None, None)


def _quiet_triton_notice() -> None:
    """SpikingJelly registers custom operators, for which torch logs (at import and first use) that
    Triton, a GPU compiler, is missing: irrelevant to its CPU path, so that one logger is quieted."""
    logging.getLogger("torch._library.triton").setLevel(logging.ERROR)


def _dist_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _module(name: str) -> ModuleType:
    return importlib.import_module(name)


# ---------------------------------------------------------------------------------------------
# protocol layer: Linear + LIF, [T, B, n] -> spikes [T, B, n]


class _Spikebench(nn.Module):
    def __init__(self, weight: Tensor, bias: Tensor, p: LIFParams) -> None:
        super().__init__()
        self.layer = SpikingLinear(weight.shape[1], weight.shape[0], recurrent=False, params=p)
        _load(self.layer, weight, bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x)[0]


class _SnnTorch(nn.Module):
    def __init__(self, weight: Tensor, bias: Tensor, p: LIFParams) -> None:
        super().__init__()
        snn = _module("snntorch")
        self.fc = _linear(weight, bias)
        self.lif = snn.Leaky(
            beta=p.alpha,
            threshold=p.theta,
            spike_grad=_snntorch_surrogate(p),
            reset_mechanism="subtract",
        )

    def forward(self, x: Tensor) -> Tensor:
        cur = self.fc(x)
        mem = torch.zeros_like(cur[0])
        out = []
        for t in range(cur.shape[0]):
            spk, mem = self.lif(cur[t], mem)
            out.append(spk)
        return torch.stack(out)


class _Norse(nn.Module):
    def __init__(self, weight: Tensor, bias: Tensor, p: LIFParams) -> None:
        super().__init__()
        norse = _module("norse.torch")
        self.fc = _linear(weight, bias)
        # Norse's LIF is an Euler step of dv/dt = tau_mem_inv (v_leak - v + i) with dt = 1 ms:
        # tau_mem_inv = (1 - alpha) / dt gives the same leak per step.
        params = norse.LIFParameters(
            tau_mem_inv=torch.as_tensor((1.0 - p.alpha) / 1e-3), v_th=torch.as_tensor(p.theta)
        )
        self.lif = norse.LIF(params)

    def forward(self, x: Tensor) -> Tensor:
        return self.lif(self.fc(x))[0]


class _SpikingJelly(nn.Module):
    def __init__(self, weight: Tensor, bias: Tensor, p: LIFParams) -> None:
        super().__init__()
        neuron = _module("spikingjelly.activation_based.neuron")
        self.functional = _module("spikingjelly.activation_based.functional")
        self.fc = _linear(weight, bias)
        kwargs = {
            "tau": 1.0 / (1.0 - p.alpha),
            "decay_input": False,
            "v_threshold": p.theta,
            "v_reset": None,  # soft reset
            "detach_reset": p.detach_reset,
            "step_mode": "m",
        }
        if "backend" in inspect.signature(neuron.LIFNode).parameters:  # SpikingJelly < 2 names it
            kwargs["backend"] = "torch"
        self.lif = neuron.LIFNode(**kwargs)

    def forward(self, x: Tensor) -> Tensor:
        self.functional.reset_net(self)  # SpikingJelly neurons keep their state between calls
        return self.lif(self.fc(x))


PROTOCOL_LAYERS: dict[str, Callable[[Tensor, Tensor, LIFParams], nn.Module]] = {
    "spikebench": _Spikebench,
    "snntorch": _SnnTorch,
    "norse": _Norse,
    "spikingjelly": _SpikingJelly,
}


def protocol_layer(library: str, weight: Tensor, bias: Tensor, p: LIFParams) -> nn.Module:
    """One Linear (``weight`` [n_out, n_in], ``bias`` [n_out], copied) + one LIF layer of ``library``
    (``"spikebench"`` or one of :data:`PEERS`): a module mapping [T, B, n_in] to spikes [T, B, n_out]."""
    if library not in PROTOCOL_LAYERS:
        raise PeerError(f"no protocol layer for {library!r}; known: {', '.join(PROTOCOL_LAYERS)}")
    return PROTOCOL_LAYERS[library](weight, bias, p).to(device=weight.device, dtype=weight.dtype)


def _linear(weight: Tensor, bias: Tensor) -> nn.Linear:
    fc = nn.Linear(weight.shape[1], weight.shape[0], device=weight.device, dtype=weight.dtype)
    _load(fc, weight, bias)
    return fc


def _load(module: nn.Module, weight: Tensor, bias: Tensor) -> None:
    with torch.no_grad():
        module.weight.copy_(weight)
        module.bias.copy_(bias)


def _snntorch_surrogate(p: LIFParams) -> Callable[[Tensor], Tensor]:
    if not isinstance(p.surrogate, FastSigmoid):
        raise PeerError(f"snnTorch peer: no counterpart for surrogate {type(p.surrogate).__name__}")
    # snnTorch's fast sigmoid has derivative 1 / (slope |x| + 1)^2, spikebench's FastSigmoid(scale).
    return _module("snntorch.surrogate").fast_sigmoid(slope=p.surrogate.scale)


# ---------------------------------------------------------------------------------------------
# the default network from snnTorch layers


class SnnTorchMLP(nn.Module):
    """spikebench's :class:`~spikebench.nn.network.Network` (feed-forward) built from snnTorch layers.

    As in snnTorch's tutorials, every step runs ``nn.Linear`` then ``snn.Leaky`` layer by layer; the
    readout is ``snn.Leaky(reset_mechanism="none")``, whose membrane ``y[t] = kappa y[t-1] + W z[t] + b``
    is spikebench's leaky readout. ``snn.Leaky`` (subtractive reset by the detached spike of the
    previous step, fast-sigmoid surrogate) is spikebench's soft, detached reset.
    """

    def __init__(self, net: Network) -> None:
        super().__init__()
        snn = _module("snntorch")
        if any(layer.recurrent for layer in net.layers):
            raise PeerError("the snnTorch peer network is feed-forward only")
        p = net.layers[0].params
        if p.reset != "soft" or not p.detach_reset:
            raise PeerError("snn.Leaky matches spikebench's soft reset with detach_reset=true only")
        self.fcs = nn.ModuleList(_linear(layer.weight.detach(), layer.bias.detach()) for layer in net.layers)
        self.lifs = nn.ModuleList(
            snn.Leaky(beta=p.alpha, threshold=p.theta, spike_grad=_snntorch_surrogate(p)) for _ in net.layers
        )
        out = net.readout.linear
        self.fc_out = _linear(out.weight.detach(), out.bias.detach())
        self.out = snn.Leaky(beta=net.readout.kappa, reset_mechanism="none")
        self.to(out.weight.dtype)

    def forward(self, x_seq: Tensor) -> Tensor:
        """``x_seq`` [T, B, ...] -> readout [T, B, C]."""
        B = x_seq.shape[1]
        mems = [torch.zeros(B, fc.out_features, dtype=x_seq.dtype, device=x_seq.device) for fc in self.fcs]
        y = torch.zeros(B, self.fc_out.out_features, dtype=x_seq.dtype, device=x_seq.device)
        ys = []
        for t in range(x_seq.shape[0]):
            h = x_seq[t].reshape(B, -1)
            for i, (fc, leaky) in enumerate(zip(self.fcs, self.lifs, strict=True)):
                h, mems[i] = leaky(fc(h), mems[i])
                h = h.to(x_seq.dtype)  # snnTorch's spike functions return float32 (no-op in float32)
            _, y = self.out(self.fc_out(h), y)
            ys.append(y)
        return torch.stack(ys)
