"""Neural-network functions as fused differentiable ops: activations and losses.

Each op below computes its result directly in NumPy and states its gradient right beside it
(the conventions are those of ``ops.py``). Fusing is what makes them stable:
softmax and log-softmax subtract the row maximum before exponentiating, cross-entropy is
computed from a log-sum-exp, and sigmoid-based functions never exponentiate a positive number,
so inputs of +-1e4 give exact, finite values and gradients.

>>> import tinytorch as tt
>>> logits = tt.Tensor([[1e4, 0.0, -1e4]], requires_grad=True)
>>> loss = cross_entropy(logits, [0])          # log-sum-exp: finite, exactly 0
>>> loss.backward()                            # d/dlogits = softmax - one_hot = [[0, 0, 0]]

The loss functions take ``reduction='mean' | 'sum' | 'none'`` ('none' returns one loss per
element, or per sample for cross-entropy). Cross-entropy's class targets are constants of the
graph; in :func:`mse_loss` and the binary cross-entropies a target that requires grad gets its
gradient too.
"""

import functools
import math
import numbers
from fractions import Fraction

import numpy as np

from tinytorch.core.autograd import Function, run_numpy, run_op
from tinytorch.core.ops import _exp, _log, _raw, _where, mean_array, sigmoid_array
from tinytorch.core.spatial_ops import (  # noqa: F401  (convolution and pooling: module 09)
    AvgPool2dBackward, BatchNormBackward, Conv2dBackward, Conv2dWeightGradBackward,
    ConvTranspose2dBackward, MaxPool2dBackward, avg_pool2d, batch_norm, conv2d, max_pool2d,
)
from tinytorch.core.tensor import Tensor, get_rng


_REDUCTIONS = ("mean", "sum", "none")
_SQRT1_2 = math.sqrt(0.5)
_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_GELU_TANH_CUBIC = 0.044715
_BCE_LOG_FLOOR = -100.0         # PyTorch clamps each log of binary_cross_entropy at -100
_BCE_GRAD_EPSILON = float(np.float32(1e-12))   # ...and its gradient by max(p (1 - p), 1e-12)


# ----- helpers (NumPy arrays or Tensors) ----------------------------------------------------------

def _as_tensor(x):
    return x if isinstance(x, Tensor) else Tensor(x)


def _constant(array, like):
    """``array`` as an operand of ``like``: wrapped (dtype kept) when ``like`` is a Tensor."""
    return Tensor._make(array) if isinstance(like, Tensor) else array


def _sigmoid(v):
    """1 / (1 + e^-v) without overflow: only e^-|v| <= 1 is ever computed."""
    if isinstance(v, Tensor):
        return v.sigmoid()
    return sigmoid_array(v)


def _tanh(v):
    return v.tanh() if isinstance(v, Tensor) else np.tanh(v)


def _check_reduction(reduction, name):
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{name}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    return reduction


def _check_dim(dim, ndim, name):
    """``dim`` as a non-negative axis; a 0-d tensor takes 0 or -1, as in PyTorch (then None)."""
    if isinstance(dim, bool) or not isinstance(dim, numbers.Integral):
        raise TypeError(f"{name}: dim must be an int, got {dim!r}")
    size = max(ndim, 1)
    if not -size <= dim < size:
        raise IndexError(f"{name}: dim {dim} is out of range for a tensor with {ndim} dims "
                         f"(valid: {-size} to {size - 1})")
    return int(dim) % ndim if ndim else None


def _reduce(losses, reduction):
    if reduction == "mean":
        return np.asarray(mean_array(losses))
    if reduction == "sum":
        return np.asarray(losses.sum())
    return losses


def _scaled(grad, reduction, count):
    """The gradient reaching each element's loss: ``grad``, divided by ``count`` for 'mean'."""
    return grad / max(count, 1) if reduction == "mean" else grad    # (no elements: unused)


# ----- erf, the standard normal CDF ---------------------------------------------------------------
#
# erf(x) = 2/sqrt(pi) * integral_0^x exp(-t^2) dt, in float64, to a few units in the last place:
# - |x| <= 4: a Taylor expansion around the nearest c = k/16. Since d/dx erf = 2/sqrt(pi) e^(-x^2)
#   and d^n/dx^n e^(-x^2) = (-1)^n H_n(x) e^(-x^2) (Hermite polynomials),
#       erf(c + h) = erf(c) + 2/sqrt(pi) e^(-c^2) * sum_n (-1)^n H_n(c) h^(n+1) / (n+1)!,
#   and erfc(c + h) = erfc(c) minus the same sum. With |h| <= 1/32, 10 terms reach full precision.
# - |x| > 4: Laplace's continued fraction
#       erfc(x) = e^(-x^2) / sqrt(pi) / (x + (1/2) / (x + 1 / (x + (3/2) / (x + ...)))).

_TAYLOR_STEP = 16         # centres at multiples of 1/16
_TAYLOR_END = 4.0
_TAYLOR_TERMS = 10
_FRACTION_DEPTH = 25


