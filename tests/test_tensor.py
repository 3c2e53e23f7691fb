"""The Tensor's non-differentiable surface: creation, conversion, comparison, assignment, errors."""

import warnings

import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import given, settings

import tinytorch as tt
from tinytorch import Tensor


def test_construction_copies_its_input():
    source = np.array([1.0, 2.0], dtype=np.float32)
    t = Tensor(source)
    source[0] = 99.0
    assert t.data[0] == 1.0


def test_construction_from_tensor_keeps_dtype_and_copies():
    a = Tensor([1.0, 2.0], dtype=np.float64)
    b = Tensor(a)
    assert b.dtype == np.float64 and not np.shares_memory(a.data, b.data)


def test_construction_rejects_non_numeric_data():
    with pytest.raises(TypeError, match="cannot make a tensor"):
        Tensor(["a", "b"])


def test_attributes():
    t = Tensor(np.zeros((2, 3, 4)))
    assert t.shape == (2, 3, 4) and t.size == 24 and t.ndim == 3 and t.dtype == np.float32
    assert t.is_leaf and t.grad_fn is None and t._grad_fn is None
    y = Tensor([1.0], requires_grad=True) * 2
    assert not y.is_leaf and y._grad_fn is y.grad_fn


def test_conversion_helpers():
    t = Tensor([[1.0, 2.0], [3.0, 4.0]])
    assert t.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert t.numpy() is t.data
    assert np.asarray(t) is t.data
    assert len(t) == 2
    assert Tensor([2.5]).item() == 2.5
    assert float(Tensor(2.5)) == 2.5
    with pytest.raises(ValueError, match="exactly one element"):
        t.item()
    with pytest.raises(TypeError, match="0-d"):
        len(Tensor(1.0))


def test_bool_only_for_one_element():
    assert bool(Tensor([1.0]))
    assert not bool(Tensor(0.0))
    with pytest.raises(ValueError, match="ambiguous"):
        bool(Tensor([1.0, 2.0]))


def test_grad_supports_numpy_style_access():
    x = Tensor([1.0, 2.0], requires_grad=True)
    (x * 3).sum().backward()
    assert np.allclose(x.grad, [3.0, 3.0])
    assert x.grad[0].item() == 3.0
    assert np.allclose(x.grad.copy(), x.grad.data)


def test_repr_shows_data_dtype_and_graph():
    assert repr(Tensor([1.0, 2.0])) == "Tensor([1., 2.], dtype=float32)"
    assert "requires_grad=True" in repr(Tensor([1.0], requires_grad=True))
    assert "grad_fn=<MulBackward>" in repr(Tensor([1.0], requires_grad=True) * 2)


def test_astype():
    x = Tensor([1.5, 2.5], requires_grad=True)
    y = x.astype(np.float64)
    assert y.dtype == np.float64 and y.requires_grad
    (y * 2).sum().backward()
    assert x.grad.dtype == np.float32
    np.testing.assert_allclose(x.grad.data, [2.0, 2.0])
    as_int = x.astype(np.int64)
    assert as_int.dtype == np.int64 and not as_int.requires_grad


def test_comparisons_give_bool_tensors_without_grad():
    x = Tensor([1.0, 2.0, 3.0], requires_grad=True)
    for result, expected in [(x > 2, [False, False, True]), (x >= 2, [False, True, True]),
                             (x < 2, [True, False, False]), (x <= 2, [True, True, False]),
                             (x == 2, [False, True, False]), (x != 2, [True, False, True]),
                             (x == Tensor([1.0, 0.0, 3.0]), [True, False, True])]:
        assert result.dtype == np.bool_ and not result.requires_grad
        assert result.tolist() == expected


def test_tensors_are_hashable_by_identity():
    a, b = Tensor([1.0]), Tensor([1.0])
    assert len({a, b}) == 2


def test_numpy_array_on_the_left_gives_a_tensor():
    x = Tensor([1.0, 2.0], requires_grad=True)
    y = np.array([3.0, 4.0]) * x
    assert isinstance(y, Tensor)
    y.sum().backward()
    np.testing.assert_allclose(x.grad.data, [3.0, 4.0])


