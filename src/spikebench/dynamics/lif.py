"""Discrete-time leaky integrate-and-fire (LIF) dynamics: pure functions over explicit state.

For one layer of N neurons with input current ``c[t]`` (feed-forward ``W x[t] + b`` plus, when the
layer is recurrent, ``V z[t-1]``), the membrane potential ``v`` and spikes ``z`` follow

    soft reset (default):  v[t] = alpha * v[t-1] + c[t] - theta * r[t-1]
    reset to zero:         v[t] = alpha * v[t-1] * (1 - r[t-1]) + c[t]
                           z[t] = H(v[t] - theta)

with ``r = z`` or, when ``detach_reset`` is set, ``r = stopgrad(z)`` (the reset carries no gradient, as
in Zenke & Vogels 2021 and Bellec et al. 2020, where dv[t]/dv[t-1] = alpha). ``H`` is the Heaviside
step with a surrogate derivative (:mod:`spikebench.dynamics.surrogate`). Units are arbitrary:
``theta`` is the firing threshold and ``alpha = exp(-dt / tau_mem)`` the per-step leak.

:func:`step` advances one time step. :func:`scan` runs all T steps of a layer in one autograd node
with a hand-written backward pass (BPTT through the scan), which is what rules that see the whole
sequence use; :func:`scan_steps` is the same computation as a plain loop over :func:`step` and is the
reference the fused scan is tested against.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
from torch import Tensor

from spikebench.dynamics.surrogate import FastSigmoid, Surrogate

ResetMode = Literal["soft", "zero"]


@dataclass(frozen=True)
class LIFParams:
    """Parameters of a LIF population (shared by every neuron of a layer)."""

    alpha: float = 0.9
    theta: float = 1.0
    reset: ResetMode = "soft"
    detach_reset: bool = True
    surrogate: Surrogate = FastSigmoid()


class LIFState(NamedTuple):
    """State of a LIF layer at one time step: membrane potential ``v`` and spikes ``z``, [B, N]."""

    v: Tensor
    z: Tensor


def zero_state(batch: int, n: int, *, device=None, dtype=torch.float32) -> LIFState:
    """The resting state: ``v = 0``, no spike."""
    zeros = torch.zeros(batch, n, device=device, dtype=dtype)
    return LIFState(zeros, zeros)


def step(p: LIFParams, state: LIFState, current: Tensor) -> tuple[Tensor, LIFState]:
    """Advance one time step. ``current``: [B, N] total input current. Returns ``(z, new_state)``."""
    v_prev, z_prev = state
    r = z_prev.detach() if p.detach_reset else z_prev
    if p.reset == "soft":
        v = p.alpha * v_prev + current - p.theta * r
    else:
        v = p.alpha * v_prev * (1.0 - r) + current
    z = p.surrogate.spike(v - p.theta)
    return z, LIFState(v, z)


def scan_steps(
    p: LIFParams, currents: Tensor, rec: Tensor | None = None, state: LIFState | None = None
) -> tuple[Tensor, LIFState]:
    """Reference multi-step LIF: a loop over :func:`step`.

    ``currents``: [T, B, N] feed-forward currents; ``rec``: optional [N, N] recurrent weights (the
    current at t gets ``z[t-1] @ rec.T``). Returns spikes [T, B, N] and the final state.
    """
    if state is None:
        state = zero_state(currents.shape[1], currents.shape[2], device=currents.device, dtype=currents.dtype)
    out = []
    for t in range(currents.shape[0]):
        c = currents[t] if rec is None else currents[t] + state.z @ rec.T
        z, state = step(p, state, c)
        out.append(z)
    return torch.stack(out), state


class _LIFScan(torch.autograd.Function):
    """All T steps of one layer in one node; backward is BPTT written out by hand.

    Backward recursion, with ``psi[t] = S'(v[t] - theta)`` and ``gv[T] = 0``:

        gz_total[t] = gz[t] + gv[t+1] @ V + gv[t+1] * dv[t+1]/dr[t]     (last term unless detached)

    (``V`` here is the recurrent feedback matrix: ``rec`` itself, or ``rec_feedback`` when given)
        gv[t]       = psi[t] * gz_total[t] + gv[t+1] * dv[t+1]/dv[t]
        gI[t] = gv[t];   gV = sum_t gv[t]^T z[t-1]

    where soft reset gives dv[t+1]/dv[t] = alpha, dv[t+1]/dr[t] = -theta, and reset to zero gives
    dv[t+1]/dv[t] = alpha (1 - z[t]), dv[t+1]/dr[t] = -alpha v[t].
    """

    @staticmethod
    def forward(
        ctx,
        currents: Tensor,
        rec: Tensor | None,
        v0: Tensor,
        z0: Tensor,  # type: ignore[override]
        p: LIFParams,
        rec_feedback: Tensor | None = None,
    ):
        T = currents.shape[0]
        vs = torch.empty_like(currents)
        zs = torch.empty_like(currents)
        v, z = v0, z0
        soft = p.reset == "soft"
        for t in range(T):
            c = currents[t] if rec is None else torch.addmm(currents[t], z, rec.t())
            if soft:
                v = torch.add(c, v, alpha=p.alpha).sub_(z, alpha=p.theta)
            else:
                v = torch.addcmul(c, v, 1.0 - z, value=p.alpha)
            z = p.surrogate.heaviside(v - p.theta)
            vs[t] = v
            zs[t] = z
        ctx.mark_non_differentiable(vs)
        ctx.p = p
        ctx.has_rec = rec is not None
        fb = rec_feedback if rec_feedback is not None else rec
        ctx.save_for_backward(vs, zs, z0, fb if fb is not None else torch.empty(0))
        return zs, vs

    @staticmethod
    def backward(ctx, gz: Tensor, _gv_out: Tensor | None):  # type: ignore[override]
        vs, zs, z0, rec_fb = ctx.saved_tensors
        p: LIFParams = ctx.p
        T = vs.shape[0]
        psi = p.surrogate.derivative(vs - p.theta)
        gI = torch.empty_like(vs)
        soft = p.reset == "soft"
        gv_next = None
        for t in range(T - 1, -1, -1):
            gzt = gz[t]
            if gv_next is not None:
                if ctx.has_rec:
                    gzt = torch.addmm(gzt, gv_next, rec_fb)
                if not p.detach_reset:
                    gzt = gzt - gv_next * (p.theta if soft else p.alpha * vs[t])
            gv = psi[t] * gzt
            if gv_next is not None:
                gv = gv + gv_next * (p.alpha if soft else p.alpha * (1.0 - zs[t]))
            gI[t] = gv
            gv_next = gv
        g_rec = None
        if ctx.has_rec and ctx.needs_input_grad[1]:
            z_prev = torch.cat([z0.unsqueeze(0), zs[:-1]])
            g_rec = torch.einsum("tbi,tbj->ij", gI, z_prev)
        return gI, g_rec, None, None, None, None


def scan(
    p: LIFParams,
    currents: Tensor,
    rec: Tensor | None = None,
    state: LIFState | None = None,
    rec_feedback: Tensor | None = None,
) -> tuple[Tensor, LIFState]:
    """Fused multi-step LIF, numerically the same as :func:`scan_steps` (forward and gradients).

    ``currents``: [T, B, N]; ``rec``: optional [N, N]. The initial ``state`` is a constant (no gradient
    flows into it: truncated BPTT detaches it anyway). ``rec_feedback`` [N, N], if given, replaces ``rec``
    in the backward pass through the recurrent connections (feedback alignment); the gradient of ``rec``
    itself is unchanged. Returns spikes [T, B, N] and the final state (detached).
    """
    if state is None:
        state = zero_state(currents.shape[1], currents.shape[2], device=currents.device, dtype=currents.dtype)
    zs, vs = _LIFScan.apply(currents, rec, state.v.detach(), state.z.detach(), p, rec_feedback)
    return zs, LIFState(vs[-1].detach(), zs[-1].detach())
