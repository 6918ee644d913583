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

from spikebench.dynamics import fused
from spikebench.dynamics.surrogate import FastSigmoid, Surrogate
from spikebench.precision import LOW

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


def _graph_kept() -> bool:
    """Whether the backward pass now running keeps its graph (``retain_graph`` / ``create_graph``), so
    that saved tensors must stay intact. Where torch cannot say, assume it does."""
    try:
        return bool(torch._C._autograd._get_current_graph_task_keep_graph())
    except (AttributeError, RuntimeError):
        return True


def _plain_heaviside(s: Surrogate) -> bool:
    """True when ``s`` keeps the base class's forward ``H(x) = 1[x >= 0]`` (then ``z = 1[v >= theta]``
    is written in place; for finite floats ``v - theta >= 0`` exactly when ``v >= theta``)."""
    return type(s).heaviside is Surrogate.heaviside


def _advance(
    p: LIFParams,
    currents: Tensor,
    rec: Tensor | None,
    v0: Tensor,
    z0: Tensor,
    low: torch.dtype | None,
    vs: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """The forward recursion of a layer from ``(v0, z0)``: spikes [T, B, N] and the last potential.

    Every step's potential is written into ``vs`` [T, B, N] when it is given (the backward pass reads
    them); without it two [B, N] buffers take turns (step t reads v[t-1] while it writes v[t]), which is
    all inference needs. ``currents`` are float32 (or float64), or bf16 products taken into float32 one
    step at a time (no float32 copy of all steps); ``low``: the dtype of the recurrent product's
    operands and of the returned spikes (None: the currents' own; with ``low`` the recursion reads each
    step's spikes in the potentials' dtype from a [B, N] buffer). The arithmetic is the same in every
    case. Without recurrent weights and with the plain Heaviside spike, the compiled kernel of
    :mod:`spikebench.dynamics.fused` runs the loop where it applies (the same operations, bit for bit).
    """
    plain = _plain_heaviside(p.surrogate)
    if rec is None and plain:
        done = fused.advance(currents, v0, z0, low, vs, p.alpha, p.theta, p.reset == "soft")
        if done is not None:
            return done
    dtype = torch.float32 if currents.dtype in LOW else currents.dtype
    like = {"dtype": dtype, "device": currents.device}
    rec_low = None if rec is None or low is None else rec.t().to(low)
    zs = torch.empty(currents.shape, dtype=low or dtype, device=currents.device)
    soft = p.reset == "soft"
    keep = None if soft else torch.empty(currents.shape[1:], **like)  # 1 - z[t-1]
    turns = None if vs is not None else (torch.empty(v0.shape, **like), torch.empty(v0.shape, **like))
    spike_turns = (
        None if zs.dtype == dtype else (torch.empty(v0.shape, **like), torch.empty(v0.shape, **like))
    )
    # the steps as views made at once, and the threshold as a tensor of the potentials' dtype (the
    # value a Python number is rounded to): no per-step indexing or scalar wrapping
    steps_c, steps_z = currents.unbind(0), zs.unbind(0)
    steps_v = vs.unbind(0) if vs is not None else None
    theta = torch.tensor(p.theta, **like)
    v_prev, z_prev = v0, z0
    for t in range(currents.shape[0]):
        v = steps_v[t] if steps_v is not None else turns[t % 2]  # type: ignore[index]
        z = steps_z[t] if spike_turns is None else spike_turns[t % 2]
        if currents.dtype == dtype:
            c = steps_c[t]
        else:  # a bf16 product taken into the float32 potential's buffer
            c = v.copy_(steps_c[t])
        if rec is None:
            pass
        elif low is not None:  # the product in bf16, added into the float32 potential
            z_low = z0.to(low) if t == 0 else steps_z[t - 1].to(low)
            c = torch.add(c, torch.mm(z_low, rec_low), out=v)
        else:
            c = torch.addmm(c, z_prev, rec.t(), out=v)
        if soft:
            if c is v:
                v.add_(v_prev, alpha=p.alpha)
            else:
                torch.add(c, v_prev, alpha=p.alpha, out=v)
            v.sub_(z_prev, alpha=p.theta)
        else:
            keep.copy_(z_prev).neg_().add_(1.0)  # 1 - z, exactly
            if c is v:
                v.addcmul_(v_prev, keep, value=p.alpha)
            else:
                torch.addcmul(c, v_prev, keep, value=p.alpha, out=v)
        if plain:
            torch.ge(v, theta, out=z)
        else:
            z.copy_(p.surrogate.heaviside(v - p.theta))
        if spike_turns is not None:
            steps_z[t].copy_(z)
        v_prev, z_prev = v, z
    return zs, v_prev


class _LIFScan(torch.autograd.Function):
    """All T steps of one layer in one node; backward is BPTT written out by hand.

    Backward recursion, with ``psi[t] = S'(v[t] - theta)`` and ``gv[T] = 0``:

        gz_total[t] = gz[t] + gv[t+1] @ V + gv[t+1] * dv[t+1]/dr[t]     (last term unless detached)
        gv[t]       = psi[t] * gz_total[t] + gv[t+1] * dv[t+1]/dv[t]
        gI[t] = gv[t];   gV = sum_t gv[t]^T z[t-1]

    (``V`` here is the matrix the backward pass multiplies by: ``rec`` itself, or ``rec_backward``
    when given),
    where soft reset gives dv[t+1]/dv[t] = alpha, dv[t+1]/dr[t] = -theta, and reset to zero gives
    dv[t+1]/dv[t] = alpha (1 - z[t]), dv[t+1]/dr[t] = -alpha v[t].

    Both passes write every step into preallocated [T, B, N] buffers with in-place / ``out=`` kernels
    (no per-step result tensors, no copies). The leak is one kernel in both passes (soft reset: ``add``
    with ``alpha``, which rounds otherwise than a product then a sum), so potentials and gradients agree
    with the step loop's to rounding (spikes exactly, but for a potential within rounding of the
    threshold). ``psi`` is evaluated in the backward pass,
    step by step from the saved potentials: inference pays nothing for it, and its temporaries stay
    [B, N] (full-size temporaries cost page faults on CPU). Unless the graph is kept for another
    backward pass, the input gradient is written over the saved potentials (step t's potential is read
    before step t's gradient is written), which saves a [T, B, N] allocation.
    """

    @staticmethod
    def forward(
        ctx,
        currents: Tensor,
        rec: Tensor | None,
        v0: Tensor,
        z0: Tensor,  # type: ignore[override]
        p: LIFParams,
        rec_backward: Tensor | None = None,
        low: torch.dtype | None = None,
    ):
        state_dtype = torch.float32 if currents.dtype in LOW else currents.dtype
        vs = torch.empty(currents.shape, dtype=state_dtype, device=currents.device)
        zs, _ = _advance(p, currents, rec, v0, z0, low, vs)
        ctx.mark_non_differentiable(vs)
        # No zero gradient is materialised for the potentials output (a full-size fill per call).
        ctx.set_materialize_grads(False)
        ctx.p = p
        ctx.low = low
        ctx.grad_dtype = currents.dtype
        ctx.has_rec = rec is not None
        back = rec_backward if rec_backward is not None else rec
        ctx.save_for_backward(vs, zs, z0, back if back is not None else torch.empty(0))
        return zs, vs

    @staticmethod
    def backward(ctx, gz: Tensor, _gv_out: Tensor | None):  # type: ignore[override]
        vs, zs, z0, rec_back = ctx.saved_tensors
        p: LIFParams = ctx.p
        T = vs.shape[0]
        soft = p.reset == "soft"
        if gz is None:  # the spikes were not used
            gz = torch.zeros_like(vs)
        if ctx.grad_dtype != vs.dtype:
            # bf16 currents get a bf16 gradient, each step rounded from the float32 recursion that
            # two [B, N] buffers carry (the rounding the bf16 product's backward would apply)
            gI = torch.empty(vs.shape, dtype=ctx.grad_dtype, device=vs.device)
            turns = (torch.empty_like(vs[0]), torch.empty_like(vs[0]))
        else:
            # Step t reads vs[t] before it writes gI[t]: the gradient may take the potentials' place.
            gI = torch.empty_like(vs) if _graph_kept() else vs
            turns = None
        gzt = torch.empty_like(vs[0])  # gz_total[t]
        low = ctx.low
        back_low = rec_back.to(low) if low is not None and ctx.has_rec else None
        tmp = torch.empty_like(vs[0])
        psi = torch.empty_like(vs[0])
        # as in the forward pass: the steps as views made at once, the constants as tensors
        steps_v, steps_g, steps_gz, steps_z = vs.unbind(0), gI.unbind(0), gz.unbind(0), zs.unbind(0)
        theta, alpha = (torch.tensor(c, dtype=vs.dtype, device=vs.device) for c in (p.theta, p.alpha))
        for t in range(T - 1, -1, -1):
            p.surrogate.derivative_(torch.sub(steps_v[t], theta, out=psi))
            gv = steps_g[t] if turns is None else turns[t % 2]
            if t == T - 1:
                torch.mul(psi, steps_gz[t], out=gv)
                if turns is not None:
                    steps_g[t].copy_(gv)
                continue
            gv_next = steps_g[t + 1] if turns is None else turns[(t + 1) % 2]
            if ctx.has_rec or not p.detach_reset:
                if ctx.has_rec and low is not None:
                    gzt.copy_(steps_gz[t]).add_(torch.mm(gv_next.to(low), back_low))  # in float32
                elif ctx.has_rec:
                    torch.addmm(steps_gz[t], gv_next, rec_back, out=gzt)
                else:
                    gzt.copy_(steps_gz[t])
                if not p.detach_reset:
                    if soft:
                        torch.mul(gv_next, theta, out=tmp)
                    else:
                        torch.mul(steps_v[t], alpha, out=tmp).mul_(gv_next)
                    gzt.sub_(tmp)
                torch.mul(psi, gzt, out=gv)
            else:
                torch.mul(psi, steps_gz[t], out=gv)
            # gv += gv_next * dv[t+1]/dv[t]
            if soft:  # one kernel, as the forward pass's leak
                gv.add_(gv_next, alpha=p.alpha)
            else:
                tmp.copy_(steps_z[t]).neg_().add_(1.0).mul_(p.alpha).mul_(gv_next)  # (1 - z[t]) alpha gv[t+1]
                gv.add_(tmp)
            if turns is not None:
                steps_g[t].copy_(gv)
        g_rec = None
        if ctx.has_rec and ctx.needs_input_grad[1]:
            z_prev = torch.cat([z0.to(zs.dtype).unsqueeze(0), zs[:-1]])
            if low is not None:
                g_rec = torch.einsum("tbi,tbj->ij", gI.to(low), z_prev.to(low)).float()
            else:
                g_rec = torch.einsum("tbi,tbj->ij", gI, z_prev)
        return gI, g_rec, None, None, None, None, None


def scan(
    p: LIFParams,
    currents: Tensor,
    rec: Tensor | None = None,
    state: LIFState | None = None,
    rec_backward: Tensor | None = None,
) -> tuple[Tensor, LIFState]:
    """Fused multi-step LIF, numerically the same as :func:`scan_steps` (forward and gradients).

    ``currents``: [T, B, N]; ``rec``: optional [N, N]. The initial ``state`` is a constant (no gradient
    flows into it: truncated BPTT detaches it anyway). ``rec_backward`` [N, N], if given, replaces ``rec``
    in the backward pass where the gradient is sent back through the recurrent connections; the gradient
    of ``rec`` itself is unchanged. Returns spikes [T, B, N] and the final state (detached).

    bf16 currents (products computed under bf16 autocast, :mod:`spikebench.precision`) are taken into
    float32 one step at a time: potentials and the recursion of both passes are float32, and the
    recurrent products take bf16 operands (accumulated in float32) as the other products do. The spikes
    (exactly 0 or 1) are returned in bf16 and the currents' gradient is bf16, each step rounded from the
    float32 recursion: the values autograd of ``currents.float()`` and of a cast of float32 spikes
    would give, without the [T, B, N] copies. Under bf16 autocast, float32 currents (a layer's one
    frame of a time-constant input, taken into float32 once and broadcast over T) give bf16 spikes and
    recurrent products in the same way.

    Inference (no gradient enabled, or neither ``currents`` nor ``rec`` requiring one) runs the same
    recursion outside autograd, keeping only the last potential (and, under bf16, taking each step's
    currents into float32 as it reaches them and returning bf16 spikes, as training does): the same
    spikes and final state, bit for bit, with no [T, B, N] potentials, float32 copy of the currents or
    float32 spikes (which the next bf16 product would cast) allocated.
    """
    inference = not torch.is_grad_enabled() or not (
        currents.requires_grad or (rec is not None and rec.requires_grad)
    )
    low = None
    if currents.dtype in LOW:
        low = currents.dtype
    elif torch.is_autocast_enabled(currents.device.type):  # float32 currents among bf16 products
        low = torch.get_autocast_dtype(currents.device.type)
    if state is None:
        dtype = torch.float32 if currents.dtype in LOW else currents.dtype
        state = zero_state(currents.shape[1], currents.shape[2], device=currents.device, dtype=dtype)
    if inference:  # no autograd node, no potentials kept for a backward pass
        v0 = state.v.detach()
        zs, v = _advance(p, currents, rec, v0, state.z.detach(), low)
        return zs, LIFState(v if v is not v0 else v.clone(), zs[-1])
    zs, vs = _LIFScan.apply(currents, rec, state.v.detach(), state.z.detach(), p, rec_backward, low)
    # A copy, not a view: the backward pass may reuse the potentials' buffer for the gradient.
    return zs, LIFState(vs[-1].detach().clone(), zs[-1].detach())
