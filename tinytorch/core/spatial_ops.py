"""Convolution, pooling and batch normalisation: fused ops, forward and gradient side by side.

Images are ``(N, C, H, W)``. Each op is one graph node whose forward does the whole computation
in a few NumPy calls, with no Python loop over pixels, channels or batch elements:

- ``conv2d`` lays the input's receptive fields out as the columns of a matrix (**im2col**) and
  multiplies it by the weight matrix: one matrix product (one per group). Its gradients are
  the same product transposed, plus **col2im** (adding each column back where it was read).
- ``max_pool2d`` / ``avg_pool2d`` take the maximum / the mean of the ``kH * kW`` strided views
  of the input, one per kernel offset (a loop over the kernel offsets only: measured faster
  than reducing a copy of all windows at once, see :func:`_window_views`).
- ``batch_norm`` normalises each channel over the batch and the spatial axes.

**Memory layout.** The spatial ops return arrays whose batch axis is innermost in memory: a
``(N, C, H, W)`` tensor's array is a transposed view of a contiguous ``(C, H, W, N)`` array
(the layout of cuda-convnet). Then a window of every image, ``x[:, c, i:i+OH, j:j+OW]``, is
one contiguous run of ``OH`` rows of ``OW * N`` numbers, so im2col and col2im copy long runs
instead of rows of ``OW`` numbers: measured on LeNet-5's second convolution (batch 64), im2col
took 0.11 ms instead of 0.82 ms and col2im 0.6 ms instead of 2.5 ms. Shapes, values and every
other op are unaffected (NumPy ops follow any layout); ``Flatten`` copies into the usual order.

Conv2d's gradients are themselves convolutions, so they are op classes too
(:class:`ConvTranspose2dBackward` for the input, :class:`Conv2dWeightGradBackward` for the
weight): with ``create_graph=True`` the gradient rules run these ops on Tensors, and
gradients of any order follow. Pooling and batch norm rules likewise run on Tensors.
"""

import numbers

import numpy as np
from numpy.lib.stride_tricks import as_strided

from tinytorch.core.autograd import Function, run_op
from tinytorch.core.inplace import note_inplace
from tinytorch.core.ops import IndexAddBackward, _raw
from tinytorch.core.tensor import Tensor



# ----- arguments: ints or (h, w) pairs ------------------------------------------------------------

def _pair(value, name, who, minimum):
    """``value`` (an int or a pair of ints) as a pair ``(h, w)``, each >= ``minimum``."""
    kind = type(value)
    if kind is tuple and len(value) == 2 and type(value[0]) is int and type(value[1]) is int \
            and value[0] >= minimum and value[1] >= minimum:
        return value                                   # the common case, checked quickly
    if kind is int and value >= minimum:
        return (value, value)
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        pair = (int(value), int(value))
    elif (isinstance(value, (tuple, list)) and len(value) == 2
          and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value)):
        pair = (int(value[0]), int(value[1]))
    else:
        raise TypeError(f"{who}: {name} must be an int or a pair of ints (h, w), got {value!r}")
    if min(pair) < minimum:
        raise ValueError(f"{who}: {name} must be >= {minimum}, got {value!r}")
    return pair


