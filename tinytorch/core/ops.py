"""The op table: every differentiable operation, its forward and its gradient rule side by side.

Each class is a graph node (:class:`~tinytorch.core.autograd.Function`):

- ``forward(*values, **params)`` computes the output array from the input arrays and keeps on
  ``self`` the parameters the gradient needs (an axis, a shape, an index).
- ``gradient(grad, *values)`` is the chain rule: given dL/d(output) it returns dL/d(input) for
  each input (None where an input needs none). ``values`` are the inputs (and, for classes
  with ``saves_output``, the output last).

The contract of an op class (the same for ``functional.py``, ``spatial_ops.py`` and
``attention.py``; ``tests/test_op_contracts.py`` checks it on every op of the test tables):

- Class flags, set where they differ from the default:
  ``saves_output = True``  the rule needs the output: it is kept and passed last;
  ``reads_inputs = False`` the rule needs no input's values (only shapes), so in-place edits
  of the inputs after the op are allowed (``value_needed(i)`` says it per input);
  ``returns_view = True``  the output shares memory with an input, so an in-place edit of
  either is refused for the other's gradient.
- Fresh arrays: a rule returns new arrays, ``grad`` itself, or views of ``grad``; never an
  array the node keeps (a saved input, its output, an attribute). A leaf adopts tinytorch's
  rule outputs as its ``.grad`` and adds into them later (user-defined rules are copied).
- Gradients may come back in the broadcast shape; the engine sums them down to each input's
  shape in one place (``autograd.unbroadcast``).
- The rules use only operators and the helpers below, which work on NumPy arrays and on Tensors
  alike, so the same rule can be differentiated again (``create_graph``) without a second copy.

Adding an op touches two places: its class here, and the Tensor method or function that runs
it with ``run_op``; it is then importable from ``core.autograd`` (``__all__`` below is derived),
and a case in the test tables (``tests/op_helpers.py``) gets it gradient-checked.

Class names follow TinyTorch (``MulBackward``...) so curriculum code and tests run unchanged.
"""

import math

import numpy as np

from tinytorch.core.autograd import Function, run_op
from tinytorch.core.tensor import Tensor, where


# ----- helpers shared by the rules (NumPy arrays or Tensors) ------------------------------------

def _exp(v):
    return v.exp() if isinstance(v, Tensor) else np.exp(v)


def _log(v):
    return v.log() if isinstance(v, Tensor) else np.log(v)


def _sin(v):
    return v.sin() if isinstance(v, Tensor) else np.sin(v)


def _cos(v):
    return v.cos() if isinstance(v, Tensor) else np.cos(v)


def _sign(v):
    """sign(v) with sign(NaN) = 0 (as PyTorch's), a constant: its derivative is zero almost
    everywhere."""
    sign = np.sign(_raw(v))
    if sign.ndim:
        sign[np.isnan(sign)] = 0
    elif np.isnan(sign):
        sign = np.zeros_like(sign)
    return Tensor._make(sign) if isinstance(v, Tensor) else sign


def _where(condition, a, b):
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        return where(condition, a, b)
    return np.where(condition, a, b)


def _select(mask, grad):
    """``grad`` where ``mask`` is True, 0 elsewhere: the gradient of an op that passes some
    elements through and blocks the others (relu, clip, indexing...).

    As a selection, not a product: an inf or NaN gradient at a blocked position gives 0 there,
    not 0 * inf = NaN (PyTorch's rules select too). The product is several times faster than
    ``np.where`` on arrays, so it is used whenever ``grad`` is finite.
    """
    if isinstance(grad, Tensor):
        return _where(mask, grad, 0.0)
    selected = grad * mask
    if not np.isfinite(grad).all():
        selected = np.where(mask, grad, np.zeros((), selected.dtype))
    return selected


def _expand(v, shape):
    """``v`` broadcast to ``shape``: an op on Tensors; on arrays a read-only view, or a new array
    when it is small (``np.broadcast_to`` costs ~2 µs, more than filling a few thousand numbers)."""
    if isinstance(v, Tensor):
        return v.expand(shape)
    if math.prod(shape) > 4096:
        return np.broadcast_to(v, shape)
    out = np.empty(shape, v.dtype)
    out[...] = v
    return out


def _swap_last_two(v):
    return v.transpose(-2, -1) if isinstance(v, Tensor) else v.swapaxes(-1, -2)


def _permute(v, axes):
    return v.permute(axes) if isinstance(v, Tensor) else v.transpose(axes)


