"""Online training through time (OTTT)."""

from __future__ import annotations

from torch import Tensor

from spikebench.nn.network import Network
from spikebench.rules.base import RULES, Locality
from spikebench.rules.online import StepView, TracedRule


@RULES.register("ottt")
class OTTT(TracedRule):
    """Online training through time: exact backprop through the layers at each step, presynaptic traces.

    Xiao, Meng, Zhang, He & Lin (2022), "Online Training Through Time for Spiking Neural Networks"
    (NeurIPS). At every step t the instantaneous loss ``L[t] = CE(y[t], label) / T`` is backpropagated
    through the layers *at that step only* (state from earlier steps is a constant), with
    ``e[t] = dL[t]/dy[t]``:

        g_L[t] = psi_L[t] * (W_out^T e[t]),      g_l[t] = psi_l[t] * (W_{l+1}^T g_{l+1}[t])
        dW_l += g_l[t]^T a_hat_{l-1}[t],   dV_l += g_l[t]^T z_hat_l[t-1],   db_l += g_l[t] a[t]

    where ``a_hat[t] = alpha a_hat[t-1] + s[t]`` is the presynaptic trace of the layer's input (the
    same for the recurrent input ``z_l[t-1]`` and for the bias' constant input 1). Temporal credit
    flows only through these traces: they carry ``dv[t]/dv[s] = alpha^{t-s}`` (the reset and the spikes'
    effect on later steps are ignored), so memory is O(1) in T. The readout gets its exact gradient
    (:class:`~spikebench.rules.online.ReadoutTrace`). ``rule.update``: ``step`` (OTTT_O, an optimiser
    step after every time step) or ``sequence`` (OTTT_A, default: the gradients summed over the sequence).

    Input gradient (attacks): ``W_1^T g_1``, spread back over earlier steps by the trace decay
    (:meth:`OnlineRule.input_gradient`).
    """

    name = "ottt"
    locality = Locality(
        spatial="exact backprop at each step",
        temporal="online, presynaptic traces",
        weight_transport="yes",
        memory="O(1)",
        rank=3,
    )

    def signals(self, net: Network, view: StepView) -> list[Tensor]:
        n = len(net.layers)
        out: list[Tensor] = [view.error] * n
        signal = view.error @ net.readout.linear.weight
        for i in range(n - 1, -1, -1):
            out[i] = signal
            if i > 0:
                signal = (view.psi[i] * signal) @ net.layers[i].weight
        return out
