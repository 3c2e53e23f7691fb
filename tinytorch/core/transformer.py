"""Transformers (curriculum module 13) and the KV cache (module 17): a GPT that trains and writes.

A GPT turns token ids into vectors (token embedding + learned position), sends them through
``num_layers`` pre-LN transformer blocks, normalises, and projects each position onto the
vocabulary: ``logits[b, t]`` scores the token that follows ``tokens[b, :t + 1]``. Attention is
causal (a position never sees later ones), so one forward pass trains on every position.

    x = token_embedding(tokens) + position[:T]              (B, T, D)
    x = x + attn(ln1(x));  x = x + mlp(ln2(x))              each block, pre-LN (GPT-2)
    logits = lm_head(ln_f(x))                               (B, T, vocab_size)

Generating text feeds the model its own samples one token at a time. Without a cache every new
token reruns the whole context; with a :class:`KVCache` each layer keeps the keys and values of
the positions it has seen, so a new token costs one position of work (nanoGPT's ``generate``
loop, plus the cache).

>>> import tinytorch as tt
>>> model = GPT(vocab_size=65, embed_dim=64, num_layers=2, num_heads=4, max_seq_len=128)
>>> logits = model(tt.Tensor([[1, 2, 3]], dtype=np.int64))           # (1, 3, 65)
>>> text = model.generate([1, 2, 3], max_new_tokens=20, top_k=10, seed=0)   # (23,) int64
"""

import math
import numbers

import numpy as np

from tinytorch.core.activations import GELU
from tinytorch.core.attention import MultiHeadAttention
from tinytorch.core.autograd import run_op
from tinytorch.core.grad_mode import is_grad_enabled, no_grad
from tinytorch.core.embeddings import Embedding, PositionalEncoding, checked_ids, token_indices
from tinytorch.core.functional import layer_norm
from tinytorch.core.layers import Dropout, Linear, Module
from tinytorch.core.ops import EmbeddingBackward
from tinytorch.core.tensor import Tensor, concatenate, get_default_dtype, get_rng
from tinytorch.core.tracing import note

__all__ = ["create_causal_mask", "LayerNorm", "MLP", "TransformerBlock", "GPT", "KVCache"]

INIT_STD = 0.02                 # GPT-2's initialisation scale (Radford et al., 2019; nanoGPT)


def create_causal_mask(seq_len):
    """A ``(seq_len, seq_len)`` bool Tensor, True on and below the diagonal: query i may see key j
    exactly when j <= i.

    >>> create_causal_mask(3).data.astype(int)
    array([[1, 0, 0],
           [1, 1, 0],
           [1, 1, 1]])
    """
    if isinstance(seq_len, bool) or not isinstance(seq_len, numbers.Integral) or seq_len < 0:
        raise ValueError(f"create_causal_mask: seq_len must be a non-negative int, got {seq_len!r}")
    return Tensor(np.tril(np.ones((seq_len, seq_len), dtype=bool)))


class LayerNorm(Module):
    """Layer normalisation over the trailing ``normalized_shape`` axes (as ``torch.nn.LayerNorm``).

    ``y = (x - mean) / sqrt(var + eps) * weight + bias``, biased variance; ``weight`` starts at
    1 and ``bias`` at 0. One fused op (``functional.layer_norm``). ``gamma``/``beta`` are the
    curriculum's names for ``weight``/``bias``.

    >>> LayerNorm(4)(Tensor([[1.0, 2.0, 3.0, 4.0]])).shape
    (1, 4)
    """

    def __init__(self, normalized_shape, eps=1e-5):
        super().__init__()
        shape = (normalized_shape,) if isinstance(normalized_shape, numbers.Integral) \
            else tuple(normalized_shape)
        self.normalized_shape = tuple(int(n) for n in shape)
        self.eps = float(eps)
        dtype = get_default_dtype()
        self.weight = Tensor(np.ones(self.normalized_shape), requires_grad=True, dtype=dtype)
        self.bias = Tensor(np.zeros(self.normalized_shape), requires_grad=True, dtype=dtype)

    @property
    def gamma(self):
        return self.weight

    @property
    def beta(self):
        return self.bias

    def forward(self, x):
        return layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}"


class MLP(Module):
    """The feed-forward half of a block: ``Linear(D, H) -> GELU -> Linear(H, D) -> Dropout``.

    ``hidden_dim`` defaults to ``4 * embed_dim``. The GELU is the tanh approximation by default
    (GPT-2's; ``approximate='none'`` gives the exact x Phi(x), which costs ~15x more here).

    >>> MLP(8)(Tensor(np.ones((2, 3, 8)))).shape
    (2, 3, 8)
    """

    def __init__(self, embed_dim, hidden_dim=None, dropout_prob=0.1, approximate="tanh"):
        super().__init__()
        hidden_dim = 4 * embed_dim if hidden_dim is None else hidden_dim
        self.embed_dim, self.hidden_dim = embed_dim, hidden_dim
        self.linear1 = Linear(embed_dim, hidden_dim)
        self.gelu = GELU(approximate=approximate)
        self.linear2 = Linear(hidden_dim, embed_dim)
        self.dropout = Dropout(dropout_prob)

    def forward(self, x):
        return self.dropout(self.linear2(self.gelu(self.linear1(x))))