def test_setitem_on_tensor_without_grad():
    t = tt.zeros(2, 3)
    t[0, 1] = 5.0
    t[1] = Tensor([1.0, 2.0, 3.0])
    assert t.tolist() == [[0.0, 5.0, 0.0], [1.0, 2.0, 3.0]]


def test_index_with_float_tensor_holding_integers():
    x = Tensor([10.0, 20.0, 30.0])
    assert x[Tensor([2, 0])].tolist() == [30.0, 10.0]
    with pytest.raises(IndexError, match="integers"):
        x[Tensor([0.5])]


def test_creation_functions():
    assert tt.zeros(2, 3).tolist() == [[0.0] * 3] * 2
    assert tt.ones((2,)).tolist() == [1.0, 1.0]
    assert tt.full((2,), 7.0).tolist() == [7.0, 7.0]
    assert tt.zeros_like(Tensor([[1.0, 2.0]])).shape == (1, 2)
    assert tt.ones_like(Tensor([1.0], dtype=np.float64)).dtype == np.float64
    assert tt.arange(4).tolist() == [0.0, 1.0, 2.0, 3.0]
    assert tt.arange(1, 7, 2).tolist() == [1.0, 3.0, 5.0]
    np.testing.assert_array_equal(tt.eye(3).data, np.eye(3))
    assert tt.tensor([1, 2], requires_grad=True).requires_grad
    assert tt.zeros(2, requires_grad=True).requires_grad
    for t in (tt.zeros(2), tt.ones(2), tt.randn(2), tt.rand(2), tt.arange(2), tt.eye(2)):
        assert t.dtype == np.float32


def test_manual_seed_makes_random_tensors_reproducible():
    tt.manual_seed(123)
    a, b = tt.randn(5), tt.rand(5)
    tt.manual_seed(123)
    np.testing.assert_array_equal(tt.randn(5).data, a.data)
    np.testing.assert_array_equal(tt.rand(5).data, b.data)
    assert np.all((b.data >= 0) & (b.data < 1))


def test_matmul_error_names_both_shapes():
    a, b = tt.ones(2, 3), tt.ones(4, 5)
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(4, 5\)"):
        a @ b
    with pytest.raises(ValueError, match="at least 1 dimension"):
        Tensor(2.0) @ tt.ones(2)


def test_reshape_error_names_the_shapes():
    with pytest.raises(ValueError, match=r"shape \(2, 3\).*\(4,\)"):
        tt.ones(2, 3).reshape(4)


def test_clip_needs_a_bound():
    with pytest.raises(ValueError, match="min and max"):
        tt.ones(2).clip()


def test_zero_dim_tensors_accept_axis_0_and_minus_1_like_pytorch():
    x = Tensor(2.0, requires_grad=True)
    x.sum(axis=0).backward()
    assert x.grad.item() == 1.0
    assert Tensor(2.0).mean(axis=-1).item() == 2.0
    assert Tensor(2.0).squeeze(0).shape == ()
    with pytest.raises(IndexError):
        Tensor(2.0).sum(axis=1)


def test_squeeze_of_an_axis_that_is_not_1_is_a_no_op():
    assert tt.zeros(2, 3).squeeze(0).shape == (2, 3)
    assert tt.zeros(2, 1, 3).squeeze((0, 1)).shape == (2, 3)


def test_flatten_of_an_empty_tensor():
    assert tt.zeros(0, 3, 2).flatten(1).shape == (0, 6)


@pytest.mark.parametrize("shape", [(), (5,), (2, 3, 4)])
def test_flatten_takes_and_refuses_the_dims_pytorch_does(torch, shape):
    ours, theirs = tt.tensor(np.zeros(shape, np.float32)), torch.zeros(shape)
    ndim = max(len(shape), 1)
    for start in range(-ndim - 1, ndim + 1):
        for end in range(-ndim - 1, ndim + 1):
            try:
                expected = tuple(theirs.flatten(start, end).shape)
            except (IndexError, RuntimeError) as error:     # out of range; start after end
                kind = IndexError if isinstance(error, IndexError) else ValueError
                with pytest.raises(kind, match="out of range|comes after"):
                    ours.flatten(start, end)
            else:
                assert ours.flatten(start, end).shape == expected, (start, end)
    for dim in (0.5, True):
        with pytest.raises(TypeError):
            theirs.flatten(dim)
        with pytest.raises(TypeError):
            ours.flatten(dim)


