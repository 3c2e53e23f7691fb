"""Layers: the Module protocol, Linear, Dropout and Sequential.

A :class:`Module` holds parameters (leaf Tensors with ``requires_grad=True``) and sub-modules as
plain attributes, also inside lists, tuples and dicts; they are found automatically, so
``parameters()``, ``state_dict()`` and ``train()``/``eval()`` need no registration code.

>>> import tinytorch as tt
>>> class MLP(Module):
...     def __init__(self):
...         super().__init__()
...         self.hidden = Linear(2, 8)
...         self.out = Linear(8, 1)
...     def forward(self, x):
...         return self.out(self.hidden(x).relu())
>>> model = MLP()
>>> [name for name, _ in model.named_parameters()]
['hidden.weight', 'hidden.bias', 'out.weight', 'out.bias']
"""

import math
import numbers
from collections import namedtuple

import numpy as np

from tinytorch.core.functional import dropout, linear
from tinytorch.core.tensor import Tensor, get_default_dtype, get_rng
from tinytorch.core.tracing import replayed_as_a_call

__all__ = ["Module", "Layer", "Parameter", "Linear", "Dropout", "Sequential", "set_training_mode"]

_BOOKKEEPING = frozenset({"training", "_parameter_names", "_buffer_names"})

IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


def Parameter(data, requires_grad=True):
    """A trainable tensor: a leaf Tensor with ``requires_grad=True`` (there is no subclass).

    >>> w = Parameter(np.zeros((3, 2)))
    """
    return Tensor(data, requires_grad=requires_grad)


def _walk(name, value):
    """(dotted name, item) for every Module and Tensor in ``value``, through lists/tuples/dicts."""
    if isinstance(value, (Module, Tensor)):
        yield name, value
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _walk(f"{name}.{i}", item)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _walk(f"{name}.{key}", item)


def set_training_mode(model, training=True):
    """Set ``training`` on every Module reachable from ``model``, which may also be a plain
    object holding modules in attributes, lists, tuples or dicts (TinyTorch's helper: the
    Trainer uses it for hand-written models that are not Modules). Returns ``model``.

    >>> set_training_mode(model, False)      # Dropout layers inside become the identity
    """
    if not isinstance(training, bool):
        raise TypeError(f"set_training_mode: training must be True or False, got {training!r}")
    seen, stack = set(), [model]
    while stack:
        value = stack.pop()
        if id(value) in seen or isinstance(value, (Tensor, str, bytes, np.ndarray)):
            continue
        seen.add(id(value))
        if isinstance(value, Module):
            value.training = training
        if isinstance(value, (list, tuple, set)):
            stack.extend(value)
        elif isinstance(value, dict):
            stack.extend(value.values())
        elif hasattr(value, "__dict__") and not isinstance(value, type):
            stack.extend(vars(value).values())
    return model


def _join(prefix, name):
    return f"{prefix}.{name}" if prefix else name


def _indent(text):
    return text.replace("\n", "\n  ")