def _padding(padding, kernel, dilation, stride, who, allow_strings=False):
    """Padding as ``(top, bottom, left, right)``: from an int, a pair, or (conv2d) 'valid'/'same'.

    'same' pads the dilated kernel's span minus one, the extra row/column (for even spans) at
    the bottom/right, as PyTorch does; it needs stride 1.
    """
    if isinstance(padding, str) and allow_strings:
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding == "same":
            if stride != (1, 1):
                raise ValueError(f"{who}: padding='same' needs stride 1, got stride {stride}")
            total = [d * (k - 1) for k, d in zip(kernel, dilation)]
            (top, left), (height, width) = [t // 2 for t in total], total
            return (top, height - top, left, width - left)
        raise ValueError(f"{who}: padding must be an int, a pair, 'valid' or 'same', "
                         f"got {padding!r}")
    ph, pw = _pair(padding, "padding", who, 0)
    return (ph, ph, pw, pw)


class _Window:
    """Where a 2-D sliding-window op reads: kernel, stride, dilation, padding, and the sizes.

    Per axis (PyTorch's formula):
    ``out = (in + pad_before + pad_after - dilation * (kernel - 1) - 1) // stride + 1``.
    Output position ``(oh, ow)`` with kernel offset ``(i, j)`` reads row
    ``oh * stride_h + i * dilation_h`` and column ``ow * stride_w + j * dilation_w`` of the
    padded input.
    """

    __slots__ = ("kernel", "stride", "dilation", "padding", "in_hw", "padded_hw", "padded",
                 "out_hw", "offsets", "interior", "overlapping", "tiled")

    def __init__(self, in_hw, kernel, stride, dilation, padding):
        self.kernel, self.stride, self.dilation, self.padding = kernel, stride, dilation, padding
        self.in_hw = in_hw
        top, bottom, left, right = padding
        self.padded_hw = (in_hw[0] + top + bottom, in_hw[1] + left + right)
        self.padded = any(padding)
        span = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation))
        self.out_hw = tuple((p - s) // st + 1 for p, s, st in zip(self.padded_hw, span, stride))
        (kh, kw), (sh, sw), (dh, dw), (oh, ow) = kernel, stride, dilation, self.out_hw
        # for each kernel offset (i, j): the index of its strided view of the padded input
        self.offsets = [(slice(None), slice(None), slice(i * dh, i * dh + sh * (oh - 1) + 1, sh),
                         slice(j * dw, j * dw + sw * (ow - 1) + 1, sw))
                        for i in range(kh) for j in range(kw)]
        # the index of the unpadded input inside the padded one
        self.interior = (slice(None), slice(None), slice(top, top + in_hw[0]),
                         slice(left, left + in_hw[1]))
        # do windows share positions? do they cover the padded input exactly once?
        self.overlapping = any(st < sp for st, sp in zip(stride, span))
        self.tiled = (stride == span and self.padded_hw == (oh * sh, ow * sw))



_windows = {}       # (in_hw, kernel, stride, dilation, padding) -> _Window, for shapes seen lately


def _window(x_shape, kernel, stride, dilation, padding, who):
    """The :class:`_Window` of these settings (made once per input size); raises ValueError,
    naming ``who`` and the shapes, when the dilated kernel does not fit the padded input."""
    key = (x_shape[2:], kernel, stride, dilation, padding)
    window = _windows.get(key)
    if window is None:
        top, bottom, left, right = padding
        padded = (x_shape[2] + top + bottom, x_shape[3] + left + right)
        span = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation))
        if span[0] > padded[0] or span[1] > padded[1]:
            shown = padding[::2] if padding[::2] == padding[1::2] else padding
            raise ValueError(
                f"{who}: the kernel's dilated span {span} (kernel {kernel}, dilation "
                f"{dilation}) is larger than the padded input {padded} (input shape "
                f"{tuple(x_shape)}, padding {shown})")
        if len(_windows) >= 256:
            _windows.clear()
        window = _windows[key] = _Window(tuple(x_shape[2:]), kernel, stride, dilation, padding)
    return window


# ----- memory layout: batch innermost -------------------------------------------------------------

def _batch_innermost(shape, dtype, fill=None):
    """A new array of logical shape ``(N, C, H, W)`` stored as a contiguous ``(C, H, W, N)``."""
    n, c, h, w = shape
    if fill is None:
        array = np.empty((c, h, w, n), dtype)
    else:
        array = np.zeros((c, h, w, n), dtype) if fill == 0 else np.full((c, h, w, n), fill, dtype)
    return array.transpose(3, 0, 1, 2)


def _is_batch_innermost(array):
    return array.transpose(1, 2, 3, 0).flags.c_contiguous


def _as_batch_innermost(array):
    """``array`` itself if it is stored batch innermost, else such a copy of it."""
    if _is_batch_innermost(array):
        return array
    copy = _batch_innermost(array.shape, array.dtype)
    copy[...] = array
    return copy


def _padded(x, window, fill):
    """``x`` padded with ``fill`` as the window says, batch innermost (``x`` itself if it
    already is and needs no padding)."""
    if not window.padded and _is_batch_innermost(x):
        return x
    n, c = x.shape[:2]
    xp = _batch_innermost((n, c) + window.padded_hw, x.dtype, fill if window.padded else None)
    xp[window.interior] = x
    return xp


def _window_views(xp, window):
    """The ``kH * kW`` strided views ``(N, C, OH, OW)`` of the padded input, one per kernel offset.

    Pooling reduces over these views one after the other (a loop over the kernel offsets).
    Measured on LeNet-5's first pooling (64x6x24x24, 2x2, batch innermost): the loop's max
    took 0.11 ms; ``sliding_window_view`` with ``max`` over the window axes 0.37 ms, and with
    the window copy that ``argmax`` needs 3.9 ms.
    """
    return [xp[index] for index in window.offsets]


