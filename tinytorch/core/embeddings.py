"""Embeddings (curriculum module 11): token ids to vectors, and where each token sits.

A language model sees integer token ids. :class:`Embedding` maps each id to a learned row of a
``(vocab_size, embed_dim)`` table (a lookup, whose gradient adds each position's gradient into
the row it read). Attention itself is blind to order, so a position signal is added: learned
(:class:`PositionalEncoding`, as GPT-2) or the fixed sinusoids of the Transformer paper
(:func:`create_sinusoidal_embeddings`). :class:`EmbeddingLayer` combines the two.

>>> import tinytorch as tt
>>> emb = EmbeddingLayer(vocab_size=65, embed_dim=32, max_seq_len=128)
>>> x = emb(tt.Tensor([[5, 7, 5]], dtype=np.int64))    # (B, T) ids -> (B, T, D)
>>> x.shape
(1, 3, 32)
"""

import math
import numbers

import numpy as np

from tinytorch.core.autograd import run_numpy, run_op
from tinytorch.core.layers import Module
from tinytorch.core.ops import EmbeddingBackward
from tinytorch.core.tensor import Tensor, get_default_dtype, get_rng

__all__ = ["Embedding", "PositionalEncoding", "create_sinusoidal_embeddings", "EmbeddingLayer",
           "token_indices"]

POSITION_INIT_STD = 0.02        # learned positions start small, as GPT-2's


def _check_positive(value, name, owner):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{owner}: {name} must be a positive int, got {value!r}")
    return int(value)


def token_indices(indices, vocab_size, owner="Embedding"):
    """``indices`` (a Tensor, array, list or int) as an integer array, checked against the vocabulary.

    Integer dtypes are taken as they are; float tensors holding whole numbers are accepted (the
    curriculum's tensors are float32 by default). Raises TypeError for non-integral values or
    other dtypes, and IndexError naming the first id outside ``[0, vocab_size)``.

    >>> token_indices(Tensor([[1.0, 2.0]]), 5)
    array([[1, 2]])
    """
    array = np.asarray(indices.data if isinstance(indices, Tensor) else indices)
    kind = array.dtype.kind
    if kind == "f":
        whole = np.isfinite(array) & (array == np.floor(array))
        if not whole.all():
            bad = array[~whole].flat[0]
            raise TypeError(f"{owner}: token indices must be integers, got the value {bad!r} "
                            f"(in a {array.dtype} tensor of shape {array.shape})")
        array = array.astype(np.intp)
    elif kind not in "iu":
        raise TypeError(f"{owner}: token indices must be an integer tensor or array, got dtype "
                        f"{array.dtype}")
    if array.size:
        low, high = array.min(), array.max()
        if low < 0 or high >= vocab_size:
            bad = low if low < 0 else high
            raise IndexError(f"{owner}: token index {int(bad)} is out of range for a vocabulary "
                             f"of {vocab_size} (valid: 0 to {vocab_size - 1})")
    return array


def checked_ids(indices, vocab_size, owner="Embedding"):
    """:func:`token_indices` of a Tensor as an op without a gradient (``autograd.run_numpy``):
    a recording of ``tinytorch.compile`` then replays the check and the new ids; other inputs
    (arrays, lists) are constants."""
    if isinstance(indices, Tensor):
        return run_numpy(token_indices, indices, vocab_size, owner)._data
    return token_indices(indices, vocab_size, owner)


class Embedding(Module):
    """A learned lookup table: ``weight[indices]``, one ``embed_dim`` vector per token id.

    ``weight`` has shape ``(vocab_size, embed_dim)``, initialised N(0, 1) as PyTorch's
    ``nn.Embedding``. Indices of any shape give ``(*indices.shape, embed_dim)``. In backward
    each row receives the sum of the gradients of every position that read it (repeated ids
    accumulate). An id outside ``[0, vocab_size)`` raises an IndexError naming it.

    >>> emb = Embedding(10, 4)
    >>> emb(Tensor([[1, 2, 1]], dtype=np.int64)).shape
    (1, 3, 4)
    """

    def __init__(self, vocab_size, embed_dim, dtype=None):
        super().__init__()
        self.vocab_size = _check_positive(vocab_size, "vocab_size", "Embedding")
        self.embed_dim = _check_positive(embed_dim, "embed_dim", "Embedding")
        dtype = get_default_dtype() if dtype is None else np.dtype(dtype)
        self.weight = Tensor(get_rng().standard_normal((self.vocab_size, self.embed_dim)),
                             requires_grad=True, dtype=dtype)

    def forward(self, indices):
        indices = checked_ids(indices, self.vocab_size, "Embedding")
        return run_op(EmbeddingBackward, self.weight, indices=indices)

    def extra_repr(self):
        return f"{self.vocab_size}, {self.embed_dim}"