def _raw(v):
    """The array behind a value (for masks and other constants of a rule)."""
    return v._data if isinstance(v, Tensor) else v


def _kept_shape(shape, axis):
    """The shape of a reduction over ``axis`` with keepdims=True."""
    if axis is None:
        return (1,) * len(shape)
    axes = axis if isinstance(axis, tuple) else (axis,)
    axes = {a % len(shape) for a in axes}
    return tuple(1 if i in axes else n for i, n in enumerate(shape))


def mean_array(x, axis=None, keepdims=False):
    """``x.mean(axis, keepdims=keepdims)`` on an array, computed as NumPy does (the sum, then a
    division by the count), without ``ndarray.mean``'s Python wrapper (~3 µs, more than the
    work itself on small arrays). float16 keeps NumPy's mean, which sums in float32.

    >>> mean_array(np.array([[1.0, 2.0], [3.0, 5.0]]), axis=0)   # -> array([2. , 3.5])
    """
    if x.dtype == np.float16:
        return x.mean(axis=axis, keepdims=keepdims)
    total = x.sum(axis=axis, keepdims=keepdims)
    count = x.size // max(total.size, 1)
    if count == 0:                                   # a mean of nothing: NaN, as PyTorch, silently
        with np.errstate(invalid="ignore"):
            return total / count
    return total / count


def _expand_reduced(grad, shape, axis):
    """Spread the gradient of a reduction over ``axis`` back over the input's ``shape``."""
    return _expand(grad.reshape(_kept_shape(shape, axis)), shape)


def _normalise_axis(axis, ndim):
    if isinstance(axis, list):
        axis = tuple(axis)
    if axis is None:
        return None
    axes = axis if isinstance(axis, tuple) else (axis,)
    for a in axes:
        if not -max(ndim, 1) <= a < max(ndim, 1):
            raise IndexError(f"axis {a} is out of range for a tensor with {ndim} dims")
    return None if ndim == 0 else axis          # a 0-d tensor accepts axis 0 or -1, as in PyTorch


# ----- arithmetic ----------------------------------------------------------------------------------

class AddBackward(Function):
    """z = a + b;  dz/da = 1,  dz/db = 1."""
    __slots__ = ()
    reads_inputs = False

    def forward(self, a, b):
        return a + b

    def gradient(self, grad, a, b):
        need_a, need_b = self.needs_input_grad
        return (grad if need_a else None, grad if need_b else None)


class SubBackward(Function):
    """z = a - b;  dz/da = 1,  dz/db = -1."""
    __slots__ = ()
    reads_inputs = False

    def forward(self, a, b):
        return a - b

    def gradient(self, grad, a, b):
        need_a, need_b = self.needs_input_grad
        return (grad if need_a else None, -grad if need_b else None)


class MulBackward(Function):
    """z = a * b;  dz/da = b,  dz/db = a."""
    __slots__ = ()

    def value_needed(self, i):
        return self.needs_input_grad[1 - i]     # a's values enter only b's gradient, and back

    def forward(self, a, b):
        return a * b

    def gradient(self, grad, a, b):
        need_a, need_b = self.needs_input_grad
        return (grad * b if need_a else None, grad * a if need_b else None)


class DivBackward(Function):
    """z = a / b;  dz/da = 1/b,  dz/db = -a/b^2."""
    __slots__ = ()

    def forward(self, a, b):
        return a / b

    def gradient(self, grad, a, b):
        need_a, need_b = self.needs_input_grad
        return (grad / b if need_a else None, -grad * a / (b * b) if need_b else None)


class NegBackward(Function):
    """z = -a;  dz/da = -1."""
    __slots__ = ()
    reads_inputs = False

    def forward(self, a):
        return -a

    def gradient(self, grad, a):
        return (-grad,)


class PowBackward(Function):
    """z = a ** b;  dz/da = b a^(b-1),  dz/db = z ln(a).

    At b == 0 the gradient for a is 0 (also at a == 0), and at a == 0 with b >= 0 the gradient
    for b is 0, as in PyTorch (with b < 0 it is -inf there).
    """
    __slots__ = ()
    saves_output = True

    def forward(self, a, b):
        return _power(a, b)

    def gradient(self, grad, a, b, out):
        need_a, need_b = self.needs_input_grad
        grad_a = grad_b = None
        if need_a:
            if isinstance(b, (int, float)):
                grad_a = grad * 0 if b == 0 else grad * b * _power(a, b - 1)
            else:
                zero_exponent = _raw(b) == 0       # there a^1 instead of a^-1 keeps 0^-1 out
                grad_a = _where(zero_exponent, 0.0, grad * b * a ** _where(zero_exponent, 1.0, b - 1))
        if need_b:
            # Where a == 0 and b >= 0, z stays 0 (or 1) as b moves: gradient 0, as in PyTorch.
            # With b < 0 it is z ln a = inf * -inf = -inf, PyTorch's value too.
            flat = (np.asarray(_raw(a)) == 0) & (_raw(b) >= 0)
            grad_b = grad * out * _log(_where(flat, 1.0, a))
        return grad_a, grad_b