# ----- im2col and col2im --------------------------------------------------------------------------

def _im2col(x, window):
    """The receptive fields of ``x`` as columns: ``(C * kH * kW, OH * OW * N)``.

    ``cols[(c, i, j), (oh, ow, n)] = x_padded[n, c, oh * sh + i * dh, ow * sw + j * dw]``: a
    strided view of the padded input (no copy) with axes ``(C, kH, kW, OH, OW, N)``, copied
    once by ``reshape``. With the batch innermost each ``(i, j)`` block is ``C * OH`` runs of
    ``OW * N`` contiguous numbers (for stride 1).
    """
    xp = _padded(x, window, 0)
    n, c = xp.shape[:2]
    (kh, kw), (sh, sw), (dh, dw) = window.kernel, window.stride, window.dilation
    oh, ow = window.out_hw
    s_n, s_c, s_h, s_w = xp.strides
    fields = as_strided(xp, (c, kh, kw, oh, ow, n),
                        (s_c, dh * s_h, dw * s_w, sh * s_h, sw * s_w, s_n))
    return fields.reshape(c * kh * kw, oh * ow * n)


def _col2im(cols, window, n, c):
    """The adjoint of :func:`_im2col`: add each column entry back where it was read.

    ``cols`` is ``(C * kH * kW, OH * OW * N)``; returns ``(N, C, H, W)``. One add per kernel
    offset ``(i, j)``, of a whole ``(N, C, OH, OW)`` block into a strided view of the padded
    input. Measured on LeNet-5's second convolution (batch 64): this loop over the kernel
    offsets took 1.0 ms; without it, ``np.add.at`` on index arrays took 1.9 ms, ``np.bincount``
    3.1 ms, and the transposed convolution (im2col of the zero-padded gradient, then a matrix
    product) 6.3 ms.
    """
    (kh, kw), (oh, ow) = window.kernel, window.out_hw
    fields = cols.reshape(c, kh, kw, oh, ow, n)
    dxp = np.zeros((c,) + window.padded_hw + (n,), cols.dtype)      # (C, H, W, N) in memory
    for k, index in enumerate(window.offsets):           # index: (N, C, rows, columns) slices
        dxp[index[1:]] += fields[:, k // kw, k % kw]                 # a (C, OH, OW, N) block
    dxp = dxp.transpose(3, 0, 1, 2)
    return dxp[window.interior] if window.padded else dxp


def _rows(y):
    """``(N, O, OH, OW)`` -> ``(O, OH * OW * N)`` (a free view for batch-innermost arrays)."""
    n, o, oh, ow = y.shape
    return y.transpose(1, 2, 3, 0).reshape(o, oh * ow * n)


def _unrows(rows, n, oh, ow):
    """``(O, OH * OW * N)`` -> ``(N, O, OH, OW)``, a view (batch innermost)."""
    return rows.reshape(rows.shape[0], oh, ow, n).transpose(3, 0, 1, 2)


def _grouped(matrix, groups):
    """Split the rows of a 2-D array into ``groups`` blocks: ``(groups, rows / groups, cols)``."""
    return matrix.reshape(groups, matrix.shape[0] // groups, matrix.shape[1])


def _conv_forward(x, weight, window, groups, bias=None):
    """conv2d on arrays: ``weight (O, C/g*kH*kW) @ cols + bias`` per group; also returns cols."""
    cols = _im2col(x, window)
    o = weight.shape[0]
    out = np.matmul(_grouped(weight.reshape(o, -1), groups), _grouped(cols, groups)).reshape(o, -1)
    if bias is not None:
        out += bias.reshape(o, 1)
    oh, ow = window.out_hw
    return _unrows(out, x.shape[0], oh, ow), cols


def _conv_input_grad(grad, weight, window, groups, c):
    """dL/dx for y = conv2d(x, w) on arrays: ``col2im(w^T @ grad)`` per group."""
    o = weight.shape[0]
    w = _grouped(weight.reshape(o, -1), groups)
    cols = np.matmul(w.transpose(0, 2, 1), _grouped(_rows(grad), groups))
    return _col2im(cols.reshape(cols.shape[0] * cols.shape[1], cols.shape[2]), window,
                   grad.shape[0], c)


def _conv_weight_grad(grad, cols, weight_shape, groups):
    """dL/dw for y = conv2d(x, w) on arrays: ``grad @ cols^T`` per group, from x's columns."""
    g = np.matmul(_grouped(_rows(grad), groups), _grouped(cols, groups).transpose(0, 2, 1))
    return g.reshape(weight_shape)


# ----- convolution --------------------------------------------------------------------------------

class Conv2dBackward(Function):
    """y = conv2d(x, w) + b: cross-correlation, as PyTorch's ``conv2d``.

    ``y[n, o, p, q] = b[o] + sum_{c,i,j} w[o, c, i, j] x_pad[n, gC/G + c, p s + i d, q s' + j d']``
    for output channel ``o`` in group ``g`` (strides s, s', dilations d, d'). Computed as
    ``W (O, C/G*kH*kW) @ cols`` per group, ``cols = im2col(x)`` of shape ``(C*kH*kW, OH*OW*N)``.

    Gradients (g = dL/dy): ``dL/dx = col2im(W^T @ g)`` (a transposed convolution, the op
    :class:`ConvTranspose2dBackward`), ``dL/dw = g @ cols^T`` (the op
    :class:`Conv2dWeightGradBackward`), ``dL/db = sum of g over (N, OH, OW)``. With
    ``create_graph`` the rule runs those ops on Tensors, so the gradients are differentiable.
    """
    __slots__ = ("window", "groups", "cols")

    def forward(self, x, weight, bias=None, *, window, groups=1):
        self.window, self.groups = window, groups
        out, self.cols = _conv_forward(x, weight, window, groups, bias)
        return out

    def gradient(self, grad, x, weight, bias=None):
        need_x, need_weight = self.needs_input_grad[:2]       # (without a bias: two inputs)
        need_bias = len(self.needs_input_grad) == 3 and self.needs_input_grad[2]
        window, groups = self.window, self.groups
        grad_x = grad_weight = None
        if isinstance(grad, Tensor):                # create_graph: the gradients as ops
            if need_x:
                grad_x = run_op(ConvTranspose2dBackward, grad, weight, window=window,
                                groups=groups, in_channels=_raw(x).shape[1])
            if need_weight:
                grad_weight = run_op(Conv2dWeightGradBackward, x, grad, window=window,
                                     groups=groups, weight_shape=_raw(weight).shape)
        else:
            if need_x:
                grad_x = _conv_input_grad(grad, weight, window, groups, x.shape[1])
            if need_weight:
                grad_weight = _conv_weight_grad(grad, self.cols, weight.shape, groups)
        if len(self.needs_input_grad) == 2:
            return grad_x, grad_weight
        return grad_x, grad_weight, grad.sum(axis=(0, 2, 3)) if need_bias else None

    def release(self):
        super().release()
        self.cols = None


class ConvTranspose2dBackward(Function):
    """dx = conv_transpose(g, w): the gradient of conv2d with respect to its input, as an op.

    ``dx = col2im(W^T @ g)`` per group: each output gradient is spread back over the input
    pixels its window read, weighted by the kernel. It is linear in g and in w, and its own
    gradients are convolutions again (u = dL/d(dx), of x's shape): ``dL/dg = conv2d(u, w)``,
    ``dL/dw = conv2d_weight_grad(u, g)``.
    """
    __slots__ = ("window", "groups", "in_channels")

    def forward(self, grad_y, weight, window, groups, in_channels):
        self.window, self.groups, self.in_channels = window, groups, in_channels
        return _conv_input_grad(grad_y, weight, window, groups, in_channels)

    def gradient(self, grad, grad_y, weight):
        need_grad_y, need_weight = self.needs_input_grad
        window, groups = self.window, self.groups
        if isinstance(grad, Tensor):
            return (run_op(Conv2dBackward, grad, weight, window=window, groups=groups)
                    if need_grad_y else None,
                    run_op(Conv2dWeightGradBackward, grad, grad_y, window=window, groups=groups,
                           weight_shape=_raw(weight).shape) if need_weight else None)
        out, cols = _conv_forward(grad, weight, window, groups)
        return (out if need_grad_y else None,
                _conv_weight_grad(grad_y, cols, weight.shape, groups) if need_weight else None)


class Conv2dWeightGradBackward(Function):
    """dw = conv2d_weight_grad(x, g): the gradient of conv2d with respect to its weight, as an op.

    ``dw = g @ im2col(x)^T`` per group. Linear in x and in g; with v = dL/d(dw) (of w's shape):
    ``dL/dx = conv_transpose(g, v)``, ``dL/dg = conv2d(x, v)``.
    """
    __slots__ = ("window", "groups")

    def forward(self, x, grad_y, window, groups, weight_shape):
        self.window, self.groups = window, groups
        return _conv_weight_grad(grad_y, _im2col(x, window), weight_shape, groups)

    def gradient(self, grad, x, grad_y):
        need_x, need_grad_y = self.needs_input_grad
        window, groups = self.window, self.groups
        if isinstance(grad, Tensor):
            return (run_op(ConvTranspose2dBackward, grad_y, grad, window=window, groups=groups,
                           in_channels=_raw(x).shape[1]) if need_x else None,
                    run_op(Conv2dBackward, x, grad, window=window, groups=groups)
                    if need_grad_y else None)
        return (_conv_input_grad(grad_y, grad, window, groups, x.shape[1]) if need_x else None,
                _conv_forward(x, grad, window, groups)[0] if need_grad_y else None)


# ----- pooling ------------------------------------------------------------------------------------

def _lowest(dtype):
    """The value that never wins a max: -inf for floats, the minimum for integers."""
    return -np.inf if np.dtype(dtype).kind == "f" else np.iinfo(dtype).min


def _add_windows(window, x, grad, factors):
    """Pooling's col2im: for each kernel offset ``k``, add ``grad * factors[k]`` (a mask or a
    number) into that offset's strided view of a zero result shaped like ``x``.

    On arrays the result has ``x``'s memory layout (batch innermost when padded), and ``grad``
    is copied to it first: a product of arrays in different layouts measured 4x slower
    (LeNet-5's second pooling: 0.44 ms instead of 0.10 ms). On Tensors (create_graph) it is a
    sum of index-add ops, differentiable again.
    """
    n, c = x.shape[:2]
    padded_shape = (n, c) + window.padded_hw
    if isinstance(grad, Tensor):
        total = None
        for factor, index in zip(factors, window.offsets):
            placed = run_op(IndexAddBackward, grad * factor, key=index, shape=padded_shape)
            total = placed if total is None else total + placed
        return total[window.interior] if window.padded else total
    fill = None if window.tiled else 0                 # tiled: every position gets written
    if window.padded or _is_batch_innermost(x):
        dxp = _batch_innermost(padded_shape, grad.dtype, fill)
        grad = _as_batch_innermost(grad)
    else:
        dxp = (np.empty if fill is None else np.zeros)(padded_shape, grad.dtype)
        grad = np.ascontiguousarray(grad)
    for factor, index in zip(factors, window.offsets):
        if window.overlapping:
            dxp[index] += grad * factor
        else:
            np.multiply(grad, factor, out=dxp[index])
    return dxp[window.interior] if window.padded else dxp


class MaxPool2dBackward(Function):
    """y = the maximum of each window (padding counts as -inf), as PyTorch's ``max_pool2d``.

    The gradient of each output goes to the position of its window's maximum; where several
    positions hold it, to the first in the window (row by row), as PyTorch. A window holding a
    NaN outputs NaN and sends its gradient to its last NaN (also as PyTorch).
    """
    __slots__ = ("window", "padded_input")
    saves_output = True

    def forward(self, x, window):
        self.window = window
        xp = _padded(x, window, _lowest(x.dtype)) if window.padded else x
        self.padded_input = xp if window.padded else None
        views = _window_views(xp, window)
        out = np.maximum(views[0], views[-1])          # (one view only: its copy)
        for view in views[1:-1]:
            np.maximum(out, view, out=out)
        return out

    def _winners(self, x, out):
        """One boolean mask per kernel offset: where that offset holds its window's first max."""
        xp = self.padded_input if self.window.padded else x
        views = _window_views(xp, self.window)
        if self.window.padded and np.isneginf(out).any():      # padding must not win a -inf max
            real = _batch_innermost(xp.shape, bool, False)
            real[self.window.interior] = True
            reals = _window_views(real, self.window)
        else:
            reals = [True] * len(views)
        winners, free = [], None            # free: windows whose first max is not yet found
        for view, is_real in zip(views, reals):
            hit = view == out
            if is_real is not True:
                hit &= is_real
            if free is None:
                free = ~hit
            else:
                hit &= free
                free ^= hit                     # (hit is inside free: this removes it)
            winners.append(hit)
        if free.any():                           # NaN windows: the last NaN wins, as PyTorch
            for view, hit in zip(reversed(views), reversed(winners)):
                nan_hit = np.isnan(view) & free
                hit |= nan_hit
                free ^= nan_hit
        return winners

    def gradient(self, grad, x, out):
        winners = self._winners(_raw(x), _raw(out))
        return (_add_windows(self.window, _raw(x), grad, winners),)

    def release(self):
        super().release()
        self.padded_input = None


class AvgPool2dBackward(Function):
    """y = the mean of each window of ``kH * kW`` positions, padding included (zeros), as
    PyTorch's ``avg_pool2d`` with ``count_include_pad=True``.

    Each input position receives ``g / (kH * kW)`` from every window that contains it.
    """
    __slots__ = ("window",)
    reads_inputs = False

    def forward(self, x, window):
        self.window = window
        views = _window_views(_padded(x, window, 0) if window.padded else x, window)
        out = views[0].copy(order="K")
        for view in views[1:]:
            out += view
        return out * (1.0 / len(views)) if np.dtype(out.dtype).kind == "f" else out / len(views)

    def gradient(self, grad, x):
        kh, kw = self.window.kernel
        return (_add_windows(self.window, _raw(x), grad, [1.0 / (kh * kw)] * (kh * kw)),)


# ----- batch normalisation ------------------------------------------------------------------------

def _channel_shape(ndim):
    """Shape that broadcasts a per-channel (C,) array over (N, C, ...) inputs of ``ndim`` dims."""
    return (1, -1) + (1,) * (ndim - 2)


def _normalise_batch(x, axes):
    """(x - mean) / sqrt(var + eps) pieces over ``axes``: centred x and the biased variance."""
    centered = x - x.mean(axis=axes, keepdims=True)
    return centered, (centered * centered).mean(axis=axes, keepdims=True)


class BatchNormBackward(Function):
    """y = xhat * w + b per channel (axis 1), xhat = (x - mean) / sqrt(var + eps).

    Training: mean and (biased) var over the batch and spatial axes (M values per channel);
    the running statistics are updated in place, ``running = (1 - momentum) * running +
    momentum * batch`` with the unbiased variance ``var * M / (M - 1)`` (PyTorch's rule).
    Evaluation: the running statistics are constants.

    Gradients (g = dL/dy, gh = g w, means over the same axes): training
    ``dL/dx = (gh - mean(gh) - xhat * mean(gh * xhat)) / sqrt(var + eps)``; evaluation
    ``dL/dx = gh / sqrt(running_var + eps)``; ``dL/dw = sum(g * xhat)``, ``dL/db = sum(g)``.
    """
    __slots__ = ("axes", "training", "eps", "xhat", "inv_std", "mean")

    def forward(self, x, weight, bias, running_mean, running_var, training, momentum, eps,
                num_batches_tracked=None):
        self.axes = (0,) + tuple(range(2, x.ndim))
        self.training, self.eps = training, eps
        shape = _channel_shape(x.ndim)
        if training and num_batches_tracked is not None and running_mean is not None:
            num_batches_tracked.data += 1            # the layer's counter, counted in the op
            if momentum is None:                     # a cumulative average of all batches
                momentum = 1.0 / float(num_batches_tracked.data)
        if training and x.size == 0:           # an empty batch: empty output, stats unchanged
            centered, var = x, np.ones((1,) * x.ndim, x.dtype)
            self.mean = None
        elif training:
            mean = x.mean(axis=self.axes, keepdims=True)
            centered = x - mean
            var = (centered * centered).mean(axis=self.axes, keepdims=True)
            if running_mean is not None:
                count = x.size // x.shape[1]
                unbiased = var * (count / (count - 1))
                for running, batch in ((running_mean, mean), (running_var, unbiased)):
                    running.data *= 1 - momentum
                    running.data += momentum * batch.reshape(-1)
                    note_inplace(running, "batch_norm's update of the running statistics")
            self.mean = None
        else:
            self.mean = running_mean.data.reshape(shape).copy()    # later updates: not ours
            centered = x - self.mean
            var = running_var.data.reshape(shape)
        self.inv_std = 1.0 / np.sqrt(var + eps)
        self.xhat = centered * self.inv_std
        out = self.xhat if weight is None else self.xhat * weight.reshape(shape)
        return out if bias is None else out + bias.reshape(shape)

    def _xhat_and_inv_std(self, x):
        if not isinstance(x, Tensor):
            return self.xhat, self.inv_std
        if self.training:                          # create_graph: recompute differentiably
            centered, var = _normalise_batch(x, self.axes)
            inv_std = (var + self.eps) ** -0.5
            return centered * inv_std, inv_std
        inv_std = Tensor._make(self.inv_std)
        return (x - Tensor._make(self.mean)) * inv_std, inv_std

    def gradient(self, grad, x, weight, bias):
        need_x, need_weight, need_bias = self.needs_input_grad
        xhat, inv_std = self._xhat_and_inv_std(x)
        grad_x = None
        if need_x:
            gh = grad if weight is None else grad * weight.reshape(_channel_shape(grad.ndim))
            if self.training and gh.size:
                grad_x = (gh - gh.mean(axis=self.axes, keepdims=True)
                          - xhat * (gh * xhat).mean(axis=self.axes, keepdims=True)) * inv_std
            else:
                grad_x = gh * inv_std
        return (grad_x,
                (grad * xhat).sum(axis=self.axes) if need_weight else None,
                grad.sum(axis=self.axes) if need_bias else None)

    def release(self):
        super().release()
        self.xhat = self.inv_std = self.mean = None


# ----- the functions ------------------------------------------------------------------------------

def _as_tensor(x):
    return x if isinstance(x, Tensor) else Tensor(x)


def _check_images(x, who, channels=None):
    """Raise unless ``x`` is 4-D (N, C, H, W), with ``channels`` channels when given."""
    if x.ndim != 4 or (channels is not None and x.shape[1] != channels):
        expected = f"(N, {channels}, H, W)" if channels is not None else "(N, C, H, W)"
        raise ValueError(f"{who}: expected input of shape {expected}, got shape {x.shape}")


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D convolution (cross-correlation) of images ``(N, C, H, W)``, as PyTorch's ``conv2d``.

    ``weight`` is ``(O, C / groups, kH, kW)``, ``bias`` ``(O,)`` or None. ``stride``,
    ``padding`` (zeros; also 'valid' or 'same') and ``dilation`` are ints or pairs ``(h, w)``;
    ``groups`` splits the channels into independent convolutions (``groups == C``: depthwise).
    Output ``(N, O, OH, OW)``, ``OH = (H + 2 pad - dilation (kH - 1) - 1) // stride + 1``.
    Raises ValueError naming the shapes when they do not fit.

    >>> conv2d(Tensor(np.ones((1, 1, 4, 4))), Tensor(np.ones((2, 1, 3, 3)))).shape
    (1, 2, 2, 2)
    """
    return _conv2d(input, weight, bias, stride, padding, dilation, groups, "conv2d")


def _conv2d(x, weight, bias, stride, padding, dilation, groups, who):
    x, weight = _as_tensor(x), _as_tensor(weight)
    if weight.ndim != 4:
        raise ValueError(f"{who}: weight must have shape (out_channels, in_channels / groups, kH, "
                         f"kW), got shape {weight.shape}")
    if type(groups) is not int and (isinstance(groups, bool)
                                    or not isinstance(groups, numbers.Integral)) or groups < 1:
        raise ValueError(f"{who}: groups must be a positive int, got {groups!r}")
    out_channels, group_channels, kh, kw = weight.shape
    if out_channels % groups:
        raise ValueError(f"{who}: out_channels ({out_channels}, weight shape {weight.shape}) "
                         f"must be divisible by groups ({groups})")
    _check_images(x, who, group_channels * groups)
    if bias is not None:
        bias = _as_tensor(bias)
        if bias.shape != (out_channels,):
            raise ValueError(f"{who}: bias must have shape ({out_channels},), got shape "
                             f"{bias.shape}")
    stride = _pair(stride, "stride", who, 1)
    dilation = _pair(dilation, "dilation", who, 1)
    pads = _padding(padding, (kh, kw), dilation, stride, who, allow_strings=True)
    window = _window(x.shape, (kh, kw), stride, dilation, pads, who)
    inputs = (x, weight) if bias is None else (x, weight, bias)
    return run_op(Conv2dBackward, *inputs, window=window, groups=int(groups))


def _pool_window(x, kernel_size, stride, padding, dilation, who, max_pool):
    _check_images(x, who)
    kernel = _pair(kernel_size, "kernel_size", who, 1)
    stride = kernel if stride is None or stride == [] else _pair(stride, "stride", who, 1)
    dilation = _pair(dilation, "dilation", who, 1)
    pads = _padding(padding, kernel, dilation, stride, who)
    # PyTorch's limit: each window must hold at least one input position
    limit = tuple(((k - 1) * d + 1) // 2 if max_pool else k // 2 for k, d in zip(kernel, dilation))
    if pads[0] > limit[0] or pads[2] > limit[1]:
        raise ValueError(f"{who}: padding {(pads[0], pads[2])} must be at most half of the "
                         f"{'dilated ' if max_pool else ''}kernel size, {limit} (kernel_size "
                         f"{kernel}{f', dilation {dilation}' if max_pool else ''})")
    return _window(x.shape, kernel, stride, dilation, pads, who)


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1):
    """The maximum of each ``kernel_size`` window of images ``(N, C, H, W)``, as PyTorch.

    ``stride`` defaults to ``kernel_size``; ``padding`` pads with -inf (at most half the
    kernel). The gradient goes to the first maximum of each window.

    >>> max_pool2d(Tensor(np.arange(16.0).reshape(1, 1, 4, 4)), 2)   # [[[[5., 7.], [13., 15.]]]]
    """
    return _max_pool2d(input, kernel_size, stride, padding, dilation, "max_pool2d")


def _max_pool2d(x, kernel_size, stride, padding, dilation, who):
    x = _as_tensor(x)
    window = _pool_window(x, kernel_size, stride, padding, dilation, who, max_pool=True)
    return run_op(MaxPool2dBackward, x, window=window)


def avg_pool2d(input, kernel_size, stride=None, padding=0):
    """The mean of each ``kernel_size`` window of images ``(N, C, H, W)``, as PyTorch.

    ``stride`` defaults to ``kernel_size``; zero padding counts in the mean
    (``count_include_pad=True``).

    >>> avg_pool2d(Tensor(np.arange(16.0).reshape(1, 1, 4, 4)), 2)  # [[[[2.5, 4.5], [10.5, 12.5]]]]
    """
    return _avg_pool2d(input, kernel_size, stride, padding, "avg_pool2d")


def _avg_pool2d(x, kernel_size, stride, padding, who):
    x = _as_tensor(x)
    window = _pool_window(x, kernel_size, stride, padding, 1, who, max_pool=False)
    return run_op(AvgPool2dBackward, x, window=window)


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5):
    """Batch normalisation of ``(N, C)``, ``(N, C, L)`` or ``(N, C, H, W)`` inputs, as PyTorch.

    ``training=True``: each channel is normalised with the mean and biased variance of the
    batch (over N and the spatial axes), and ``running_mean``/``running_var`` (Tensors of
    shape (C,), or None) are updated in place with ``momentum``, the variance unbiased.
    ``training=False``: the running statistics are used. Then ``y = xhat * weight + bias``.

    >>> mean, var = tt.zeros(2), tt.ones(2)
    >>> batch_norm(Tensor([[1.0, 2.0], [3.0, 6.0]]), mean, var, training=True)  # [[-1, -1], [1, 1]]
    >>> mean                                                                    # [0.2, 0.4]
    """
    return _batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps)


def _batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False,
                momentum=0.1, eps=1e-5, num_batches_tracked=None):
    """The work of :func:`batch_norm`; ``num_batches_tracked`` (a layer's counter, a 0-d
    integer Tensor) is incremented in training, and ``momentum=None`` then averages all batches."""
    who = "batch_norm"
    x = _as_tensor(input)
    if x.ndim < 2:
        raise ValueError(f"{who}: expected input of shape (N, C, ...), got shape {x.shape}")
    channels = x.shape[1]
    stats = []
    for name, t in (("running_mean", running_mean), ("running_var", running_var),
                    ("weight", weight), ("bias", bias)):
        if t is not None:
            t = t if isinstance(t, Tensor) else Tensor._make(np.asarray(t))
            if t.shape != (channels,):
                raise ValueError(f"{who}: {name} must have shape ({channels},) for input of "
                                 f"shape {x.shape}, got shape {t.shape}")
        stats.append(t)
    running_mean, running_var, weight, bias = stats
    if (running_mean is None) != (running_var is None):
        raise ValueError(f"{who}: give both running_mean and running_var, or neither")
    if not training and running_mean is None:
        raise ValueError(f"{who}: evaluation mode (training=False) needs running_mean and "
                         f"running_var")
    if training and x.size // max(channels, 1) == 1:
        raise ValueError(f"{who}: expected more than 1 value per channel when training, got "
                         f"input of shape {x.shape}")
    return run_op(BatchNormBackward, x, weight, bias, running_mean=running_mean,
                  running_var=running_var, training=bool(training), momentum=momentum, eps=eps,
                  num_batches_tracked=num_batches_tracked)


# The op classes and functions above (re-exported by functional.py); derived, so a new op needs
# no entry here.
__all__ = [name for name, value in list(globals().items()) if not name.startswith("_")
           and getattr(value, "__module__", None) == __name__
           and (isinstance(value, type) or callable(value))]
