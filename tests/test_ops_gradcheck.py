"""Every differentiable op's gradient against central finite differences (float64), no torch.

The op tables live in ``op_helpers.py``; ``tests/test_ops_torch.py`` runs the same tables with
PyTorch as the oracle for values and gradients. Here the reference is ``tinytorch.gradcheck``
(central differences of ``sum(fn(x) * w)`` for a fixed random ``w``), plus a few rules that
follow from the definitions (ties, kinks, dtypes).
"""

import warnings

import numpy as np
import pytest
from hypothesis import assume, given

import tinytorch as tt
from tinytorch.core.gradcheck import gradgradcheck
from op_helpers import (
    BINARY_OPS, INDEX_KEYS, INDEXED_SHAPE, JOIN_OPS, MATMUL_SHAPES, NN_OPS, OP_SETTINGS,
    OPERAND_SHAPES,
    OPERATORS, REDUCTIONS, SHAPE_OPS, SHARED_SUBEXPRESSIONS, UNARY_OPS, WHERE_CASES,
    backward_with, broadcastable_pairs, leaf, leaves, matmul_shapes, operand_case,
    operand_forms, random_array, reduced_count, reduction_args, seeds, shapes, with_constant,
)


# NumPy warns about overflow, 0/0 or log(0): on these valid inputs any such warning is a bug.
pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")


def assert_gradcheck(fn, *arrays):
    """``fn``'s gradient for every input matches central differences."""
    assert tt.gradcheck(fn, leaves(*arrays))


# ----- elementwise ops -----------------------------------------------------------------------------

@pytest.mark.parametrize("name", UNARY_OPS)
@OP_SETTINGS
@given(shape=shapes, seed=seeds)
def test_unary_op_gradient_matches_finite_differences(name, shape, seed):
    fn, domain = UNARY_OPS[name]
    assert_gradcheck(fn, random_array(shape, seed, domain))


@pytest.mark.parametrize("name", BINARY_OPS)
@OP_SETTINGS
@given(pair=broadcastable_pairs, seed=seeds)
def test_binary_op_gradient_matches_finite_differences_with_broadcasting(name, pair, seed):
    fn, domain_a, domain_b = BINARY_OPS[name]
    shape_a, shape_b = pair.input_shapes
    assert_gradcheck(fn, random_array(shape_a, seed, domain_a), random_array(shape_b, seed + 1, domain_b))


@pytest.mark.parametrize("tensor_shape, array_shape", OPERAND_SHAPES)
@pytest.mark.parametrize("name, form", operand_forms())
def test_operator_with_number_or_array_operand_gives_tensor_with_right_gradient(
        name, form, tensor_shape, array_shape):
    x, constant, tensor_first = operand_case(name, form, tensor_shape, array_shape)
    fn = with_constant(BINARY_OPS[name][0], constant, tensor_first)
    out = fn(leaf(x))
    assert isinstance(out, tt.Tensor), f"{form} for {name} returned {type(out).__name__}"
    assert out.shape == np.broadcast_shapes(np.shape(x), np.shape(constant))
    assert_gradcheck(fn, x)


# ----- matmul ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", MATMUL_SHAPES)
def test_matmul_gradient_matches_finite_differences(name):
    shape_a, shape_b = MATMUL_SHAPES[name]
    a, b = random_array(shape_a, 0), random_array(shape_b, 1)
    assert np.allclose((tt.Tensor(a, dtype=np.float64) @ tt.Tensor(b, dtype=np.float64)).data, a @ b)
    assert_gradcheck(lambda x, y: x @ y, a, b)
    assert_gradcheck(lambda x, y: x.matmul(y), a, b)


@OP_SETTINGS
@given(pair=matmul_shapes, seed=seeds)
def test_matmul_gradient_matches_finite_differences_for_any_numpy_shapes(pair, seed):
    shape_a, shape_b = pair.input_shapes
    assert_gradcheck(lambda x, y: x @ y, random_array(shape_a, seed), random_array(shape_b, seed + 1))


@pytest.mark.parametrize("array_first", [False, True])
def test_matmul_with_numpy_array_operand_gives_tensor_with_right_gradient(array_first):
    x, m = random_array((2, 3), 0), random_array((3, 3), 1)
    fn = (lambda t: m @ t.T) if array_first else (lambda t: t @ m)
    assert isinstance(fn(leaf(x)), tt.Tensor)
    assert_gradcheck(fn, x)


@pytest.mark.parametrize("shape_a, shape_b", [((2, 3), (4, 5)), ((3,), (4,)), ((2, 3), (2,)),
                                              ((4,), (3, 2)), ((2, 2, 3), (3, 3, 4))])