class Module:
    """Base class of layers and models (alias ``Layer``): subclasses define ``forward``.

    Attributes that are leaf Tensors with ``requires_grad=True`` are parameters; attributes
    that are Modules are sub-modules; both are also found inside lists, tuples and dicts. A
    parameter stays in ``state_dict()`` after it is frozen (``requires_grad_(False)``), but
    ``parameters()`` lists only the tensors that currently require grad (what an optimizer
    updates). ``register_buffer`` adds non-trainable state (e.g. running statistics) to the
    state dict.

    >>> layer = Linear(3, 2)
    >>> y = layer(Tensor(np.ones((4, 3))))     # same as layer.forward(...)
    >>> sorted(layer.state_dict())
    ['bias', 'weight']
    """

    training = True

    def __init__(self):
        self.training = True

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # ----- registration ---------------------------------------------------------------------------
    def __setattr__(self, name, value):
        for full_name, item in _walk(name, value):
            if isinstance(item, Tensor) and item.requires_grad and item.grad_fn is None:
                self._registry("_parameter_names")[full_name] = None
        object.__setattr__(self, name, value)

    def __delattr__(self, name):
        for registry in ("_parameter_names", "_buffer_names"):
            self.__dict__.get(registry, {}).pop(name, None)
        object.__delattr__(self, name)

    def _registry(self, kind):
        if kind not in self.__dict__:
            object.__setattr__(self, kind, {})
        return self.__dict__[kind]

    def register_parameter(self, name, tensor):
        """Add ``tensor`` as parameter ``name`` (kept in the state dict even when frozen)."""
        self._register("_parameter_names", "register_parameter", name, tensor)

    def register_buffer(self, name, tensor):
        """Add ``tensor`` as non-trainable state ``name``: saved in the state dict, no gradient."""
        self._register("_buffer_names", "register_buffer", name, tensor)

    def _register(self, kind, caller, name, tensor):
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(f"{caller}: {name!r} must be a Tensor or None, "
                            f"got {type(tensor).__name__}")
        self._registry(kind)[name] = None
        object.__setattr__(self, name, tensor)

    def _named_attributes(self):
        """The attributes searched for tensors and sub-modules (Sequential numbers its layers)."""
        return [(name, value) for name, value in vars(self).items() if name not in _BOOKKEEPING]

    def _own_tensors(self):
        """(name, tensor, kind) of this module's own tensors; kind: parameter, frozen, buffer."""
        parameters = self.__dict__.get("_parameter_names", {})
        buffers = self.__dict__.get("_buffer_names", {})
        for name, value in self._named_attributes():
            for full_name, item in _walk(name, value):
                if not isinstance(item, Tensor):
                    continue
                if full_name in buffers:
                    yield full_name, item, "buffer"
                elif item.requires_grad and item.grad_fn is None:
                    yield full_name, item, "parameter"
                elif full_name in parameters and item.grad_fn is None:
                    yield full_name, item, "frozen"

    # ----- traversal -----------------------------------------------------------------------------
    def _child_slots(self):
        """(name, module) for every place a sub-module is held (a shared one may appear twice)."""
        return [(full_name, item) for name, value in self._named_attributes()
                for full_name, item in _walk(name, value) if isinstance(item, Module)]

    def named_children(self):
        """[(name, module)] of the direct sub-modules, in attribute order (each module once)."""
        seen, children = set(), []
        for name, module in self._child_slots():
            if id(module) not in seen:
                seen.add(id(module))
                children.append((name, module))
        return children

    def children(self):
        """The direct sub-modules."""
        return [module for _, module in self.named_children()]

    def named_modules(self, prefix=""):
        """[(dotted name, module)] of this module and all modules below it, parents first."""
        seen, result, stack = set(), [], [(prefix, self)]
        while stack:
            name, module = stack.pop()
            if id(module) in seen:
                continue
            seen.add(id(module))
            result.append((name, module))
            stack.extend(reversed([(_join(name, child_name), child)
                                   for child_name, child in module.named_children()]))
        return result

    def modules(self):
        """This module and all modules below it."""
        return [module for _, module in self.named_modules()]

    def named_parameters(self, prefix=""):
        """[(dotted name, tensor)] of the trainable parameters (each tensor once).

        >>> [name for name, _ in Sequential(Linear(2, 3)).named_parameters()]
        ['0.weight', '0.bias']
        """
        seen, result = set(), []
        for module_name, module in self.named_modules(prefix):
            for name, tensor, kind in module._own_tensors():
                if kind == "parameter" and id(tensor) not in seen:
                    seen.add(id(tensor))
                    result.append((_join(module_name, name), tensor))
        return result

    def parameters(self):
        """The tensors an optimizer should update: leaves with ``requires_grad=True``."""
        return [tensor for _, tensor in self.named_parameters()]

    def named_buffers(self, prefix=""):
        """[(dotted name, tensor)] of the buffers registered with ``register_buffer``."""
        return [(_join(module_name, name), tensor)
                for module_name, module in self.named_modules(prefix)
                for name, tensor, kind in module._own_tensors() if kind == "buffer"]

    # ----- modes and gradients ------------------------------------------------------------------
    def train(self, mode=True):
        """Set training mode (``mode=True``) or evaluation mode on this module and all below it."""
        if not isinstance(mode, bool):
            raise TypeError(f"train(mode): mode must be True or False, got {mode!r}")
        for module in self.modules():
            module.training = mode
        return self

    def eval(self):
        """Evaluation mode (e.g. Dropout becomes the identity); same as ``train(False)``."""
        return self.train(False)

    @replayed_as_a_call
    def zero_grad(self):
        """Forget the gradients of all parameters (``grad`` becomes None)."""
        for tensor in self.parameters():
            tensor.grad = None

    # ----- saving and loading ---------------------------------------------------------------------
    def _state_tensors(self):
        return {_join(module_name, name): tensor
                for module_name, module in self.named_modules()
                for name, tensor, _ in module._own_tensors()}

    def state_dict(self):
        """{dotted name: NumPy array copy} of every parameter (frozen ones too) and buffer.

        >>> Linear(2, 3).state_dict()["weight"].shape
        (2, 3)
        """
        return {name: tensor.data.copy() for name, tensor in self._state_tensors().items()}

    def load_state_dict(self, state_dict, strict=True):
        """Copy the arrays (or Tensors) of ``state_dict`` into this module's tensors, in place.

        Shapes must match. With ``strict`` (the default) the keys must match exactly too;
        otherwise missing and unexpected keys are skipped. Nothing is copied when an error is
        raised. Returns ``(missing_keys, unexpected_keys)``.
        """
        own = self._state_tensors()
        missing = [name for name in own if name not in state_dict]
        unexpected = [name for name in state_dict if name not in own]
        errors, arrays = [], {}
        for name, tensor in own.items():
            if name not in state_dict:
                continue
            value = state_dict[name]
            array = np.asarray(value.data if isinstance(value, Tensor) else value)
            if array.shape != tensor.shape:
                errors.append(f"size mismatch for {name}: copying an array of shape "
                              f"{array.shape} from the state dict, but the shape in the current "
                              f"model is {tensor.shape}.")
            else:
                arrays[name] = array
        if strict and missing:
            errors.append("Missing key(s) in state_dict: "
                          + ", ".join(repr(name) for name in missing) + ".")
        if strict and unexpected:
            errors.append("Unexpected key(s) in state_dict: "
                          + ", ".join(repr(name) for name in unexpected) + ".")
        if errors:
            raise RuntimeError(f"Error(s) in loading state_dict for {type(self).__name__}:\n\t"
                               + "\n\t".join(errors))
        for name, array in arrays.items():
            own[name].data[...] = array
        return IncompatibleKeys(missing, unexpected)

    # ----- display --------------------------------------------------------------------------------
    def extra_repr(self):
        """The text inside the parentheses of this module's repr (its settings)."""
        return ""

    def __repr__(self):
        extra = self.extra_repr()
        children = [f"({name}): {_indent(repr(child))}" for name, child in self._child_slots()]
        if not children:
            return f"{type(self).__name__}({extra})"
        lines = ([extra] if extra else []) + children
        return f"{type(self).__name__}(\n  " + "\n  ".join(lines) + "\n)"