@functools.cache
def _erf_taylor_table():
    """Rows: erf(c), erfc(c), then the Taylor coefficients a_n of h^(n+1); one column per c."""
    columns = []
    for k in range(int(_TAYLOR_END * _TAYLOR_STEP) + 1):
        c = Fraction(k, _TAYLOR_STEP)
        scale = _TWO_OVER_SQRT_PI * math.exp(-float(c * c))
        column = [math.erf(c), math.erfc(c)]
        hermite_prev, hermite = Fraction(0), Fraction(1)          # H_-1, H_0 (exact rationals)
        factorial = 1
        for n in range(_TAYLOR_TERMS):
            factorial *= n + 1
            column.append(float((-1) ** n * hermite / factorial) * scale)
            hermite_prev, hermite = hermite, 2 * c * hermite - 2 * n * hermite_prev
        columns.append(column)
    return np.array(columns).T.copy()


def _erf_and_erfc(x):
    """erf(x) and erfc(x) = 1 - erf(x), elementwise in float64, each accurate to a few ulp.

    >>> _erf_and_erfc(np.array([0.5, 10.0]))
    (array([0.52049988, 1.]), array([4.79500122e-01, 2.08848758e-45]))
    """
    shape = np.shape(x)
    x = np.array(x, dtype=np.float64, ndmin=1)        # 0-d inputs as one element, reshaped back
    a = np.abs(x)
    near = np.fmin(a, _TAYLOR_END)                   # fmin: NaN becomes 4 here, restored below
    k = (near * _TAYLOR_STEP + 0.5).astype(np.intp)
    h = near - k * (1.0 / _TAYLOR_STEP)
    table = _erf_taylor_table()
    series = table[2 + _TAYLOR_TERMS - 1].take(k)
    for n in range(_TAYLOR_TERMS - 2, -1, -1):
        series *= h
        series += table[2 + n].take(k)
    series *= h
    erf_a = table[0].take(k) + series
    erfc_a = table[1].take(k) - series
    far = a > _TAYLOR_END
    if far.any():
        z = np.minimum(a[far], 30.0)                 # erfc(30) underflows to 0 anyway
        fraction = z.copy()
        for j in range(_FRACTION_DEPTH, 0, -1):
            fraction = z + (0.5 * j) / fraction
        high = z.astype(np.float32).astype(np.float64)    # z^2 = high^2 + (z-high)(z+high), exactly
        gaussian = np.exp(-high * high) * np.exp(-(z - high) * (z + high))
        erfc_far = gaussian / (math.sqrt(math.pi) * fraction)
        erfc_a[far] = erfc_far
        erf_a[far] = 1.0 - erfc_far
    erfc = erfc_a
    np.add(1.0, erf_a, out=erfc, where=x < 0)             # erfc(-a) = 1 + erf(a)
    erf = np.copysign(erf_a, x)
    nan = np.isnan(x)
    if nan.any():
        erf[nan] = erfc[nan] = np.nan
    return erf.reshape(shape), erfc.reshape(shape)


def _normal_cdf(v):
    """Phi(v) = P(Z <= v), Z standard normal, = erfc(-v / sqrt 2) / 2 (accurate in both tails)."""
    if isinstance(v, Tensor):
        return (erf(v * _SQRT1_2) + 1.0) * 0.5
    return (0.5 * _erf_and_erfc(-v * _SQRT1_2)[1]).astype(v.dtype, copy=False)


def _normal_pdf(v):
    """phi(v) = exp(-v^2 / 2) / sqrt(2 pi); |v| is capped at 40, where phi is already 0."""
    clipped = v.clip(-40.0, 40.0)
    return _exp(clipped * clipped * -0.5) * _INV_SQRT_2PI


class ErfBackward(Function):
    """y = erf(x) = 2/sqrt(pi) * integral_0^x e^(-t^2) dt;  dy/dx = 2/sqrt(pi) e^(-x^2)."""
    __slots__ = ()

    def forward(self, x):
        return _erf_and_erfc(x)[0].astype(x.dtype, copy=False)

    def gradient(self, grad, x):
        clipped = x.clip(-30.0, 30.0)
        return (grad * _exp(clipped * clipped * -1.0) * _TWO_OVER_SQRT_PI,)


# ----- activations --------------------------------------------------------------------------------

class SoftmaxBackward(Function):
    """y = softmax(x) along ``dim``:  y_i = e^(x_i - m) / sum_j e^(x_j - m),  m = max_j x_j.

    Subtracting m changes nothing mathematically and keeps every exponential <= 1.
    dL/dx = y * (g - sum_j g_j y_j), with g = dL/dy and the sum along ``dim``.
    """
    __slots__ = ("dim",)
    saves_output = True
    reads_inputs = False          # the rule uses only the output

    def __init__(self, input_tensor, output_tensor, dim=-1):
        super().__init__(input_tensor)
        self.output_data = _raw(output_tensor)
        self.dim = dim

    def forward(self, x, dim=-1):
        self.dim = dim
        if x.size == 0:
            return x.copy()
        e = np.exp(x - x.max(axis=dim, keepdims=True))
        return e / e.sum(axis=dim, keepdims=True)

    def gradient(self, grad, x, out):
        return (out * (grad - (grad * out).sum(axis=self.dim, keepdims=True)),)


