"""Zero-size and 0-d tensors: every op, activation, loss, reduction and matmul treats them as
PyTorch does, forward and backward (float64, PyTorch as the oracle).

Where PyTorch refuses an input (max over an empty axis, layer norm over no axis), we raise a
clear error too.
"""

import warnings

import numpy as np
import pytest

import tinytorch as tt
from tinytorch.core import activations, losses
from tinytorch.core import functional as F

SHAPES = [(0, 3), (3, 0), (), (0,)]


def _zeros_like_target(torch, x):
    return torch.zeros(x.shape, dtype=torch.float64)


def _torch_class_targets(torch, x):
    return torch.zeros(x.shape[:1], dtype=torch.long)


# name -> (tinytorch expression, torch expression of (torch, x))
UNARY = {
    "relu": (lambda x: x.relu(), lambda torch, x: x.relu()),
    "sigmoid": (lambda x: x.sigmoid(), lambda torch, x: x.sigmoid()),
    "tanh": (lambda x: x.tanh(), lambda torch, x: x.tanh()),
    "gelu": (lambda x: F.gelu(x), lambda torch, x: torch.nn.functional.gelu(x)),
    "gelu_tanh": (lambda x: F.gelu(x, approximate="tanh"),
                  lambda torch, x: torch.nn.functional.gelu(x, approximate="tanh")),
    "gelu_module": (lambda x: activations.GELU()(x), lambda torch, x: torch.nn.functional.gelu(x)),
    "erf": (lambda x: F.erf(x), lambda torch, x: torch.erf(x)),
    "silu": (lambda x: F.silu(x), lambda torch, x: torch.nn.functional.silu(x)),
    "leaky_relu": (lambda x: F.leaky_relu(x), lambda torch, x: torch.nn.functional.leaky_relu(x)),
    "softmax_last": (lambda x: F.softmax(x, dim=-1), lambda torch, x: torch.softmax(x, -1)),
    "softmax_first": (lambda x: F.softmax(x, dim=0), lambda torch, x: torch.softmax(x, 0)),
    "softmax_module": (lambda x: activations.Softmax()(x), lambda torch, x: torch.softmax(x, -1)),
    "log_softmax_last": (lambda x: F.log_softmax(x, dim=-1),
                         lambda torch, x: torch.log_softmax(x, -1)),
    "log_softmax_first": (lambda x: F.log_softmax(x, dim=0),
                          lambda torch, x: torch.log_softmax(x, 0)),
    "exp": (lambda x: x.exp(), lambda torch, x: x.exp()),
    "log": (lambda x: x.log(), lambda torch, x: x.log()),
    "sqrt": (lambda x: x.sqrt(), lambda torch, x: x.sqrt()),
    "abs": (lambda x: x.abs(), lambda torch, x: x.abs()),
    "sin": (lambda x: x.sin(), lambda torch, x: x.sin()),
    "clip": (lambda x: x.clip(-1.0, 1.0), lambda torch, x: x.clamp(-1.0, 1.0)),
    "pow": (lambda x: x ** 3, lambda torch, x: x ** 3),
    "sum": (lambda x: x.sum(), lambda torch, x: x.sum()),
    "sum_first_axis": (lambda x: x.sum(axis=0), lambda torch, x: x.sum(0)),
    "sum_last_axis_keepdims": (lambda x: x.sum(axis=-1, keepdims=True),
                               lambda torch, x: x.sum(-1, keepdim=True)),
    "mean": (lambda x: x.mean(), lambda torch, x: x.mean()),
    "mean_first_axis": (lambda x: x.mean(axis=0), lambda torch, x: x.mean(0)),
    "mean_last_axis": (lambda x: x.mean(axis=-1), lambda torch, x: x.mean(-1)),
    "max": (lambda x: x.max(), lambda torch, x: x.amax()),
    "max_first_axis": (lambda x: x.max(axis=0), lambda torch, x: x.amax(0)),
    "min_last_axis": (lambda x: x.min(axis=-1), lambda torch, x: x.amin(-1)),
    "var": (lambda x: x.var(), lambda torch, x: x.var(correction=0)),
    "var_last_axis": (lambda x: x.var(axis=-1), lambda torch, x: x.var(-1, correction=0)),
    "std_first_axis": (lambda x: x.std(axis=0), lambda torch, x: x.std(0, correction=0)),
    "layer_norm": (lambda x: F.layer_norm(x, x.shape[-1:]),
                   lambda torch, x: torch.nn.functional.layer_norm(x, x.shape[-1:])),
    "mse_loss": (lambda x: F.mse_loss(x, np.zeros(x.shape)),
                 lambda torch, x: torch.nn.functional.mse_loss(x, _zeros_like_target(torch, x))),
    "mse_loss_sum": (lambda x: F.mse_loss(x, np.zeros(x.shape), reduction="sum"),
                     lambda torch, x: torch.nn.functional.mse_loss(
                         x, _zeros_like_target(torch, x), reduction="sum")),
    "mse_module": (lambda x: losses.MSELoss()(x, tt.zeros(x.shape, dtype=np.float64)),
                   lambda torch, x: torch.nn.functional.mse_loss(x, _zeros_like_target(torch, x))),
    "binary_cross_entropy": (
        lambda x: F.binary_cross_entropy(x.sigmoid(), np.ones(x.shape)),
        lambda torch, x: torch.nn.functional.binary_cross_entropy(
            x.sigmoid(), torch.ones(x.shape, dtype=torch.float64))),
    "bce_with_logits": (
        lambda x: F.binary_cross_entropy_with_logits(x, np.zeros(x.shape)),
        lambda torch, x: torch.nn.functional.binary_cross_entropy_with_logits(
            x, _zeros_like_target(torch, x))),
    "cross_entropy": (lambda x: F.cross_entropy(x, np.zeros(x.shape[:1], dtype=np.int64)),
                      lambda torch, x: torch.nn.functional.cross_entropy(
                          x, _torch_class_targets(torch, x))),
    "cross_entropy_none": (
        lambda x: losses.CrossEntropyLoss(reduction="none")(
            x, np.zeros(x.shape[:1], dtype=np.int64)),
        lambda torch, x: torch.nn.functional.cross_entropy(
            x, _torch_class_targets(torch, x), reduction="none")),
    "matmul_with_own_transpose": (lambda x: x @ x.T, lambda torch, x: x @ x.T),
    "transpose_matmul": (lambda x: x.T @ x, lambda torch, x: x.T @ x),
    "clone": (lambda x: x.clone(), lambda torch, x: x.clone()),
    "flatten": (lambda x: x.flatten(), lambda torch, x: x.flatten()),
    "unsqueeze": (lambda x: x.unsqueeze(0), lambda torch, x: x.unsqueeze(0)),
}

