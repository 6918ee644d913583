"""Online training through time (OTTT)."""

from __future__ import annotations

from torch import Tensor

from spikebench.nn.network import Network
from spikebench.rules.base import RULES, Locality, Memory, Spatial, Temporal
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

    Convolutional networks: ``W_{l+1}^T`` is, for a convolution block l+1, the transposed convolution
    into its input maps, and the signal of a block l is taken through its max pooling -- each window's
    gradient to the neuron that won it at t (argmax indices of the forward pooling, ``max_unpool2d``),
    exactly what autograd of the step would do -- with explicit tensor operations, no autograd
    (the layers' ``vjp_input`` and ``vjp_output``, :mod:`spikebench.nn.layers`). The
    weight gradient of a block is the correlation of ``g_l[t]``'s maps with the trace of its input maps
    (``conv2d_weight``), its bias gradient ``g_l[t]`` summed over batch and positions times ``a[t]``.
    """

    name = "ottt"
    locality = Locality(Spatial.EXACT, Temporal.ONLINE, weight_transport=True, memory=Memory.ONE)
    paper = "Xiao, Meng, Zhang, He & Lin (2022), Online Training Through Time for Spiking Neural Networks, NeurIPS"
    deviations = (
        "the per-step loss is that of the leaky readout y[t] = kappa y[t-1] + W_out z[t] + b_out (the paper's output is instantaneous); the readout's own weights get the exact gradient through their trace, but a hidden layer at step t is credited only through y[t], the leak's effect on later steps' losses is ignored",
        "rule.update=step (OTTT_O) applies the optimiser after every step to the gradient of L[t] = CE(y[t])/T "
        "at train.lr; with Adam every step moves the weights by about train.lr whatever "
        "the gradient's scale, so a sequence moves them about T times as far as with rule.update=sequence "
        "(train.lr / T gives a comparable effective learning rate; README: measured)",
    )
    archs = ("mlp", "conv")

    def signals(self, net: Network, view: StepView) -> list[Tensor]:
        n = len(net.layers)
        out: list[Tensor] = [view.error] * n
        signal = view.error @ net.readout.linear.weight
        for i in range(n - 1, -1, -1):
            out[i] = signal
            if i > 0:
                g = net.layers[i].vjp_input(view.psi[i] * signal)
                signal = net.layers[i - 1].vjp_output(g, view.pool[i - 1])
        return out
