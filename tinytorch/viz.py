"""Draw the autograd graph behind a tensor, as Graphviz DOT text or a rendered image.

:func:`to_dot` needs nothing but tinytorch; :func:`draw_graph` runs the Graphviz ``dot``
program (not a Python package) to turn that text into SVG, PNG, PDF, ...

>>> from tinytorch.core.layers import Linear
>>> layer = Linear(3, 2)
>>> loss = (layer(Tensor(np.ones((4, 3)))) ** 2).mean()
>>> text = to_dot(loss, params=layer)       # paste into any Graphviz viewer
>>> draw_graph(loss, "graph.svg", params=layer)

What the picture shows, with edges in data-flow direction (input -> op -> output):

* one ellipse per operation (grey): its name without "Backward" (``Mul``) and output shape;
  a graph node already freed by ``backward()`` is dashed and says "freed" (its inputs are
  no longer known, so nothing is drawn above it);
* one box per leaf tensor that requires grad (blue): its parameter name when ``params``
  names it, else "leaf", with its shape and dtype;
* constants (tensors that do not require grad, Python numbers) as small grey text, joined
  by dashed edges: a tensor by its shape (or its name from ``params``), a number by its value;
* the output tensor as a green double octagon.

Node ids are ``n0``, ``n1``, ... in visit order (the output is ``n0``), so the same graph
always gives the same text. The walk uses an explicit stack, so a graph of any depth works.
"""

import os
import shutil
import subprocess

import numpy as np

from tinytorch.core.inplace import history_seen_by
from tinytorch.core.tensor import Tensor

__all__ = ["to_dot", "draw_graph"]

_OP_STYLE = 'shape=ellipse, style=filled, fillcolor=lightgrey'
_FREED_STYLE = 'shape=ellipse, style=dashed, color=gray40, fontcolor=gray40'
_LEAF_STYLE = 'shape=box, style=filled, fillcolor=lightblue'
_CONST_STYLE = 'shape=plaintext, fontsize=9, fontcolor=gray30'
_OUTPUT_STYLE = 'shape=doubleoctagon, style=filled, fillcolor=darkolivegreen1'
_CONST_EDGE = ' [style=dashed, color=gray50]'

_NOT_FOUND = (
    "draw_graph() needs the Graphviz 'dot' program, which was not found on PATH. Install "
    "Graphviz (Debian/Ubuntu: 'apt-get install graphviz', macOS: 'brew install graphviz', "
    "conda: 'conda install -c conda-forge graphviz'), or use to_dot(tensor), which returns "
    "the DOT text without Graphviz: paste it into any Graphviz viewer (e.g. an online one) "
    "or write it to a .dot file.")


def _escape(text):
    """``text`` made safe inside a double-quoted DOT string (newlines become line breaks)."""
    text = str(text).replace("\\", "\\\\").replace('"', '\\"')
    return text.replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\n")


def _label(*lines):
    """A DOT label of several lines, each escaped, centred."""
    return "\\n".join(_escape(line) for line in lines if line is not None and line != "")


def _names(params):
    """Map id(tensor) -> name from a Module, a {name: tensor} mapping or (name, tensor) pairs."""
    if params is None:
        return {}
    if callable(getattr(params, "named_parameters", None)):
        pairs = params.named_parameters()
    elif callable(getattr(params, "items", None)):
        pairs = params.items()
    else:
        pairs = params
    names = {}
    for pair in pairs:
        try:
            name, tensor = pair
        except (TypeError, ValueError):
            raise TypeError("to_dot: params must be a Module, a dict {name: Tensor} or "
                            f"(name, Tensor) pairs, got an item {pair!r}") from None
        if tensor is None:                  # e.g. a Linear without bias in a state dict
            continue
        if not isinstance(tensor, Tensor):
            raise TypeError(f"to_dot: params[{name!r}] is a {type(tensor).__name__}, "
                            f"not a Tensor")
        names.setdefault(id(tensor), str(name))
    return names


def _op_name(node):
    name = type(node).__name__
    return name[:-len("Backward")] if name.endswith("Backward") and name != "Backward" else name


