"""Attention (curriculum module 12): scaled dot-product attention and multi-head attention.

Each query looks at every key it is allowed to see, turns the similarities into weights that
sum to one, and returns the weighted mean of the values:

    scores = Q K^T / sqrt(d)        (..., T_q, T_k)
    weights = softmax(scores) over the allowed keys of each query row
    output = weights V              (..., T_q, d_v)

:func:`scaled_dot_product_attention` computes this as one fused op whose gradient rule is
written out below (``ScaledDotProductAttentionBackward``), so a step records one node instead
of the half dozen a composition of matmul, mask, softmax and matmul would, and the softmax is
stable for any score. :class:`MultiHeadAttention` runs ``num_heads`` such attentions side by
side on slices of the embedding, as one batched op (heads are an axis, never a Python loop).

>>> import tinytorch as tt
>>> q = k = v = tt.randn(2, 5, 8)                       # (B, T, d)
>>> out, weights = scaled_dot_product_attention(q, k, v, is_causal=True)
>>> out.shape, weights.shape
((2, 5, 8), (2, 5, 5))
"""

import functools
import math
import numbers

import numpy as np

from tinytorch.core.autograd import Function, run_numpy, run_op
from tinytorch.core.grad_mode import is_grad_enabled
from tinytorch.core.layers import Linear, Module
from tinytorch.core.ops import _swap_last_two
from tinytorch.core.tensor import Tensor, get_rng

__all__ = ["scaled_dot_product_attention", "MultiHeadAttention",
           "ScaledDotProductAttentionBackward", "AttentionWeightsBackward"]


# ----- masks ---------------------------------------------------------------------------------

@functools.lru_cache(maxsize=64)
def causal_bias(query_len, key_len, offset=0):
    """An additive (query_len, key_len) float32 table: 0 where query i may see key j (that is,
    j <= i + offset), -inf elsewhere. ``offset=0`` aligns top-left (as PyTorch's ``is_causal``);
    queries that continue a cached sequence of ``offset`` positions use that offset.

    Adding it to the scores costs one pass (a boolean ``where`` costs three times as much here).
    The arrays are cached and read-only.
    """
    bias = np.zeros((query_len, key_len), dtype=np.float32)
    bias[np.triu_indices(query_len, k=offset + 1, m=key_len)] = -np.inf
    bias.flags.writeable = False
    return bias


def blocked_positions(mask, scores_shape):
    """The positions a ``mask`` blocks, as a bool array broadcastable to ``scores_shape``.

    ``mask`` (Tensor or array) holds bools, or integers or floats that are all 0 or 1: 1/True
    allows a query to see a key, 0/False blocks it (PyTorch's boolean ``attn_mask``). Raises
    ValueError for other values or a shape that does not broadcast to ``scores_shape``.
    """
    array = np.asarray(mask.data if isinstance(mask, Tensor) else mask)
    if array.dtype != bool:
        if array.dtype.kind not in "iuf":
            raise ValueError(f"attention mask: expected bool, integer or float values, got dtype "
                             f"{array.dtype}")
        ones = array == 1
        if not np.all(ones | (array == 0)):
            bad = array[~(ones | (array == 0))].flat[0]
            raise ValueError(f"attention mask: values must be 0/1 (or True/False; 1 = attend, 0 = "
                             f"blocked; masks are never added to the scores), got {bad.item()!r}")
        array = ones
    try:
        fits = np.broadcast_shapes(array.shape, scores_shape) == tuple(scores_shape)
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(f"attention mask: shape {array.shape} does not broadcast to the scores' "
                         f"shape {tuple(scores_shape)} (..., T_q, T_k)")
    return ~array


# ----- the fused op ----------------------------------------------------------------------------

def attention_weights(q, k, scale, blocked=None, causal_offset=None):
    """softmax(scale * q k^T) over the allowed keys of each row (arrays, float in, same dtype out).

    ``blocked`` (bool, broadcastable) and/or ``causal_offset`` (an int: query i sees keys
    j <= i + offset) remove keys. The row maximum is subtracted before exponentiating, so
    scores of any size give finite weights; a row whose keys are all blocked gets zeros.
    """
    scores = np.matmul(q, np.swapaxes(k, -1, -2))            # (..., T_q, T_k)
    scores *= scale
    if scores.shape[-1] == 0 or scores.shape[-2] == 0:
        return scores
    if causal_offset is not None:
        scores += causal_bias(scores.shape[-2], scores.shape[-1], causal_offset)
    if blocked is not None:
        np.copyto(scores, -np.inf, where=blocked)
    row_max = scores.max(axis=-1, keepdims=True)
    may_be_empty = blocked is not None or (causal_offset is not None and causal_offset < 0)
    if may_be_empty:
        row_max[np.isneginf(row_max)] = 0.0                   # all keys blocked: exp(-inf) = 0
    scores -= row_max
    np.exp(scores, out=scores)
    total = scores.sum(axis=-1, keepdims=True)
    if may_be_empty:
        total[total == 0] = 1.0                                # ... and the row stays 0
    scores /= total
    return scores