class LogSoftmaxBackward(Function):
    """y = log softmax(x) along ``dim`` = (x - m) - log sum_j e^(x_j - m),  m = max_j x_j.

    dL/dx = g - softmax(x) * sum_j g_j, with softmax(x) = e^y.
    """
    __slots__ = ("dim",)
    saves_output = True
    reads_inputs = False          # the rule uses only the output

    def __init__(self, input_tensor, output_tensor, dim=-1):
        super().__init__(input_tensor)
        self.output_data = _raw(output_tensor)
        self.dim = dim

    def forward(self, x, dim=-1):
        self.dim = dim
        if x.size == 0:
            return x.copy()
        shifted = x - x.max(axis=dim, keepdims=True)
        return shifted - np.log(np.exp(shifted).sum(axis=dim, keepdims=True))

    def gradient(self, grad, x, out):
        return (grad - _exp(out) * grad.sum(axis=self.dim, keepdims=True),)


def _check_approximate(approximate):
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return approximate


def _gelu_tanh(x):
    """tanh(u), u = sqrt(2/pi) (x + 0.044715 x^3); |x| is capped at 1e3 (where tanh u is
    already exactly +-1) so that x^3 cannot overflow."""
    capped = x.clip(-1e3, 1e3)
    return _tanh((capped * capped * _GELU_TANH_CUBIC + 1.0) * capped * _SQRT_2_OVER_PI)


def _gelu_tanh_array(x):
    """:func:`_gelu_tanh` on an array, in two buffers instead of eight (each fresh buffer of a
    large array costs a pass and, often, page faults). Where x^3 overflows, u is +-inf and
    tanh u = +-1, as it is at the cap of 1e3."""
    with np.errstate(over="ignore"):
        u = np.multiply(x, x, out=np.empty_like(x))     # (out=: an array even for 0-d x)
        u *= _GELU_TANH_CUBIC
        u += 1.0
        u *= x
        u *= _SQRT_2_OVER_PI
    return np.tanh(u, out=u)


def _gelu_tanh_gradient_array(grad, x, t):
    """grad * ((1 + t) + x (1 - t^2) du/dx) / 2 with t = tanh u (the tanh-GELU's derivative), in
    two buffers; |x| is capped at 1e3 inside du/dx (through x^2 <= 1e6), as in
    :func:`_gelu_tanh_du`."""
    out = np.multiply(t, t, out=np.empty_like(t))
    np.subtract(1.0, out, out=out)
    out *= x
    with np.errstate(over="ignore"):
        du = np.multiply(x, x, out=np.empty_like(x))
    np.minimum(du, 1e6, out=du)
    du *= 3 * _GELU_TANH_CUBIC
    du += 1.0
    du *= _SQRT_2_OVER_PI
    out *= du
    out += t
    out += 1.0
    out *= 0.5
    out *= grad
    return out


def _gelu_tanh_du(x):
    """du/dx = sqrt(2/pi) (1 + 3 * 0.044715 x^2), with the same cap on |x|."""
    capped = x.clip(-1e3, 1e3)
    return (capped * capped * (3 * _GELU_TANH_CUBIC) + 1.0) * _SQRT_2_OVER_PI


class GELUBackward(Function):
    """GELU, exact (``approximate='none'``, the default) or with the tanh approximation.

    Exact:  y = x Phi(x), Phi the standard normal CDF;  dy/dx = Phi(x) + x phi(x).
    Tanh:   y = x/2 (1 + tanh u), u = sqrt(2/pi) (x + 0.044715 x^3);
            dy/dx = (1 + tanh u)/2 + x (1 - tanh^2 u) du/dx / 2.
    Each gradient is the exact derivative of the formula the forward computes.
    """
    __slots__ = ("approximate", "tanh_u")

    def __init__(self, input_tensor, approximate="none"):
        super().__init__(input_tensor)
        self.approximate = _check_approximate(approximate)
        self.tanh_u = None

    def forward(self, x, approximate="none"):
        self.approximate = approximate
        if approximate == "tanh":
            self.tanh_u = _gelu_tanh_array(x)
            out = self.tanh_u + 1.0
            out *= x
            out *= 0.5
            return out
        return x * _normal_cdf(x)

    def gradient(self, grad, x):
        if self.approximate == "tanh":
            if isinstance(x, Tensor) or self.tanh_u is None:   # create_graph: differentiable
                t = _gelu_tanh(x)
                return (grad * ((t + 1.0) + x * (1.0 - t * t) * _gelu_tanh_du(x)) * 0.5,)
            return (_gelu_tanh_gradient_array(grad, x, self.tanh_u),)
        return (grad * (_normal_cdf(x) + x * _normal_pdf(x)),)

    def release(self):
        super().release()
        self.tanh_u = None


def _normalize(x, axes, eps):
    """(x - mean) / sqrt(var + eps) over ``axes`` and the 1 / sqrt(var + eps) used (arrays or Tensors)."""
    centered = x - x.mean(axis=axes, keepdims=True)
    inv_std = ((centered * centered).mean(axis=axes, keepdims=True) + eps) ** -0.5
    return centered * inv_std, inv_std