def _power(a, exponent):
    """a ** exponent, with small whole exponents as products (NumPy's pow is slow for them)."""
    if isinstance(exponent, (int, float)) and exponent in (1, 2, 3):
        return a * 1 if exponent == 1 else a * a if exponent == 2 else a * a * a
    return a ** exponent


class MatmulBackward(Function):
    """Z = A @ B;  dL/dA = dL/dZ @ B^T,  dL/dB = A^T @ dL/dZ (batched; 1-D as NumPy)."""
    __slots__ = ()

    def value_needed(self, i):
        return self.needs_input_grad[1 - i]     # a's values enter only b's gradient, and back

    def forward(self, a, b):
        try:
            if a.ndim > 2 and b.ndim == 2:
                return _stacked_times_matrix(a, b)
            return np.matmul(a, b)
        except (ValueError, AttributeError):            # AttributeError: a Python number
            raise ValueError(_matmul_mismatch(np.shape(a), np.shape(b))) from None

    def gradient(self, grad, a, b):
        need_a, need_b = self.needs_input_grad
        if a.ndim == 1 and b.ndim == 1:                      # dot product: grad is a scalar
            return (grad * b if need_a else None, grad * a if need_b else None)
        if a.ndim == 1:                                      # (n) @ (..., n, m) -> (..., m)
            grad2 = grad.reshape(grad.shape[:-1] + (1, grad.shape[-1]))
            grad_a = (grad2 @ _swap_last_two(b)).reshape(grad.shape[:-1] + a.shape) if need_a else None
            grad_b = a.reshape(a.shape + (1,)) @ grad2 if need_b else None
            return grad_a, grad_b
        if b.ndim == 1:                                      # (..., k, n) @ (n) -> (..., k)
            grad2 = grad.reshape(grad.shape + (1,))
            grad_a = grad2 @ b.reshape((1,) + b.shape) if need_a else None
            grad_b = (_swap_last_two(a) @ grad2).reshape(grad.shape[:-1] + b.shape) if need_b else None
            return grad_a, grad_b
        if a.ndim > 2 and b.ndim == 2:                       # (..., k, n) @ (n, m)
            flat_a = a.reshape(-1, a.shape[-1])
            return (_stacked_times_matrix(grad, _swap_last_two(b)) if need_a else None,
                    _swap_last_two(flat_a) @ grad.reshape(-1, grad.shape[-1]) if need_b else None)
        return (grad @ _swap_last_two(b) if need_a else None,
                _swap_last_two(a) @ grad if need_b else None)


def _matmul_mismatch(a_shape, b_shape):
    """Say why shapes ``a_shape`` @ ``b_shape`` cannot be multiplied."""
    if len(a_shape) == 0 or len(b_shape) == 0:
        return (f"matmul: both operands need at least 1 dimension, got shapes {a_shape} and "
                f"{b_shape} (use * for scalars)")
    inner_a = a_shape[-1]
    inner_b = b_shape[-2] if len(b_shape) > 1 else b_shape[0]
    if inner_a != inner_b:
        return (f"matmul: shapes {a_shape} and {b_shape} are not aligned: {inner_a} (last dim of "
                f"the first) != {inner_b} "
                f"({'second-to-last' if len(b_shape) > 1 else 'only'} dim of the second)")
    return f"matmul: batch dimensions of shapes {a_shape} and {b_shape} do not broadcast"


def _stacked_times_matrix(a, b):
    """a (..., k) @ b (k, m) as one (N, k) @ (k, m) product: one BLAS call, not one per matrix."""
    return (a.reshape(-1, a.shape[-1]) @ b).reshape(a.shape[:-1] + (b.shape[-1],))


# ----- elementwise functions ----------------------------------------------------------------------

