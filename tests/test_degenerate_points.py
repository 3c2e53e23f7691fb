"""Gradients at degenerate points (zero, ties, NaN, inf) equal PyTorch's, in float64.

Every rule that divides by, or compares with, a value that can be zero, NaN or tied is checked
where its formula breaks down: the gradient must be PyTorch's finite subgradient wherever
PyTorch gives a number. Where PyTorch gives NaN and the mathematics gives a number, the
mathematics wins, with the reason beside the case.
"""

import warnings

import numpy as np
import pytest

import tinytorch as tt
from tinytorch.core import functional as F

NAN, INF = float("nan"), float("inf")

# name -> (tinytorch expression, torch expression or None when it reads the same, inputs)
CASES = {
    "std_of_equal_values": (lambda x: x.std(), lambda x: x.std(correction=0), [[2.0, 2.0, 2.0]]),
    "std_with_correction_of_equal_values": (lambda x: x.std(correction=1), None,
                                            [[2.0, 2.0, 2.0]]),
    "std_of_one_constant_row": (lambda x: x.std(axis=1), lambda x: x.std(dim=1, correction=0),
                                [[[1.0, 1.0], [1.0, 3.0]]]),
    "std_of_constant_columns": (lambda x: x.std(axis=0, keepdims=True),
                                lambda x: x.std(dim=0, keepdim=True, correction=0),
                                [[[1.0, 5.0, 0.3], [1.0, 5.0, 0.7]]]),
    "standardise_constant_row": (
        lambda x: (x - x.mean(axis=1, keepdims=True)) / (x.std(axis=1, keepdims=True) + 1e-5),
        lambda x: (x - x.mean(1, keepdim=True)) / (x.std(1, keepdim=True, correction=0) + 1e-5),
        [[[3.0, 3.0, 3.0], [1.0, 2.0, 4.0]]]),
    "var_of_equal_values": (lambda x: x.var(), lambda x: x.var(correction=0), [[2.0, 2.0, 2.0]]),
    "var_with_nan": (lambda x: x.var(), lambda x: x.var(correction=0), [[1.0, NAN, 2.0]]),
    "max_with_nan": (lambda x: x.max(), None, [[1.0, NAN, 2.0]]),
    "max_with_two_nans": (lambda x: x.max(), None, [[NAN, 1.0, NAN]]),
    "min_with_nan": (lambda x: x.min(), None, [[1.0, NAN, 2.0]]),
    "max_ties": (lambda x: x.max(), None, [[3.0, 1.0, 3.0]]),
    "max_ties_along_axis": (lambda x: x.max(axis=1), lambda x: x.amax(dim=1),
                            [[[3.0, 1.0, 3.0], [2.0, 2.0, 2.0]]]),
    "min_ties_along_axis": (lambda x: x.min(axis=0), lambda x: x.amin(dim=0),
                            [[[3.0, 1.0], [3.0, 1.0], [0.0, 1.0]]]),
    "amax_with_infinities": (lambda x: x.amax(axis=1), lambda x: x.amax(dim=1),
                             [[[INF, 1.0, INF], [-INF, -INF, -INF]]]),
    "sqrt_at_zero": (lambda x: x.sqrt(), None, [[0.0, 1.0]]),
    "pow_half_at_zero": (lambda x: x ** 0.5, None, [[0.0]]),
    "pow_zero_at_zero": (lambda x: x ** 0, None, [[0.0, 2.0]]),
    "pow_minus_one_at_zero": (lambda x: x ** -1.0, None, [[0.0]]),
    "pow_two_at_zero": (lambda x: x ** 2, None, [[0.0, -0.0]]),
    "pow_tensor_exponent_at_zero_base": (lambda a, b: a ** b, None,
                                         [[0.0, 0.0, 0.0, 0.0, 2.0], [-1.0, 0.0, 1.0, 2.0, 0.0]]),
    "pow_number_base_zero": (lambda b: 0.0 ** b, None, [[-1.0, 0.0, 1.0, 2.5]]),
    "abs_at_zero_and_nan": (lambda x: x.abs(), None, [[0.0, -0.0, NAN, -1.0]]),
    "clip_at_bounds_nan_and_inf": (lambda x: x.clip(-1.0, 1.0), lambda x: x.clamp(-1.0, 1.0),
                                   [[-1.0, 1.0, NAN, 2.0, -INF, INF]]),
    "maximum_ties_and_nans": (lambda a, b: a.maximum(b), lambda a, b: a.maximum(b),
                              [[1.0, NAN, 2.0, 1.0, NAN], [1.0, 1.0, NAN, NAN, NAN]]),
    "minimum_ties_and_nans": (lambda a, b: a.minimum(b), lambda a, b: a.minimum(b),
                              [[1.0, NAN, 2.0, 1.0, NAN], [1.0, 1.0, NAN, NAN, NAN]]),
    "relu_at_zero_and_nan": (lambda x: x.relu(), None, [[0.0, -0.0, NAN, -1.0, 1.0]]),
    "leaky_relu_at_zero_and_nan": (lambda x: F.leaky_relu(x, 0.1),
                                   lambda x: _torch().nn.functional.leaky_relu(x, 0.1),
                                   [[0.0, NAN, -2.0, 0.5]]),
    "sigmoid_at_infinities": (lambda x: x.sigmoid(), None, [[INF, -INF]]),
    "tanh_at_infinities": (lambda x: x.tanh(), None, [[INF, -INF]]),
    "log_at_zero": (lambda x: x.log(), None, [[0.0, 1.0]]),
    "division_by_zero": (lambda a, b: a / b, None, [[1.0, -1.0], [0.0, 0.0]]),
    "norm_chain_away_from_zero": (lambda x: (x * x).sum().sqrt(), None, [[3.0, 4.0]]),
    "log_softmax_with_minus_inf": (lambda x: F.log_softmax(x, dim=-1),
                                   lambda x: x.log_softmax(dim=-1), [[[0.0, -INF, 1.0]]]),
    "softmax_with_minus_inf": (lambda x: F.softmax(x, dim=-1), lambda x: x.softmax(dim=-1),
                               [[[0.0, -INF, 1.0]]]),
    "mean_with_nan": (lambda x: x.mean(), None, [[NAN, 1.0]]),
    "where_with_nan_and_inf_in_the_unselected_branches": (
        lambda a, b: tt.where(np.array([True, False, True]), a, b),
        lambda a, b: _torch().where(_torch().tensor([True, False, True]), a, b),
        [[1.0, INF, -2.0], [NAN, 2.0, -INF]]),
    "where_never_selecting_a_branch": (
        lambda a, b: tt.where(np.array([True, True]), a, b),
        lambda a, b: _torch().where(_torch().tensor([True, True]), a, b),
        [[3.0, 1.0], [INF]]),
    "where_with_broadcast_nan_branch": (
        lambda a, b: tt.where(np.array([[True, False], [True, True]]), a, b),
        lambda a, b: _torch().where(_torch().tensor([[True, False], [True, True]]), a, b),
        [[[1.0, 2.0], [3.0, 4.0]], [[NAN], [5.0]]]),
    # inf/NaN gradients arriving at positions an op blocks must not become 0 * inf = NaN
    "log_of_relu": (lambda x: x.relu().log(), None, [[-1.0, 0.0, 2.0]]),
    "sqrt_of_clip": (lambda x: x.clip(min=0.0).sqrt(), lambda x: x.clamp(min=0.0).sqrt(),
                     [[-1.0, 0.0, 4.0]]),
    # torch.amax(dim) multiplies by its mask (0 * inf = NaN); torch.max(dim) selects, as we do
    "reciprocal_of_max": (lambda x: 1.0 / x.max(axis=1), lambda x: 1.0 / x.max(dim=1).values,
                          [[[0.0, -1.0], [2.0, 1.0]]]),
    "reciprocal_of_maximum": (lambda a, b: 1.0 / a.maximum(b), lambda a, b: 1.0 / a.maximum(b),
                              [[0.0, 1.0], [-1.0, 2.0]]),
    "log_of_gathered": (lambda x: x[np.array([0, 0, 2])].log(), None, [[0.0, 5.0, 1.0]]),
}