def _add_into(out, other):
    """``out + other``, written into ``out`` (a fresh array of the op's) when the sum keeps its
    dtype: one buffer instead of two."""
    if np.result_type(out, other) == out.dtype:
        out += other
        return out
    return out + other


def _normalize_array(x, axes, eps):
    """:func:`_normalize` on an array: rows of the normalised axes, their sums as matrix-vector
    products (BLAS; 2-3x faster than NumPy's reductions over short rows), in two buffers."""
    n = math.prod(x.shape[len(x.shape) - len(axes):])
    if x.dtype not in _BLAS_FLOATS or n == 0 or x.size == 0:
        centered = x - mean_array(x, axes, True)
        inv_std = mean_array(centered * centered, axes, True)
        inv_std += eps
        inv_std **= -0.5
        centered *= inv_std
        return centered, inv_std
    rows = x.reshape(-1, n)
    mean = rows @ np.ones(n, x.dtype)
    mean *= 1.0 / n
    centered = rows - mean[:, None]
    inv_std = np.einsum("ij,ij->i", centered, centered)          # n * variance, per row
    inv_std *= 1.0 / n
    inv_std += eps
    inv_std **= -0.5
    centered *= inv_std[:, None]
    kept = x.shape[:len(x.shape) - len(axes)] + (1,) * len(axes)
    return centered.reshape(x.shape), inv_std.reshape(kept)


_BLAS_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _layer_norm_gradients_array(grad, weight, xhat, inv_std, needs):
    """dL/dx, dL/dw, dL/db of layer_norm on arrays, rows at a time (see LayerNormBackward):
    dL/dx = (g - mean(g) - xhat mean(g xhat)) / std with g = grad * w, per row; the weight's
    and bias's gradients summed over the rows here (shape ``weight.shape``)."""
    need_x, need_weight, need_bias = needs
    shape = xhat.shape
    n = math.prod(weight.shape) if weight is not None else None
    if n is None or xhat.dtype not in _BLAS_FLOATS or grad.dtype != xhat.dtype or xhat.size == 0:
        return None
    grad_rows = grad.reshape(-1, n)
    xhat_rows = xhat.reshape(-1, n)
    grad_x = grad_weight = grad_bias = None
    if need_x:
        g = grad_rows * weight.reshape(n)
        mean_g = g @ np.ones(n, g.dtype)
        mean_g *= 1.0 / n
        mean_gx = np.einsum("ij,ij->i", g, xhat_rows)
        mean_gx *= 1.0 / n
        g -= mean_g[:, None]
        g -= xhat_rows * mean_gx[:, None]
        g *= inv_std.reshape(-1, 1)
        grad_x = g.reshape(shape)
    if need_weight:
        grad_weight = np.einsum("ij,ij->j", grad_rows, xhat_rows).reshape(weight.shape)
    if need_bias:
        grad_bias = (np.ones(len(grad_rows), grad.dtype) @ grad_rows).reshape(weight.shape)
    return grad_x, grad_weight, grad_bias


class LayerNormBackward(Function):
    """y = xhat w + b, xhat = (x - mean) / sqrt(var + eps) over the last ``ndim`` axes.

    With g = dL/dy and gh = g w, averaging over the normalised axes:
    dL/dx = (gh - mean(gh) - xhat mean(gh xhat)) / sqrt(var + eps),
    dL/dw = g xhat and dL/db = g, summed over the other axes (by
    ``_layer_norm_gradients_array`` where it applies, otherwise by the engine).
    """
    __slots__ = ("axes", "eps", "xhat", "inv_std")

    def forward(self, x, weight, bias, ndim=1, eps=1e-5):
        self.axes, self.eps = tuple(range(-ndim, 0)), eps
        self.xhat, self.inv_std = _normalize_array(x, self.axes, eps)
        if weight is None:
            return self.xhat if bias is None else self.xhat + bias
        out = self.xhat * weight
        return out if bias is None else _add_into(out, bias)

    def gradient(self, grad, x, weight, bias):
        need_x, need_weight, need_bias = self.needs_input_grad
        grad_x = None
        if isinstance(x, Tensor):                    # create_graph: recompute differentiably
            xhat, inv_std = _normalize(x, self.axes, self.eps)
            if need_x:
                g = grad if weight is None else grad * weight
                grad_x = (g - g.mean(axis=self.axes, keepdims=True)
                          - xhat * (g * xhat).mean(axis=self.axes, keepdims=True)) * inv_std
        else:
            xhat, inv_std = self.xhat, self.inv_std
            fast = _layer_norm_gradients_array(grad, weight, xhat, inv_std, self.needs_input_grad)
            if fast is not None and (bias is None or bias.shape == weight.shape):
                return fast
            if need_x:                               # the same formula, in two buffers
                g = grad * weight if weight is not None else np.array(grad, dtype=xhat.dtype)
                projection = g * xhat
                projection = np.multiply(xhat, mean_array(projection, self.axes, True),
                                         out=projection)
                g -= mean_array(g, self.axes, True)
                g -= projection
                g *= inv_std
                grad_x = g
        return (grad_x, grad * xhat if need_weight else None, grad if need_bias else None)

    def release(self):
        super().release()
        self.xhat = self.inv_std = None


