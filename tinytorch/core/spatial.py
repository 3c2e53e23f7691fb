"""Convolutional layers (curriculum module 09): Conv2d, MaxPool2d, AvgPool2d, BatchNorm2d/1d.

Images are ``(N, C, H, W)``; every int argument also takes a pair ``(h, w)``. Each layer calls
one fused op of :mod:`tinytorch.core.spatial_ops` (re-exported by ``core.functional``), whose
forward and gradient are vectorised: a convolution is one matrix product (im2col), a pooling
layer one NumPy reduction per kernel offset.

>>> import tinytorch as tt
>>> model = Sequential(Conv2d(1, 8, 3, padding=1), BatchNorm2d(8), ReLU(), MaxPool2d(2),
...                    Flatten(), Linear(8 * 4 * 4, 10))
>>> model(tt.randn(32, 1, 8, 8)).shape
(32, 10)
"""

import math

import numpy as np

from tinytorch.core import init
from tinytorch.core.layers import Module, _check_size
from tinytorch.core.spatial_ops import (
    _avg_pool2d, _batch_norm, _conv2d, _max_pool2d, _pair,
)
from tinytorch.core.tensor import Tensor, get_default_dtype

__all__ = ["Conv2d", "MaxPool2d", "AvgPool2d", "BatchNorm2d", "BatchNorm1d"]


def _as_tensor(x):
    return x if isinstance(x, Tensor) else Tensor(x)


