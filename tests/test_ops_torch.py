"""Every differentiable op's values and gradients against PyTorch in float64 (the oracle).

The op tables come from ``op_helpers.py`` (shared with the finite-difference tests). Most
expressions read the same in both libraries and run unchanged on torch tensors; the ones torch
spells differently are given in ``TORCH_SPELLING`` below.
"""

import numpy as np
import pytest
from hypothesis import assume, given

torch = pytest.importorskip("torch")

import tinytorch as tt  # noqa: E402
from op_helpers import (  # noqa: E402
    BINARY_OPS, CONSTANT_ROW, INDEX_KEYS, INDEXED_SHAPE, JOIN_OPS, MATMUL_SHAPES,
    NEGATIVE_STEP_EQUIVALENTS, OP_SETTINGS, OPERAND_SHAPES, OPERATORS, REDUCTIONS, SHAPE_OPS,
    SHARED_SUBEXPRESSIONS, UNARY_OPS, WHERE_CASES, WHERE_CONDITION, backward_with,
    broadcastable_pairs, leaf, leaves, matmul_shapes, operand_case, operand_forms, random_array,
    reduced_count, reduction_args, seeds, shapes, torch_operand, with_constant,
)

RTOL, ATOL = 1e-9, 1e-12

# NumPy warns about overflow, 0/0 or log(0): on these valid inputs any such warning is a bug.
pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")


def _tensor(value):
    return torch.as_tensor(np.asarray(value, dtype=np.float64))


# Where torch spells an op differently, its expression; everything else runs unchanged on torch.
TORCH_SPELLING = {
    "copy": lambda t: t.clone(),
    "maximum_with_number": lambda t: torch.maximum(t, _tensor(0.3)),
    "minimum_with_number": lambda t: torch.minimum(t, _tensor(0.3)),
    "transpose_default_last_two": lambda t: t.transpose(-2, -1),
    "T_3d": lambda t: t.permute(2, 1, 0),
    "concatenate_axis0": lambda *ts: torch.cat(ts, dim=0),
    "concatenate_axis1": lambda *ts: torch.cat(ts, dim=1),
    "cat_negative_axis": lambda *ts: torch.cat(ts, dim=-1),
    "cat_dim_keyword": lambda *ts: torch.cat(ts, dim=1),
    "stack_axis0": lambda *ts: torch.stack(ts),
    "stack_last_axis": lambda *ts: torch.stack(ts, dim=-1),
    "stack_dim_keyword": lambda *ts: torch.stack(ts, dim=1),
    "concatenate_with_numpy_array": lambda t: torch.cat([_tensor(CONSTANT_ROW), t]),
    "stack_with_numpy_array": lambda t: torch.stack([t, _tensor(CONSTANT_ROW)], dim=1),
    "same_shapes": lambda a, b: torch.where(torch.as_tensor(WHERE_CONDITION), a, b),
    "broadcast_branches": lambda a, b: torch.where(torch.as_tensor(WHERE_CONDITION), a, b),
    "tensor_condition": lambda a, b: torch.where(torch.as_tensor(WHERE_CONDITION), a, b),
    "condition_from_comparison": lambda a, b: torch.where(a > b, a, b * 2),
    "number_branch": lambda a: torch.where(torch.as_tensor(WHERE_CONDITION), a, 0.5),
    "number_first_branch": lambda a: torch.where(torch.as_tensor(WHERE_CONDITION), -1.0, a),
    "standardise": lambda t: (t - t.mean()) / t.std(correction=0),
}


def torch_version(name, ours):
    return TORCH_SPELLING.get(name, ours)


def assert_close(actual, desired, what):
    np.testing.assert_allclose(actual, desired, rtol=RTOL, atol=ATOL, err_msg=what)