# name -> (input shapes, tinytorch expression, torch expression of (torch, *inputs))
MULTI = {
    "matmul_empty_rows": ([(0, 3), (3, 2)], lambda a, b: a @ b, lambda torch, a, b: a @ b),
    "matmul_empty_inner": ([(2, 0), (0, 3)], lambda a, b: a @ b, lambda torch, a, b: a @ b),
    "dot_of_empty_vectors": ([(0,), (0,)], lambda a, b: a @ b, lambda torch, a, b: a @ b),
    "empty_vector_times_matrix": ([(0,), (0, 3)], lambda a, b: a @ b, lambda torch, a, b: a @ b),
    "batched_matmul_empty_rows": ([(2, 0, 3), (3, 4)], lambda a, b: a @ b,
                                  lambda torch, a, b: a @ b),
    "batched_matmul_empty_batch": ([(0, 2, 3), (0, 3, 4)], lambda a, b: a @ b,
                                   lambda torch, a, b: a @ b),
    "add_broadcast": ([(0, 3), (3,)], lambda a, b: a + b, lambda torch, a, b: a + b),
    "mul_broadcast": ([(0, 1), (1, 3)], lambda a, b: a * b, lambda torch, a, b: a * b),
    "0d_divided_by_empty": ([(), (0,)], lambda a, b: a / b, lambda torch, a, b: a / b),
    "0d_times_0d": ([(), ()], lambda a, b: a * b, lambda torch, a, b: a * b),
    "maximum_broadcast": ([(0, 3), (3,)], lambda a, b: a.maximum(b),
                          lambda torch, a, b: torch.maximum(a, b)),
    "where_empty": ([(0, 3), (3,)], lambda a, b: tt.where(np.zeros((0, 3), bool), a, b),
                    lambda torch, a, b: torch.where(torch.zeros((0, 3), dtype=torch.bool), a, b)),
    "concatenate_with_empty": ([(0, 3), (2, 3)], lambda a, b: tt.cat([a, b]),
                               lambda torch, a, b: torch.cat([a, b])),
    "stack_empties": ([(0, 3), (0, 3)], lambda a, b: tt.stack([a, b]),
                      lambda torch, a, b: torch.stack([a, b])),
    "index_with_empty_index_array": ([(4, 3)], lambda a: a[np.array([], dtype=np.int64)],
                                     lambda torch, a: a[torch.tensor([], dtype=torch.long)]),
    "reshape_empty": ([(0, 3)], lambda a: a.reshape(3, 0), lambda torch, a: a.reshape(3, 0)),
    "expand_to_empty": ([(1, 3)], lambda a: a.expand(0, 3), lambda torch, a: a.expand(0, 3)),
    "0d_reduction_over_axis_0": ([()], lambda a: a.sum(0, keepdims=True),
                                 lambda torch, a: a.sum(0, keepdim=True)),
    "0d_mean_over_axis_0": ([()], lambda a: a.mean(0), lambda torch, a: a.mean(0)),
    "0d_max_over_axis_0": ([()], lambda a: a.max(0), lambda torch, a: a.amax(0)),
    "0d_bce_module": ([()], lambda a: losses.BinaryCrossEntropyLoss()(a.sigmoid(), tt.tensor(
        1.0, dtype=np.float64)), lambda torch, a: torch.nn.functional.binary_cross_entropy(
        a.sigmoid(), torch.tensor(1.0, dtype=torch.float64))),
    "layer_norm_over_empty_axis": ([(4, 0)], lambda a: F.layer_norm(a, (0,)),
                                   lambda torch, a: torch.nn.functional.layer_norm(a, (0,))),
}


