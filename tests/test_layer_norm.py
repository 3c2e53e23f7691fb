"""layer_norm: the fused normalisation op, against finite differences and PyTorch."""

import numpy as np
import pytest

from tinytorch import Tensor
from tinytorch.core.autograd import gradcheck, gradgradcheck
from tinytorch.core.functional import layer_norm

RNG = np.random.default_rng(3)


def f64(array):
    return Tensor(array, dtype=np.float64, requires_grad=True)


@pytest.mark.parametrize("shape, normalized", [((2, 3, 4), (4,)), ((2, 3, 4), (3, 4)), ((5,), (5,))])
def test_layer_norm_gradients_match_finite_differences(shape, normalized):
    x = f64(RNG.standard_normal(shape))
    w, b = f64(RNG.standard_normal(normalized)), f64(RNG.standard_normal(normalized))
    assert gradcheck(lambda x, w, b: layer_norm(x, normalized, w, b), [x, w, b])
    assert gradcheck(lambda x: layer_norm(x, normalized), [x])


def test_layer_norm_second_derivatives():
    x, w, b = f64(RNG.standard_normal((2, 4))), f64(RNG.standard_normal(4)), f64(RNG.standard_normal(4))
    assert gradgradcheck(lambda x, w, b: layer_norm(x, 4, w, b), [x, w, b])


@pytest.mark.parametrize("shape, normalized", [((4, 6, 8), (8,)), ((3, 5), (5,)), ((2, 3, 4), (3, 4))])
def test_layer_norm_matches_torch(shape, normalized):
    torch = pytest.importorskip("torch")
    x, w, b = RNG.standard_normal(shape), RNG.standard_normal(normalized), RNG.standard_normal(normalized)
    upstream = RNG.standard_normal(shape)
    ours = [f64(a) for a in (x, w, b)]
    out = layer_norm(ours[0], normalized, ours[1], ours[2])
    out.backward(upstream)
    theirs = [torch.tensor(a, requires_grad=True) for a in (x, w, b)]
    expected = torch.nn.functional.layer_norm(theirs[0], normalized, theirs[1], theirs[2])
    expected.backward(torch.tensor(upstream))
    np.testing.assert_allclose(out.data, expected.detach().numpy(), rtol=1e-9, atol=1e-12)
    for mine, reference in zip(ours, theirs):
        np.testing.assert_allclose(mine.grad.data, reference.grad.numpy(), rtol=1e-9, atol=1e-12)


def test_layer_norm_keeps_float32_and_handles_constant_rows():
    x = Tensor(np.full((2, 4), 3.0), requires_grad=True)
    out = layer_norm(x, 4)
    assert out.dtype == np.float32 and np.all(out.data == 0)
    out.sum().backward()
    assert np.all(np.isfinite(x.grad.data))


def test_layer_norm_shape_errors_name_the_shapes():
    with pytest.raises(ValueError, match=r"\(3,\).*\(2, 4\)"):
        layer_norm(Tensor(np.ones((2, 4))), 3)
    with pytest.raises(ValueError, match="weight has shape"):
        layer_norm(Tensor(np.ones((2, 4))), 4, weight=Tensor(np.ones(3)))