# Where PyTorch gives NaN but the mathematics gives a number, we differ on purpose:
# name -> (tinytorch expression, inputs, expected gradients)
DELIBERATE = {
    # torch.amax(dim) gives NaN gradients to a slice whose max is NaN; the NaN positions
    # produced the result, so they share its gradient (as torch.max() without dim does).
    "amax_with_nan_along_axis": (lambda x: x.amax(axis=1), [[[1.0, NAN, 2.0], [1.0, 3.0, 3.0]]],
                                 [[[0.0, 1.0, 0.0], [0.0, 0.5, 0.5]]]),
    # torch's std of seven 0.1s is 1.4e-17 (rounding), and its gradient (x - mean) / (N std)
    # then is rounding noise divided by rounding noise: 1/7 each. The values are equal, so the
    # standard deviation is 0 and its subgradient 0, which we compute exactly.
    "std_of_equal_inexact_values": (lambda x: x.std(), [[0.1] * 7], [[0.0] * 7]),
}


def _torch():
    import torch
    return torch


def _ours(fn, arrays):
    inputs = [tt.Tensor(np.array(a, dtype=np.float64), dtype=np.float64, requires_grad=True)
              for a in arrays]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)     # NaN/inf inputs on purpose
        out = fn(*inputs)
        out.sum().backward()
    return out.data, [x.grad.data for x in inputs]