class LeakyReLUBackward(Function):
    """y = x where x > 0, else a x (a = ``negative_slope``);  dy/dx = 1 where x > 0, else a."""
    __slots__ = ("negative_slope",)

    def forward(self, x, negative_slope=0.01):
        self.negative_slope = negative_slope
        return np.where(x > 0, x, x * negative_slope)

    def gradient(self, grad, x):
        return (_where(_raw(x) > 0, grad, grad * self.negative_slope),)


class SiLUBackward(Function):
    """y = x sigmoid(x) (also called swish);  dy/dx = s + x s (1 - s), s = sigmoid(x)."""
    __slots__ = ()

    def forward(self, x):
        return x * _sigmoid(x)

    def gradient(self, grad, x):
        s = _sigmoid(x)
        return (grad * (s + x * s * _sigmoid(-x)),)


# ----- losses -------------------------------------------------------------------------------------

class MSEBackward(Function):
    """L = reduce((p - t)^2);  dL/dp = 2 (p - t) g (divided by the element count for 'mean'),
    dL/dt = -dL/dp.

    ``MSEBackward(predictions, targets)`` (the TinyTorch form) treats the target as a constant.
    """
    __slots__ = ("reduction", "target")

    def __init__(self, predictions, targets, reduction="mean"):
        super().__init__(predictions)
        self.target = _raw(targets)
        self.reduction = reduction

    def forward(self, pred, target, reduction="mean"):
        self.reduction = reduction
        diff = pred - target
        return _reduce(diff * diff, reduction)

    def gradient(self, grad, pred, target=None):
        if target is None:
            target = _constant(self.target, pred)
        grad_pred = _scaled(grad, self.reduction, _raw(pred).size) * 2.0 * (pred - target)
        if len(self.needs_input_grad) == 1:
            return (grad_pred,)
        need_pred, need_target = self.needs_input_grad
        return (grad_pred if need_pred else None, -grad_pred if need_target else None)


class BCEBackward(Function):
    """L = -[t log p + (1 - t) log(1 - p)], each log clamped at -100 (as PyTorch does).

    dL/dp = (p - t) / max(p (1 - p), 1e-12)   (PyTorch's rule: finite even at p = 0 or 1),
    dL/dt = log(1 - p) - log(p) = -logit(p),
    each divided by the element count for 'mean'. ``BCEBackward(predictions, targets)`` (the
    TinyTorch form) treats the target as a constant.
    """
    __slots__ = ("reduction", "target")

    def __init__(self, predictions, targets, reduction="mean"):
        super().__init__(predictions)
        self.target = _raw(targets)
        self.reduction = reduction

    def forward(self, p, target, reduction="mean"):
        self.reduction = reduction
        with np.errstate(divide="ignore"):
            log_p = np.maximum(np.log(p), _BCE_LOG_FLOOR)
            log_not_p = np.maximum(np.log1p(-p), _BCE_LOG_FLOOR)
        return _reduce(-(target * log_p + (1.0 - target) * log_not_p), reduction)

    def gradient(self, grad, p, target=None):
        if target is None:
            target = _constant(self.target, p)
        scaled = _scaled(grad, self.reduction, _raw(p).size)
        variance = p * (1.0 - p)
        floored = _where(_raw(variance) > _BCE_GRAD_EPSILON, variance, _BCE_GRAD_EPSILON)
        grad_p = scaled * (p - target) / floored
        if len(self.needs_input_grad) == 1:
            return (grad_p,)
        need_p, need_target = self.needs_input_grad
        return (grad_p if need_p else None,
                scaled * (_log(1.0 - p) - _log(p)) if need_target else None)


class BCEWithLogitsBackward(Function):
    """L = -[t log sigmoid(x) + (1 - t) log(1 - sigmoid(x))] = max(x, 0) - x t + log(1 + e^-|x|).

    The right-hand form never exponentiates a positive number.
    dL/dx = sigmoid(x) - t,  dL/dt = -x (each divided by the element count for 'mean').
    """
    __slots__ = ("reduction",)

    def forward(self, x, target, reduction="mean"):
        self.reduction = reduction
        return _reduce(np.maximum(x, 0.0) - x * target + np.log1p(np.exp(-np.abs(x))), reduction)

    def gradient(self, grad, x, target):
        need_x, need_target = self.needs_input_grad
        scaled = _scaled(grad, self.reduction, _raw(x).size)
        return (scaled * (_sigmoid(x) - target) if need_x else None,
                scaled * -x if need_target else None)


def _softmax_rows(v):
    """softmax along axis 1 of an array or Tensor (the shift by the row max is a constant)."""
    row_max = _constant(_raw(v).max(axis=1, keepdims=True), v)
    e = _exp(v - row_max)
    return e / e.sum(axis=1, keepdims=True)