def test_matmul_error_for_mismatched_shapes_names_both_shapes(shape_a, shape_b):
    with pytest.raises(ValueError) as info:
        tt.zeros(shape_a) @ tt.zeros(shape_b)
    message = str(info.value)
    assert str(shape_a) in message and str(shape_b) in message, message


# ----- reductions -------------------------------------------------------------------------------------

NUMPY_REDUCTIONS = {"sum": np.sum, "mean": np.mean, "max": np.max, "min": np.min,
                    "var": np.var, "std": np.std}


@pytest.mark.parametrize("keyword", ["axis", "dim"])
@pytest.mark.parametrize("name", REDUCTIONS)
@OP_SETTINGS
@given(args=reduction_args(), seed=seeds)
def test_reduction_value_and_gradient(name, keyword, args, seed):
    shape, axis, keepdims = args
    if name == "std":
        assume(reduced_count(shape, axis) >= 2)      # sqrt has no derivative at a zero variance
    x = random_array(shape, seed)

    def fn(t):
        return getattr(t, name)(**{keyword: axis, "keepdims": keepdims})

    expected = NUMPY_REDUCTIONS[name](x, axis=axis, keepdims=keepdims)
    out = fn(tt.Tensor(x, dtype=np.float64))
    assert out.shape == np.shape(expected)
    np.testing.assert_allclose(out.data, expected, rtol=1e-12, atol=1e-12)
    assert_gradcheck(fn, x)


@pytest.mark.parametrize("name", ["var", "std"])
def test_var_and_std_with_correction_one_match_numpy_ddof_one(name):
    x = random_array((3, 4), 0)
    fn = lambda t: getattr(t, name)(axis=1, correction=1)    # noqa: E731
    np.testing.assert_allclose(fn(tt.Tensor(x, dtype=np.float64)).data,
                               NUMPY_REDUCTIONS[name](x, axis=1, ddof=1), rtol=1e-12)
    assert_gradcheck(fn, x)


@pytest.mark.parametrize("name", ["max", "min"])
@pytest.mark.parametrize("axis", [None, 0, 1, -1, (0, 1)])
def test_max_min_gradient_is_shared_equally_among_ties(name, axis):
    x = np.array([[1.0, 3.0, 3.0, 0.0], [2.0, 2.0, 2.0, 2.0], [0.0, 3.0, -1.0, 0.0]])
    t = leaf(x)
    out = getattr(t, name)(axis=axis, keepdims=True)
    upstream = backward_with(out)
    hits = x == getattr(np, name)(x, axis=axis, keepdims=True)
    expected = upstream * hits / hits.sum(axis=axis, keepdims=True)
    np.testing.assert_allclose(t.grad.data, expected, rtol=1e-12)


@pytest.mark.parametrize("name", ["argmax", "argmin"])
def test_argmax_argmin_values_follow_numpy_and_carry_no_gradient(name):
    x = leaf(random_array((3, 4), 0))
    for kwargs in ({}, {"axis": 1}, {"dim": 0}, {"axis": -1, "keepdims": True}):
        out = getattr(x, name)(**kwargs)
        axis = kwargs.get("axis", kwargs.get("dim"))
        expected = getattr(np, name)(x.data, axis=axis, keepdims=kwargs.get("keepdims", False))
        np.testing.assert_array_equal(out.data, expected)
        assert not out.requires_grad


# ----- shape operations, indexing, joining ---------------------------------------------------------

@pytest.mark.parametrize("name", SHAPE_OPS)
def test_shape_op_gradient_matches_finite_differences(name):
    shape, fn = SHAPE_OPS[name]
    assert_gradcheck(fn, random_array(shape))


@pytest.mark.parametrize("name", INDEX_KEYS)
def test_indexing_gradient_matches_finite_differences(name):
    key = INDEX_KEYS[name]
    x = random_array(INDEXED_SHAPE)
    expected = x[_numpy_key(key)]
    out = tt.Tensor(x, dtype=np.float64)[key]
    np.testing.assert_array_equal(out.data, expected)
    assert_gradcheck(lambda t: t[key], x)


def _numpy_key(key):
    if isinstance(key, tuple):
        return tuple(_numpy_key(k) for k in key)
    if isinstance(key, tt.Tensor):
        return key.data.astype(np.int64) if key.dtype.kind == "f" else key.data
    return key


@pytest.mark.parametrize("index", [[0, 0, 2, 0], np.array([3, 1, 3, 3, 3])])
def test_repeated_integer_indices_accumulate_gradient(index):
    x = leaf(random_array((4,)))
    upstream = backward_with(x[index])
    expected = np.bincount(np.asarray(index), weights=upstream, minlength=4)
    np.testing.assert_allclose(x.grad.data, expected, rtol=1e-12)