class ExpBackward(Function):
    """y = exp(x);  dy/dx = exp(x) = y."""
    __slots__ = ()
    saves_output = True
    reads_inputs = False          # the rule uses only the output

    def forward(self, x):
        return np.exp(x)

    def gradient(self, grad, x, out):
        return (grad * out,)


class LogBackward(Function):
    """y = ln(x);  dy/dx = 1/x."""
    __slots__ = ()

    def forward(self, x):
        return np.log(x)

    def gradient(self, grad, x):
        return (grad / x,)


class SqrtBackward(Function):
    """y = sqrt(x);  dy/dx = 1 / (2 sqrt(x)) = 1 / (2y)."""
    __slots__ = ()
    saves_output = True
    reads_inputs = False          # the rule uses only the output

    def forward(self, x):
        return np.sqrt(x)

    def gradient(self, grad, x, out):
        return (grad / (out * 2),)


class AbsBackward(Function):
    """y = |x|;  dy/dx = sign(x) (0 at x = 0 and, as in PyTorch, at NaN)."""
    __slots__ = ()

    def forward(self, x):
        return np.abs(x)

    def gradient(self, grad, x):
        return (grad * _sign(x),)


class TanhBackward(Function):
    """y = tanh(x);  dy/dx = 1 - y^2."""
    __slots__ = ()
    saves_output = True
    reads_inputs = False          # the rule uses only the output

    def forward(self, x):
        return np.tanh(x)

    def gradient(self, grad, x, out):
        return (grad * (1 - out * out),)


def sigmoid_array(x):
    """1 / (1 + e^-x) on arrays, exponentiating only numbers <= 0 (so nothing overflows).

    x >= 0: 1 / (1 + e^-x);  x < 0: e^x / (1 + e^x). Both are e^min(x,0) / (1 + e^-|x|).
    """
    numerator = np.exp(np.minimum(x, 0))
    return numerator / (np.exp(-np.abs(x)) + 1)


class SigmoidBackward(Function):
    """y = 1 / (1 + e^-x);  dy/dx = y (1 - y).

    Computed by :func:`sigmoid_array`, so no exponential overflows at any input.
    """
    __slots__ = ()
    saves_output = True
    reads_inputs = False          # the rule uses only the output

    def __init__(self, input_tensor, output_tensor):
        super().__init__(input_tensor)
        self.output_data = output_tensor._data

    def forward(self, x):
        return sigmoid_array(x)

    def gradient(self, grad, x, out):
        return (grad * out * (1 - out),)


class ReLUBackward(Function):
    """y = max(0, x);  dy/dx = 1 where y != 0, else 0.

    Read from the output as PyTorch does, so a NaN input (y = NaN) passes its gradient on.
    """
    __slots__ = ()
    saves_output = True
    reads_inputs = False          # the rule uses only the output

    def __init__(self, input_tensor):
        super().__init__(input_tensor)
        self.output_data = np.maximum(_raw(input_tensor), 0)

    def forward(self, x):
        return np.maximum(x, 0)

    def gradient(self, grad, x, out):
        return (_select(_raw(out) != 0, grad),)


class SinBackward(Function):
    """y = sin(x);  dy/dx = cos(x)."""
    __slots__ = ()

    def forward(self, x):
        return np.sin(x)

    def gradient(self, grad, x):
        return (grad * _cos(x),)


class CosBackward(Function):
    """y = cos(x);  dy/dx = -sin(x)."""
    __slots__ = ()

    def forward(self, x):
        return np.cos(x)

    def gradient(self, grad, x):
        return (-grad * _sin(x),)


class ClipBackward(Function):
    """y = min(max(x, low), high);  dy/dx = 1 where low <= x <= high, else 0."""
    __slots__ = ("low", "high")

    def forward(self, x, low=None, high=None):
        self.low, self.high = low, high
        return np.clip(x, low, high)

    def gradient(self, grad, x):
        x = _raw(x)
        inside = np.ones(x.shape, dtype=bool)
        if self.low is not None:
            inside &= x >= self.low
        if self.high is not None:
            inside &= x <= self.high
        return (_select(inside, grad),)


class MaximumBackward(Function):
    """z = max(a, b) elementwise; the gradient goes to the larger input, split at ties."""
    __slots__ = ()

    def forward(self, a, b):
        return np.maximum(a, b)

    def gradient(self, grad, a, b):
        return _choice_gradient(self.needs_input_grad, grad, _raw(a) < _raw(b), _raw(a) > _raw(b),
                                _raw(a) == _raw(b))


