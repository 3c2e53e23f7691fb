"""Activations: values and gradients against PyTorch (float64), stability at extreme inputs,
finite-difference gradient checks, the erf behind exact GELU, and the TinyTorch node classes."""

import math
import warnings

import numpy as np
import pytest

import tinytorch as tt
from tinytorch.core import activations, functional
from tinytorch.core.activations import (
    GELU, LeakyReLU, LogSoftmax, ReLU, SiLU, Sigmoid, Softmax, Tanh,
)
from tinytorch.core.autograd import (
    GELUBackward, ReLUBackward, SigmoidBackward, SoftmaxBackward, grad, gradcheck,
)
from tinytorch.core.tensor import Tensor

from op_helpers import leaf

RNG = np.random.default_rng(1234)
NORMAL = RNG.standard_normal((4, 5)) * 3.0
EXTREME = np.array([[-1e4, -1e-8, 0.0, 1e-8, 1e4],
                    [-40.0, -5.0, -0.5, 5.0, 40.0]])
REL, ABS = 1e-9, 1e-13


# (id, ours, PyTorch) for the elementwise activations; PyTorch's side takes the torch module.
ELEMENTWISE = [
    ("relu", functional.relu, lambda torch, x: torch.relu(x)),
    ("sigmoid", functional.sigmoid, lambda torch, x: torch.sigmoid(x)),
    ("tanh", functional.tanh, lambda torch, x: torch.tanh(x)),
    ("gelu", functional.gelu, lambda torch, x: torch.nn.functional.gelu(x)),
    ("gelu_tanh", lambda x: functional.gelu(x, approximate="tanh"),
     lambda torch, x: torch.nn.functional.gelu(x, approximate="tanh")),
    ("leaky_relu", functional.leaky_relu, lambda torch, x: torch.nn.functional.leaky_relu(x)),
    ("leaky_relu_0.2", lambda x: functional.leaky_relu(x, 0.2),
     lambda torch, x: torch.nn.functional.leaky_relu(x, 0.2)),
    ("silu", functional.silu, lambda torch, x: torch.nn.functional.silu(x)),
]


def ours_and_grad(fn, data, weights):
    x = leaf(data)
    y = fn(x)
    (y * Tensor(weights, dtype=np.float64)).sum().backward()
    return y.data, x.grad.data


def torch_and_grad(torch, fn, data, weights):
    x = torch.tensor(data, dtype=torch.float64, requires_grad=True)
    y = fn(torch, x)
    (y * torch.tensor(weights)).sum().backward()
    return y.detach().numpy(), x.grad.numpy()


@pytest.mark.parametrize("data", [NORMAL, EXTREME], ids=["normal", "extreme"])
@pytest.mark.parametrize("name,ours,theirs", ELEMENTWISE, ids=[e[0] for e in ELEMENTWISE])
def test_elementwise_matches_torch(torch, name, ours, theirs, data):
    weights = RNG.standard_normal(data.shape)
    value, gradient = ours_and_grad(ours, data, weights)
    expected_value, expected_gradient = torch_and_grad(torch, theirs, data, weights)
    np.testing.assert_allclose(value, expected_value, rtol=REL, atol=ABS)
    np.testing.assert_allclose(gradient, expected_gradient, rtol=REL, atol=ABS)


@pytest.mark.parametrize("dim", [0, 1, 2, -1, -2, -3])
@pytest.mark.parametrize("kind", ["softmax", "log_softmax"])
@pytest.mark.parametrize("scale", [3.0, 1e4, 1e-8], ids=["normal", "1e4", "1e-8"])
def test_softmax_family_matches_torch_along_every_dim(torch, kind, dim, scale):
    data = RNG.standard_normal((3, 4, 5)) * scale
    data[0, 0, 0] = 0.0
    weights = RNG.standard_normal(data.shape)
    ours = getattr(functional, kind)
    value, gradient = ours_and_grad(lambda x: ours(x, dim=dim), data, weights)
    expected_value, expected_gradient = torch_and_grad(
        torch, lambda torch, x: getattr(torch.nn.functional, kind)(x, dim=dim), data, weights)
    np.testing.assert_allclose(value, expected_value, rtol=REL, atol=ABS)
    np.testing.assert_allclose(gradient, expected_gradient, rtol=REL, atol=ABS)