def test_transpose_refuses_one_dim_and_dims_out_of_range_as_pytorch(torch):
    ours, theirs = tt.zeros(2, 3, 4), torch.zeros(2, 3, 4)
    for dims in [(0, 2), (-1, 0), (1, 1), (np.int64(2), 0)]:
        assert ours.transpose(*dims).shape == tuple(theirs.transpose(*dims).shape)
    for dims, kind in [((0,), TypeError), ((0, 3), IndexError), ((-4, 0), IndexError),
                       ((0.5, 1), TypeError), ((True, 2), TypeError)]:
        with pytest.raises(kind):
            theirs.transpose(*dims)
        with pytest.raises(kind):
            ours.transpose(*dims)
    with pytest.raises(TypeError, match="give both dim0 and dim1"):
        ours.transpose(dim1=0)


def test_a_format_spec_on_a_tensor_of_several_elements_is_a_type_error_as_in_pytorch(torch):
    for spec in (".3f", ">20", "e"):
        with pytest.raises(TypeError):
            format(torch.ones(2, 3), spec)
        with pytest.raises(TypeError, match=f"unsupported format string '{spec}'.*shape \\(2, 3\\)"):
            format(tt.ones(2, 3), spec)
    assert f"{tt.ones(2, 3)}" == str(tt.ones(2, 3))
    assert f"{tt.tensor(2.5):.3f}" == f"{torch.tensor(2.5):.3f}" == "2.500"
    assert f"{tt.ones(1, 1):.2f}" == "1.00"             # one element: its number, as .item()


def test_numpy_copy_request_is_honoured():
    t = tt.ones(3)
    copied = np.array(t, copy=True)
    copied[0] = 5.0
    assert t.data[0] == 1.0


def test_inplace_op_that_would_truncate_an_integer_tensor_is_refused():
    counts = Tensor([1, 2], dtype=np.int64)
    with pytest.raises(TypeError, match="int64"):
        counts += 0.5
    counts += 1
    assert counts.tolist() == [2, 3]


def test_clip_accepts_tensor_bounds():
    x = Tensor([1.0, 5.0], requires_grad=True)
    y = x.clip(Tensor([2.0, 2.0]), 4.0)
    assert y.tolist() == [2.0, 4.0]
    y.sum().backward()
    assert x.grad.tolist() == [0.0, 0.0]


def test_numpy_reductions_call_the_tensor_methods():
    t = Tensor([[1.0, 2.0], [3.0, 4.0]])
    assert np.sum(t).item() == 10.0
    assert np.mean(t, axis=0).tolist() == [2.0, 3.0]
    assert np.max(t).item() == 4.0 and np.min(t).item() == 1.0
    assert np.sum(t, dtype=np.float64).dtype == np.float64


# ----- Python-number operands -------------------------------------------------------------------
# Ops keep a number operand of a float32/float64 tensor as a cached 0-d array of the tensor's
# dtype (faster in NumPy); results must equal NumPy's with the plain Python number.

_OPS = {
    "add": lambda a, b: a + b, "radd": lambda a, b: b + a,
    "sub": lambda a, b: a - b, "rsub": lambda a, b: b - a,
    "mul": lambda a, b: a * b, "rmul": lambda a, b: b * a,
    "div": lambda a, b: a / b, "rdiv": lambda a, b: b / a,
}


@settings(max_examples=60, deadline=None)
@given(values=hnp.arrays(st.sampled_from([np.float32, np.float64]), hnp.array_shapes(max_dims=3),
                         elements=st.floats(-1e3, 1e3, width=32).filter(lambda v: abs(v) > 1e-3)),
       number=st.one_of(st.floats(-1e6, 1e6, allow_nan=False).filter(lambda v: v != 0),
                        st.integers(-1000, 1000).filter(lambda v: v != 0)),
       op=st.sampled_from(sorted(_OPS)))
