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


@pytest.mark.parametrize("name", SURROGATES.names())
@pytest.mark.parametrize("scale", [0.7, 5.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_in_place_derivative_equals_derivative_bit_for_bit(name, scale, dtype):
    """``derivative_`` (the fused scan's backward pass) writes exactly ``derivative``'s values over its
    argument, including at 0, at the triangle's kinks and far from threshold."""
    s = SURROGATES.get(name)(scale=scale)
    g = torch.Generator().manual_seed(1)
    special = torch.tensor([0.0, -0.0, 1e-30, -1e30, 1 / scale, -1 / scale, 1e30])
    x = torch.cat([torch.randn(20_001, generator=g) * 3, special]).to(dtype)
    y = x.clone()
    out = s.derivative_(y)
    assert out.data_ptr() == y.data_ptr()
    assert torch.equal(y, s.derivative(x))
    assert not torch.equal(y, x)