def assert_matches_torch(ours_fn, torch_fn, *arrays):
    """Same output (shape, values) and same gradient for every input as torch, in float64."""
    ours_inputs = leaves(*arrays)
    torch_inputs = [torch.tensor(np.asarray(a, dtype=np.float64), requires_grad=True)
                    for a in arrays]
    out = ours_fn(*ours_inputs)
    expected = torch_fn(*torch_inputs)
    assert isinstance(out, tt.Tensor)
    assert out.dtype == np.float64
    assert out.shape == tuple(expected.shape)
    assert_close(out.data, expected.detach().numpy(), "values")
    upstream = backward_with(out)
    expected.backward(torch.from_numpy(np.array(upstream, dtype=np.float64)))
    for i, (ours, theirs) in enumerate(zip(ours_inputs, torch_inputs)):
        assert ours.grad is not None, f"input {i} got no gradient"
        assert ours.grad.dtype == np.float64
        assert_close(ours.grad.data, theirs.grad.numpy(), f"gradient of input {i}")


# ----- elementwise ops -----------------------------------------------------------------------------

@pytest.mark.parametrize("name", UNARY_OPS)
@OP_SETTINGS
@given(shape=shapes, seed=seeds)
def test_unary_op_matches_torch(name, shape, seed):
    fn, domain = UNARY_OPS[name]
    assert_matches_torch(fn, torch_version(name, fn), random_array(shape, seed, domain))


@pytest.mark.parametrize("name", BINARY_OPS)
@OP_SETTINGS
@given(pair=broadcastable_pairs, seed=seeds)
def test_binary_op_matches_torch_with_broadcasting(name, pair, seed):
    fn, domain_a, domain_b = BINARY_OPS[name]
    shape_a, shape_b = pair.input_shapes
    assert_matches_torch(fn, fn, random_array(shape_a, seed, domain_a),
                         random_array(shape_b, seed + 1, domain_b))


@pytest.mark.parametrize("tensor_shape, array_shape", OPERAND_SHAPES)
@pytest.mark.parametrize("name, form", operand_forms())
def test_operator_with_number_or_array_operand_matches_torch(name, form, tensor_shape, array_shape):
    x, constant, tensor_first = operand_case(name, form, tensor_shape, array_shape)
    fn = BINARY_OPS[name][0]
    torch_constant = torch_operand(name, constant, _tensor)
    assert_matches_torch(with_constant(fn, constant, tensor_first),
                         with_constant(fn, torch_constant, tensor_first), x)


@pytest.mark.parametrize("number", [2, 1.5])
@pytest.mark.parametrize("tensor_first", [True, False])
@pytest.mark.parametrize("name", OPERATORS)
def test_float32_tensor_with_python_number_has_torch_result_dtype(name, tensor_first, number):
    fn = BINARY_OPS[name][0]
    x = random_array((2, 3), 0, "positive")
    ours = tt.Tensor(x, dtype=np.float32)
    theirs = torch.tensor(x, dtype=torch.float32)
    out = fn(ours, number) if tensor_first else fn(number, ours)
    expected = fn(theirs, number) if tensor_first else fn(number, theirs)
    assert str(expected.dtype) == f"torch.{out.dtype}"


# ----- matmul ----------------------------------------------------------------------------------------

def _matmul(a, b):
    return a @ b


@pytest.mark.parametrize("name", MATMUL_SHAPES)
def test_matmul_matches_torch(name):
    shape_a, shape_b = MATMUL_SHAPES[name]
    assert_matches_torch(_matmul, _matmul, random_array(shape_a, 0), random_array(shape_b, 1))
    assert_matches_torch(lambda a, b: a.matmul(b), torch.matmul,
                         random_array(shape_a, 0), random_array(shape_b, 1))


@OP_SETTINGS
@given(pair=matmul_shapes, seed=seeds)
def test_matmul_matches_torch_for_any_numpy_shapes(pair, seed):
    shape_a, shape_b = pair.input_shapes
    assert_matches_torch(_matmul, _matmul, random_array(shape_a, seed), random_array(shape_b, seed + 1))


@pytest.mark.parametrize("array_first", [False, True])
def test_matmul_with_numpy_array_operand_matches_torch(array_first):
    x, m = random_array((2, 3), 0), random_array((3, 3), 1)
    if array_first:
        assert_matches_torch(lambda t: m @ t.T, lambda t: _tensor(m) @ t.T, x)
    else:
        assert_matches_torch(lambda t: t @ m, lambda t: t @ _tensor(m), x)


