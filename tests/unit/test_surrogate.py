import pytest
import torch

from spikebench.dynamics.surrogate import SURROGATES


@pytest.mark.parametrize("name", SURROGATES.names())
@pytest.mark.parametrize("scale", [0.5, 2.0, 10.0])
def test_backward_is_derivative_of_primitive(name, scale):
    s = SURROGATES.get(name)(scale=scale)
    x = torch.linspace(-2.0, 2.0, 401, dtype=torch.float64)
    x = x[((x * scale).abs() - 1.0).abs() > 1e-3]  # away from the kinks of the triangle
    h = 1e-6
    fd = (s.primitive(x + h) - s.primitive(x - h)) / (2 * h)
    xr = x.clone().requires_grad_(True)
    z = s.spike(xr)
    (g,) = torch.autograd.grad(z.sum(), xr)
    torch.testing.assert_close(g, fd, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(s.derivative(x), fd, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", SURROGATES.names())
def test_forward_is_heaviside_with_unit_peak(name):
    s = SURROGATES.get(name)(scale=3.0)
    x = torch.tensor([-1.0, -1e-9, 0.0, 1e-9, 1.0], dtype=torch.float64)
    assert s.spike(x).tolist() == [0.0, 0.0, 1.0, 1.0, 1.0]
    assert s.derivative(torch.zeros(1, dtype=torch.float64)).item() == pytest.approx(1.0)