Layer = Module


def _check_size(value, name, layer):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"{layer}: {name} must be a non-negative int, got {value!r}")
    return int(value)


class Linear(Module):
    """Fully connected layer: y = x @ weight + bias, weight of shape (in_features, out_features).

    Initialisation (as PyTorch): weight and bias ~ U(-1/sqrt(in_features), 1/sqrt(in_features)),
    drawn from ``tinytorch.core.tensor.get_rng()``, so ``tinytorch.manual_seed`` reproduces them.

    >>> layer = Linear(3, 2)
    >>> layer(Tensor(np.ones((4, 3)))).shape
    (4, 2)
    """

    def __init__(self, in_features, out_features, bias=True, dtype=None):
        super().__init__()
        self.in_features = _check_size(in_features, "in_features", "Linear")
        self.out_features = _check_size(out_features, "out_features", "Linear")
        dtype = get_default_dtype() if dtype is None else np.dtype(dtype)
        bound = 1.0 / math.sqrt(self.in_features) if self.in_features else 0.0
        rng = get_rng()
        self.weight = Tensor(rng.uniform(-bound, bound, (self.in_features, self.out_features)),
                             requires_grad=True, dtype=dtype)
        if bias:
            self.bias = Tensor(rng.uniform(-bound, bound, (self.out_features,)),
                               requires_grad=True, dtype=dtype)
        else:
            self.register_parameter("bias", None)

    def forward(self, x):
        x = x if isinstance(x, Tensor) else Tensor(x)
        if x.ndim == 0 or x.shape[-1] != self.in_features:
            raise ValueError(f"Linear(in_features={self.in_features}): the input's last dimension "
                             f"must be {self.in_features}, got input of shape {x.shape}")
        return linear(x, self.weight, self.bias)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class Dropout(Module):
    """Inverted dropout: while training, zero each element with probability ``p`` and scale the
    others by 1/(1 - p), so the expected output equals the input; in evaluation, the identity.

    ``forward(x, training=None)``: None follows the module's mode (``train()``/``eval()``).
    The random mask comes from ``tinytorch.core.tensor.get_rng()``.

    >>> drop = Dropout(0.5)
    >>> drop(Tensor(np.ones(4)))                  # e.g. Tensor([2., 0., 2., 2.])
    >>> drop.eval()(Tensor(np.ones(4)))           # Tensor([1., 1., 1., 1.])
    """

    def __init__(self, p=0.5):
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0 <= p <= 1:
            raise ValueError(f"Dropout: p must be a probability between 0 and 1, got {p!r}")
        self.p = float(p)

    def forward(self, x, training=None):
        return dropout(x, self.p, self.training if training is None else training)

    def extra_repr(self):
        return f"p={self.p}"