# ----- reductions -------------------------------------------------------------------------------------

def torch_reduction(name, t, axis, keepdims):
    dims = tuple(range(t.ndim)) if axis is None else axis
    if name in ("sum", "mean"):
        return getattr(t, name)(dim=dims, keepdim=keepdims)
    if name in ("max", "min"):
        return getattr(torch, "a" + name)(t, dim=dims, keepdim=keepdims)
    return getattr(torch, name)(t, dim=dims, correction=0, keepdim=keepdims)


@pytest.mark.parametrize("keyword", ["axis", "dim"])
@pytest.mark.parametrize("name", REDUCTIONS)
@OP_SETTINGS
@given(args=reduction_args(), seed=seeds)
def test_reduction_matches_torch(name, keyword, args, seed):
    shape, axis, keepdims = args
    if name == "std":
        assume(reduced_count(shape, axis) >= 2)      # sqrt has no derivative at a zero variance
    assert_matches_torch(lambda t: getattr(t, name)(**{keyword: axis, "keepdims": keepdims}),
                         lambda t: torch_reduction(name, t, axis, keepdims),
                         random_array(shape, seed))


@pytest.mark.parametrize("name", ["var", "std"])
def test_var_and_std_with_correction_one_match_torch(name):
    assert_matches_torch(lambda t: getattr(t, name)(axis=1, correction=1),
                         lambda t: getattr(torch, name)(t, dim=1, correction=1),
                         random_array((3, 4)))


TIES = np.array([[1.0, 3.0, 3.0, 0.0], [2.0, 2.0, 2.0, 2.0], [0.0, 3.0, -1.0, 0.0]])


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("axis", [None, 0, 1, -1, (0, 1)])
@pytest.mark.parametrize("name", ["max", "min"])
def test_max_min_with_ties_match_torch_amax_amin(name, axis, keepdims):
    assert_matches_torch(lambda t: getattr(t, name)(axis=axis, keepdims=keepdims),
                         lambda t: torch_reduction(name, t, axis, keepdims), TIES)


@pytest.mark.parametrize("name", ["max", "min"])
def test_full_max_min_with_ties_match_torch_without_dim(name):
    assert_matches_torch(lambda t: getattr(t, name)(), lambda t: getattr(t, name)(), TIES)


@pytest.mark.parametrize("kwargs", [{}, {"axis": 1}, {"dim": 0}, {"axis": -1, "keepdims": True}])
@pytest.mark.parametrize("name", ["argmax", "argmin"])
def test_argmax_argmin_match_torch(name, kwargs):
    x = random_array((3, 4))
    out = getattr(tt.Tensor(x, dtype=np.float64), name)(**kwargs)
    expected = getattr(torch, name)(torch.as_tensor(x), dim=kwargs.get("axis", kwargs.get("dim")),
                                    keepdim=kwargs.get("keepdims", False))
    np.testing.assert_array_equal(out.data, expected.numpy())


# ----- shape operations, indexing, joining ---------------------------------------------------------

@pytest.mark.parametrize("name", SHAPE_OPS)
def test_shape_op_matches_torch(name):
    shape, fn = SHAPE_OPS[name]
    assert_matches_torch(fn, torch_version(name, fn), random_array(shape))


def torch_key(key):
    """The same index for a torch tensor (integer-valued float tensors become long indices)."""
    if isinstance(key, tuple):
        return tuple(torch_key(k) for k in key)
    if isinstance(key, tt.Tensor):
        key = key.data.astype(np.int64) if key.dtype.kind == "f" else key.data
    if isinstance(key, np.ndarray):
        return torch.from_numpy(key.copy())      # a C-ordered copy: torch rejects negative strides
    return key


@pytest.mark.parametrize("name", INDEX_KEYS)
def test_indexing_matches_torch(name):
    key = INDEX_KEYS[name]
    if name in NEGATIVE_STEP_EQUIVALENTS:
        expected_key = torch_key(NEGATIVE_STEP_EQUIVALENTS[name])
    else:
        expected_key = torch_key(key)
    assert_matches_torch(lambda t: t[key], lambda t: t[expected_key], random_array(INDEXED_SHAPE))


