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

# ----- language models (issue 14): embeddings, attention, transformer and the KV cache -----------
from tinytorch.core import attention, embeddings, transformer  # noqa: E402
from tinytorch.core.attention import MultiHeadAttention, scaled_dot_product_attention  # noqa: E402
from tinytorch.core.embeddings import (  # noqa: E402
    Embedding, EmbeddingLayer, PositionalEncoding, create_sinusoidal_embeddings,
)
from tinytorch.core.transformer import (  # noqa: E402
    GPT, MLP, KVCache, LayerNorm, TransformerBlock, create_causal_mask,
)

__all__ += [
    "attention", "embeddings", "transformer", "MultiHeadAttention", "scaled_dot_product_attention",
    "Embedding", "EmbeddingLayer", "PositionalEncoding", "create_sinusoidal_embeddings",
    "GPT", "MLP", "KVCache", "LayerNorm", "TransformerBlock", "create_causal_mask",
]