class MinimumBackward(Function):
    """z = min(a, b) elementwise; the gradient goes to the smaller input, split at ties."""
    __slots__ = ()

    def forward(self, a, b):
        return np.minimum(a, b)

    def gradient(self, grad, a, b):
        return _choice_gradient(self.needs_input_grad, grad, _raw(a) > _raw(b), _raw(a) < _raw(b),
                                _raw(a) == _raw(b))


def _choice_gradient(needs, grad, a_loses, b_loses, tie):
    """Gradients of an elementwise choice between a and b: all to the winner, half each at ties.

    As PyTorch: an input gets the gradient unless it lost the comparison, so where a NaN made
    the comparison fail (z is NaN), both inputs get it.
    """
    need_a, need_b = needs
    shared = _where(tie, grad * 0.5, grad)
    return (_select(~a_loses, shared) if need_a else None,
            _select(~b_loses, shared) if need_b else None)


class CloneBackward(Function):
    """y = copy of x;  dy/dx = 1."""
    __slots__ = ()
    reads_inputs = False

    def forward(self, x):
        return x.copy()

    def gradient(self, grad, x):
        return (grad,)


class CastBackward(Function):
    """y = x converted to another float dtype;  dy/dx = 1 (the engine casts the gradient back)."""
    __slots__ = ()
    reads_inputs = False

    def forward(self, x, dtype):
        return x.astype(dtype)

    def gradient(self, grad, x):
        return (grad,)


# ----- reductions ------------------------------------------------------------------------------------

class SumBackward(Function):
    """y = sum of x over ``axis``;  dy/dx = 1: the gradient is spread back over the summed axes."""
    __slots__ = ("axis",)
    reads_inputs = False

    def __init__(self, tensor, axis=None, keepdims=False):
        super().__init__(tensor)
        self.axis = axis

    def forward(self, x, axis=None, keepdims=False):
        self.axis = _normalise_axis(axis, x.ndim)
        return x.sum(axis=self.axis, keepdims=keepdims)

    def gradient(self, grad, x):
        return (_expand_reduced(grad, x.shape, self.axis),)