@pytest.mark.parametrize("name", JOIN_OPS)
def test_join_op_matches_torch(name):
    in_shapes, fn = JOIN_OPS[name]
    assert_matches_torch(fn, TORCH_SPELLING[name], *[random_array(s, i) for i, s in enumerate(in_shapes)])


@pytest.mark.parametrize("name", WHERE_CASES)
def test_where_matches_torch(name):
    in_shapes, fn = WHERE_CASES[name]
    assert_matches_torch(fn, TORCH_SPELLING[name], *[random_array(s, i) for i, s in enumerate(in_shapes)])


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_astype_matches_torch_to(dtype):
    x = random_array((2, 3))
    ours, theirs = leaf(x), torch.tensor(x, requires_grad=True)
    out, expected = ours.astype(dtype), theirs.to(getattr(torch, dtype))
    np.testing.assert_array_equal(out.data, expected.detach().numpy())
    upstream = np.random.default_rng(1).standard_normal((2, 3)).astype(dtype)
    out.backward(upstream)
    expected.backward(torch.from_numpy(upstream))
    assert ours.grad.dtype == np.float64
    np.testing.assert_array_equal(ours.grad.data, theirs.grad.numpy())


@pytest.mark.parametrize("name", SHARED_SUBEXPRESSIONS)
def test_shared_subexpression_matches_torch(name):
    shape, fn = SHARED_SUBEXPRESSIONS[name]
    assert_matches_torch(fn, torch_version(name, fn), random_array(shape))


# ----- edge values ------------------------------------------------------------------------------------

EDGE_VALUES = {
    "relu_at_zero": (lambda t: t.relu(), [-1.0, 0.0, -0.0, 2.0]),
    "abs_at_zero": (lambda t: t.abs(), [-1.0, 0.0, -0.0, 2.0]),
    "sqrt_near_zero": (lambda t: t.sqrt(), [1e-300, 1e-12, 1e-5, 1.0]),
    "log_near_zero": (lambda t: t.log(), [1e-300, 1e-12, 1e-5, 1.0]),
    "sigmoid_at_large_magnitudes": (lambda t: t.sigmoid(), [-1e4, -800.0, -40.0, 40.0, 800.0, 1e4]),
    "tanh_at_large_magnitudes": (lambda t: t.tanh(), [-1e4, -800.0, -20.0, 20.0, 800.0, 1e4]),
    "exp_at_large_magnitudes": (lambda t: t.exp(), [-1e4, -700.0, -50.0, 50.0, 700.0]),
    "clip_at_the_boundaries": (lambda t: t.clip(-0.5, 0.7), [-1.0, -0.5, 0.0, 0.7, 1.0]),
    "int_power_at_zero": (lambda t: t ** 2, [0.0, -0.0, 1.0]),
    "zeroth_power_at_zero": (lambda t: t ** 0, [0.0, 1.0, -2.0]),
    "zero_base_to_tensor_power": (lambda t: 0.0 ** t, [0.0, 1.0, 2.5]),
}


@pytest.mark.parametrize("name", EDGE_VALUES)
def test_edge_values_match_torch(name):
    fn, values = EDGE_VALUES[name]
    assert_matches_torch(fn, fn, np.array(values))


def test_pow_of_tensors_at_zero_base_and_zero_exponent_matches_torch():
    assert_matches_torch(lambda a, b: a ** b, lambda a, b: a ** b,
                         np.array([0.0, 0.0, 2.0, 0.0, 3.0]), np.array([0.0, 2.0, 0.0, 3.0, 1.5]))


@pytest.mark.parametrize("name", ["maximum", "minimum"])
def test_maximum_minimum_with_ties_match_torch(name):
    fn = BINARY_OPS[name][0]
    assert_matches_torch(fn, fn, np.array([1.0, 2.0, 3.0, -1.0]), np.array([1.0, 0.0, 5.0, -1.0]))