class Sequential(Module):
    """Layers applied in order: ``Sequential(a, b, c)(x) == c(b(a(x)))``.

    Indexable (a slice gives a Sequential), iterable, with ``len``; parameters are named after
    the layer's position (``'0.weight'``).

    >>> model = Sequential(Linear(2, 8), ReLU(), Linear(8, 1))
    >>> model[0], len(model)
    """

    def __init__(self, *layers):
        super().__init__()
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        for i, layer in enumerate(layers):
            if not callable(layer):
                raise TypeError(f"Sequential: layer {i} is a {type(layer).__name__}, "
                                f"which cannot be called")
        self.layers = list(layers)

    def _named_attributes(self):
        named = [(str(i), layer) for i, layer in enumerate(self.layers)]
        return named + [(name, value) for name, value in super()._named_attributes()
                        if name != "layers"]

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x

    def append(self, layer):
        """Add ``layer`` at the end; returns self."""
        if not callable(layer):
            raise TypeError(f"Sequential.append: a {type(layer).__name__} cannot be called")
        self.layers.append(layer)
        return self

    def __getitem__(self, index):
        if isinstance(index, slice):
            return Sequential(*self.layers[index])
        return self.layers[index]

    def __len__(self):
        return len(self.layers)

    def __iter__(self):
        return iter(self.layers)


# ----- containers and shape layers (curriculum module 09) -----------------------------------------

__all__ += ["ModuleList", "ModuleDict", "Identity", "Flatten"]


def _check_module(module, who):
    if not isinstance(module, Module):
        raise TypeError(f"{who}: expected a Module, got {type(module).__name__}")
    return module