class CrossEntropyBackward(Function):
    """L_n = -log softmax(x_n)[t_n] = logsumexp(x_n) - x_n[t_n], for logits x (N, C) and class
    indices t (N,); the log-sum-exp subtracts the row maximum first.

    dL_n/dx_n = softmax(x_n) - one_hot(t_n)   (divided by N for 'mean').
    """
    __slots__ = ("reduction", "target", "probs")

    def __init__(self, logits, targets, reduction="mean"):
        super().__init__(logits)
        self.target = _class_indices(targets, np.shape(_raw(logits)), "CrossEntropyBackward")
        self.reduction = reduction
        self.probs = None

    def forward(self, logits, target, reduction="mean"):
        self.target, self.reduction = target, reduction
        if logits.size == 0:                         # no samples: 'mean' is NaN, as in PyTorch
            self.probs = logits.copy()
            return _reduce(np.zeros(len(target), logits.dtype), reduction)
        shifted = logits - logits.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        total = exp.sum(axis=1, keepdims=True)
        self.probs = exp / total                     # softmax, kept for the gradient
        return _reduce(np.log(total[:, 0]) - shifted[np.arange(len(target)), target], reduction)

    def gradient(self, grad, logits):
        n = len(self.target)
        rows = np.arange(n)
        scale = _scaled(grad, self.reduction, n)
        if self.reduction == "none":
            scale = scale.reshape((n, 1))
        if isinstance(logits, Tensor) or self.probs is None:   # create_graph: differentiable
            one_hot = np.zeros(_raw(logits).shape, dtype=_raw(logits).dtype)
            one_hot[rows, self.target] = 1.0
            return ((_softmax_rows(logits) - _constant(one_hot, logits)) * scale,)
        probs_minus_one_hot = self.probs.copy()
        probs_minus_one_hot[rows, self.target] -= 1.0
        return (probs_minus_one_hot * scale,)

    def release(self):
        super().release()
        self.probs = None


class ClassIndexError(IndexError, ValueError):
    """A class index outside [0, C): an IndexError, as PyTorch raises, and a ValueError, as
    TinyTorch's losses raise, so code written for either catches it."""


def _class_indices(target, logits_shape, name):
    """Validate class-index targets for logits of shape (N, C); return them as an int array."""
    target = np.asarray(_raw(target))
    if len(logits_shape) != 2:
        raise ValueError(f"{name}: logits must have shape (N, C), got logits of shape "
                         f"{tuple(logits_shape)} (and targets of shape {target.shape})")
    n, classes = logits_shape
    if target.shape != (n,):
        hint = (" (class probabilities are not supported: pass class indices, e.g. "
                "target.argmax(axis=1))" if target.shape == tuple(logits_shape) else "")
        raise ValueError(f"{name}: logits of shape {tuple(logits_shape)} need targets of shape "
                         f"({n},), one class index per row, got targets of shape "
                         f"{target.shape}{hint}")
    if target.dtype.kind == "f":
        whole = np.isfinite(target) & (target == np.floor(target))
        if not whole.all():
            bad = target[~whole][0]
            raise ValueError(f"{name}: targets must be finite integer class indices, got "
                             f"{bad.item()!r}")
    elif target.dtype.kind not in "iu":
        raise TypeError(f"{name}: targets must be integer class indices, got dtype {target.dtype}")
    if n:
        outside = (target < 0) | (target >= classes)
        if outside.any():
            bad = target[outside][0]
            raise ClassIndexError(f"{name}: target class {bad.item()!r} is out of range for "
                                  f"logits with {classes} classes (valid targets: 0 to "
                                  f"{classes - 1})")
    return target.astype(np.intp)


def _target_tensor(target, pred, name, probabilities=False):
    """The target of a loss as a Tensor of the prediction's shape and dtype (so an integer
    target never widens a float32 loss); a target that requires grad stays in the graph.

    With ``probabilities``, every value must be a finite number in [0, 1].
    """
    if isinstance(target, Tensor):
        if target.dtype != pred.dtype:
            target = (target.astype(pred.dtype) if target.requires_grad
                      else run_numpy(np.ndarray.astype, target, pred.dtype))
    else:
        target = Tensor._make(np.asarray(_raw(target), dtype=pred.dtype))
    if target.shape != pred.shape:
        raise ValueError(f"{name}: input and target need matching shapes, got input shape "
                         f"{pred.shape} and target shape {target.shape}")
    if probabilities:
        run_numpy(_check_probabilities, target, name, "target")
    return target


def _check_probabilities(values, name, what):
    """Refuse values outside [0, 1] (NaN and infinities included), naming the first."""
    outside = ~((values >= 0) & (values <= 1))
    if outside.any():
        bad = values[outside].flat[0]
        raise ValueError(f"{name}: {what} must hold finite values in [0, 1] (probabilities), "
                         f"got {bad.item()!r}" + (" (for logits use binary_cross_entropy_with_"
                                                  "logits)" if what == "input" else ""))


# ----- the functions ------------------------------------------------------------------------------