class TransformerBlock(Module):
    """One pre-LN transformer block: ``x = x + attn(ln1(x))``, then ``x = x + mlp(ln2(x))``.

    Sub-modules ``ln1``, ``attn`` (:class:`MultiHeadAttention`, attention dropout
    ``dropout_prob``), ``ln2``, ``mlp`` (hidden width ``mlp_ratio * embed_dim``).
    ``forward(x, mask=None, is_causal=False)`` maps ``(B, T, D)`` to ``(B, T, D)``.

    >>> TransformerBlock(32, num_heads=4)(tt.randn(2, 5, 32), is_causal=True).shape
    (2, 5, 32)
    """

    def __init__(self, embed_dim, num_heads, mlp_ratio=4, dropout_prob=0.1):
        super().__init__()
        self.ln1 = LayerNorm(embed_dim)
        self.attn = MultiHeadAttention(embed_dim, num_heads, dropout=dropout_prob)
        self.ln2 = LayerNorm(embed_dim)
        self.mlp = MLP(embed_dim, int(embed_dim * mlp_ratio), dropout_prob)

    @property
    def attention(self):
        """The curriculum's name for ``attn``."""
        return self.attn

    def forward(self, x, mask=None, is_causal=False, cache=None, layer=0):
        x = x + self.attn(self.ln1(x), mask=mask, is_causal=is_causal, cache=cache, layer=layer)
        return x + self.mlp(self.ln2(x))


class KVCache:
    """The keys and values each attention layer has computed, kept for the next tokens.

    ``KVCache(num_layers)``. ``GPT.forward(tokens, cache=cache)`` appends every layer's keys
    and values (``(B, H, T, D/H)`` each) and numbers the new positions from ``cache.length``,
    so generating a token costs one position of work instead of a pass over the whole context.
    Storage grows by doubling (amortised O(1) per token). Keys and values cached by earlier
    calls are constants: gradients reach only those of the current call.

    >>> cache = KVCache(model.num_layers)
    >>> logits = model(prompt, cache=cache)          # prefill: cache.length == prompt length
    >>> logits = model(next_token, cache=cache)      # one more position
    """

    def __init__(self, num_layers):
        if isinstance(num_layers, bool) or not isinstance(num_layers, numbers.Integral) \
                or num_layers < 1:
            raise ValueError(f"KVCache: num_layers must be a positive int, got {num_layers!r}")
        self.num_layers = int(num_layers)
        self.reset()

    def reset(self):
        """Forget every cached position (``length`` becomes 0)."""
        self.keys = [None] * self.num_layers        # (B, H, capacity, D/H) arrays
        self.values = [None] * self.num_layers
        self.lengths = [0] * self.num_layers

    @property
    def length(self):
        """Positions cached by every layer (a forward in progress has appended to some)."""
        return min(self.lengths)

    def layer_length(self, layer):
        """Positions cached by ``layer``."""
        return self.lengths[self._check_layer(layer)]

    def _check_layer(self, layer):
        if not 0 <= layer < self.num_layers:
            raise IndexError(f"KVCache: layer {layer} is out of range for a cache of "
                             f"{self.num_layers} layers")
        return layer

    def update(self, layer, keys, values):
        """Append ``keys`` and ``values`` (Tensors ``(B, H, T, D/H)``) to ``layer``; return all of
        that layer's keys and values, ``(B, H, length + T, D/H)`` each."""
        note("KVCache.update (a cache kept in NumPy arrays, updated in place)")
        self._check_layer(layer)
        past, new = self.lengths[layer], keys.shape[2]
        stored = self.keys[layer]
        if stored is not None and (stored.shape[:2] != keys.shape[:2]
                                   or stored.shape[3] != keys.shape[3]):
            raise ValueError(f"KVCache: layer {layer} holds keys of shape (B, H, _, d) = "
                             f"{stored.shape[:2] + stored.shape[3:]}, got {keys.shape}; "
                             f"reset() the cache for another batch")
        if stored is None or past + new > stored.shape[2]:
            capacity = max(past + new, 2 * (0 if stored is None else stored.shape[2]), 16)
            self.keys[layer] = self._grow(self.keys[layer], keys, past, capacity)
            self.values[layer] = self._grow(self.values[layer], values, past, capacity)
        self.keys[layer][:, :, past:past + new] = keys.data
        self.values[layer][:, :, past:past + new] = values.data
        self.lengths[layer] = past + new
        recording = is_grad_enabled() and (keys.requires_grad or values.requires_grad)
        if recording:                  # the new keys keep their graph; the cached ones are constants
            if past == 0:
                return keys, values
            return (concatenate([Tensor._make(self.keys[layer][:, :, :past]), keys], axis=2),
                    concatenate([Tensor._make(self.values[layer][:, :, :past]), values], axis=2))
        return (Tensor._make(self.keys[layer][:, :, :past + new]),
                Tensor._make(self.values[layer][:, :, :past + new]))

    @staticmethod
    def _grow(stored, like, past, capacity):
        batch, heads, _, dim = like.shape
        grown = np.empty((batch, heads, capacity, dim), dtype=like.dtype)
        if stored is not None:
            grown[:, :, :past] = stored[:, :, :past]
        return grown

    def __repr__(self):
        return f"KVCache(num_layers={self.num_layers}, length={self.length})"