SECOND_ORDER = [
    ("sigmoid", functional.sigmoid, lambda torch, x: torch.sigmoid(x)),
    ("gelu", functional.gelu, lambda torch, x: torch.nn.functional.gelu(x)),
    ("gelu_tanh", lambda x: functional.gelu(x, approximate="tanh"),
     lambda torch, x: torch.nn.functional.gelu(x, approximate="tanh")),
    ("silu", functional.silu, lambda torch, x: torch.nn.functional.silu(x)),
    ("softmax", lambda x: functional.softmax(x, dim=0),
     lambda torch, x: torch.softmax(x, dim=0)),
    ("log_softmax", lambda x: functional.log_softmax(x, dim=1),
     lambda torch, x: torch.log_softmax(x, dim=1)),
]


@pytest.mark.parametrize("name,ours,theirs", SECOND_ORDER, ids=[e[0] for e in SECOND_ORDER])
def test_gradient_rules_are_differentiable_again(torch, name, ours, theirs):
    data = RNG.standard_normal((3, 4)) * 2.0
    w1, w2 = RNG.standard_normal(data.shape), RNG.standard_normal(data.shape)
    x = leaf(data)
    (first,) = grad((ours(x) * Tensor(w1, dtype=np.float64)).sum(), [x], create_graph=True)
    (first * Tensor(w2, dtype=np.float64)).sum().backward()
    tx = torch.tensor(data, requires_grad=True)
    (tfirst,) = torch.autograd.grad((theirs(torch, tx) * torch.tensor(w1)).sum(), [tx],
                                    create_graph=True)
    (tfirst * torch.tensor(w2)).sum().backward()
    np.testing.assert_allclose(first.data, tfirst.detach().numpy(), rtol=REL, atol=ABS)
    np.testing.assert_allclose(x.grad.data, tx.grad.numpy(), rtol=1e-8, atol=1e-12)


# ----- stability without PyTorch: exact limits at +-1e4, no floating-point warnings ---------------

@pytest.mark.parametrize("fn,at_minus,at_plus,slope_minus,slope_plus", [
    (functional.relu, 0.0, 1e4, 0.0, 1.0),
    (functional.sigmoid, 0.0, 1.0, 0.0, 0.0),
    (functional.tanh, -1.0, 1.0, 0.0, 0.0),
    (functional.gelu, 0.0, 1e4, 0.0, 1.0),
    (lambda x: functional.gelu(x, approximate="tanh"), 0.0, 1e4, 0.0, 1.0),
    (functional.leaky_relu, -100.0, 1e4, 0.01, 1.0),
    (functional.silu, 0.0, 1e4, 0.0, 1.0),
])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_elementwise_limits_at_plus_minus_1e4_are_exact(fn, at_minus, at_plus, slope_minus,
                                                         slope_plus, dtype):
    x = Tensor([-1e4, 1e4], dtype=dtype, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = fn(x)
        y.sum().backward()
    assert y.dtype == dtype and x.grad.dtype == dtype
    np.testing.assert_allclose(y.data, [at_minus, at_plus], rtol=1e-6, atol=0)
    np.testing.assert_allclose(x.grad.data, [slope_minus, slope_plus], rtol=1e-6, atol=0)


@pytest.mark.parametrize("fn", [functional.gelu, functional.silu, functional.sigmoid,
                                lambda x: functional.gelu(x, approximate="tanh"),
                                lambda x: functional.softmax(x, dim=0),
                                lambda x: functional.log_softmax(x, dim=0)])
def test_no_overflow_warning_anywhere_in_the_float_range(fn):
    x = leaf([-1e300, -1e30, -1e4, 1e4, 1e30, 1e300])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = fn(x)
        (y * Tensor(np.arange(6.0), dtype=np.float64)).sum().backward()
    assert np.isfinite(y.data).all() and np.isfinite(x.grad.data).all()


def test_softmax_and_log_softmax_at_plus_minus_1e4():
    x = leaf([[1e4, -1e4, 1e4]])
    np.testing.assert_array_equal(functional.softmax(x).data, [[0.5, 0.0, 0.5]])
    np.testing.assert_allclose(functional.log_softmax(x).data,
                               [[-math.log(2), -2e4 - math.log(2), -math.log(2)]], rtol=1e-15)
    functional.log_softmax(x)[0, 1].backward()          # d/dx (x1 - lse) = e_1 - softmax
    np.testing.assert_allclose(x.grad.data, [[-0.5, 1.0, -0.5]], rtol=1e-15)


def test_softmax_rows_sum_to_one_and_are_shift_invariant():
    data = RNG.standard_normal((6, 7)) * 10
    y = functional.softmax(leaf(data), dim=1).data
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-14)
    np.testing.assert_allclose(functional.softmax(leaf(data + 500.0), dim=1).data, y, rtol=1e-12)


