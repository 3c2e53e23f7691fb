"""tinytorch: a small, readable, fast deep-learning framework in Python and NumPy.

>>> import tinytorch as tt
>>> w = tt.Tensor([0.5, -1.0], requires_grad=True)
>>> loss = ((w * 3.0 - 1.0) ** 2).sum()
>>> loss.backward()
>>> w.grad
Tensor([  3., -24.], dtype=float32)

As TinyTorch's own package does, the root re-exports every public class and function of
``tinytorch.core.*``: ``from tinytorch import Tensor, Linear, ReLU, MSELoss, SGD, Trainer``.
"""

from tinytorch.core.tensor import (
    Tensor, arange, cat, concatenate, eye, full, get_default_dtype, manual_seed, ones,
    ones_like, rand, randn, set_default_dtype, stack, tensor, where, zeros, zeros_like,
)
from tinytorch.core.autograd import (
    Function, enable_autograd, enable_grad, gradcheck, is_grad_enabled, no_grad,
    set_grad_enabled,
)
from tinytorch.core.activations import (
    GELU, LeakyReLU, LogSoftmax, ReLU, Sigmoid, SiLU, Softmax, Tanh,
)
from tinytorch.core.layers import (
    Dropout, Flatten, Identity, Layer, Linear, Module, ModuleDict, ModuleList, Parameter,
    Sequential, set_training_mode,
)
from tinytorch.core.losses import (
    BCELoss, BCEWithLogitsLoss, BinaryCrossEntropyLoss, CrossEntropyLoss, MSELoss,
)
from tinytorch.core.optimizers import SGD, Adam, AdamW, Optimizer
from tinytorch.core.training import (
    CosineSchedule, DivergenceError, StepSchedule, Trainer, clip_grad_norm, clip_grad_norm_,
)
from tinytorch.core.dataloader import DataLoader, Dataset, Subset, TensorDataset, random_split
from tinytorch.core.spatial import AvgPool2d, BatchNorm1d, BatchNorm2d, Conv2d, MaxPool2d
from tinytorch.core.tokenization import BPETokenizer, CharTokenizer
from tinytorch.core.embeddings import (
    Embedding, EmbeddingLayer, PositionalEncoding, create_sinusoidal_embeddings,
)
from tinytorch.core.attention import MultiHeadAttention, scaled_dot_product_attention
from tinytorch.core.transformer import (
    GPT, MLP, KVCache, LayerNorm, TransformerBlock, create_causal_mask,
)
from tinytorch.core.serialization import load, save
from tinytorch.compiler import compile
from tinytorch.core import (
    activations, attention, dataloader, embeddings, functional, init, layers, losses,
    optimizers, spatial, tokenization, training, transformer,
)
from tinytorch import autograd, data
from tinytorch import profiler    # module 14: time and graph memory per op

__version__ = "0.1.0"

__all__ = [
    # tensors
    "Tensor", "tensor", "zeros", "ones", "full", "zeros_like", "ones_like", "randn", "rand",
    "arange", "eye", "concatenate", "cat", "stack", "where", "manual_seed",
    "set_default_dtype", "get_default_dtype",
    # autograd
    "Function", "enable_autograd", "no_grad", "enable_grad", "set_grad_enabled",
    "is_grad_enabled", "gradcheck",
    # activations, layers, losses
    "ReLU", "Sigmoid", "Tanh", "GELU", "Softmax", "LogSoftmax", "LeakyReLU", "SiLU",
    "Module", "Layer", "Parameter", "Linear", "Dropout", "Sequential", "ModuleList",
    "ModuleDict", "Identity", "Flatten", "set_training_mode",
    "MSELoss", "CrossEntropyLoss", "BinaryCrossEntropyLoss", "BCELoss", "BCEWithLogitsLoss",
    # optimisation, training, data
    "Optimizer", "SGD", "Adam", "AdamW",
    "Trainer", "CosineSchedule", "StepSchedule", "clip_grad_norm", "clip_grad_norm_",
    "DivergenceError",
    "Dataset", "TensorDataset", "Subset", "DataLoader", "random_split",
    "save", "load", "compile",
    # convolutional networks (module 09)
    "Conv2d", "MaxPool2d", "AvgPool2d", "BatchNorm2d", "BatchNorm1d",
    # language models (modules 10-13 and 17)
    "CharTokenizer", "BPETokenizer", "Embedding", "EmbeddingLayer", "PositionalEncoding",
    "create_sinusoidal_embeddings", "MultiHeadAttention", "scaled_dot_product_attention",
    "GPT", "MLP", "KVCache", "LayerNorm", "TransformerBlock", "create_causal_mask",
    # modules
    "activations", "attention", "autograd", "data", "dataloader", "embeddings", "functional",
    "init", "layers", "losses", "optimizers", "spatial", "tokenization", "training",
    "transformer",
    # profiling (module 14)
    "profiler",
]