def _short(value, limit=24):
    if isinstance(value, np.ndarray) and value.ndim == 0:     # a number operand, as ops keep it
        value = value.item()
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def to_dot(tensor, params=None, show_shapes=True):
    """Return Graphviz DOT text of the graph that computed ``tensor`` (see the module doc).

    ``params`` names the leaves: a Module (its ``named_parameters()``) or a dict
    ``{name: tensor}``; a named intermediate tensor also gets its name on its op.
    ``show_shapes=False`` leaves shapes and dtypes out of the labels.

    >>> x = Tensor([1.0, 2.0], requires_grad=True)
    >>> print(to_dot(x * x + x, params={"x": x}))     # Mul and Add, x drawn once
    """
    if not isinstance(tensor, Tensor):
        raise TypeError(f"to_dot: expected a Tensor, got {type(tensor).__name__}")
    names = _names(params)

    def shape_of(t):
        return str(t.shape) if show_shapes else None

    def kind_of(t):
        return f"{t.shape} {t.dtype}" if show_shapes else None

    lines = ["digraph tinytorch {",
             '  node [fontname="Helvetica", fontsize=11];',
             '  edge [arrowsize=0.7];']
    edges = []
    counter = [0]

    def new_id():
        node_id = f"n{counter[0]}"
        counter[0] += 1
        return node_id

    out_id = new_id()
    out_name = names.get(id(tensor), "output")
    lines.append(f'  {out_id} [label="{_label(out_name, kind_of(tensor))}", {_OUTPUT_STYLE}];')
    root = tensor.grad_fn
    if root is None:                        # a leaf or a constant: nothing was computed
        lines.append("}")
        return "\n".join(lines) + "\n"

    op_ids = {}                             # id(node) -> DOT id
    tensor_ids = {}                         # (id(leaf or constant), requires_grad) -> DOT id
    alive = []                              # keeps every object whose id() is a key alive
    stack = []

    def op_id(node, made_by):
        """The DOT id of ``node``; the first time, declare it and schedule its inputs."""
        key = id(node)
        if key in op_ids:
            return op_ids[key]
        node_id = op_ids[key] = new_id()
        alive.append(node)
        title = _op_name(node)
        name = names.get(id(made_by))
        if node.saved_tensors is None:
            lines.append(f'  {node_id} [label="{_label(title, name, shape_of(made_by), "(freed)")}", '
                         f'{_FREED_STYLE}];')
        else:
            lines.append(f'  {node_id} [label="{_label(title, name, shape_of(made_by))}", '
                         f'{_OP_STYLE}];')
            stack.append((node, node_id))
        return node_id

    def input_id(value, consumer):
        """(DOT id, is_constant) of one input of the op ``consumer``."""
        if isinstance(value, Tensor):
            # the history the op saw (an in-place op may have given the tensor a new one since)
            grad_fn, requires_grad = history_seen_by(consumer, value)
            if grad_fn is not None:
                return op_id(grad_fn, value), False
            key = (id(value), requires_grad)
            if key in tensor_ids:
                return tensor_ids[key], not requires_grad
            node_id = tensor_ids[key] = new_id()
            alive.append(value)
            name = names.get(id(value))
            if requires_grad:
                label, style = _label(name or "leaf", kind_of(value)), _LEAF_STYLE
            else:
                title = name or (_short(value.item()) if value.size == 1 else "const")
                label, style = _label(title, kind_of(value)), _CONST_STYLE
            lines.append(f'  {node_id} [label="{label}", {style}];')
            return node_id, not requires_grad
        node_id = new_id()                  # a Python number (or other value): one per use
        lines.append(f'  {node_id} [label="{_label(_short(value))}", {_CONST_STYLE}];')
        return node_id, True

    edges.append(f"  {op_id(root, tensor)} -> {out_id};")
    while stack:
        node, node_id = stack.pop()
        for value in node.saved_tensors:
            source, constant = input_id(value, node)
            edges.append(f"  {source} -> {node_id}{_CONST_EDGE if constant else ''};")
    lines.extend(edges)
    lines.append("}")
    return "\n".join(lines) + "\n"


def draw_graph(tensor, path, params=None, format=None, show_shapes=True, save_dot=False):
    """Render the graph behind ``tensor`` to ``path`` with Graphviz ``dot``; return ``path``.

    The format comes from ``format`` or else the file's suffix (``.svg``, ``.png``, ``.pdf``,
    ...). A ``.dot`` / ``.gv`` path gets the DOT text itself (no Graphviz needed).
    ``save_dot=True`` also writes the DOT text next to the image (same name, ``.dot``).
    Raises RuntimeError when the ``dot`` program is not installed.

    >>> draw_graph(loss, "mlp.svg", params=model)
    """
    path = os.fspath(path)
    if format is None:
        format = os.path.splitext(path)[1][1:]
        if not format:
            raise ValueError(f"draw_graph: cannot tell the image format of {path!r}: give the "
                             f"file a suffix such as .svg or .png, or pass format='svg'")
    format = str(format).lower()
    if not format.replace(":", "").replace("_", "").isalnum():
        raise ValueError(f"draw_graph: {format!r} is not a Graphviz output format")
    text = to_dot(tensor, params=params, show_shapes=show_shapes)
    if format in ("dot", "gv"):
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path
    dot = shutil.which("dot")
    if dot is None:
        raise RuntimeError(_NOT_FOUND)
    if save_dot:
        with open(os.path.splitext(path)[0] + ".dot", "w", encoding="utf-8") as f:
            f.write(text)
    result = subprocess.run([dot, f"-T{format}", "-o", path], input=text.encode("utf-8"),
                            capture_output=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"draw_graph: Graphviz 'dot -T{format}' failed "
                           f"(exit code {result.returncode}): "
                           f"{_dot_error(result.stderr.decode('utf-8', 'replace'))}")
    return path


def _dot_error(stderr, limit=300):
    """What failed, from dot's stderr (which may hold thousands of warnings): its lines that
    name an error (else its last line), cut to ``limit`` characters."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()] or lines[-1:]
    text = " ".join(errors) or "no message"
    return text if len(text) <= limit else text[:limit - 3] + "..."