def relu(x):
    """max(0, x), elementwise.  >>> relu(Tensor([-1.0, 2.0]))  # Tensor([0., 2.])"""
    return _as_tensor(x).relu()


def sigmoid(x):
    """1 / (1 + e^-x), elementwise, without overflow.  >>> sigmoid(Tensor([0.0]))  # [0.5]"""
    return _as_tensor(x).sigmoid()


def tanh(x):
    """tanh(x), elementwise.  >>> tanh(Tensor([0.0]))  # [0.]"""
    return _as_tensor(x).tanh()


def softmax(x, dim=-1):
    """Probabilities along ``dim``: e^x_i / sum_j e^x_j (stable for any input).

    >>> softmax(Tensor([[0.0, 0.0]]))   # [[0.5, 0.5]]
    """
    x = _as_tensor(x)
    return run_op(SoftmaxBackward, x, dim=_check_dim(dim, x.ndim, "softmax"))


def log_softmax(x, dim=-1):
    """log softmax(x) along ``dim`` = x - logsumexp(x), computed without overflow or log(0).

    >>> log_softmax(Tensor([[1e4, -1e4]]))   # [[0., -2e4]]
    """
    x = _as_tensor(x)
    return run_op(LogSoftmaxBackward, x, dim=_check_dim(dim, x.ndim, "log_softmax"))


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Normalise over the trailing ``normalized_shape`` axes, then scale and shift: xhat w + b.

    As ``torch.nn.functional.layer_norm`` (biased variance, one fused op).

    >>> layer_norm(Tensor([[1.0, 3.0]]), (2,))    # [[-1., 1.]] (up to eps)
    """
    x = _as_tensor(x)
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if not shape:
        raise ValueError("layer_norm: normalized_shape must name at least one axis, got ()")
    if x.shape[x.ndim - len(shape):] != shape or len(shape) > x.ndim:
        raise ValueError(f"layer_norm: normalized_shape {shape} does not match the last axes of "
                         f"the input's shape {x.shape}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and tuple(t.shape) != shape:
            raise ValueError(f"layer_norm: {name} has shape {tuple(t.shape)}, expected {shape}")
    return run_op(LayerNormBackward, x, weight, bias, ndim=len(shape), eps=eps)


def gelu(x, approximate="none"):
    """GELU(x) = x Phi(x) (``approximate='none'``), or x/2 (1 + tanh(sqrt(2/pi)(x + 0.044715 x^3))).

    >>> gelu(Tensor([1.0]))    # [0.8413]
    """
    return run_op(GELUBackward, _as_tensor(x), approximate=_check_approximate(approximate))


def erf(x):
    """The error function 2/sqrt(pi) * integral_0^x e^(-t^2) dt, elementwise.

    >>> erf(Tensor([0.5]))    # [0.5205]
    """
    return run_op(ErfBackward, _as_tensor(x))


def leaky_relu(x, negative_slope=0.01):
    """x where x > 0, else ``negative_slope`` * x.  >>> leaky_relu(Tensor([-2.0]), 0.1)  # [-0.2]"""
    return run_op(LeakyReLUBackward, _as_tensor(x), negative_slope=float(negative_slope))


def silu(x):
    """x * sigmoid(x) (swish).  >>> silu(Tensor([0.0]))  # [0.]"""
    return run_op(SiLUBackward, _as_tensor(x))


def mse_loss(input, target, reduction="mean"):
    """Mean squared error: reduce((input - target)^2). Shapes must match.

    >>> mse_loss(Tensor([1.0, 3.0]), Tensor([1.0, 1.0]))   # (0 + 4) / 2 = 2
    """
    pred = _as_tensor(input)
    _check_reduction(reduction, "mse_loss")
    target = _target_tensor(target, pred, "mse_loss")
    return run_op(MSEBackward, pred, target, reduction=reduction)


def binary_cross_entropy(input, target, reduction="mean"):
    """-[t log p + (1 - t) log(1 - p)] for probabilities p and targets t in [0, 1] (logs
    clamped at -100). A target that requires grad gets its gradient, as in PyTorch.

    >>> binary_cross_entropy(Tensor([0.5]), Tensor([1.0]))   # log 2
    """
    p = _as_tensor(input)
    _check_reduction(reduction, "binary_cross_entropy")
    target = _target_tensor(target, p, "binary_cross_entropy", probabilities=True)
    run_numpy(_check_probabilities, p, "binary_cross_entropy", "input")
    return run_op(BCEBackward, p, target, reduction=reduction)


def binary_cross_entropy_with_logits(input, target, reduction="mean"):
    """Binary cross-entropy of sigmoid(x), computed from the logits x stably for any x;
    targets are probabilities in [0, 1].

    >>> binary_cross_entropy_with_logits(Tensor([0.0]), Tensor([1.0]))   # log 2
    """
    x = _as_tensor(input)
    _check_reduction(reduction, "binary_cross_entropy_with_logits")
    target = _target_tensor(target, x, "binary_cross_entropy_with_logits", probabilities=True)
    return run_op(BCEWithLogitsBackward, x, target, reduction=reduction)