# ----- finite differences ------------------------------------------------------------------------

AWAY_FROM_KINKS = np.where(np.abs(NORMAL) < 0.1, 0.5, NORMAL)


@pytest.mark.parametrize("fn", [
    functional.relu, functional.sigmoid, functional.tanh, functional.gelu,
    lambda x: functional.gelu(x, approximate="tanh"), functional.leaky_relu,
    lambda x: functional.leaky_relu(x, 0.3), functional.silu, functional.erf,
    lambda x: functional.softmax(x, dim=0), lambda x: functional.softmax(x, dim=-1),
    lambda x: functional.log_softmax(x, dim=0), lambda x: functional.log_softmax(x, dim=1),
], ids=["relu", "sigmoid", "tanh", "gelu", "gelu_tanh", "leaky_relu", "leaky_relu_0.3", "silu",
        "erf", "softmax0", "softmax-1", "log_softmax0", "log_softmax1"])
def test_gradcheck(fn):
    assert gradcheck(fn, [leaf(AWAY_FROM_KINKS)])


@pytest.mark.parametrize("cls,args", [
    (ReLU, ()), (Sigmoid, ()), (Tanh, ()), (GELU, ()), (GELU, ("tanh",)), (Softmax, (0,)),
    (LogSoftmax, (1,)), (LeakyReLU, (0.2,)), (SiLU, ()),
])
def test_classes_match_functions_and_have_no_parameters(cls, args):
    function = {ReLU: functional.relu, Sigmoid: functional.sigmoid, Tanh: functional.tanh,
                GELU: functional.gelu, Softmax: functional.softmax,
                LogSoftmax: functional.log_softmax, LeakyReLU: functional.leaky_relu,
                SiLU: functional.silu}[cls]
    layer = cls(*args)
    x = leaf(NORMAL, requires_grad=False)
    np.testing.assert_array_equal(layer(x).data, layer.forward(x).data)
    np.testing.assert_array_equal(layer(x).data, function(x, *args).data)
    assert layer.parameters() == []


def test_module_exports_the_functions_too():
    for name in ("relu", "sigmoid", "tanh", "gelu", "softmax", "log_softmax", "leaky_relu",
                 "silu"):
        assert getattr(activations, name) is getattr(functional, name)


def test_softmax_forward_dim_overrides_the_layer_default():
    x = leaf(NORMAL, requires_grad=False)
    layer = Softmax(dim=0)
    np.testing.assert_allclose(layer(x).data.sum(axis=0), 1.0, rtol=1e-14)
    np.testing.assert_allclose(layer.forward(x, dim=-1).data.sum(axis=1), 1.0, rtol=1e-14)


def test_activations_accept_arrays_and_keep_float32():
    y = Sigmoid()(np.zeros(3))
    assert isinstance(y, Tensor) and y.dtype == np.float32
    np.testing.assert_array_equal(y.data, [0.5, 0.5, 0.5])


def test_bad_arguments_are_reported():
    with pytest.raises(ValueError, match="approximate"):
        GELU(approximate="fast")
    with pytest.raises(ValueError, match="approximate"):
        functional.gelu(leaf([1.0]), approximate="erf")
    with pytest.raises(IndexError, match="dim 2 is out of range for a tensor with 2 dims"):
        functional.softmax(leaf(NORMAL), dim=2)
    with pytest.raises(TypeError, match="dim must be an int"):
        functional.log_softmax(leaf(NORMAL), dim=None)


# ----- erf and the exact GELU ---------------------------------------------------------------------

