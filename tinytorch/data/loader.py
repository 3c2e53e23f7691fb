"""``tinytorch.data.loader``: Dataset, TensorDataset and DataLoader under TinyTorch's path.

The same objects as :mod:`tinytorch.core.dataloader`.

>>> from tinytorch.data.loader import DataLoader, TensorDataset
"""

from tinytorch.core.dataloader import (  # noqa: F401
    DataLoader, Dataset, Subset, TensorDataset, collate, random_split,
)

__all__ = ["Dataset", "TensorDataset", "Subset", "DataLoader", "random_split", "collate"]