def cross_entropy(input, target, reduction="mean"):
    """Softmax cross-entropy: logits (N, C), integer class targets (N,) (floats holding integers
    are accepted);  L_n = logsumexp(x_n) - x_n[t_n].

    >>> cross_entropy(Tensor([[0.0, 0.0]]), [1])   # log 2
    """
    logits = _as_tensor(input)
    _check_reduction(reduction, "cross_entropy")
    target = (run_numpy(_class_indices, target, logits.shape, "cross_entropy")._data
              if isinstance(target, Tensor) else _class_indices(target, logits.shape, "cross_entropy"))
    return run_op(CrossEntropyBackward, logits, target=target, reduction=reduction)


# ----- dropout --------------------------------------------------------------------------------------

class DropoutBackward(Function):
    """Inverted dropout: y = x m, with m = 0 (probability p) or 1 / (1 - p) drawn for each element
    from tinytorch's generator (``manual_seed``);  dy/dx = m.

    The mask is drawn in ``forward``, so every run of the op (also a replay of
    ``tinytorch.compile``) draws a new one, in the order the ops run.
    """
    __slots__ = ("mask",)
    reads_inputs = False

    def forward(self, x, p=0.5):
        keep = get_rng().random(x.shape) >= p
        self.mask = (keep * (1.0 / (1.0 - p))).astype(x.dtype)
        return x * self.mask

    def gradient(self, grad, x):
        return (grad * _constant(self.mask, grad),)

    def release(self):
        super().release()
        self.mask = None


def dropout(x, p=0.5, training=True):
    """Zero each element with probability ``p`` and scale the rest by 1 / (1 - p) (while
    ``training``; otherwise ``x`` itself), as ``torch.nn.functional.dropout``.

    >>> dropout(Tensor(np.ones(4)), p=0.5)        # each element 0 or 2
    """
    x = _as_tensor(x)
    if not isinstance(p, numbers.Real) or not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: p must be a probability in [0, 1], got {p!r}")
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * Tensor._make(np.zeros(x.shape, dtype=x.dtype))
    return run_op(DropoutBackward, x, p=float(p))


# ----- the fused linear layer ---------------------------------------------------------------------

class LinearBackward(Function):
    """y = x W + b, for x (..., in), W (in, out) (tinytorch's Linear layout), b (out,) or None.

    One node instead of a matmul and an add: the bias is added into the product in place, so
    a layer keeps one output array, not two. With X and G = dL/dy flattened to rows
    (N, in) and (N, out):  dL/dx = G W^T,  dL/dW = X^T G,  dL/db = sum of the rows of G.
    """
    __slots__ = ()

    def value_needed(self, i):
        return i < 2 and self.needs_input_grad[1 - i]   # x's values enter only W's gradient...

    def forward(self, x, weight, bias=None):
        if x.ndim > 2:                                  # one (N, in) @ (in, out) BLAS call
            out = (x.reshape(-1, x.shape[-1]) @ weight).reshape(x.shape[:-1] + (weight.shape[1],))
        else:
            out = x @ weight
        return out if bias is None else _add_into(out, bias)

    def gradient(self, grad, x, weight, bias):
        need_x, need_weight, need_bias = self.needs_input_grad
        rows = grad.reshape(-1, grad.shape[-1]) if grad.ndim != 2 else grad        # (N, out)
        grad_x = grad_weight = grad_bias = None
        if need_x:
            grad_x = (rows @ weight.transpose(1, 0) if isinstance(weight, Tensor)
                      else rows @ weight.T).reshape(x.shape)
        if need_weight:
            inputs = x.reshape(-1, x.shape[-1]) if x.ndim != 2 else x               # (N, in)
            grad_weight = (inputs.transpose(1, 0) if isinstance(inputs, Tensor) else inputs.T) @ rows
        if need_bias:
            grad_bias = rows.sum(axis=0)
        return grad_x, grad_weight, grad_bias


def linear(x, weight, bias=None):
    """``x @ weight + bias`` as one op; ``weight`` is ``(in_features, out_features)`` (the layout
    of tinytorch's ``Linear``, the transpose of ``torch.nn.functional.linear``'s).

    >>> linear(Tensor(np.ones((2, 3))), Tensor(np.ones((3, 4))), Tensor(np.zeros(4))).shape
    (2, 4)
    """
    x = _as_tensor(x)
    if x.ndim == 0 or weight.ndim != 2 or x.shape[-1] != weight.shape[0]:
        raise ValueError(f"linear: input of shape {x.shape} does not fit a weight of shape "
                         f"{weight.shape} (in_features, out_features)")
    if bias is not None and tuple(bias.shape) != (weight.shape[1],):
        raise ValueError(f"linear: bias has shape {tuple(bias.shape)}, expected "
                         f"({weight.shape[1]},)")
    return run_op(LinearBackward, x, weight, bias)


# The public ops and functions above and those of spatial_ops.py; derived, so a new op needs no
# entry here.
__all__ = [name for name, value in list(globals().items()) if not name.startswith("_")
           and getattr(value, "__module__", None) in (__name__, "tinytorch.core.spatial_ops")
           and (isinstance(value, type) or callable(value))]