class MeanBackward(Function):
    """y = mean of x over ``axis`` (N elements each);  dy/dx = 1/N."""
    __slots__ = ("axis",)
    reads_inputs = False

    def forward(self, x, axis=None, keepdims=False):
        self.axis = _normalise_axis(axis, x.ndim)
        return mean_array(x, self.axis, keepdims)

    def gradient(self, grad, x):
        count = max(x.size // max(math.prod(_kept_shape(x.shape, self.axis)), 1), 1)
        return (_expand_reduced(grad / count, x.shape, self.axis),)


def _mean_kept(v, axis):
    """The mean over ``axis`` with the reduced axes kept (arrays or Tensors)."""
    return v.mean(axis=axis, keepdims=True) if isinstance(v, Tensor) else mean_array(v, axis, True)


def _centered(x, axis):
    """x - mean(x) over ``axis``, by the corrected two-pass algorithm: the mean of the first
    differences (the rounding error of the mean) is subtracted again. A slice of equal values
    then has differences of exactly 0, as with PyTorch's Welford algorithm (Chan, Golub and
    LeVeque, "Algorithms for computing the sample variance", 1983)."""
    centered = x - _mean_kept(x, axis)
    return centered - _mean_kept(centered, axis)


def _reduced_count(shape, axis):
    """How many elements each result of a reduction over ``axis`` summarises."""
    if axis is None:
        return math.prod(shape)
    axes = axis if isinstance(axis, tuple) else (axis,)
    return math.prod(shape[a] for a in axes)


class VarBackward(Function):
    """y = sum((x - mean)^2) / (N - correction) over ``axis`` (N elements each);
    dy/dx = 2 (x - mean) / (N - correction)."""
    __slots__ = ("axis", "divisor")

    def forward(self, x, axis=None, keepdims=False, correction=0):
        self.axis = _normalise_axis(axis, x.ndim)
        self.divisor = _reduced_count(x.shape, self.axis) - correction
        centered = _centered(x, self.axis)
        return (centered * centered).sum(axis=self.axis, keepdims=keepdims) / self.divisor

    def gradient(self, grad, x):
        spread = _expand_reduced(grad, x.shape, self.axis)
        return (spread * _centered(x, self.axis) * 2.0 / self.divisor,)


class StdBackward(Function):
    """y = sqrt(var(x)) over ``axis``;  dy/dx = (x - mean) / ((N - correction) y).

    Where y == 0 (a slice of equal values) the gradient is 0, PyTorch's subgradient: the
    formula's 0 / 0 would put NaN into every parameter a standardised constant row depends on.
    """
    __slots__ = ("axis", "divisor")
    saves_output = True

    def forward(self, x, axis=None, keepdims=False, correction=0):
        self.axis = _normalise_axis(axis, x.ndim)
        self.divisor = _reduced_count(x.shape, self.axis) - correction
        centered = _centered(x, self.axis)
        return np.sqrt((centered * centered).sum(axis=self.axis, keepdims=keepdims) / self.divisor)

    def gradient(self, grad, x, out):
        kept = _kept_shape(x.shape, self.axis)
        std = out.reshape(kept)
        nonzero_std = _where(_raw(std) == 0, 1.0, std)       # there the differences are 0 too
        spread = _expand_reduced(grad, x.shape, self.axis)
        return (spread * _centered(x, self.axis) / (nonzero_std * self.divisor),)


class MaxBackward(Function):
    """y = max of x over ``axis``;  dy/dx = 1 at the maximum (shared equally among ties)."""
    __slots__ = ("axis",)
    saves_output = True

    def forward(self, x, axis=None, keepdims=False):
        self.axis = _normalise_axis(axis, x.ndim)
        if x.size == 0:
            _refuse_empty_reduction("max", x.shape, self.axis)
        return x.max(axis=self.axis, keepdims=keepdims)

    def gradient(self, grad, x, out):
        return (_extremum_gradient(grad, x, out, self.axis),)


class MinBackward(Function):
    """y = min of x over ``axis``;  dy/dx = 1 at the minimum (shared equally among ties)."""
    __slots__ = ("axis",)
    saves_output = True

    def forward(self, x, axis=None, keepdims=False):
        self.axis = _normalise_axis(axis, x.ndim)
        if x.size == 0:
            _refuse_empty_reduction("min", x.shape, self.axis)
        return x.min(axis=self.axis, keepdims=keepdims)

    def gradient(self, grad, x, out):
        return (_extremum_gradient(grad, x, out, self.axis),)


def _refuse_empty_reduction(name, shape, axis):
    """max/min have no value over an empty slice (as in PyTorch); other empty results are fine."""
    if _reduced_count(shape, axis) == 0:
        over = "the whole tensor" if axis is None else f"axis {axis}"
        raise ValueError(f"{name}(): cannot reduce over {over} of a tensor of shape {shape}: "
                         f"a slice of size 0 has no {name}imum")


def _extremum_gradient(grad, x, out, axis):
    """The gradient of max/min over ``axis``: shared equally by the elements equal to the result.

    A NaN result came from the NaNs of its slice, so they share the gradient (as PyTorch's
    ``max()``; its ``amax(dim)`` gives NaN gradients there instead, which we do not copy).
    """
    kept = _kept_shape(x.shape, axis)
    x, out = _raw(x), _raw(out).reshape(kept)
    hits = x == out
    if np.isnan(out).any():
        hits |= np.isnan(x) & np.isnan(out)
    counts = hits.sum(axis=axis, keepdims=True).astype(x.dtype)
    return _select(hits, _expand(grad.reshape(kept) / counts, x.shape))


# ----- shape operations ----------------------------------------------------------------------------

class ReshapeBackward(Function):
    """y = x with a new shape;  the gradient is reshaped back to ``original_shape``."""
    __slots__ = ("original_shape", "returns_view")
    reads_inputs = False

    def __init__(self, tensor, original_shape):
        super().__init__(tensor)
        self.original_shape = tuple(original_shape)
        self.returns_view = True

    def forward(self, x, shape):
        self.original_shape = x.shape
        try:
            out = x.reshape(shape)
            self.returns_view = np.may_share_memory(out, x)   # a copy for some strided inputs
            return out
        except ValueError:
            raise ValueError(f"reshape: cannot reshape a tensor of shape {x.shape} "
                             f"({x.size} elements) into shape {tuple(shape)}") from None

    def gradient(self, grad, x):
        return (grad.reshape(self.original_shape),)


class TransposeBackward(Function):
    """y = x with axes dim0 and dim1 swapped (default: the last two);  swap the gradient back."""
    __slots__ = ("dim0", "dim1")
    reads_inputs = False
    returns_view = True

    def __init__(self, tensor, dim0, dim1):
        super().__init__(tensor)
        self.dim0, self.dim1 = dim0, dim1

    def forward(self, x, dim0=None, dim1=None):
        self.dim0, self.dim1 = dim0, dim1
        return self._swap(x)

    def _swap(self, v):
        if self.dim0 is None and self.dim1 is None:
            return v if v.ndim < 2 else _swap_axes(v, -2, -1)
        if self.dim0 is None or self.dim1 is None:
            raise TypeError("transpose: give both dim0 and dim1, or neither")
        return _swap_axes(v, self.dim0, self.dim1)

    def gradient(self, grad, x):
        return (self._swap(grad),)


def _swap_axes(v, dim0, dim1):
    if isinstance(v, Tensor):
        return v.transpose(dim0, dim1)
    for d in (dim0, dim1):
        if not -v.ndim <= d < v.ndim:
            raise IndexError(f"transpose: dim {d} is out of range for a tensor with {v.ndim} dims")
    return v.swapaxes(dim0, dim1)


class PermuteBackward(Function):
    """y = x with axes reordered by ``axes``;  the gradient is permuted by the inverse order."""
    __slots__ = ("axes", "inverse_axes")
    reads_inputs = False
    returns_view = True

    def __init__(self, tensor, axes):
        super().__init__(tensor)
        self._set_axes(axes, len(axes))

    def _set_axes(self, axes, ndim):
        axes = tuple(int(a) for a in axes)
        normalised = tuple(a % ndim for a in axes) if ndim else axes
        if sorted(normalised) != list(range(ndim)):
            raise ValueError(f"permute: {axes} is not a permutation of the {ndim} axes")
        self.axes = normalised
        self.inverse_axes = tuple(int(i) for i in np.argsort(self.axes))

    def forward(self, x, axes):
        self._set_axes(axes, x.ndim)
        return x.transpose(self.axes)

    def gradient(self, grad, x):
        return (_permute(grad, self.inverse_axes),)


class ExpandBackward(Function):
    """y = x broadcast to ``shape``;  the engine sums the gradient back over the copies."""
    __slots__ = ()
    reads_inputs = False
    returns_view = True

    def forward(self, x, shape):
        try:
            return np.broadcast_to(x, shape)
        except ValueError:
            raise ValueError(f"expand: cannot broadcast shape {x.shape} to {tuple(shape)}") from None

    def gradient(self, grad, x):
        return (grad,)


# ----- indexing, joining -------------------------------------------------------------------------

def _is_basic_index(key):
    """True for ints, slices, None and Ellipsis only: NumPy then returns a view, not a copy."""
    keys = key if isinstance(key, tuple) else (key,)
    return all(k is None or k is Ellipsis or isinstance(k, (int, slice, np.integer)) for k in keys)


def _has_index_arrays(key):
    """True when ``key`` uses integer arrays (advanced indexing), where indices may repeat."""
    keys = key if isinstance(key, tuple) else (key,)
    return any(isinstance(k, np.ndarray) and k.dtype != bool or isinstance(k, list) for k in keys)


class SliceBackward(Function):
    """y = x[key];  the gradient lands back at the selected positions (summed where repeated)."""
    __slots__ = ("key", "original_shape", "returns_view")
    reads_inputs = False

    def __init__(self, tensor, key):
        super().__init__(tensor)
        self.key = key
        self.original_shape = tensor.shape
        self.returns_view = _is_basic_index(key)

    def forward(self, x, key):
        self.key = key
        self.original_shape = x.shape
        self.returns_view = _is_basic_index(key)
        try:
            return x[key]
        except IndexError as error:
            raise IndexError(f"index {key!r} is invalid for a tensor of shape {x.shape}: {error}") from None

    def gradient(self, grad, x):
        return (_scatter_add(grad, self.key, self.original_shape),)


def _scatter_add(grad, key, shape):
    """Zeros of ``shape`` with ``grad`` added at ``key`` (the inverse of ``x[key]``)."""
    if isinstance(grad, Tensor):
        return run_op(IndexAddBackward, grad, key=key, shape=shape)
    out = np.zeros(shape, dtype=grad.dtype)
    if _has_index_arrays(key):
        np.add.at(out, key, grad)
    else:
        out[key] = grad
    return out


class IndexAddBackward(Function):
    """y = zeros(shape) with x added at ``key`` (the gradient of indexing);  dy/dx = y[key]."""
    __slots__ = ("key",)
    reads_inputs = False

    def forward(self, x, key, shape):
        self.key = key
        return _scatter_add(x, key, shape)

    def gradient(self, grad, x):
        return (grad[self.key],)


class SetItemBackward(Function):
    """y = x with y[key] = value;  the gradient goes to x outside ``key``, to value inside it."""
    __slots__ = ("key",)
    reads_inputs = False

    def forward(self, x, value, key):
        self.key = key
        out = x.copy()
        out[key] = value
        return out

    def gradient(self, grad, x, value):
        need_x, need_value = self.needs_input_grad
        outside = np.ones(np.shape(_raw(x)), dtype=bool)
        outside[self.key] = False
        grad_value = None
        if need_value:
            grad_value = grad[self.key]
            extra = np.ndim(_raw(value)) - grad_value.ndim   # value had leading size-1 axes
            if extra > 0:
                grad_value = grad_value.reshape((1,) * extra + grad_value.shape)
        return (_select(outside, grad) if need_x else None, grad_value)


class EmbeddingBackward(Function):
    """y = weight[indices] (rows looked up);  each used row gets the sum of its gradients.

    ``weight`` (V, D), ``indices`` integers of any shape, ``y`` (*indices.shape, D). The
    scatter-add of the gradient runs on the flattened (V * D,) array, where ``np.add.at`` has
    a fast path: 3-8x faster than adding whole rows at repeated indices (measured for
    N = 64..4096 lookups, V = 65..10000 rows, D = 64..256).
    """
    __slots__ = ("indices",)
    reads_inputs = False

    def __init__(self, weight, indices):
        super().__init__(weight)
        self.indices = indices._data if isinstance(indices, Tensor) else np.asarray(indices)

    def forward(self, weight, indices):
        self.indices = indices
        return np.take(weight, indices, axis=0)

    def gradient(self, grad, weight):
        indices = self.indices.astype(np.intp, copy=False)
        if isinstance(grad, Tensor):                      # create_graph: a differentiable scatter
            return (_scatter_add(grad, indices, weight.shape),)
        vocab, dim = weight.shape
        flat = (indices.reshape(-1, 1) * dim + np.arange(dim)).reshape(-1)
        out = np.zeros(vocab * dim, dtype=grad.dtype)
        np.add.at(out, flat, grad.reshape(-1))
        return (out.reshape(vocab, dim),)


class ConcatenateBackward(Function):
    """y = inputs joined along ``axis``;  each input gets its slice of the gradient."""
    __slots__ = ("axis", "sizes")
    reads_inputs = False

    def forward(self, *arrays, axis=0):
        try:
            out = np.concatenate(arrays, axis=axis)
        except ValueError as error:
            shapes = [a.shape for a in arrays]
            raise ValueError(f"concatenate along axis {axis}: shapes {shapes} do not fit: {error}") from None
        self.axis = axis % out.ndim
        self.sizes = [a.shape[self.axis] for a in arrays]
        return out

    def gradient(self, grad, *arrays):
        before = (slice(None),) * self.axis
        grads, start = [], 0
        for size, need in zip(self.sizes, self.needs_input_grad):
            grads.append(grad[before + (slice(start, start + size),)] if need else None)
            start += size
        return tuple(grads)


class StackBackward(Function):
    """y = inputs stacked along a new ``axis``;  input i gets the gradient's slice i."""
    __slots__ = ("axis",)
    reads_inputs = False

    def forward(self, *arrays, axis=0):
        try:
            out = np.stack(arrays, axis=axis)
        except ValueError as error:
            shapes = [a.shape for a in arrays]
            raise ValueError(f"stack: shapes {shapes} must all be equal: {error}") from None
        self.axis = axis % out.ndim
        return out

    def gradient(self, grad, *arrays):
        before = (slice(None),) * self.axis
        return tuple(grad[before + (i,)] if need else None
                     for i, need in enumerate(self.needs_input_grad))


class WhereBackward(Function):
    """z = a where condition else b;  the gradient goes to a where true, to b elsewhere."""
    __slots__ = ("condition",)
    reads_inputs = False

    def forward(self, a, b, condition):
        self.condition = condition
        return np.where(condition, a, b)

    def gradient(self, grad, a, b):
        need_a, need_b = self.needs_input_grad
        return (_where(self.condition, grad, 0.0) if need_a else None,
                _where(self.condition, 0.0, grad) if need_b else None)


# Every op class above, for ``from tinytorch.core.ops import *`` and core.autograd's
# curriculum names; derived, so a new op needs no entry here.
__all__ = [name for name, value in list(globals().items())
           if isinstance(value, type) and issubclass(value, Function) and value is not Function]
