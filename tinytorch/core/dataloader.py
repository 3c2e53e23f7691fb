"""Datasets and the DataLoader that cuts them into (shuffled) mini-batches.

>>> import numpy as np
>>> from tinytorch.core.dataloader import TensorDataset, DataLoader
>>> X, y = np.random.randn(100, 4), np.arange(100) % 3
>>> loader = DataLoader(TensorDataset(X, y), batch_size=32, shuffle=True, seed=0)
>>> len(loader)                     # ceil(100 / 32) batches
4
>>> xb, yb = next(iter(loader))
>>> xb.shape, yb.shape, yb.dtype
((32, 4), (32,), dtype('int64'))
"""

import numpy as np

from tinytorch.core.tensor import Tensor, get_rng


class Dataset:
    """A sized collection of samples: subclasses give ``__len__`` and ``__getitem__(i)``.

    ``__getitem__`` returns one sample, usually a tuple such as ``(features, label)``.
    A subclass may also give ``get_batch(indices)`` returning the whole batch at once (faster
    than one sample at a time); the default collates ``self[i]`` for each index.
    """

    def __len__(self):
        raise NotImplementedError(f"{type(self).__name__} must define __len__")

    def __getitem__(self, index):
        raise NotImplementedError(f"{type(self).__name__} must define __getitem__")

    def get_batch(self, indices):
        """The samples at ``indices``, stacked into a batch by :func:`collate`."""
        return collate([self[int(i)] for i in indices])


def collate(samples):
    """Stack a list of samples into a batch: tuples of fields become tuples of stacked Tensors.

    Integer and bool fields (labels, indices) keep their dtype; floats follow the default dtype.
    """
    first = samples[0]
    if isinstance(first, (tuple, list)):
        return tuple(collate([s[k] for s in samples]) for k in range(len(first)))
    return _as_tensor(np.stack([s.data if isinstance(s, Tensor) else np.asarray(s)
                                for s in samples]))


def _as_tensor(value):
    """A Tensor of ``value``; Tensors pass through, integer and bool arrays keep their dtype."""
    if isinstance(value, Tensor):
        return value
    array = np.asarray(value)
    if array.dtype.kind in "iub":
        return Tensor(array, dtype=array.dtype)
    return Tensor(array)


class TensorDataset(Dataset):
    """Samples made of the rows of equally long Tensors (or arrays): ``(X[i], y[i])``.

    >>> data = TensorDataset(X, y)       # X: (N, features), y: (N,) class labels
    >>> data[0]                          # (X[0], y[0])
    """

    def __init__(self, *tensors):
        if not tensors:
            raise ValueError("TensorDataset needs at least one tensor")
        self.tensors = tuple(_as_tensor(t) for t in tensors)
        sizes = [t.shape[0] if t.ndim else None for t in self.tensors]
        if None in sizes or len(set(sizes)) != 1:
            shapes = [t.shape for t in self.tensors]
            raise ValueError(f"TensorDataset: all tensors need the same first dimension, "
                             f"got shapes {shapes}")

    def __len__(self):
        return self.tensors[0].shape[0]

    def __getitem__(self, index):
        return tuple(Tensor(t.data[index], dtype=t.dtype) for t in self.tensors)

    def get_batch(self, indices):
        """Rows ``indices`` of every tensor, taken with one indexing operation each."""
        return tuple(Tensor(t.data[indices], dtype=t.dtype) for t in self.tensors)


class Subset(Dataset):
    """The samples of ``dataset`` at the given ``indices`` (see :func:`random_split`)."""

    def __init__(self, dataset, indices):
        self.dataset = dataset
        self.indices = np.asarray(indices, dtype=np.int64)

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, index):
        return self.dataset[int(self.indices[index])]

    def get_batch(self, indices):
        return _get_batch(self.dataset, self.indices[np.asarray(indices)])


def _get_batch(dataset, indices):
    if hasattr(dataset, "get_batch"):
        return dataset.get_batch(indices)
    return collate([dataset[int(i)] for i in indices])


def _generator(seed):
    """A NumPy generator seeded by ``seed``, or when it is None by a draw from ``get_rng()``
    (which follows ``tinytorch.manual_seed``)."""
    if seed is None:
        seed = int(get_rng().integers(2**63))
    return np.random.default_rng(seed)


def random_split(dataset, lengths, seed=None):
    """Split ``dataset`` into non-overlapping random :class:`Subset` s of the given lengths.

    ``lengths`` are sample counts adding up to ``len(dataset)``, or fractions adding up to 1
    (any remainder from rounding goes to the first parts, one sample each). Without a ``seed``
    the order is drawn from the library generator, so ``tinytorch.manual_seed`` reproduces it.

    >>> train, test = random_split(data, [0.8, 0.2], seed=0)
    """
    n = len(dataset)
    lengths = list(lengths)
    if lengths and all(isinstance(x, float) for x in lengths):
        if not np.isclose(sum(lengths), 1.0) or min(lengths) < 0:
            raise ValueError(f"random_split: fractions must be >= 0 and add up to 1, "
                             f"got {lengths}")
        counts = [int(np.floor(n * f)) for f in lengths]
        for i in range(n - sum(counts)):
            counts[i % len(counts)] += 1
        lengths = counts
    if any(int(x) != x or x < 0 for x in lengths) or sum(lengths) != n:
        raise ValueError(f"random_split: lengths {lengths} must be non-negative integers that "
                         f"add up to the dataset's length {n} (or fractions adding up to 1)")
    order = _generator(seed).permutation(n)
    bounds = np.cumsum([0] + [int(x) for x in lengths])
    return [Subset(dataset, order[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]


class DataLoader:
    """Iterate over a dataset in mini-batches, each a tuple of stacked Tensors.

    ``shuffle=True`` draws a new order every epoch (every ``iter(loader)``) from the loader's
    own random generator, seeded by ``seed``: the same seed gives the same sequence of epochs.
    Without a ``seed`` (as PyTorch) a shuffling loader draws its generator's seed from the
    library generator when it is built, so ``tinytorch.manual_seed`` before building it
    reproduces the orders too.
    ``drop_last=True`` skips a final batch smaller than ``batch_size``.

    >>> for xb, yb in DataLoader(TensorDataset(X, y), batch_size=64, shuffle=True, seed=0):
    ...     loss = loss_fn(model(xb), yb)
    """

    def __init__(self, dataset, batch_size=1, shuffle=False, drop_last=False, seed=None):
        if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"DataLoader: batch_size must be a positive integer, "
                             f"got {batch_size!r}")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = seed
        # only a shuffling loader takes a draw from the library generator: building an ordered
        # one leaves the random numbers that follow tinytorch.manual_seed unchanged
        self.generator = _generator(seed) if shuffle else np.random.default_rng(seed)

    def __len__(self):
        n = len(self.dataset)
        if self.drop_last:
            return n // self.batch_size
        return -(-n // self.batch_size)

    def __iter__(self):
        n = len(self.dataset)
        order = self.generator.permutation(n) if self.shuffle else np.arange(n)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            yield _get_batch(self.dataset, order[start:start + self.batch_size])


__all__ = ["Dataset", "TensorDataset", "Subset", "DataLoader", "random_split", "collate"]