class GPT(Module):
    """A decoder-only transformer language model (GPT-2's layout, as nanoGPT).

    ``GPT(vocab_size, embed_dim, num_layers, num_heads, max_seq_len=1024, dropout_prob=0.1)``;
    sub-modules ``token_embedding`` (:class:`~tinytorch.core.embeddings.Embedding`),
    ``position_embedding`` (learned, :class:`~tinytorch.core.embeddings.PositionalEncoding`),
    ``blocks`` (a list of :class:`TransformerBlock`), ``ln_f`` and ``lm_head`` (``Linear(D,
    vocab_size, bias=False)``). Weights start as GPT-2's: N(0, 0.02) for embeddings and
    linear weights, N(0, 0.02 / sqrt(2 num_layers)) for the two projections that write into
    the residual stream (``attn.out_proj``, ``mlp.linear2``), zero biases.

    ``forward(tokens (B, T) ints, cache=None) -> logits (B, T, vocab_size)``, causal. T (plus
    the cached positions) beyond ``max_seq_len`` raises a ValueError.

    >>> model = GPT(vocab_size=65, embed_dim=64, num_layers=2, num_heads=4, max_seq_len=64)
    >>> model(tt.Tensor([[0, 1, 2]], dtype=np.int64)).shape
    (1, 3, 65)
    """

    def __init__(self, vocab_size, embed_dim, num_layers, num_heads, max_seq_len=1024,
                 dropout_prob=0.1):
        super().__init__()
        for name, value in (("vocab_size", vocab_size), ("embed_dim", embed_dim),
                            ("num_layers", num_layers), ("num_heads", num_heads),
                            ("max_seq_len", max_seq_len)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"GPT: {name} must be a positive int, got {value!r}")
        self.vocab_size, self.embed_dim = int(vocab_size), int(embed_dim)
        self.num_layers, self.num_heads = int(num_layers), int(num_heads)
        self.max_seq_len = int(max_seq_len)
        self.dropout_prob = float(dropout_prob)
        self.token_embedding = Embedding(vocab_size, embed_dim)
        self.position_embedding = PositionalEncoding(max_seq_len, embed_dim)
        self.dropout = Dropout(dropout_prob)
        self.blocks = [TransformerBlock(embed_dim, num_heads, dropout_prob=dropout_prob)
                       for _ in range(num_layers)]
        self.ln_f = LayerNorm(embed_dim)
        self.lm_head = Linear(embed_dim, vocab_size, bias=False)
        self._init_weights()

    def _init_weights(self):
        rng = get_rng()
        with no_grad():
            for module in self.modules():
                if isinstance(module, (Linear, Embedding, PositionalEncoding)):
                    module.weight.data[...] = rng.normal(0.0, INIT_STD, module.weight.shape)
                if isinstance(module, Linear) and module.bias is not None:
                    module.bias.data[...] = 0.0
            residual_std = INIT_STD / math.sqrt(2 * self.num_layers)
            for block in self.blocks:
                for weight in (block.attn.out_proj.weight, block.mlp.linear2.weight):
                    weight.data[...] = rng.normal(0.0, residual_std, weight.shape)

    def forward(self, tokens, cache=None):
        indices = checked_ids(tokens, self.vocab_size, "GPT")
        if indices.ndim != 2:
            raise ValueError(f"GPT: tokens must have shape (B, T), got {indices.shape}")
        start = 0 if cache is None else cache.length
        length = indices.shape[1]
        if start + length > self.max_seq_len:
            cached = f" after {start} cached positions" if start else ""
            raise ValueError(f"GPT: {length} tokens{cached} exceed max_seq_len="
                             f"{self.max_seq_len}")
        x = run_op(EmbeddingBackward, self.token_embedding.weight, indices=indices)   # (B, T, D)
        x = self.dropout(self.position_embedding(x, offset=start))
        for i, block in enumerate(self.blocks):
            x = block(x, is_causal=True, cache=cache, layer=i)
        return self.lm_head(self.ln_f(x))                                   # (B, T, vocab)

    def generate(self, prompt_tokens, max_new_tokens=50, temperature=1.0, top_k=None,
                 use_cache=True, seed=None, return_logits=False):
        """Continue ``prompt_tokens`` by sampling ``max_new_tokens`` tokens, one at a time.

        ``prompt_tokens``: ``(T,)`` or ``(B, T)`` ints. Each step divides the last position's
        logits by ``temperature`` (> 0), keeps the ``top_k`` largest (``top_k=1``: greedy) and
        samples from their softmax. The context is cropped to the last ``max_seq_len`` tokens
        (as nanoGPT), with or without the cache: once a cached sequence is full, the cache is
        refilled from the cropped context, so both give the same tokens and logits. ``seed``
        seeds a private ``np.random.default_rng(seed)``; None draws from tinytorch's generator.
        Runs in eval mode (no dropout) under ``no_grad`` and restores the previous mode.

        Returns an int64 Tensor ``(B, T + max_new_tokens)`` (``(T + max_new_tokens,)`` for a
        1-D prompt); with ``return_logits=True`` also the model's logits at each step,
        ``(B, max_new_tokens, vocab_size)``, before temperature and top-k.
        """
        prompt = token_indices(prompt_tokens, self.vocab_size, "GPT.generate")
        if prompt.ndim not in (1, 2) or prompt.shape[-1] == 0:
            raise ValueError(f"GPT.generate: prompt_tokens must have shape (T,) or (B, T) with "
                             f"T >= 1, got {prompt.shape}")
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, numbers.Integral) \
                or max_new_tokens < 0:
            raise ValueError(f"GPT.generate: max_new_tokens must be an int >= 0, "
                             f"got {max_new_tokens!r}")
        if not isinstance(temperature, numbers.Real) or not temperature > 0 \
                or not math.isfinite(temperature):
            raise ValueError(f"GPT.generate: temperature must be a finite number > 0, "
                             f"got {temperature!r}")
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral)
                                  or top_k < 1):
            raise ValueError(f"GPT.generate: top_k must be None or an int >= 1, got {top_k!r}")
        rng = get_rng() if seed is None else np.random.default_rng(seed)
        tokens = np.array(prompt if prompt.ndim == 2 else prompt[None], dtype=np.int64)
        batch = tokens.shape[0]
        steps = []
        cache = KVCache(self.num_layers) if use_cache else None
        was_training = self.training
        self.eval()
        try:
            with no_grad():
                for _ in range(max_new_tokens):
                    logits = self._next_logits(tokens, cache)             # (B, vocab)
                    if return_logits:
                        steps.append(logits)
                    choice = _sample(logits, temperature, top_k, rng)
                    tokens = np.concatenate([tokens, choice.reshape(batch, 1)], axis=1)
        finally:
            self.train(was_training)
        result = Tensor(tokens if prompt.ndim == 2 else tokens[0], dtype=np.int64)
        if not return_logits:
            return result
        logits = (np.stack(steps, axis=1) if steps
                  else np.zeros((batch, 0, self.vocab_size), dtype=get_default_dtype()))
        return result, Tensor._make(logits)

    def _next_logits(self, tokens, cache):
        """The logits of the position after ``tokens`` (B, T), on the last max_seq_len tokens."""
        context = tokens[:, -self.max_seq_len:]
        if cache is not None:
            if 0 < cache.length < self.max_seq_len:
                context = tokens[:, -1:]                   # one new position
            else:
                cache.reset()                              # empty, or full: (re)fill
        return self.forward(context, cache=cache).data[:, -1]

    def extra_repr(self):
        return (f"vocab_size={self.vocab_size}, embed_dim={self.embed_dim}, "
                f"num_layers={self.num_layers}, num_heads={self.num_heads}, "
                f"max_seq_len={self.max_seq_len}")


def _sample(logits, temperature, top_k, rng):
    """One token per row of ``logits`` (B, V): softmax(logits / temperature) over the top k."""
    scores = logits.astype(np.float64) / temperature
    if top_k is not None and top_k < scores.shape[-1]:
        if top_k == 1:
            return scores.argmax(axis=-1)
        kth = np.partition(scores, -top_k, axis=-1)[:, -top_k:].min(axis=-1, keepdims=True)
        scores = np.where(scores < kth, -np.inf, scores)
    probs = np.exp(scores - scores.max(axis=-1, keepdims=True))
    cdf = np.cumsum(probs, axis=-1)
    draws = rng.random(scores.shape[0])[:, None] * cdf[:, -1:]
    return np.minimum((cdf <= draws).sum(axis=-1), scores.shape[-1] - 1)
