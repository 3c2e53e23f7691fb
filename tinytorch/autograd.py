"""``tinytorch.autograd``: the autograd API under its PyTorch name.

The same objects as :mod:`tinytorch.core.autograd` (the TinyTorch curriculum's module):
``grad``, ``backward``, ``Function``, ``no_grad``, ``detect_anomaly``, ``gradcheck``...

>>> from tinytorch.autograd import grad
"""

from tinytorch.core.autograd import *  # noqa: F401,F403
from tinytorch.core.autograd import __all__  # noqa: F401
