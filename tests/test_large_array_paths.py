"""Large-array fast paths give the plain NumPy results bit for bit.

ReLU's forward (``ops._relu``) and the selection in pass-or-block gradient rules
(``ops._select``) take other routes on arrays of 16,384 elements or more than on small ones;
the tests compare them, on such arrays, with the plain NumPy expressions they replace, to the
bit (signs of zeros and NaN payloads included), and the gradients with PyTorch's.
"""

import warnings

import numpy as np
import pytest

import tinytorch as tt
from tinytorch.core import ops

LARGE = (4, 6, 24, 64)           # 36,864 elements: the fast paths
SPECIAL = [-0.0, 0.0, np.nan, -np.nan, np.inf, -np.inf, -1e-45, 1e-45, -3.0, 2.5, -1e300]


def _bits(a):
    return np.ascontiguousarray(a).view(np.uint8)


def _with_specials(dtype, rng):
    x = rng.standard_normal(LARGE).astype(dtype)
    with np.errstate(over="ignore"):
        x.ravel()[:4000] = np.resize(np.array(SPECIAL).astype(dtype), 4000)
    return x


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_relu_forward_equals_numpy_maximum_bit_for_bit(dtype):
    rng = np.random.default_rng(0)
    x = _with_specials(dtype, rng)
    for view in (x, x.transpose(3, 0, 1, 2), x[:, :, ::2], x.T, x.reshape(-1)[:16384]):
        for _ in range(2):                         # the second call uses the cached zeros
            expected, ours = np.maximum(view, 0), ops._relu(view)
            assert ours.dtype == expected.dtype and ours.shape == expected.shape
            assert ours.strides == expected.strides            # the same memory layout
            np.testing.assert_array_equal(_bits(ours), _bits(expected))


def test_relu_forward_of_integers_keeps_numpy_dtype():
    x = np.arange(-20000, 20000, dtype=np.int32)
    np.testing.assert_array_equal(ops._relu(x), np.maximum(x, 0))
    assert ops._relu(x).dtype == np.maximum(x, 0).dtype


def _select_reference(mask, grad):
    """The rule as it was written before the fast check: the product when every gradient is
    finite, else np.where."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        selected = grad * mask
    if not np.isfinite(grad).all():
        selected = np.where(mask, grad, np.zeros((), selected.dtype))
    return selected


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("case", ["finite", "inf_blocked", "minus_inf_passed", "nan_blocked",
                                  "nan_passed", "huge_finite", "tiny_finite"])
def test_select_equals_the_reference_bit_for_bit(dtype, case):
    rng = np.random.default_rng(1)
    grad = rng.standard_normal(LARGE).astype(dtype)
    mask = rng.random(LARGE) > 0.5
    blocked, passed = np.flatnonzero(~mask)[:3], np.flatnonzero(mask)[:3]
    flat = grad.reshape(-1)
    if case == "inf_blocked":
        flat[blocked] = np.inf
    elif case == "minus_inf_passed":
        flat[passed] = -np.inf
    elif case == "nan_blocked":
        flat[blocked] = np.nan
    elif case == "nan_passed":
        flat[passed] = np.nan
    elif case == "huge_finite":            # its sum of squares overflows: the exact check decides
        grad = (np.sign(grad) * np.finfo(dtype).max / 2).astype(dtype)
    elif case == "tiny_finite":            # squares underflow
        grad = (grad * np.finfo(dtype).tiny).astype(dtype)
    expected = _select_reference(mask, grad)
    with warnings.catch_warnings():
        warnings.simplefilter("error")              # no warning the product itself does not give
        if case == "inf_blocked":
            warnings.filterwarnings("ignore", "invalid value encountered in multiply")
        with np.errstate(under="raise"):
            ours = ops._select(mask, grad)
    assert ours.dtype == expected.dtype
    np.testing.assert_array_equal(_bits(ours), _bits(expected))


def test_relu_gradients_of_a_large_batch_match_torch(torch):
    rng = np.random.default_rng(2)
    x = rng.standard_normal(LARGE)
    x.reshape(-1)[:5] = [0.0, -0.0, np.nan, np.inf, -np.inf]
    upstream = rng.standard_normal(LARGE)
    upstream.reshape(-1)[5:9] = [np.inf, -np.inf, np.nan, np.inf]     # some at blocked positions
    ours = tt.Tensor(x, dtype=np.float64, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ours.relu().backward(tt.Tensor(upstream, dtype=np.float64))
    theirs = torch.tensor(x, requires_grad=True)
    torch.relu(theirs).backward(torch.tensor(upstream))
    np.testing.assert_array_equal(ours.grad.data, theirs.grad.numpy())