class PositionalEncoding(Module):
    """Learned position vectors added to the input: ``x + weight[offset:offset + T]``.

    ``weight`` has shape ``(max_seq_len, embed_dim)``, initialised N(0, 0.02) (GPT-2's scale).
    ``forward(x, offset=0)`` takes ``(B, T, D)`` or ``(T, D)``; ``offset`` is the position of
    the first row (used when generating with a cache, where new tokens continue a sequence).
    Raises ValueError when ``offset + T > max_seq_len`` or D differs from ``embed_dim``.

    >>> pe = PositionalEncoding(max_seq_len=16, embed_dim=4)
    >>> pe(Tensor(np.zeros((2, 3, 4)))).shape
    (2, 3, 4)
    """

    def __init__(self, max_seq_len, embed_dim, dtype=None):
        super().__init__()
        self.max_seq_len = _check_positive(max_seq_len, "max_seq_len", "PositionalEncoding")
        self.embed_dim = _check_positive(embed_dim, "embed_dim", "PositionalEncoding")
        dtype = get_default_dtype() if dtype is None else np.dtype(dtype)
        self.weight = Tensor(get_rng().normal(0.0, POSITION_INIT_STD,
                                              (self.max_seq_len, self.embed_dim)),
                             requires_grad=True, dtype=dtype)

    def forward(self, x, offset=0):
        x = x if isinstance(x, Tensor) else Tensor(x)
        if x.ndim not in (2, 3) or x.shape[-1] != self.embed_dim:
            raise ValueError(f"PositionalEncoding(embed_dim={self.embed_dim}): expected input of "
                             f"shape (B, T, {self.embed_dim}) or (T, {self.embed_dim}), got "
                             f"{x.shape}")
        length = x.shape[-2]
        _check_length(offset + length, self.max_seq_len, "PositionalEncoding")
        return x + self.weight[offset:offset + length]

    def extra_repr(self):
        return f"max_seq_len={self.max_seq_len}, embed_dim={self.embed_dim}"


def _check_length(length, max_seq_len, owner):
    if length > max_seq_len:
        raise ValueError(f"{owner}: a sequence of {length} positions is longer than "
                         f"max_seq_len={max_seq_len}")


def create_sinusoidal_embeddings(max_seq_len, embed_dim):
    """The fixed position table of "Attention Is All You Need" (Vaswani et al., 2017, sec. 3.5).

    ``PE[p, 2i] = sin(p / 10000^(2i/d))`` and ``PE[p, 2i+1] = cos(p / 10000^(2i/d))``
    (interleaved), ``d = embed_dim``. Returns a Tensor ``(max_seq_len, embed_dim)`` in the default
    dtype that requires no gradient.

    >>> pe = create_sinusoidal_embeddings(4, 6)
    >>> pe.shape, float(pe.data[0, 1])           # cos(0) = 1
    ((4, 6), 1.0)
    """
    max_seq_len = _check_positive(max_seq_len, "max_seq_len", "create_sinusoidal_embeddings")
    embed_dim = _check_positive(embed_dim, "embed_dim", "create_sinusoidal_embeddings")
    positions = np.arange(max_seq_len, dtype=np.float64)[:, None]
    even = np.arange(0, embed_dim, 2, dtype=np.float64)                 # the 2i of each pair
    angles = positions / np.power(10000.0, even / embed_dim)            # (max_seq_len, ceil(d/2))
    table = np.empty((max_seq_len, embed_dim))
    table[:, 0::2] = np.sin(angles)
    table[:, 1::2] = np.cos(angles[:, :embed_dim // 2])
    return Tensor(table, dtype=get_default_dtype())


class EmbeddingLayer(Module):
    """Token embedding plus position information: ``(B, T)`` ids -> ``(B, T, embed_dim)``.

    ``pos_encoding``: ``'learned'`` (a :class:`PositionalEncoding`), ``'sinusoidal'`` (the fixed
    table of :func:`create_sinusoidal_embeddings`, not a parameter and not in the state dict)
    or None (no positions). ``scale_embeddings=True`` multiplies the token vectors by
    ``sqrt(embed_dim)`` before positions are added (as the Transformer paper does). Sequences
    longer than ``max_seq_len`` raise a ValueError.

    >>> layer = EmbeddingLayer(100, 16, max_seq_len=32, pos_encoding="sinusoidal")
    >>> layer(Tensor([[1, 2, 3]], dtype=np.int64)).shape
    (1, 3, 16)
    """

    def __init__(self, vocab_size, embed_dim, max_seq_len=512, pos_encoding="learned",
                 scale_embeddings=False):
        super().__init__()
        if pos_encoding not in ("learned", "sinusoidal", None):
            raise ValueError(f"EmbeddingLayer: pos_encoding must be 'learned', 'sinusoidal' or "
                             f"None, got {pos_encoding!r}")
        self.vocab_size, self.embed_dim = vocab_size, embed_dim
        self.max_seq_len = _check_positive(max_seq_len, "max_seq_len", "EmbeddingLayer")
        self.pos_encoding_type = pos_encoding
        self.scale_embeddings = bool(scale_embeddings)
        self.token_embedding = Embedding(vocab_size, embed_dim)
        if pos_encoding == "learned":
            self.pos_encoding = PositionalEncoding(max_seq_len, embed_dim)
        elif pos_encoding == "sinusoidal":
            self.pos_encoding = create_sinusoidal_embeddings(max_seq_len, embed_dim)
        else:
            self.pos_encoding = None

    def forward(self, tokens):
        indices = checked_ids(tokens, self.vocab_size, "EmbeddingLayer")
        if indices.ndim == 0:
            raise ValueError("EmbeddingLayer: expected token ids of shape (B, T) or (T,), got a "
                             "single id")
        _check_length(indices.shape[-1], self.max_seq_len, "EmbeddingLayer")
        x = run_op(EmbeddingBackward, self.token_embedding.weight, indices=indices)
        if self.scale_embeddings:
            x = x * math.sqrt(self.embed_dim)
        if self.pos_encoding_type == "learned":
            return self.pos_encoding(x)
        if self.pos_encoding_type == "sinusoidal":
            return x + self.pos_encoding[:indices.shape[-1]]
        return x

    def extra_repr(self):
        return (f"vocab_size={self.vocab_size}, embed_dim={self.embed_dim}, "
                f"max_seq_len={self.max_seq_len}, pos_encoding={self.pos_encoding_type!r}, "
                f"scale_embeddings={self.scale_embeddings}")
