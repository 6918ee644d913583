"""Export a spikebench network to NIR, the neuromorphic intermediate representation (Pedersen et al.
2024, "Neuromorphic intermediate representation: a unified instruction set for interoperable brain-inspired
computing", Nat. Commun. 15, 8122), and import a NIR graph of LIF layers as a spikebench network.

Graph: ``input`` -> per hidden layer l ``layer{l}.affine`` (W_l, b_l) -> ``layer{l}.lif``, with a
recurrent layer's ``layer{l}.w_rec`` (V_l, a ``Linear`` node) as the edges ``lif -> w_rec -> lif``; then
``readout.affine`` (W_out, b_out) -> ``readout.li`` -> ``output``.

NIR's neurons are continuous-time (``tau dv/dt = (v_leak - v) + R I``). The discrete leak is mapped
exactly by the forward-Euler convention with step ``dt`` (:data:`DT`, that of snnTorch's NIR import):
``v[t] = (1 - dt/tau) v[t-1] + (dt R / tau) I[t]``, so ``alpha = 1 - dt/tau`` and ``R = tau/dt`` (the
input enters with weight 1); the readout's ``kappa`` likewise becomes an ``LI`` node. ``dt`` and this
convention are stored in the graph's metadata. NIR's LIF resets to ``v_reset`` (0) after a spike:
``model.reset: zero`` is exactly that (the reset takes effect before the next step's input, as in
:mod:`spikebench.dynamics.lif`); ``model.reset: soft`` (subtract ``theta``) has no NIR equivalent and
is refused. ``detach_reset`` only changes gradients, so it is not part of the graph. NIR fires for
``v > v_threshold``, spikebench for ``v >= theta``: the two differ only when a potential equals the
threshold exactly. Convolutional networks are refused (their max pooling has no NIR node).

Import reads the same structure back (``Affine`` or ``Linear`` projections, ``LIF`` with ``v_leak = 0``
and ``v_reset = 0``, one ``tau`` and threshold per network, an ``LI`` readout or none); an ``R`` other
than ``tau/dt`` is folded into the weights (rounded once).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from spikebench.dynamics.lif import LIFParams
from spikebench.nn.network import Network, SpikingLinear
from spikebench.registry import SpikebenchError

DT = 1e-4
CONVENTION = (
    "forward Euler: alpha = 1 - dt/tau, R = tau/dt; reset to v_reset = 0 before the next step's input"
)


class NIRError(SpikebenchError):
    """A network that NIR cannot express exactly, or a NIR graph spikebench cannot run."""


def _nir() -> Any:
    try:
        import nir
    except ImportError as exc:
        raise NIRError("NIR needs the nir package: pip install 'spikebench[nir]'") from exc
    return nir


def _np(t: Tensor) -> np.ndarray:
    return t.detach().cpu().to(torch.float64).numpy().copy()


def _tau(decay: float, dt: float, what: str) -> float:
    if not 0.0 <= decay < 1.0:
        raise NIRError(f"{what} = {decay} has no finite NIR time constant (it must be in [0, 1))")
    return dt / (1.0 - decay)


def export_check(net: Network) -> None:
    """Raise :class:`NIRError` if ``net`` cannot be exported exactly (the one-line reason)."""
    if any(type(layer) is not SpikingLinear for layer in net.layers):
        raise NIRError("NIR export supports dense networks (model.arch: mlp): max pooling has no NIR node")
    for layer in net.layers:
        if layer.params.reset != "zero":
            raise NIRError(
                "model.reset=soft (subtract theta after a spike) has no NIR equivalent, NIR's LIF resets to "
                "v_reset; train with --set model.reset=zero to export"
            )


def to_nir(net: Network, dt: float = DT, readout: bool = True) -> Any:
    """The NIR graph (``nir.NIRGraph``) of ``net`` (module docstring). Raises :class:`NIRError` for what
    NIR cannot express exactly. ``readout=False`` leaves the readout out: the graph's output is then the
    last hidden layer's spikes (for simulators without a leaky-integrator node, e.g. snnTorch's import)."""
    nir = _nir()
    export_check(net)
    if dt <= 0:
        raise NIRError(f"dt must be positive, got {dt}")
    nodes: dict[str, Any] = {"input": nir.Input(input_type=np.array([net.n_in]))}
    edges: list[tuple[str, str]] = []
    prev = "input"
    for i, layer in enumerate(net.layers):
        p, n = layer.params, layer.n_out
        tau = _tau(p.alpha, dt, "model.alpha")
        aff, lif = f"layer{i}.affine", f"layer{i}.lif"
        nodes[aff] = nir.Affine(weight=_np(layer.weight), bias=_np(layer.bias))
        nodes[lif] = nir.LIF(
            tau=np.full(n, tau),
            r=np.full(n, tau / dt),
            v_leak=np.zeros(n),
            v_threshold=np.full(n, float(p.theta)),
            v_reset=np.zeros(n),
        )
        edges += [(prev, aff), (aff, lif)]
        if layer.rec is not None:
            rec = f"layer{i}.w_rec"
            nodes[rec] = nir.Linear(weight=_np(layer.rec))
            edges += [(lif, rec), (rec, lif)]
        prev = lif
    meta = {"dt": dt, "convention": CONVENTION, "source": "spikebench"}
    if not readout:
        nodes["output"] = nir.Output(output_type=np.array([net.layers[-1].n_out]))
        return nir.NIRGraph(nodes=nodes, edges=[*edges, (prev, "output")], metadata=meta)
    c = net.n_classes
    tau = _tau(net.readout.kappa, dt, "model.kappa")
    nodes["readout.affine"] = nir.Affine(
        weight=_np(net.readout.linear.weight), bias=_np(net.readout.linear.bias)
    )
    nodes["readout.li"] = nir.LI(tau=np.full(c, tau), r=np.full(c, tau / dt), v_leak=np.zeros(c))
    nodes["output"] = nir.Output(output_type=np.array([c]))
    edges += [(prev, "readout.affine"), ("readout.affine", "readout.li"), ("readout.li", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta)


def write(net: Network, path: Path, dt: float = DT, readout: bool = True) -> Path:
    """Export ``net`` to the NIR file ``path`` (HDF5, ``nir.write``; see :func:`to_nir`)."""
    _nir().write(path, to_nir(net, dt, readout))
    return path


def read(path: Path) -> Any:
    """Read a NIR file (one clear error line if it is not one)."""
    nir = _nir()
    try:
        return nir.read(path)
    except FileNotFoundError as exc:
        raise NIRError(f"{path}: no such file") from exc
    except Exception as exc:  # h5py and nir raise many types for a file that is not a NIR graph
        raise NIRError(f"{path} is not a readable NIR graph: {type(exc).__name__}: {exc}"[:300]) from exc


def _uniform(values: np.ndarray, what: str) -> float:
    u = np.unique(np.asarray(values, dtype=np.float64))
    if u.size != 1:
        raise NIRError(f"{what} must be the same for every neuron, got {u.size} values")
    return float(u[0])


def _affine(node: Any, nir: Any) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(node, nir.Affine):
        return np.asarray(node.weight, np.float64), np.asarray(node.bias, np.float64)
    if isinstance(node, nir.Linear):
        w = np.asarray(node.weight, np.float64)
        return w, np.zeros(w.shape[0])
    raise NIRError(f"expected an Affine or Linear node, got {type(node).__name__}")


def from_nir(graph: Any, dt: float | None = None) -> Network:
    """A :class:`~spikebench.nn.network.Network` running ``graph``: a chain ``Input -> (Affine -> LIF
    [<-> Linear])+ -> Affine [-> LI] -> Output`` (module docstring). ``dt``: the graph's metadata
    ``dt`` when it has one, else :data:`DT`. Float64 parameters; call ``.float()`` for float32."""
    nir = _nir()
    dt = float(dt if dt is not None else (graph.metadata or {}).get("dt", DT))
    nodes, edges = graph.nodes, list(graph.edges)
    succ: dict[str, list[str]] = {}
    for a, b in edges:
        succ.setdefault(a, []).append(b)
    inputs = [k for k, n in nodes.items() if isinstance(n, nir.Input)]
    if len(inputs) != 1:
        raise NIRError(f"the graph must have one Input node, it has {len(inputs)}")

    def follow(key: str, exclude: str | None = None) -> str:
        nxt = [k for k in succ.get(key, []) if k != exclude]
        if len(nxt) != 1:
            raise NIRError(f"node {key!r} must feed exactly one node forward, it feeds {len(nxt)}")
        return nxt[0]

    layers: list[dict[str, Any]] = []
    key = follow(inputs[0])
    while True:
        proj = _affine(nodes[key], nir)
        nxt = follow(key)
        node = nodes[nxt]
        if isinstance(node, nir.LIF):
            lif_key = nxt
            if not (np.allclose(node.v_leak, 0.0) and np.allclose(node.v_reset, 0.0)):
                raise NIRError(f"{lif_key}: only v_leak = 0 and v_reset = 0 (reset to zero) are supported")
            tau = np.asarray(node.tau, np.float64)
            scale = np.asarray(node.r, np.float64) * dt / tau
            rec_keys = [k for k in succ.get(lif_key, []) if lif_key in succ.get(k, [])]
            rec = None
            if rec_keys:
                rec, _ = _affine(nodes[rec_keys[0]], nir)
                if isinstance(nodes[rec_keys[0]], nir.Affine) and np.any(nodes[rec_keys[0]].bias != 0):
                    raise NIRError(f"{rec_keys[0]}: a bias on the recurrent weights is not supported")
            w, b = proj
            layers.append(
                {
                    "w": w * scale[:, None],
                    "b": b * scale,
                    "rec": None if rec is None else rec * scale[:, None],
                    "alpha": 1.0 - dt / _uniform(tau, f"{lif_key}.tau"),
                    "theta": _uniform(node.v_threshold, f"{lif_key}.v_threshold"),
                }
            )
            key = follow(lif_key, rec_keys[0] if rec_keys else None)
            continue
        w, b = proj
        if isinstance(node, nir.LI):
            if not np.allclose(node.v_leak, 0.0):
                raise NIRError(f"{nxt}: only v_leak = 0 is supported")
            tau = np.asarray(node.tau, np.float64)
            scale = np.asarray(node.r, np.float64) * dt / tau
            kappa = 1.0 - dt / _uniform(tau, f"{nxt}.tau")
            w, b = w * scale[:, None], b * scale
            nxt = follow(nxt)
        else:
            kappa = 0.0
        if not isinstance(nodes[nxt], nir.Output):
            raise NIRError(f"expected the readout to end in the Output node, got {type(nodes[nxt]).__name__}")
        readout = (w, b, kappa)
        break
    if not layers:
        raise NIRError("the graph has no LIF layer")
    for what in ("alpha", "theta"):
        if len({lay[what] for lay in layers}) != 1:
            raise NIRError(f"every LIF layer must have the same {what} (one per spikebench network)")
    recurrent = {lay["rec"] is not None for lay in layers}
    if len(recurrent) != 1:
        raise NIRError("either every LIF layer is recurrent or none is (one flag per spikebench network)")
    params = LIFParams(alpha=layers[0]["alpha"], theta=layers[0]["theta"], reset="zero")
    hidden = tuple(lay["w"].shape[0] for lay in layers)
    net = Network.mlp(
        layers[0]["w"].shape[1],
        hidden,
        readout[0].shape[0],
        recurrent=recurrent.pop(),
        params=params,
        kappa=readout[2],
    ).double()
    with torch.no_grad():
        for layer, lay in zip(net.layers, layers, strict=True):
            if lay["w"].shape != tuple(layer.weight.shape):
                raise NIRError(f"layer sizes do not chain: {lay['w'].shape} after {layer.n_in} inputs")
            layer.weight.copy_(torch.from_numpy(lay["w"]))
            layer.bias.copy_(torch.from_numpy(lay["b"]))
            if lay["rec"] is not None:
                layer.rec.copy_(torch.from_numpy(lay["rec"]))
        if readout[0].shape != tuple(net.readout.linear.weight.shape):
            raise NIRError(f"readout weights {readout[0].shape} do not fit {hidden[-1]} neurons")
        net.readout.linear.weight.copy_(torch.from_numpy(readout[0]))
        net.readout.linear.bias.copy_(torch.from_numpy(readout[1]))
    return net