def _array(shape, seed=0):
    return np.random.default_rng(seed).uniform(0.2, 0.8, shape)


def _run_ours(fn, arrays):
    inputs = [tt.Tensor(a, dtype=np.float64, requires_grad=True) for a in arrays]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)          # the mean of nothing is NaN
        out = fn(*inputs)
        out.sum().backward()
    return out, [x.grad for x in inputs]


def _run_torch(torch, fn, arrays):
    inputs = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in arrays]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)     # torch's notes on 0-d .T, empty std
        out = fn(torch, *inputs)
        out.sum().backward()
    return out, [x.grad for x in inputs]


def _compare(torch, ours_fn, torch_fn, arrays, what):
    try:
        expected, expected_grads = _run_torch(torch, torch_fn, arrays)
    except (RuntimeError, IndexError, ValueError):
        with pytest.raises((ValueError, IndexError)):
            _run_ours(ours_fn, arrays)
        return
    out, grads = _run_ours(ours_fn, arrays)
    assert out.shape == tuple(expected.shape), what
    np.testing.assert_allclose(out.data, expected.detach().numpy(), rtol=1e-12, atol=1e-12,
                               err_msg=what)
    for i, (g, e) in enumerate(zip(grads, expected_grads)):
        e = np.zeros(arrays[i].shape) if e is None else e.numpy()
        assert g is not None and g.shape == arrays[i].shape, f"{what}: gradient {i} shape"
        np.testing.assert_allclose(g.data, e, rtol=1e-12, atol=1e-12,
                                   err_msg=f"{what}: gradient {i}")


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("name", UNARY)
def test_op_on_empty_and_0d_tensors_matches_torch(name, shape, torch):
    ours_fn, torch_fn = UNARY[name]
    _compare(torch, ours_fn, torch_fn, [_array(shape)], f"{name} on shape {shape}")


@pytest.mark.parametrize("name", MULTI)
def test_multi_input_op_on_empty_and_0d_tensors_matches_torch(name, torch):
    shapes, ours_fn, torch_fn = MULTI[name]
    arrays = [_array(s, seed) for seed, s in enumerate(shapes)]
    _compare(torch, ours_fn, torch_fn, arrays, name)


def test_log_softmax_of_no_classes_is_empty_with_an_empty_gradient():
    """The example of the report: torch returns an empty (10, 0) result."""
    x = tt.Tensor(np.zeros((10, 0)), requires_grad=True)
    out = F.log_softmax(x, dim=1)
    assert out.shape == (10, 0)
    out.sum().backward()
    assert x.grad.shape == (10, 0)


def test_exact_gelu_of_a_0d_tensor():
    out = activations.GELU()(tt.Tensor(0.5))
    assert out.shape == () and out.dtype == np.float32
    np.testing.assert_allclose(out.item(), 0.5 * 0.6914624612740131, rtol=1e-6)


@pytest.mark.parametrize("name", ["max", "min"])
def test_max_over_an_empty_axis_names_the_shape(name):
    x = tt.Tensor(np.zeros((3, 0)))
    with pytest.raises(ValueError, match=r"\(3, 0\)"):
        getattr(x, name)(axis=1)
    assert getattr(x, name)(axis=0).shape == (0,)


def test_layer_norm_over_no_axis_is_refused():
    with pytest.raises(ValueError, match="normalized_shape"):
        F.layer_norm(tt.Tensor(1.0), ())