def test_repeated_index_pairs_accumulate_gradient_on_rows():
    x = leaf(random_array((3, 2)))
    rows = np.array([2, 0, 2])
    upstream = backward_with(x[rows, 1])
    expected = np.zeros((3, 2))
    expected[:, 1] = np.bincount(rows, weights=upstream, minlength=3)
    np.testing.assert_allclose(x.grad.data, expected, rtol=1e-12)


@pytest.mark.parametrize("name", JOIN_OPS)
def test_join_op_gradient_matches_finite_differences(name):
    in_shapes, fn = JOIN_OPS[name]
    assert_gradcheck(fn, *[random_array(s, i) for i, s in enumerate(in_shapes)])


@pytest.mark.parametrize("name", WHERE_CASES)
def test_where_gradient_matches_finite_differences(name):
    in_shapes, fn = WHERE_CASES[name]
    assert_gradcheck(fn, *[random_array(s, i) for i, s in enumerate(in_shapes)])


@pytest.mark.parametrize("method", ["clone", "copy"])
def test_clone_owns_its_data_and_passes_the_gradient_through(method):
    x = leaf(random_array((2, 3)))
    y = getattr(x, method)()
    y.data[0, 0] = 100.0
    assert x.data[0, 0] != 100.0, "the clone must not share memory with its source"
    upstream = backward_with(y)
    np.testing.assert_array_equal(x.grad.data, upstream)


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.float64])
def test_astype_between_float_dtypes_casts_values_and_sends_gradient_back_in_source_dtype(dtype):
    x = leaf(random_array((2, 3)))
    y = x.astype(dtype)
    assert y.dtype == dtype
    np.testing.assert_array_equal(y.data, x.data.astype(dtype))
    upstream = backward_with(y)
    assert x.grad.dtype == np.float64
    np.testing.assert_array_equal(x.grad.data, upstream.astype(dtype).astype(np.float64))


def test_astype_round_trip_gradient_matches_finite_differences():
    assert_gradcheck(lambda t: t.astype(np.float64) * t.astype(np.float64).sin(), random_array((2, 3)))


@pytest.mark.parametrize("name", SHARED_SUBEXPRESSIONS)
def test_shared_subexpression_gradients_add_up(name):
    shape, fn = SHARED_SUBEXPRESSIONS[name]
    assert_gradcheck(fn, random_array(shape))