class ScaledDotProductAttentionBackward(Function):
    """O = dropout(P) V,  P = softmax(S) (over the allowed keys),  S = scale * Q K^T.

    Shapes: Q (..., T_q, d), K (..., T_k, d), V (..., T_k, d_v), P (..., T_q, T_k), O
    (..., T_q, d_v); batch axes broadcast. ``keep`` is the dropout multiplier (0 or 1/(1-p)
    per weight) or None, so Pd = P * keep. With G = dL/dO:

        dL/dV  = Pd^T G
        dL/dPd = G V^T,   dL/dP = dL/dPd * keep
        dL/dS  = P * (dL/dP - rowsum(dL/dP * P))       (the softmax's Jacobian)
        dL/dQ  = scale * dL/dS K,   dL/dK = scale * dL/dS^T Q

    rowsum(dL/dP * P)_i = sum_j (G_i . V_j) keep_ij P_ij = G_i . O_i, a product over d_v
    instead of T_k (the identity FlashAttention uses; Dao et al., 2022). Blocked keys have
    P = 0, so they get no gradient, and a fully blocked row gives zero gradients everywhere.
    The forward receives the weights P already computed by :func:`attention_weights` (so that
    :func:`scaled_dot_product_attention` can return them); with ``create_graph`` the rule
    recomputes them as a graph node, so second derivatives are exact.
    """
    __slots__ = ("probs", "keep", "scale", "blocked", "causal_offset")
    saves_output = True

    def forward(self, q, k, v, probs, scale, keep=None, blocked=None, causal_offset=None):
        self.probs, self.keep, self.scale = probs, keep, scale
        self.blocked, self.causal_offset = blocked, causal_offset
        return np.matmul(probs if keep is None else probs * keep, v)

    def gradient(self, grad, q, k, v, out):
        need_q, need_k, need_v = self.needs_input_grad
        keep, scale = self.keep, self.scale
        if isinstance(grad, Tensor):                  # create_graph: P as a differentiable node
            probs = run_op(AttentionWeightsBackward, q, k, scale=scale, blocked=self.blocked,
                           causal_offset=self.causal_offset)
            keep = None if keep is None else Tensor._make(keep)
        else:
            probs = self.probs
        dropped = probs if keep is None else probs * keep
        grad_v = _swap_last_two(dropped) @ grad if need_v else None
        if not (need_q or need_k):
            return None, None, grad_v
        grad_probs = grad @ _swap_last_two(v)
        if keep is not None:
            grad_probs = grad_probs * keep
        if isinstance(grad, Tensor):
            grad_scores = probs * (grad_probs - (grad_probs * probs).sum(axis=-1, keepdims=True))
            grad_scores = grad_scores * scale
        else:                                         # the same, in place, with rowsum = G . O
            grad_probs -= (grad * out).sum(axis=-1, keepdims=True)
            grad_probs *= probs
            grad_probs *= scale
            grad_scores = grad_probs
        return (grad_scores @ k if need_q else None,
                _swap_last_two(grad_scores) @ q if need_k else None,
                grad_v)

    def release(self):
        super().release()
        self.probs = self.keep = self.blocked = None


class AttentionWeightsBackward(Function):
    """P = softmax(scale * Q K^T) over the allowed keys (the weights that attention returns).

    With G = dL/dP:  dL/dS = P * (G - rowsum(G * P)),  dL/dQ = scale * dL/dS K,
    dL/dK = scale * dL/dS^T Q. The rule reads P itself (the saved output), which with
    ``create_graph`` is this node's output, so it can be differentiated again.
    """
    __slots__ = ("scale",)
    saves_output = True

    def forward(self, q, k, scale, blocked=None, causal_offset=None, probs=None):
        self.scale = scale
        return attention_weights(q, k, scale, blocked, causal_offset) if probs is None else probs

    def gradient(self, grad, q, k, probs):
        need_q, need_k = self.needs_input_grad
        grad_scores = probs * (grad - (grad * probs).sum(axis=-1, keepdims=True)) * self.scale
        return (grad_scores @ k if need_q else None,
                _swap_last_two(grad_scores) @ q if need_k else None)