def test_number_operands_give_numpys_result_and_dtype(values, number, op):
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):   # inf/nan must match too
        result = _OPS[op](Tensor(values, dtype=values.dtype), number)
        expected = _OPS[op](values, number)
    assert result.dtype == values.dtype
    np.testing.assert_array_equal(result.data, expected)


def test_number_operand_keeps_the_sign_of_zero_and_nan():
    x = Tensor([2.0, -3.0])
    assert np.all(np.signbit((x * 0.0).data) == [False, True])
    assert np.all(np.signbit((x * -0.0).data) == [True, False])
    assert np.all(np.signbit((x * 0.0).data) == [False, True])
    assert np.all(np.isnan((x + float("nan")).data))


def test_number_operands_of_integer_tensors_follow_pytorch():
    """As in PyTorch: an integer tensor with a float number takes the default float dtype."""
    x = Tensor([1, 2, 3], dtype=np.int64)
    assert (x * 1.0).dtype == np.float32 and (1.5 - x).dtype == np.float32
    assert (x * 1).dtype == np.int64 and (x + 2).dtype == np.int64
    assert (x / 2).dtype == np.float32 and (x / 2).data.tolist() == [0.5, 1.0, 1.5]
    assert (x * 1.5).data.tolist() == [1.5, 3.0, 4.5]


def test_huge_number_operand_overflows_as_in_numpy():
    x = Tensor([1.0, 2.0])
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal((x * 1e300).data, np.array([1.0, 2.0], np.float32) * 1e300)
    assert (Tensor([1.0], dtype=np.float64) * 1e300).item() == 1e300


def test_number_operand_gradient_and_saved_value():
    x = Tensor([1.0, 2.0], requires_grad=True)
    y = x * 0.1
    assert float(y.grad_fn.saved_tensors[1]) == np.float32(0.1)
    (y * 3 - 1.5).sum().backward()
    np.testing.assert_array_equal(x.grad.data, np.full(2, np.float32(0.1) * np.float32(3)))
    assert x.grad.dtype == np.float32


@settings(max_examples=80, deadline=None)
@given(data=st.data(), dtype=st.sampled_from([np.float16, np.float32, np.float64, np.int32]),
       keepdims=st.booleans())
def test_mean_equals_numpys_mean_exactly(data, dtype, keepdims):
    # Tensor.mean and the losses' 'mean' sum and divide themselves (faster than ndarray.mean);
    # the result must still be NumPy's, bit for bit, including empty axes (nan, with a warning).
    values = data.draw(hnp.arrays(dtype, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0),
                                  elements=st.integers(-100, 100) if dtype == np.int32
                                  else st.floats(-1e3, 1e3, width=16)))
    axis = data.draw(st.none() | st.integers(-values.ndim, values.ndim - 1)
                     if values.ndim else st.none())
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = Tensor(values, dtype=values.dtype).mean(axis=axis, keepdims=keepdims)
        # integers average in the default float dtype (float32), as exp/sqrt/var of integers
        # do in PyTorch; NumPy would give float64
        floats = values.astype(np.float32) if dtype == np.int32 else values
        expected = floats.mean(axis=axis, keepdims=keepdims)
    assert result.dtype == expected.dtype and result.shape == np.shape(expected)
    np.testing.assert_array_equal(result.data, expected)


def test_float16_mean_sums_in_float32_as_numpy_does():
    values = np.full(200, 1000.0, np.float16)           # the float16 sum overflows to inf
    assert Tensor(values, dtype=np.float16).mean().item() == values.mean() == 1000.0


def test_matmul_with_a_number_says_to_use_mul():
    with pytest.raises(ValueError, match=r"at least 1 dimension.*use \*"):
        tt.ones(2, 2) @ 2.0
    with pytest.raises(ValueError, match="do not broadcast"):
        tt.ones(2, 3, 4) @ tt.ones(5, 4, 2)
