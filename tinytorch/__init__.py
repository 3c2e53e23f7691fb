"""tinytorch: a small, readable, fast deep-learning framework in Python and NumPy.

>>> import tinytorch as tt
>>> w = tt.Tensor([0.5, -1.0], requires_grad=True)
>>> loss = ((w * 3.0 - 1.0) ** 2).sum()
>>> loss.backward()
>>> w.grad
Tensor([  3., -24.], dtype=float32)
"""

from tinytorch.core.tensor import (
    Tensor, arange, cat, concatenate, eye, full, get_default_dtype, manual_seed, ones,
    ones_like, rand, randn, set_default_dtype, stack, tensor, where, zeros, zeros_like,
)
from tinytorch.core.autograd import (
    enable_grad, gradcheck, is_grad_enabled, no_grad, set_grad_enabled,
)
from tinytorch.core.serialization import load, save
from tinytorch.core import (
    activations, dataloader, functional, layers, losses, optimizers, training,
)
from tinytorch import autograd

__version__ = "0.1.0"

__all__ = [
    "Tensor", "tensor", "zeros", "ones", "full", "zeros_like", "ones_like", "randn", "rand",
    "arange", "eye", "concatenate", "cat", "stack", "where", "manual_seed",
    "set_default_dtype", "get_default_dtype", "no_grad", "enable_grad", "set_grad_enabled",
    "is_grad_enabled", "gradcheck", "save", "load",
    "activations", "autograd", "dataloader", "functional", "layers", "losses", "optimizers",
    "training",
]

# ----- convolutional networks (curriculum module 09) ---------------------------------------------
from tinytorch.core import init, spatial  # noqa: E402
from tinytorch.core.layers import Flatten, Identity, ModuleDict, ModuleList  # noqa: E402
from tinytorch.core.spatial import (  # noqa: E402
    AvgPool2d, BatchNorm1d, BatchNorm2d, Conv2d, MaxPool2d,
)

__all__ += ["init", "spatial", "Conv2d", "MaxPool2d", "AvgPool2d", "BatchNorm2d", "BatchNorm1d",
            "ModuleList", "ModuleDict", "Identity", "Flatten"]