@pytest.mark.parametrize("name", CASES)
def test_gradient_at_degenerate_point_matches_torch(name, torch):
    ours_fn, torch_fn, arrays = CASES[name]
    torch_fn = torch_fn or ours_fn
    values, grads = _ours(ours_fn, arrays)
    inputs = [torch.tensor(np.array(a, dtype=np.float64), requires_grad=True) for a in arrays]
    expected = torch_fn(*inputs)
    expected.sum().backward()
    np.testing.assert_allclose(values, expected.detach().numpy(), rtol=1e-12, atol=1e-12,
                               err_msg=f"{name}: values")
    for i, (g, x) in enumerate(zip(grads, inputs)):
        np.testing.assert_allclose(g, x.grad.numpy(), rtol=1e-12, atol=1e-12,
                                   err_msg=f"{name}: gradient of input {i}")


@pytest.mark.parametrize("name", DELIBERATE)
def test_gradient_where_we_differ_from_torch_on_purpose(name):
    fn, arrays, expected = DELIBERATE[name]
    _, grads = _ours(fn, arrays)
    for g, e in zip(grads, expected):
        np.testing.assert_array_equal(g, e)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("value", [0.1, 1 / 3, 0.7, 1e-8, 12345.678, -2.5])
@pytest.mark.parametrize("n", [3, 7, 1000])
def test_std_of_a_constant_row_is_exactly_zero_with_zero_gradient(dtype, value, n):
    x = tt.Tensor(np.full((2, n), value), dtype=dtype, requires_grad=True)
    std = x.std(axis=1)
    std.sum().backward()
    assert not std.data.any(), "a slice of equal values has a standard deviation of exactly 0"
    assert not x.grad.data.any() and np.isfinite(x.grad.data).all()


def test_standardising_a_constant_row_keeps_shared_parameters_finite():
    """The example of the report: a layer standardises its output rows; one row is constant."""
    w = tt.Tensor(np.array([[1.0, 2.0], [0.5, -1.0]]), dtype=np.float64, requires_grad=True)
    x = tt.Tensor(np.array([[0.0, 0.0], [1.0, 2.0]]), dtype=np.float64)
    h = x @ w
    z = (h - h.mean(axis=1, keepdims=True)) / (h.std(axis=1, keepdims=True) + 1e-6)
    (z * z).sum().backward()
    assert np.isfinite(w.grad.data).all()


def test_std_second_order_gradient_is_finite_at_a_constant_row():
    x = tt.Tensor([1.0, 1.0, 1.0], dtype=np.float64, requires_grad=True)
    (g,) = tt.autograd.grad(x.std(), x, create_graph=True)
    (gg,) = tt.autograd.grad(g.sum(), x)
    assert np.isfinite(gg.data).all()


def test_relu_node_built_directly_still_works_from_its_input():
    """The curriculum builds ReLUBackward(x) by hand and calls apply()."""
    from tinytorch.core.autograd import ReLUBackward
    x = tt.Tensor([-2.0, 0.0, 3.0, float("nan")], requires_grad=True)
    (g,) = ReLUBackward(x).apply(np.array([5.0, 6.0, 7.0, 8.0]))
    np.testing.assert_array_equal(g, [0.0, 0.0, 7.0, 8.0])
