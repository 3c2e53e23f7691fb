"""Parameter initialisation, as ``torch.nn.init``: each function fills a Tensor in place.

Every function works under ``no_grad`` (a leaf that requires grad may be filled), draws from
``tinytorch.core.tensor.get_rng()`` (so ``tinytorch.manual_seed`` reproduces it), records the
change like any in-place edit, and returns the tensor.

Fans follow PyTorch, except for 2-D tensors, which tinytorch's ``Linear`` stores as
``(in_features, out_features)``: there fan_in is ``shape[0]`` and fan_out ``shape[1]``. For a
convolution weight ``(out_channels, in_channels / groups, kH, kW)`` fan_in is
``in_channels / groups * kH * kW`` and fan_out ``out_channels * kH * kW``.

>>> w = Tensor(np.empty((784, 128)), requires_grad=True)
>>> kaiming_normal_(w, nonlinearity="relu")      # std = sqrt(2 / 784)
"""

import math
import numbers

import numpy as np

from tinytorch.core.grad_mode import no_grad
from tinytorch.core.inplace import note_inplace
from tinytorch.core.tensor import Tensor, get_rng

__all__ = [
    "calculate_gain", "uniform_", "normal_", "zeros_", "ones_", "constant_", "xavier_uniform_",
    "xavier_normal_", "kaiming_uniform_", "kaiming_normal_",
]

_LINEAR_LIKE = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
                "conv_transpose3d", "sigmoid")


def calculate_gain(nonlinearity, param=None):
    """The recommended scale of the weights' standard deviation for ``nonlinearity`` (PyTorch's
    table): linear, convolutions and sigmoid 1; tanh 5/3; relu sqrt(2); leaky_relu
    sqrt(2 / (1 + slope^2)) with ``param`` the negative slope (default 0.01); selu 3/4.

    >>> calculate_gain("relu")      # 1.4142...
    """
    if nonlinearity in _LINEAR_LIKE:
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        if param is None:
            slope = 0.01
        elif isinstance(param, numbers.Real) and not isinstance(param, bool):
            slope = float(param)
        else:
            raise ValueError(f"calculate_gain: negative_slope {param!r} is not a number")
        return math.sqrt(2.0 / (1 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"calculate_gain: unsupported nonlinearity {nonlinearity!r}")


def _calculate_fan_in_and_fan_out(tensor):
    """(fan_in, fan_out) of a weight: see the module docstring. Needs at least 2 dimensions."""
    shape = tensor.shape
    if len(shape) < 2:
        raise ValueError(f"fan in and fan out cannot be computed for a tensor of shape {shape} "
                         f"(fewer than 2 dimensions)")
    if len(shape) == 2:                          # tinytorch's Linear: (in_features, out_features)
        return shape[0], shape[1]
    receptive_field = math.prod(shape[2:])
    return shape[1] * receptive_field, shape[0] * receptive_field


def _fill(tensor, values, name):
    """Write ``values`` into ``tensor`` in place (no graph) and return the tensor."""
    if not isinstance(tensor, Tensor):
        raise TypeError(f"{name}: expected a Tensor, got {type(tensor).__name__}")
    with no_grad():
        tensor.data[...] = values
    note_inplace(tensor, name)
    return tensor


def uniform_(tensor, a=0.0, b=1.0):
    """Fill with values drawn from U(a, b)."""
    return _fill(tensor, get_rng().uniform(a, b, tensor.shape), "init.uniform_")


def normal_(tensor, mean=0.0, std=1.0):
    """Fill with values drawn from N(mean, std^2)."""
    return _fill(tensor, get_rng().normal(mean, std, tensor.shape), "init.normal_")


def constant_(tensor, value):
    """Fill with ``value``."""
    return _fill(tensor, value, "init.constant_")


def zeros_(tensor):
    """Fill with zeros."""
    return _fill(tensor, 0, "init.zeros_")


def ones_(tensor):
    """Fill with ones."""
    return _fill(tensor, 1, "init.ones_")


def xavier_uniform_(tensor, gain=1.0):
    """U(-a, a) with ``a = gain * sqrt(6 / (fan_in + fan_out))`` (Glorot and Bengio, 2010)."""
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out)) if fan_in + fan_out else 0.0
    return _fill(tensor, get_rng().uniform(-bound, bound, tensor.shape), "init.xavier_uniform_")


def xavier_normal_(tensor, gain=1.0):
    """N(0, std^2) with ``std = gain * sqrt(2 / (fan_in + fan_out))`` (Glorot and Bengio, 2010)."""
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    std = gain * math.sqrt(2.0 / (fan_in + fan_out)) if fan_in + fan_out else 0.0
    return _fill(tensor, get_rng().normal(0.0, std, tensor.shape), "init.xavier_normal_")


def _kaiming_std(tensor, a, mode, nonlinearity, name):
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"{name}: mode must be 'fan_in' or 'fan_out', got {mode!r}")
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    fan = fan_in if mode == "fan_in" else fan_out
    return calculate_gain(nonlinearity, a) / math.sqrt(fan) if fan else 0.0


def kaiming_uniform_(tensor, a=0, mode="fan_in", nonlinearity="leaky_relu"):
    """U(-bound, bound) with ``bound = gain * sqrt(3 / fan)`` (He et al., 2015); ``a`` is the
    negative slope of leaky_relu, ``mode`` picks fan_in (keeps the forward pass's variance) or
    fan_out (the backward pass's).

    PyTorch's Conv2d and Linear use ``a = sqrt(5)``: bound = 1 / sqrt(fan_in).
    """
    bound = math.sqrt(3.0) * _kaiming_std(tensor, a, mode, nonlinearity, "kaiming_uniform_")
    return _fill(tensor, get_rng().uniform(-bound, bound, tensor.shape), "init.kaiming_uniform_")


def kaiming_normal_(tensor, a=0, mode="fan_in", nonlinearity="leaky_relu"):
    """N(0, std^2) with ``std = gain / sqrt(fan)`` (He et al., 2015); arguments as
    :func:`kaiming_uniform_`."""
    std = _kaiming_std(tensor, a, mode, nonlinearity, "kaiming_normal_")
    return _fill(tensor, get_rng().normal(0.0, std, tensor.shape), "init.kaiming_normal_")