ERF_GRID = np.concatenate([np.linspace(-7, 7, 2801), [-1e-300, 1e-300, 1e-12, 0.0, 20.0, -20.0]])


def test_erf_matches_math_erf_to_a_few_ulp():
    ours = functional.erf(leaf(ERF_GRID, requires_grad=False)).data
    expected = np.array([math.erf(v) for v in ERF_GRID])
    np.testing.assert_allclose(ours, expected, rtol=5e-16, atol=0)


def test_normal_cdf_is_accurate_in_the_far_tails():
    x = np.concatenate([np.linspace(-37, 8, 901), [-1e-8, 1e-8]])
    ours = functional.gelu(leaf(x, requires_grad=False)).data
    expected = np.array([v * 0.5 * math.erfc(-v / math.sqrt(2)) for v in x])
    np.testing.assert_allclose(ours, expected, rtol=2e-13, atol=0)


def test_erf_against_high_precision():
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 40
    x = np.concatenate([np.linspace(-6, 6, 241), np.linspace(3.9, 4.1, 41), [1e-200, -1e-10]])
    ours = functional.erf(leaf(x, requires_grad=False)).data
    expected = np.array([float(mpmath.erf(mpmath.mpf(v))) for v in x])
    np.testing.assert_allclose(ours, expected, rtol=5e-16, atol=0)


def test_erf_special_values():
    y = functional.erf(leaf([np.inf, -np.inf, np.nan, 0.0, -0.0], requires_grad=False)).data
    assert y[0] == 1.0 and y[1] == -1.0 and np.isnan(y[2])
    assert y[3] == 0.0 and np.signbit(y[4])


def test_erf_matches_torch(torch):
    ours = functional.erf(leaf(ERF_GRID, requires_grad=False)).data
    np.testing.assert_allclose(ours, torch.erf(torch.tensor(ERF_GRID)).numpy(), rtol=1e-15,
                               atol=1e-300)


# ----- the TinyTorch node classes, used standalone as in the autograd module ----------------------

def test_spec_relu_and_sigmoid_nodes():
    x = Tensor([-2.0, 3.0], requires_grad=True)
    (g,) = ReLUBackward(x).apply(np.array([5.0, 7.0]))
    np.testing.assert_array_equal(g, [0.0, 7.0])
    out = functional.sigmoid(x)
    (g,) = SigmoidBackward(x, out).apply(np.ones(2))
    np.testing.assert_allclose(g, out.data * (1 - out.data), rtol=1e-6)


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_spec_softmax_node_applies_the_softmax_jacobian(dim):
    x = leaf(NORMAL)
    out = functional.softmax(x, dim=dim)
    upstream = RNG.standard_normal(NORMAL.shape)
    (g,) = SoftmaxBackward(x, out, dim).apply(upstream)
    s = out.data
    expected = s * (upstream - (upstream * s).sum(axis=dim, keepdims=True))
    np.testing.assert_allclose(g, expected, rtol=1e-12)


def test_spec_gelu_node_is_the_derivative_of_the_exact_gelu():
    data = np.array([-3.0, -0.5, 0.0, 0.7, 2.0])
    (g,) = GELUBackward(leaf(data)).apply(np.ones(5))
    phi = np.exp(-data ** 2 / 2) / math.sqrt(2 * math.pi)
    cdf = np.array([0.5 * math.erfc(-v / math.sqrt(2)) for v in data])
    np.testing.assert_allclose(g, cdf + data * phi, rtol=1e-14)
    (g_tanh,) = GELUBackward(leaf(data), approximate="tanh").apply(np.ones(5))
    u = math.sqrt(2 / math.pi) * (data + 0.044715 * data ** 3)
    du = math.sqrt(2 / math.pi) * (1 + 3 * 0.044715 * data ** 2)
    expected = 0.5 * (1 + np.tanh(u)) + 0.5 * data * (1 - np.tanh(u) ** 2) * du
    np.testing.assert_allclose(g_tanh, expected, rtol=1e-12)


def test_nodes_are_recorded_and_usable_from_tinytorch():
    x = tt.Tensor([[1.0, 2.0]], requires_grad=True)
    assert isinstance(functional.softmax(x).grad_fn, SoftmaxBackward)
    assert isinstance(functional.gelu(x).grad_fn, GELUBackward)