class ModuleList(Module):
    """A list of sub-modules whose parameters are registered, named by position (``'0.weight'``).

    Supports ``append``, ``extend``, ``insert``, indexing (a slice gives a ModuleList),
    assignment, ``del``, ``len`` and iteration. It has no ``forward``: a model calls its
    modules as it needs.

    >>> blocks = ModuleList([Linear(4, 4) for _ in range(3)])
    >>> [name for name, _ in blocks.named_parameters()][:2]
    ['0.weight', '0.bias']
    """

    def __init__(self, modules=None):
        super().__init__()
        self._items = []
        if modules is not None:
            self.extend(modules)

    def _named_attributes(self):
        return [(str(i), module) for i, module in enumerate(self._items)] + [
            (name, value) for name, value in super()._named_attributes() if name != "_items"]

    def append(self, module):
        """Add ``module`` at the end; returns self."""
        self._items.append(_check_module(module, "ModuleList.append"))
        return self

    def extend(self, modules):
        """Add every module of the iterable ``modules`` at the end; returns self."""
        for module in modules:
            self.append(module)
        return self

    def insert(self, index, module):
        """Insert ``module`` before position ``index``."""
        self._items.insert(index, _check_module(module, "ModuleList.insert"))

    def __getitem__(self, index):
        if isinstance(index, slice):
            return ModuleList(self._items[index])
        return self._items[index]

    def __setitem__(self, index, module):
        self._items[index] = _check_module(module, "ModuleList")

    def __delitem__(self, index):
        del self._items[index]

    def __len__(self):
        return len(self._items)

    def __iter__(self):
        return iter(self._items)

    def __iadd__(self, modules):
        return self.extend(modules)


class ModuleDict(Module):
    """A dict of sub-modules whose parameters are registered, named by key (``'encoder.weight'``).

    Keys are strings; insertion order is kept. Supports indexing, assignment, ``del``, ``in``,
    ``len``, iteration over the keys, ``keys``, ``values``, ``items``, ``update``, ``pop`` and
    ``clear``.

    >>> heads = ModuleDict({"digits": Linear(16, 10), "parity": Linear(16, 2)})
    >>> heads["parity"].out_features
    2
    """

    def __init__(self, modules=None):
        super().__init__()
        self._items = {}
        if modules is not None:
            self.update(modules)

    def _named_attributes(self):
        return list(self._items.items()) + [
            (name, value) for name, value in super()._named_attributes() if name != "_items"]

    def __setitem__(self, key, module):
        if not isinstance(key, str):
            raise TypeError(f"ModuleDict: keys must be strings, got {type(key).__name__}")
        if not key or "." in key:
            raise KeyError(f"ModuleDict: key {key!r} must be a non-empty name without '.'")
        self._items[key] = _check_module(module, f"ModuleDict[{key!r}]")

    def __getitem__(self, key):
        return self._items[key]

    def __delitem__(self, key):
        del self._items[key]

    def __contains__(self, key):
        return key in self._items

    def __len__(self):
        return len(self._items)

    def __iter__(self):
        return iter(self._items)

    def keys(self):
        return self._items.keys()

    def values(self):
        return self._items.values()

    def items(self):
        return self._items.items()

    def update(self, modules):
        """Add the ``(key, module)`` pairs of a mapping or of an iterable of pairs."""
        pairs = modules.items() if hasattr(modules, "items") else modules
        for key, module in pairs:
            self[key] = module

    def pop(self, key):
        """Remove the module under ``key`` and return it."""
        return self._items.pop(key)

    def clear(self):
        self._items.clear()


class Identity(Module):
    """Returns its input unchanged (a placeholder, e.g. for a removed layer); any constructor
    arguments are ignored, as in PyTorch.

    >>> Identity()(x) is x
    True
    """

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, x):
        return x


class Flatten(Module):
    """Merge axes ``start_dim`` to ``end_dim`` into one: ``(N, C, H, W) -> (N, C*H*W)`` by default.

    >>> Flatten()(Tensor(np.zeros((2, 3, 4, 4)))).shape
    (2, 48)
    """

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x):
        x = x if isinstance(x, Tensor) else Tensor(x)
        ndim = max(x.ndim, 1)
        for dim in (self.start_dim, self.end_dim):
            if not -ndim <= dim < ndim:
                raise ValueError(f"Flatten(start_dim={self.start_dim}, end_dim={self.end_dim}): "
                                 f"dim {dim} is out of range for input of shape {x.shape}")
        if self.start_dim % ndim > self.end_dim % ndim:
            raise ValueError(f"Flatten(start_dim={self.start_dim}, end_dim={self.end_dim}): "
                             f"start_dim comes after end_dim for input of shape {x.shape}")
        return x.flatten(self.start_dim, self.end_dim)

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"