class Conv2d(Module):
    """2-D convolution over images ``(N, C_in, H, W) -> (N, C_out, OH, OW)``, as PyTorch's.

    Cross-correlation (the kernel is not flipped), with weight ``(out_channels, in_channels /
    groups, kH, kW)`` and bias ``(out_channels,)``:
    ``y[n, o] = bias[o] + sum_c weight[o, c] (*) x[n, c]`` over the ``c`` in o's group, and
    ``OH = (H + 2 padding - dilation (kH - 1) - 1) // stride + 1`` (likewise OW).
    ``padding`` is an int, a pair, 'valid' or 'same' (stride 1); ``groups`` splits the
    channels into independent convolutions (``groups = in_channels``: depthwise).

    **im2col: a convolution is one matrix product.** Every output pixel is the dot product of
    the flattened kernel with the flattened window of input under it. Laying each window out
    as a column turns all of them into one product::

        x       (N, C, H, W)               e.g. LeNet's 2nd layer: (64, 6, 12, 12)
        cols    (C*kH*kW, OH*OW*N)         one column per output pixel:   (150, 4096)
        weight  (O, C*kH*kW)               one row per output channel:    (16, 150)
        weight @ cols -> (O, OH*OW*N) -> (N, O, OH, OW)                  (64, 16, 8, 8)

    ``cols`` is copied once from a strided view of the input (no loop over pixels). The
    gradients are the same product transposed: ``dL/dweight = g @ cols^T`` and
    ``dL/dcols = weight^T @ g``, whose columns **col2im** adds back onto the input pixels they
    came from (``g`` = dL/dy as ``(O, OH*OW*N)``).

    Initialisation (PyTorch's): weight ``kaiming_uniform_(a=sqrt(5))``, i.e.
    ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` with ``fan_in = in_channels / groups * kH * kW``,
    and bias from the same range; drawn from ``tinytorch.core.tensor.get_rng()``.
    Raises ValueError naming the layer and the shapes for a non-4-D input, a wrong channel
    count or a kernel larger than the padded input.

    >>> conv = Conv2d(1, 6, kernel_size=5)
    >>> conv(tt.randn(64, 1, 28, 28)).shape
    (64, 6, 24, 24)
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, dtype=None):
        super().__init__()
        name = "Conv2d"
        self.in_channels = _check_size(in_channels, "in_channels", name)
        self.out_channels = _check_size(out_channels, "out_channels", name)
        self.kernel_size = _pair(kernel_size, "kernel_size", name, 1)
        self.stride = _pair(stride, "stride", name, 1)
        self.padding = padding if isinstance(padding, str) else _pair(padding, "padding", name, 0)
        self.dilation = _pair(dilation, "dilation", name, 1)
        self.groups = _check_size(groups, "groups", name)
        if self.groups < 1 or self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(f"{name}: in_channels ({in_channels}) and out_channels "
                             f"({out_channels}) must both be divisible by groups ({groups})")
        if padding == "same" and self.stride != (1, 1):
            raise ValueError(f"{name}: padding='same' needs stride 1, got stride {stride}")
        if isinstance(padding, str) and padding not in ("same", "valid"):
            raise ValueError(f"{name}: padding must be an int, a pair, 'valid' or 'same', "
                             f"got {padding!r}")
        dtype = get_default_dtype() if dtype is None else np.dtype(dtype)
        shape = (self.out_channels, self.in_channels // self.groups) + self.kernel_size
        self.weight = Tensor(np.zeros(shape), requires_grad=True, dtype=dtype)
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if bias:
            fan_in = shape[1] * shape[2] * shape[3]
            bound = 1.0 / math.sqrt(fan_in) if fan_in else 0.0
            self.bias = init.uniform_(Tensor(np.zeros(self.out_channels), requires_grad=True,
                                             dtype=dtype), -bound, bound)
        else:
            self.register_parameter("bias", None)

    def forward(self, x):
        x = _as_tensor(x)
        return _conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation,
                       self.groups, self._name())

    def _name(self):
        return f"Conv2d({self.extra_repr()})"

    def extra_repr(self):
        text = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}")
        if self.padding not in ((0, 0), "valid"):
            text += f", padding={self.padding!r}" if isinstance(self.padding, str) else \
                f", padding={self.padding}"
        if self.dilation != (1, 1):
            text += f", dilation={self.dilation}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        if self.bias is None:
            text += ", bias=False"
        return text


class _Pool2d(Module):
    """Shared settings of the pooling layers: kernel, stride (default: the kernel), padding."""

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        name = type(self).__name__
        self.kernel_size = _pair(kernel_size, "kernel_size", name, 1)
        self.stride = self.kernel_size if stride is None else _pair(stride, "stride", name, 1)
        self.padding = _pair(padding, "padding", name, 0)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class MaxPool2d(_Pool2d):
    """The maximum of each ``kernel_size`` window: ``(N, C, H, W) -> (N, C, OH, OW)``, as PyTorch.

    ``stride`` defaults to ``kernel_size``; ``padding`` (at most half the dilated kernel) pads
    with -inf, so it never wins. The gradient goes to the window's maximum; ties go to the
    first position in the window (row by row), as in PyTorch.

    >>> MaxPool2d(2)(tt.randn(8, 3, 32, 32)).shape
    (8, 3, 16, 16)
    """

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1):
        super().__init__(kernel_size, stride, padding)
        self.dilation = _pair(dilation, "dilation", "MaxPool2d", 1)

    def forward(self, x):
        return _max_pool2d(_as_tensor(x), self.kernel_size, self.stride, self.padding,
                           self.dilation, f"MaxPool2d({self.extra_repr()})")

    def extra_repr(self):
        text = super().extra_repr()
        return text + (f", dilation={self.dilation}" if self.dilation != (1, 1) else "")


class AvgPool2d(_Pool2d):
    """The mean of each ``kernel_size`` window: ``(N, C, H, W) -> (N, C, OH, OW)``, as PyTorch.

    ``stride`` defaults to ``kernel_size``; zero ``padding`` (at most half the kernel) counts
    in the mean (PyTorch's default ``count_include_pad=True``).

    >>> AvgPool2d(2)(tt.randn(8, 3, 32, 32)).shape
    (8, 3, 16, 16)
    """

    def forward(self, x):
        return _avg_pool2d(_as_tensor(x), self.kernel_size, self.stride, self.padding,
                           f"AvgPool2d({self.extra_repr()})")


class _BatchNorm(Module):
    """Batch normalisation of channel axis 1 (Ioffe and Szegedy, 2015), as PyTorch's.

    ``y = (x - mean) / sqrt(var + eps) * weight + bias`` per channel. In ``train()`` mode mean
    and var are the batch's (over N and the spatial axes, biased variance), and the buffers
    ``running_mean``/``running_var`` follow them: ``running = (1 - momentum) * running +
    momentum * batch``, the variance unbiased (``momentum=None``: the plain average of all
    batches so far). In ``eval()`` mode the running statistics are used. ``weight`` starts at
    1, ``bias`` at 0 (``affine=False``: neither); ``num_batches_tracked`` counts training
    batches. The buffers are in ``state_dict()``.
    """

    input_shapes = ()                # accepted numbers of dimensions, with their description

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, dtype=None):
        super().__init__()
        name = type(self).__name__
        self.num_features = _check_size(num_features, "num_features", name)
        self.eps, self.momentum = eps, momentum
        self.affine, self.track_running_stats = bool(affine), bool(track_running_stats)
        dtype = get_default_dtype() if dtype is None else np.dtype(dtype)
        if self.affine:
            self.weight = Tensor(np.ones(num_features), requires_grad=True, dtype=dtype)
            self.bias = Tensor(np.zeros(num_features), requires_grad=True, dtype=dtype)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if self.track_running_stats:
            self.register_buffer("running_mean", Tensor(np.zeros(num_features), dtype=dtype))
            self.register_buffer("running_var", Tensor(np.ones(num_features), dtype=dtype))
            self.register_buffer("num_batches_tracked", Tensor(0, dtype=np.int64))
        else:
            for buffer in ("running_mean", "running_var", "num_batches_tracked"):
                self.register_buffer(buffer, None)

    def _check_input(self, x):
        ndims, description = self.input_shapes
        if x.ndim not in ndims or x.shape[1] != self.num_features:
            raise ValueError(f"{type(self).__name__}({self.num_features}): expected input of "
                             f"shape {description.format(C=self.num_features)}, got shape "
                             f"{x.shape}")

    def forward(self, x):
        x = _as_tensor(x)
        self._check_input(x)
        # without running statistics (track_running_stats=False) even eval() uses the batch's;
        # the op counts the batches (and, with momentum None, averages them all)
        return _batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                           training=self.training or not self.track_running_stats,
                           momentum=self.momentum, eps=self.eps,
                           num_batches_tracked=self.num_batches_tracked)

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, track_running_stats={self.track_running_stats}")


class BatchNorm2d(_BatchNorm):
    """Batch normalisation of images ``(N, C, H, W)``, per channel over N, H and W.

    >>> bn = BatchNorm2d(16)
    >>> bn(tt.randn(8, 16, 5, 5)).shape          # train mode: batch statistics
    (8, 16, 5, 5)
    >>> sorted(bn.state_dict())
    ['bias', 'num_batches_tracked', 'running_mean', 'running_var', 'weight']
    """
    __doc__ += _BatchNorm.__doc__.split("\n", 1)[1]
    input_shapes = ((4,), "(N, {C}, H, W)")


class BatchNorm1d(_BatchNorm):
    """Batch normalisation of ``(N, C)`` or ``(N, C, L)`` inputs, per channel over N (and L).

    >>> BatchNorm1d(10)(tt.randn(32, 10)).shape
    (32, 10)
    """
    __doc__ += _BatchNorm.__doc__.split("\n", 1)[1]
    input_shapes = ((2, 3), "(N, {C}) or (N, {C}, L)")
