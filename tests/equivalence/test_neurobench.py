"""spikebench's efficiency metrics equal NeuroBench's own on the same network and data: the network is
exported to NIR, run by snnTorch's importer inside NeuroBench, and NeuroBench's synaptic operations
(effective MACs, effective ACs, dense) and activation sparsity are compared with spikebench's count of
the hidden layers' connections (the graph is exported without the readout, which snnTorch cannot run).
NeuroBench is a test-only package, installed without its declared dependencies."""

import pytest
import torch

from spikebench.data.encoders import Direct, Encoding, Rate
from spikebench.dynamics import LIFParams
from spikebench.nn import Network
from spikebench.nn.nir_io import to_nir
from spikebench.train.efficiency import measure

pytest.importorskip("nir")
pytest.importorskip("snntorch")
pytest.importorskip("neurobench")


@pytest.mark.parametrize("encoder", ["direct", "rate"])
def test_synaptic_operations_and_sparsity_equal_neurobench(encoder):
    from neurobench.benchmarks import Benchmark
    from neurobench.metrics.workload import ActivationSparsity, SynapticOperations
    from neurobench.models import SNNTorchModel
    from snntorch.import_nir import import_from_nir

    torch.manual_seed(0)
    net = Network.mlp(
        20, (16, 12), 4, recurrent=False, params=LIFParams(alpha=0.9, theta=0.3, reset="zero"), kappa=0.8
    )
    with torch.no_grad():
        net.layers[0].weight.mul_(3)
        net.layers[1].weight[0, :5] = 0.0  # zero weights count in neither
    x = torch.rand(24, 20)
    x[:, :3] = 0.0
    enc = Encoding(Direct() if encoder == "direct" else Rate(), 10, torch.Generator().manual_seed(5))
    ours = measure(net, x, enc, batch_size=24)
    enc.gen.manual_seed(5)
    seq = enc.sequence(x).transpose(0, 1).contiguous()  # NeuroBench takes [batch, time, features]
    model = SNNTorchModel(import_from_nir(to_nir(net, readout=False)))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(seq, torch.zeros(24)), batch_size=24)
    theirs = Benchmark(model, loader, [], [], [[], [ActivationSparsity, SynapticOperations]]).run()
    hidden = [c for name, c in ours["connections"].items() if name != "readout"]
    syn = theirs["SynapticOperations"]
    macs = sum(c["effective_ops"] for c in hidden if c["input"] == "analogue")
    acs = sum(c["effective_ops"] for c in hidden if c["input"] == "spikes")
    assert syn["Effective_MACs"] == pytest.approx(macs, rel=1e-9)
    assert syn["Effective_ACs"] == pytest.approx(acs, rel=1e-9)
    assert syn["Dense"] == pytest.approx(sum(c["dense_ops"] for c in hidden), rel=1e-9)
    assert (macs > 0) == (encoder == "direct") and acs > 0
    assert theirs["ActivationSparsity"] == pytest.approx(ours["activation_sparsity"], rel=1e-9)
