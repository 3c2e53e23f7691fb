"""TinyTorch's data import path: ``from tinytorch.data.loader import DataLoader``.

The classes live in :mod:`tinytorch.core.dataloader`; this package only names them as the
curriculum's integration tests and milestones import them.
"""

from tinytorch.data import loader

__all__ = ["loader"]
