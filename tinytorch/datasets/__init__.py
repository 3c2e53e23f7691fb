"""Small offline data sets: the bundled 8x8 handwritten digits, 2-D toy problems and the
"tiny Shakespeare" text corpus.

>>> from tinytorch.datasets import load_digits, make_moons
>>> X, y = load_digits()
>>> X.shape, X.dtype, y.shape, y.dtype
((1797, 64), dtype('float32'), (1797,), dtype('int64'))
>>> X, y = make_moons(n_samples=200, noise=0.1, seed=0)

Everything here works offline: nothing is ever downloaded.

The digits are the UCI "Optical Recognition of Handwritten Digits" data (E. Alpaydin and
C. Kaynak, 1998, https://doi.org/10.24432/C50P49), licensed CC BY 4.0; see
``tinytorch/datasets/data/LICENSE-digits.txt``. The Shakespeare text is in the public domain;
see ``tinytorch/datasets/data/LICENSE-shakespeare.txt``.
"""

import gzip
from importlib import resources

import numpy as np

DATASETS = ("digits", "moons", "spirals", "xor")


def load_digits():
    """The 8x8 handwritten digits: 1,797 images of the digits 0-9, about 180 of each.

    Returns ``(X, y)``: ``X`` float32 of shape (1797, 64) holding each image's pixels row by
    row, scaled from the original counts 0..16 to [0, 1]; ``y`` int64 labels 0..9.

    Data: UCI "Optical Recognition of Handwritten Digits" (Alpaydin and Kaynak, 1998), CC BY 4.0,
    shipped inside tinytorch (``datasets/data/digits.npz``); see ``LICENSE-digits.txt`` there.
    """
    source = resources.files(__name__).joinpath("data", "digits.npz")
    with source.open("rb") as f, np.load(f, allow_pickle=False) as data:
        images, labels = data["images"], data["labels"]
    return (images / np.float32(16)).astype(np.float32), labels.astype(np.int64)


def load_shakespeare(split=None):
    """The "tiny Shakespeare" corpus as one str: speeches from Shakespeare's plays.

    1,115,394 characters, 65 distinct (letters, the digit 3, punctuation, space, newline),
    each speaker's name on its own line: the standard small corpus for character-level language
    models (collected for char-rnn, A. Karpathy, 2015). ``split=None`` returns the whole text;
    ``"train"`` its first 90% of characters (``text[:int(0.9 * len(text))]``, 1,003,854
    characters, as nanoGPT) and ``"val"`` the remaining 10% (111,540), the conventional split for
    reported numbers. The text is in the public domain; it ships gzip-compressed inside tinytorch
    (``datasets/data/tinyshakespeare.txt.gz``, whose CRC gzip checks on every read).
    """
    if split not in (None, "train", "val"):
        raise ValueError(f"split must be None, 'train' or 'val', got {split!r}")
    source = resources.files(__name__).joinpath("data", "tinyshakespeare.txt.gz")
    with source.open("rb") as f:
        text = gzip.decompress(f.read()).decode("utf-8")
    boundary = int(0.9 * len(text))
    return {None: text, "train": text[:boundary], "val": text[boundary:]}[split]


def make_moons(n_samples=200, noise=0.1, seed=None):
    """Two interleaving half circles in 2-D, labels 0 and 1 (as scikit-learn's make_moons).

    Class 0: ``(cos t, sin t)``; class 1: ``(1 - cos t, 0.5 - sin t)``, for t evenly spaced in
    [0, pi]; then Gaussian noise of standard deviation ``noise`` is added and rows are shuffled.
    Returns ``(X float32 (n, 2), y int64 (n,))``.
    """
    rng, n_samples = _setup(n_samples, noise, seed)
    n_outer = n_samples // 2
    n_inner = n_samples - n_outer
    t_outer = np.linspace(0, np.pi, n_outer)
    t_inner = np.linspace(0, np.pi, n_inner)
    X = np.concatenate([np.stack([np.cos(t_outer), np.sin(t_outer)], axis=1),
                        np.stack([1 - np.cos(t_inner), 0.5 - np.sin(t_inner)], axis=1)])
    y = np.concatenate([np.zeros(n_outer), np.ones(n_inner)])
    return _finish(X, y, noise, rng)


def make_spirals(n_samples=300, noise=0.1, seed=None, n_classes=3):
    """``n_classes`` interleaved spiral arms in 2-D (the CS231n spiral), one class per arm.

    Arm k holds the points ``r * (sin a, cos a)`` with radius r from 0 to 1 and angle
    ``a = 4 (k + r)`` radians (so arms start 4 radians apart); then Gaussian noise of standard
    deviation ``noise`` is added and rows are shuffled. Returns ``(X float32 (n, 2), y int64)``.
    """
    rng, n_samples = _setup(n_samples, noise, seed)
    if int(n_classes) != n_classes or n_classes < 2:
        raise ValueError(f"make_spirals: n_classes must be an integer >= 2, got {n_classes!r}")
    counts = [n_samples // n_classes + (k < n_samples % n_classes) for k in range(n_classes)]
    points, labels = [], []
    for k, count in enumerate(counts):
        r = np.linspace(0.0, 1.0, count)
        angle = 4.0 * (k + r)
        points.append(np.stack([r * np.sin(angle), r * np.cos(angle)], axis=1))
        labels.append(np.full(count, k))
    return _finish(np.concatenate(points), np.concatenate(labels), noise, rng)


def make_xor(n_samples=200, noise=0.1, seed=None):
    """Points uniform in the square [-1, 1]^2 labelled 1 where exactly one coordinate is > 0.

    The label is fixed by the clean point, then Gaussian noise of standard deviation ``noise``
    moves it, so noisy points may cross the axes. Returns ``(X float32 (n, 2), y int64 (n,))``.
    """
    rng, n_samples = _setup(n_samples, noise, seed)
    X = rng.uniform(-1.0, 1.0, size=(n_samples, 2))
    y = (X[:, 0] > 0) ^ (X[:, 1] > 0)
    return _finish(X, y, noise, rng)


def load_dataset(name, n_samples=None, noise=None, seed=None):
    """``(X, y)`` of a data set by name: ``"digits"``, ``"moons"``, ``"spirals"`` or ``"xor"``.

    ``n_samples`` and ``noise`` apply to the generated sets (their defaults when None).
    """
    if name == "digits":
        return load_digits()
    generators = {"moons": make_moons, "spirals": make_spirals, "xor": make_xor}
    if name not in generators:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    options = {k: v for k, v in dict(n_samples=n_samples, noise=noise).items() if v is not None}
    return generators[name](seed=seed, **options)


def _setup(n_samples, noise, seed):
    if isinstance(n_samples, bool) or int(n_samples) != n_samples or n_samples < 2:
        raise ValueError(f"n_samples must be an integer >= 2, got {n_samples!r}")
    if not noise >= 0:
        raise ValueError(f"noise must be >= 0, got {noise!r}")
    return np.random.default_rng(seed), int(n_samples)


def _finish(X, y, noise, rng):
    """Add the noise, shuffle the rows, and give the documented dtypes."""
    X = X + noise * rng.standard_normal(X.shape)
    order = rng.permutation(len(X))
    return X[order].astype(np.float32), y[order].astype(np.int64)


__all__ = ["load_digits", "load_shakespeare", "make_moons", "make_spirals", "make_xor", "load_dataset", "DATASETS"]