# ----- edge values ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["relu", "abs"])
def test_relu_and_abs_have_zero_gradient_at_zero(name):
    x = leaf(np.array([-1.0, 0.0, 2.0]))
    getattr(x, name)().sum().backward()
    assert x.grad.data[1] == 0.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_saturates_exactly_at_large_inputs_without_warnings(dtype):
    x = leaf(np.array([-1e4, -800.0, 800.0, 1e4]), dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = x.sigmoid()
        y.sum().backward()
    np.testing.assert_array_equal(y.data, [0.0, 0.0, 1.0, 1.0])
    np.testing.assert_array_equal(x.grad.data, [0.0, 0.0, 0.0, 0.0])
    assert y.dtype == dtype and x.grad.dtype == dtype


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tanh_saturates_at_large_inputs_with_zero_gradient(dtype):
    x = leaf(np.array([-1e4, 1e4]), dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = x.tanh()
        y.sum().backward()
    np.testing.assert_array_equal(y.data, [-1.0, 1.0])
    np.testing.assert_array_equal(x.grad.data, [0.0, 0.0])


def test_exp_of_large_magnitudes_is_finite_where_the_result_is_representable():
    x = leaf(np.array([-1e4, -700.0, 700.0]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = x.exp()
        y.sum().backward()
    assert np.all(np.isfinite(y.data)) and np.all(np.isfinite(x.grad.data))
    np.testing.assert_array_equal(x.grad.data, y.data)     # d/dx e^x = e^x


def test_clip_passes_the_gradient_at_the_boundaries():
    x = leaf(np.array([-1.0, -0.5, 0.0, 0.7, 1.0]))
    x.clip(-0.5, 0.7).sum().backward()
    np.testing.assert_array_equal(x.grad.data, [0.0, 1.0, 1.0, 1.0, 0.0])


@pytest.mark.parametrize("name", ["maximum", "minimum"])
def test_maximum_minimum_split_the_gradient_half_half_at_ties(name):
    a, b = leaves(np.array([1.0, 2.0, 3.0]), np.array([1.0, 0.0, 5.0]))
    upstream = backward_with(getattr(a, name)(b))
    a_wins = (a.data > b.data) if name == "maximum" else (a.data < b.data)
    tie = a.data == b.data
    np.testing.assert_allclose(a.grad.data, upstream * np.where(tie, 0.5, a_wins), rtol=1e-12)
    np.testing.assert_allclose(b.grad.data, upstream * np.where(tie, 0.5, ~a_wins & ~tie), rtol=1e-12)


def test_scalar_zeroth_power_has_zero_gradient_even_at_zero():
    x = leaf(np.array([0.0, 1.0, -2.0]))
    out = x ** 0
    out.sum().backward()
    np.testing.assert_array_equal(out.data, [1.0, 1.0, 1.0])
    np.testing.assert_array_equal(x.grad.data, [0.0, 0.0, 0.0])


def test_pow_with_zero_exponent_has_zero_base_gradient_even_at_zero_base():
    a, b = leaves(np.array([0.0, 2.0, 0.0]), np.array([0.0, 0.0, 2.0]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = a ** b
        out.sum().backward()
    np.testing.assert_array_equal(out.data, [1.0, 1.0, 0.0])
    np.testing.assert_array_equal(a.grad.data, [0.0, 0.0, 0.0])
    assert np.all(np.isfinite(b.grad.data))


# ----- dtypes -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("number", [2, 1.5])
@pytest.mark.parametrize("tensor_first", [True, False])
@pytest.mark.parametrize("name", OPERATORS)
def test_float32_tensor_with_python_number_stays_float32(name, tensor_first, number):
    fn = BINARY_OPS[name][0]
    x = leaf(random_array((2, 3), 0, "positive"), dtype=np.float32)
    out = fn(x, number) if tensor_first else fn(number, x)
    assert out.dtype == np.float32
    out.sum().backward()
    assert x.grad.dtype == np.float32


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", UNARY_OPS)
def test_unary_op_keeps_the_dtype_of_its_input_and_gradient(name, dtype):
    fn, domain = UNARY_OPS[name]
    x = leaf(random_array((2, 3), 0, domain), dtype=dtype)
    out = fn(x)
    assert out.dtype == dtype
    out.sum().backward()
    assert x.grad.dtype == dtype


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", REDUCTIONS)
def test_reduction_keeps_the_dtype_of_its_input_and_gradient(name, dtype):
    x = leaf(random_array((2, 3)), dtype=dtype)
    out = getattr(x, name)(axis=1)
    assert out.dtype == dtype
    out.sum().backward()
    assert x.grad.dtype == dtype


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", BINARY_OPS)
def test_binary_op_of_same_dtype_tensors_keeps_that_dtype(name, dtype):
    fn, domain_a, domain_b = BINARY_OPS[name]
    a = leaf(random_array((2, 3), 0, domain_a), dtype=dtype)
    b = leaf(random_array((3,), 1, domain_b), dtype=dtype)
    out = fn(a, b)
    assert out.dtype == dtype
    out.sum().backward()
    assert a.grad.dtype == dtype and b.grad.dtype == dtype


def test_mixed_float32_float64_promotes_and_each_gradient_keeps_its_tensor_dtype():
    a = leaf(random_array((2, 3)), dtype=np.float32)
    b = leaf(random_array((3, 4), 1), dtype=np.float64)
    out = (a @ b) * a.sum()
    assert out.dtype == np.float64
    out.sum().backward()
    assert a.grad.dtype == np.float32 and b.grad.dtype == np.float64


@pytest.mark.parametrize("array_dtype", [np.float64, np.int64])
@pytest.mark.parametrize("tensor_dtype", [np.float32, np.float64])
def test_numpy_array_operand_takes_the_dtype_of_the_float_tensor(tensor_dtype, array_dtype):
    x = leaf(random_array((2, 3)), dtype=tensor_dtype)
    array = np.array([1, 2, 3], dtype=array_dtype)
    for out in (x * array, array * x, x - array, array / (x * x + 1)):
        assert out.dtype == tensor_dtype


def test_float64_tensor_times_float64_array_keeps_full_precision():
    x = leaf(np.array([1.0, 2.0, 3.0]))
    array = np.array([0.1, 0.2, 0.3])            # not representable in float32
    out = array * x
    np.testing.assert_array_equal(out.data, array * x.data)
    out.sum().backward()
    np.testing.assert_array_equal(x.grad.data, array)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", MATMUL_SHAPES)
def test_matmul_keeps_float_dtype_and_gradient_dtypes(name, dtype):
    shape_a, shape_b = MATMUL_SHAPES[name]
    a, b = leaf(random_array(shape_a), dtype=dtype), leaf(random_array(shape_b, 1), dtype=dtype)
    out = a @ b
    assert out.dtype == dtype
    out.sum().backward()
    assert a.grad.dtype == dtype and b.grad.dtype == dtype


@pytest.mark.parametrize("name", NN_OPS)
def test_nn_op_gradients_match_finite_differences_to_second_order(name):
    """Every neural-network op, first and second derivatives, against central differences."""
    shapes, domains, fn = NN_OPS[name]
    arrays = [random_array(shape, i, domain)
              for i, (shape, domain) in enumerate(zip(shapes, domains))]
    assert tt.gradcheck(fn, leaves(*arrays))
    assert gradgradcheck(fn, leaves(*arrays))
