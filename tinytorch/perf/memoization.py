"""TinyTorch's import path for the KV cache (module 17): ``tinytorch.perf.memoization.KVCache``.

The cache itself lives in :mod:`tinytorch.core.transformer`, next to the GPT that uses it.
"""

from tinytorch.core.transformer import KVCache

__all__ = ["KVCache"]