def _as_tensor(x, name):
    if isinstance(x, Tensor):
        return x
    if isinstance(x, (np.ndarray, list, tuple, numbers.Number)):
        return Tensor(x)
    raise TypeError(f"scaled_dot_product_attention: {name} must be a Tensor or an array, got "
                    f"{type(x).__name__}")


def _check_shapes(q, k, v):
    for name, t in (("Q", q), ("K", k), ("V", v)):
        if t.ndim < 2:
            raise ValueError(f"scaled_dot_product_attention: {name} needs at least 2 dimensions "
                             f"(..., T, d), got shape {t.shape}")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"scaled_dot_product_attention: Q {q.shape} and K {k.shape} must have "
                         f"the same last dimension d")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"scaled_dot_product_attention: K {k.shape} and V {v.shape} must have "
                         f"the same number of positions T_k")
    try:
        batch = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    except ValueError:
        raise ValueError(f"scaled_dot_product_attention: the batch dimensions of Q {q.shape}, "
                         f"K {k.shape} and V {v.shape} do not broadcast") from None
    return batch + (q.shape[-2], k.shape[-2])


def attention(q, k, v, mask=None, is_causal=False, dropout_p=0.0, scale=None, causal_offset=None,
              need_weights=True):
    """The work of :func:`scaled_dot_product_attention`; returns ``(output, weights array)``.

    ``causal_offset`` (used by the KV cache) makes query i see keys j <= i + offset; it
    replaces ``is_causal`` (offset 0). ``need_weights=False`` skips the weights' graph node.
    """
    q, k, v = _as_tensor(q, "Q"), _as_tensor(k, "K"), _as_tensor(v, "V")
    scores_shape = _check_shapes(q, k, v)
    if not isinstance(dropout_p, numbers.Real) or not 0.0 <= dropout_p <= 1.0:
        raise ValueError(f"scaled_dot_product_attention: dropout_p must be in [0, 1], "
                         f"got {dropout_p!r}")
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1]) if q.shape[-1] else 1.0
    if is_causal and causal_offset is None:
        causal_offset = 0
    # The weights, the mask and the dropout draw are computed by run_numpy (ops without a
    # gradient, which a recording of tinytorch.compile replays), not by bare NumPy calls.
    blocked = None if mask is None else run_numpy(blocked_positions, mask, scores_shape)._data
    probs = run_numpy(attention_weights, q, k, scale, blocked, causal_offset)
    recording = is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)
    keep = None
    if recording and dropout_p > 0.0:
        keep = run_numpy(_dropout_multipliers, probs, dropout_p)._data
    out = run_op(ScaledDotProductAttentionBackward, q, k, v, probs=probs._data, scale=scale,
                 keep=keep, blocked=blocked, causal_offset=causal_offset)
    if not need_weights:
        return out, None
    if not recording:
        return out, probs
    copy = run_numpy(np.copy, probs)._data
    if q.requires_grad or k.requires_grad:
        return out, run_op(AttentionWeightsBackward, q, k, scale=scale, probs=copy)
    return out, Tensor._make(copy)


def _dropout_multipliers(probs, dropout_p):
    """Inverted dropout of the weights: 0 or 1 / (1 - p) for each, drawn from tinytorch's
    generator."""
    if dropout_p == 1.0:
        return np.zeros(probs.shape, probs.dtype)
    return ((get_rng().random(probs.shape) >= dropout_p) * (1.0 / (1.0 - dropout_p))
            ).astype(probs.dtype)


def scaled_dot_product_attention(Q, K, V, mask=None, is_causal=False, dropout_p=0.0, scale=None):
    """Attention: ``softmax(Q K^T / sqrt(d)) V`` over the keys each query may see.

    ``Q (..., T_q, d)``, ``K (..., T_k, d)``, ``V (..., T_k, d_v)`` (batch axes broadcast).
    ``mask``, broadcastable to ``(..., T_q, T_k)``, holds bools or 0/1 numbers: 1/True = may
    attend, 0/False = blocked (PyTorch's boolean ``attn_mask``; masks are never added to the
    scores). ``is_causal=True`` lets query i see keys j <= i (top-left aligned, as PyTorch);
    with a mask too, a key must be allowed by both. A query whose keys are all blocked gets
    zero output and zero gradient, never NaN. ``dropout_p`` zeroes weights (scaling the rest
    by 1/(1-p)) only while autograd records a graph. ``scale`` defaults to 1/sqrt(d).

    Returns ``(output (..., T_q, d_v), weights (..., T_q, T_k))``; the weights are those
    before dropout, differentiable with respect to Q and K.

    >>> out, w = scaled_dot_product_attention(q, k, v, mask=create_causal_mask(5))
    """
    return attention(Q, K, V, mask=mask, is_causal=is_causal, dropout_p=dropout_p, scale=scale)


