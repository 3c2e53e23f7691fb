"""Activation functions, as layers (``ReLU()(x)``) and as functions (``relu(x)``).

Each class is a parameter-free :class:`~tinytorch.core.layers.Module` whose ``forward`` calls
the fused op of ``functional.py`` (or the Tensor method), so values and gradients are stable for
any input: at +-1e4 every output and gradient is finite and exact.

>>> import tinytorch as tt
>>> x = tt.Tensor([[-1.0, 0.0, 2.0]], requires_grad=True)
>>> Softmax(dim=-1)(x).sum(axis=-1)       # Tensor([1.])
>>> GELU()(x)                              # x * Phi(x), the exact (erf) form
"""

from tinytorch.core.functional import (
    gelu, leaky_relu, log_softmax, relu, sigmoid, silu, softmax, tanh,
)
from tinytorch.core.layers import Module

__all__ = [
    "ReLU", "Sigmoid", "Tanh", "GELU", "Softmax", "LogSoftmax", "LeakyReLU", "SiLU",
    "relu", "sigmoid", "tanh", "gelu", "softmax", "log_softmax", "leaky_relu", "silu",
]


class ReLU(Module):
    """max(0, x), elementwise; gradient 1 where x > 0, else 0.

    >>> ReLU()(Tensor([-1.0, 2.0]))    # Tensor([0., 2.])
    """

    def forward(self, x):
        return relu(x)


class Sigmoid(Module):
    """1 / (1 + e^-x), elementwise, without overflow for any x.

    >>> Sigmoid()(Tensor([0.0]))       # Tensor([0.5])
    """

    def forward(self, x):
        return sigmoid(x)


class Tanh(Module):
    """tanh(x), elementwise; gradient 1 - tanh(x)^2.

    >>> Tanh()(Tensor([0.0]))          # Tensor([0.])
    """

    def forward(self, x):
        return tanh(x)


class GELU(Module):
    """GELU(x) = x Phi(x) with Phi the standard normal CDF (``approximate='none'``, computed with
    an erf accurate to a few ulp), or ``approximate='tanh'``:
    x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). The gradient is the exact derivative of the
    chosen formula.

    >>> GELU()(Tensor([1.0]))          # Tensor([0.8413])
    """

    def __init__(self, approximate="none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, x):
        return gelu(x, approximate=self.approximate)

    def extra_repr(self):
        return "" if self.approximate == "none" else f"approximate={self.approximate!r}"


class Softmax(Module):
    """Probabilities along ``dim``: e^x_i / sum_j e^x_j (the row maximum is subtracted first).

    ``forward(x, dim=None)`` uses the layer's ``dim`` unless one is given.

    >>> Softmax(dim=-1)(Tensor([[0.0, 0.0]]))   # Tensor([[0.5, 0.5]])
    """

    def __init__(self, dim=-1):
        super().__init__()
        self.dim = dim

    def forward(self, x, dim=None):
        return softmax(x, dim=self.dim if dim is None else dim)

    def extra_repr(self):
        return f"dim={self.dim}"


class LogSoftmax(Module):
    """log softmax(x) along ``dim`` = x - logsumexp(x), without overflow or log(0).

    >>> LogSoftmax()(Tensor([[1e4, -1e4]]))   # Tensor([[0., -20000.]])
    """

    def __init__(self, dim=-1):
        super().__init__()
        self.dim = dim

    def forward(self, x, dim=None):
        return log_softmax(x, dim=self.dim if dim is None else dim)

    def extra_repr(self):
        return f"dim={self.dim}"


class LeakyReLU(Module):
    """x where x > 0, else ``negative_slope`` * x.

    >>> LeakyReLU(0.1)(Tensor([-2.0, 3.0]))   # Tensor([-0.2, 3.])
    """

    def __init__(self, negative_slope=0.01):
        super().__init__()
        self.negative_slope = float(negative_slope)

    def forward(self, x):
        return leaky_relu(x, self.negative_slope)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}"


class SiLU(Module):
    """x * sigmoid(x) (also called swish).

    >>> SiLU()(Tensor([0.0]))          # Tensor([0.])
    """

    def forward(self, x):
        return silu(x)