# ----- multi-head attention -----------------------------------------------------------------

class MultiHeadAttention(Module):
    """``num_heads`` attentions in parallel over slices of the embedding (self-attention).

    ``x (B, T, D)`` is projected to queries, keys and values by ``q_proj``, ``k_proj``,
    ``v_proj`` (each ``Linear(D, D, bias)``); head h uses columns ``h*D/H .. (h+1)*D/H`` of
    each. The heads become an axis, ``(B, T, D) -> (B, H, T, D/H)``, so one batched op serves
    them all; their outputs are joined back to ``(B, T, D)`` and mixed by ``out_proj``.
    ``dropout`` drops attention weights in training mode.

    ``forward(x, mask=None, is_causal=False)``: ``mask`` broadcastable to ``(B, H, T, T)``; a
    ``(B, T, T)`` mask applies to every head.

    >>> mha = MultiHeadAttention(embed_dim=64, num_heads=4)
    >>> mha(tt.randn(2, 10, 64), is_causal=True).shape
    (2, 10, 64)
    """

    def __init__(self, embed_dim, num_heads, dropout=0.0, bias=True):
        super().__init__()
        for name, value in (("embed_dim", embed_dim), ("num_heads", num_heads)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"MultiHeadAttention: {name} must be a positive int, got "
                                 f"{value!r}")
        if embed_dim % num_heads:
            raise ValueError(f"MultiHeadAttention: embed_dim={embed_dim} is not divisible by "
                             f"num_heads={num_heads}")
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"MultiHeadAttention: dropout must be in [0, 1], got {dropout!r}")
        self.embed_dim, self.num_heads = int(embed_dim), int(num_heads)
        self.head_dim = self.embed_dim // self.num_heads
        self.dropout = float(dropout)
        self.q_proj = Linear(embed_dim, embed_dim, bias=bias)
        self.k_proj = Linear(embed_dim, embed_dim, bias=bias)
        self.v_proj = Linear(embed_dim, embed_dim, bias=bias)
        self.out_proj = Linear(embed_dim, embed_dim, bias=bias)

    def _split_heads(self, t, batch, length):
        """(B, T, D) -> (B, H, T, D/H): a view, the heads' columns side by side."""
        if length == 1:                  # one position (cached generation): a reshape suffices
            return t.reshape(batch, self.num_heads, 1, self.head_dim)
        return t.reshape(batch, length, self.num_heads, self.head_dim).permute(0, 2, 1, 3)

    def _join_heads(self, t, batch, length):
        """(B, H, T, D/H) -> (B, T, D), the inverse of :meth:`_split_heads`."""
        if length == 1:
            return t.reshape(batch, 1, self.embed_dim)
        return t.permute(0, 2, 1, 3).reshape(batch, length, self.embed_dim)

    def forward(self, x, mask=None, is_causal=False, cache=None, layer=0):
        """Self-attention of ``x (B, T, D)``; returns ``(B, T, D)``.

        With ``cache`` (a :class:`~tinytorch.core.transformer.KVCache`), this call's keys and
        values are appended to layer ``layer`` of the cache and the queries attend to all the
        cached positions too (the causal rule then counts from ``cache.length``).
        """
        x = x if isinstance(x, Tensor) else Tensor(x)
        if x.ndim != 3 or x.shape[-1] != self.embed_dim:
            raise ValueError(f"MultiHeadAttention(embed_dim={self.embed_dim}): expected input of "
                             f"shape (B, T, {self.embed_dim}), got {x.shape}")
        batch, length, _ = x.shape
        q = self._split_heads(self.q_proj(x), batch, length)          # (B, H, T, hd)
        k = self._split_heads(self.k_proj(x), batch, length)
        v = self._split_heads(self.v_proj(x), batch, length)
        causal_offset = 0 if is_causal else None
        if cache is not None:
            past = cache.layer_length(layer)
            k, v = cache.update(layer, k, v)                          # (B, H, past + T, hd)
            causal_offset = past if is_causal and length > 1 else None
        if mask is not None and np.ndim(mask._data if isinstance(mask, Tensor) else mask) == 3:
            mask = run_numpy(np.expand_dims, mask, 1)                 # (B, T, T): every head
        out, _ = attention(q, k, v, mask=mask, dropout_p=self.dropout if self.training else 0.0,
                           causal_offset=causal_offset, need_weights=False)
        return self.out_proj(self._join_heads(out, batch, length))

    def extra_repr(self):
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, dropout={self.dropout}"
