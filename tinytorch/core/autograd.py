"""Reverse-mode automatic differentiation: graph nodes, recording, and the backward walk.

Every differentiable operation is a :class:`Function` subclass: the op table is
``tinytorch/core/ops.py``, the neural-network ops are in ``functional.py`` (both re-exported
here under the curriculum's names, e.g. ``MulBackward``). Running an op through :func:`run_op`
computes its output and, when an input needs a gradient, records a node that remembers the
inputs. :func:`backward` then walks those nodes from the output back to the leaves, once each,
in reverse creation order (:func:`_run_backward`).

The engine's features live beside it, each in a module of its own, called from the walk by
name: grad mode (``grad_mode.py``), anomaly mode (``anomaly.py``), the in-place version log
(``inplace.py``), hooks (``hooks.py``), the profiler's recording (``profiler.py``); gradient
checking is in ``gradcheck.py``.

The engine's modules (``tensor``, ``autograd``, ``inplace``, ``hooks``, ``anomaly``,
``profiler``) refer to one another through module objects, looked up when called, so each of
them imports first in any order; ``grad_mode`` imports nothing. Everything above them (ops,
functional, layers...) imports names.

>>> from tinytorch import Tensor
>>> x = Tensor([2.0], requires_grad=True)
>>> y = x * x + 3 * x
>>> y.backward()
>>> x.grad            # dy/dx = 2x + 3
Tensor([7.], dtype=float32)
"""

import functools
import importlib
from heapq import heappop, heappush

import numpy as np

from tinytorch.core import anomaly as _anomaly
from tinytorch.core import hooks as _hooks
from tinytorch.core import inplace as _inplace
from tinytorch.core import profiler as _profiler
from tinytorch.core import tensor as _tensor
from tinytorch.core.anomaly import state as _anomaly_state
from tinytorch.core.profiler import state as _profiler_state
from tinytorch.core.inplace import sequence
from tinytorch.core.tracing import state as _tracing
from tinytorch.core.grad_mode import (  # noqa: F401  (re-exported: the curriculum's path)
    enable_autograd, enable_grad, is_grad_enabled, no_grad, set_grad_enabled,
)
from tinytorch.core.grad_mode import state as _grad_mode

# --------------------------------------------------------------------------------------------
# Graph nodes
# --------------------------------------------------------------------------------------------

class _FunctionType(type):
    """Metaclass of Function: gives PyTorch-style custom ops their class-level ``MyOp.apply``."""

    @property
    def apply(cls):
        """``MyOp.apply(*inputs)`` runs a custom op that defines static forward/backward."""
        return functools.partial(_apply_custom_function, cls)


class Function(metaclass=_FunctionType):
    """A node of the graph: one differentiable operation applied to some inputs.

    Subclasses give ``forward(*values, **params) -> ndarray`` (compute the output from the
    inputs' arrays, keeping on ``self`` any parameter the gradient needs) and
    ``gradient(grad, *values)`` (the chain rule: one gradient per input, or None). ``values``
    are the inputs' arrays, followed by the output's array when the class sets
    ``saves_output = True``. Rules use only arithmetic and methods that NumPy arrays and
    Tensors share, so the same rule can later run on Tensors to build higher-order graphs.
    Run such an op with ``run_op(Square, x)``.

    ``node.apply(grad_output)`` is the TinyTorch API: NumPy gradient in, one gradient per input.

    >>> class Square(Function):
    ...     def forward(self, x):
    ...         return x * x
    ...     def gradient(self, grad, x):
    ...         return (grad * 2 * x,)
    >>> y = run_op(Square, x)

    PyTorch's style works too: static ``forward(ctx, *inputs)`` and ``backward(ctx, grad)``
    on Tensors, ``ctx.save_for_backward`` / ``ctx.saved_tensors`` / ``ctx.needs_input_grad``,
    and ``MyOp.apply(*inputs)`` to run it::

        class Cube(Function):
            @staticmethod
            def forward(ctx, x):
                ctx.save_for_backward(x)
                return x * x * x
            @staticmethod
            def backward(ctx, grad):
                (x,) = ctx.saved_tensors
                return grad * 3 * x * x
        y = Cube.apply(x)
    """

    __slots__ = ("saved_tensors", "needs_input_grad", "output_data", "hooks", "trace", "seq",
                 "__weakref__")         # the profiler notices a graph dropped without backward
    saves_output = False
    reads_inputs = True         # False where the rule needs only shapes: in-place edits are safe
    returns_view = False        # True where the output shares memory with an input
    fresh_gradients = False     # see __init_subclass__

    def __init_subclass__(cls, **kwargs):
        """Mark tinytorch's own ops: their rules return new arrays, ``grad`` itself or views.

        Then a leaf may keep such an array as its ``.grad`` (and add into it later) without a
        copy. A user-defined rule may return an array it also keeps or returns twice, so the
        engine copies those unless the class sets ``fresh_gradients = True`` itself.
        """
        super().__init_subclass__(**kwargs)
        if "fresh_gradients" not in cls.__dict__:
            cls.fresh_gradients = cls.__module__.startswith("tinytorch.")

    def __init__(self, *tensors):
        self.saved_tensors = tensors
        self.needs_input_grad = tuple(isinstance(t, _tensor.Tensor) and t.requires_grad for t in tensors)
        self.output_data = None
        self.hooks = None
        self.seq = next(sequence)

    def value_needed(self, i):
        """Whether the gradient rule reads the values of input ``i`` (for in-place checks)."""
        return self.reads_inputs

    @property
    def next_functions(self):
        """The nodes that produced this node's inputs (leaves and constants have none)."""
        if self.saved_tensors is None:
            return ()
        return tuple(t.grad_fn for t in self.saved_tensors
                     if isinstance(t, _tensor.Tensor) and t.grad_fn is not None)

    def forward(self, *values, **params):
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def gradient(self, grad, *values):
        raise NotImplementedError(f"{type(self).__name__} does not define gradient()")

    def apply(self, grad_output):
        """Return the gradient for each input, given the gradient of the output (arrays)."""
        if self.saved_tensors is None:
            raise RuntimeError(_FREED_GRAPH_MESSAGE)
        saved = self.saved_tensors
        if len(saved) == 1 and isinstance(saved[0], _tensor.Tensor):      # the common cases, unrolled
            if self.saves_output:
                return self.gradient(grad_output, saved[0]._data, self.output_data)
            return self.gradient(grad_output, saved[0]._data)
        if len(saved) == 2 and not self.saves_output:
            a, b = saved
            Tensor = _tensor.Tensor
            return self.gradient(grad_output, a._data if isinstance(a, Tensor) else a,
                                 b._data if isinstance(b, Tensor) else b)
        Tensor = _tensor.Tensor
        values = [t._data if isinstance(t, Tensor) else t for t in saved]
        if self.saves_output:
            values.append(self.output_data)
        return self.gradient(grad_output, *values)

    def release(self):
        """Drop what was saved for backward (called after a backward without retain_graph)."""
        self.saved_tensors = None
        self.output_data = None

    def __repr__(self):
        return f"<{type(self).__name__}>"


class FunctionCtx:
    """The ``ctx`` of a PyTorch-style custom Function: what forward keeps for backward."""

    def __init__(self, needs_input_grad):
        self.needs_input_grad = needs_input_grad
        self.saved_tensors = ()

    def save_for_backward(self, *tensors):
        """Keep ``tensors`` for backward, where ``ctx.saved_tensors`` returns them."""
        self.saved_tensors = tensors


def _apply_custom_function(fn_cls, *inputs):
    """Run ``fn_cls.forward(ctx, *inputs)`` without recording, then record one node for it."""
    if not isinstance(fn_cls.__dict__.get("backward"), staticmethod):
        raise TypeError(
            f"{fn_cls.__name__}.apply(*inputs) runs PyTorch-style custom ops, which define "
            f"@staticmethod forward(ctx, ...) and backward(ctx, grad). For an op with "
            f"forward(self, *arrays) and gradient(self, grad, *arrays), use run_op("
            f"{fn_cls.__name__}, ...); to get input gradients from a node, call node.apply(grad).")
    if _tracing.recording:
        _tracing.recorder.cannot_replay(f"the custom Function {fn_cls.__name__}")
    if _profiler_state.active and _profiler.records_op():
        return _profiler.record_op(_apply_custom_function, fn_cls, inputs, {},
                                   name=f"{fn_cls.__name__}Backward")
    needs = tuple(isinstance(x, _tensor.Tensor) and x.requires_grad for x in inputs)
    ctx = FunctionCtx(needs)
    with set_grad_enabled(False):
        out = fn_cls.forward(ctx, *inputs)
    if not isinstance(out, _tensor.Tensor):
        raise TypeError(f"{fn_cls.__name__}.forward must return one Tensor, "
                        f"got {type(out).__name__}")
    if not (_grad_mode.enabled and True in needs):
        return out
    node = _CustomFunctionBackward.__new__(_CustomFunctionBackward)
    node.saved_tensors, node.needs_input_grad = inputs, needs
    node.output_data, node.hooks = None, None
    node.seq = next(sequence)
    node.fn_cls, node.ctx = fn_cls, ctx
    if _anomaly_state.enabled:
        node.trace = _anomaly.user_stack()
    return _tensor.Tensor._make(out._data, node)


class _CustomFunctionBackward(Function):
    """The graph node of a PyTorch-style custom op: its gradient is ``fn_cls.backward``."""

    __slots__ = ("fn_cls", "ctx")
    fresh_gradients = False     # the user's backward may return tensors it also keeps

    def gradient(self, grad, *values):
        """``fn_cls.backward`` on Tensors; the engine checks what it returns."""
        differentiable = isinstance(grad, _tensor.Tensor)          # create_graph: stay on Tensors
        with set_grad_enabled(differentiable):
            return self.fn_cls.backward(self.ctx, grad if differentiable else _tensor.Tensor._make(grad))

    def __repr__(self):
        return f"<{self.fn_cls.__name__}Backward>"


# --------------------------------------------------------------------------------------------
# Recording
# --------------------------------------------------------------------------------------------

_FREED_GRAPH_MESSAGE = (
    "Trying to run backward through the graph a second time, but the tensors it saved were "
    "already released (freed) by the first backward(). Pass retain_graph=True to the first "
    "backward() call if you need to backward through the graph again.")


class ShapeMismatchError(RuntimeError, ValueError):
    """A gradient given to backward() whose shape is not its tensor's: a RuntimeError, as
    PyTorch raises, and a ValueError, as TinyTorch raises, so code written for either works."""


# ``needs_input_grad`` tuples for one and two inputs, shared rather than built per op: fewer
# new objects for Python's garbage collector to scan in big graphs.
_YES, _NO = (True,), (False,)
_BOTH, _FIRST, _SECOND, _NEITHER = (True, True), (True, False), (False, True), (False, False)


def run_op(op, *inputs, **params):
    """Compute ``op`` on the inputs and, if any input needs a gradient, record a graph node.

    ``inputs`` are Tensors or Python numbers; ``params`` are passed on to ``op.forward``.
    Under ``no_grad`` (or when no input requires grad) nothing is recorded.
    """
    if _profiler_state.active and _profiler.records_op():    # a profile block is open
        return _profiler.record_op(run_op, op, inputs, params)
    Tensor = _tensor.Tensor
    node = op.__new__(op)
    # Unrolled for one and two inputs, calling forward without ``**{}`` when there are no params:
    # this runs for every op, so its overhead is the engine's.
    if len(inputs) == 1:
        x = inputs[0]
        out = node.forward(x._data, **params) if params else node.forward(x._data)
        needs = _YES if x.requires_grad else _NO
    elif len(inputs) == 2:
        a, b = inputs
        a_is_tensor, b_is_tensor = isinstance(a, Tensor), isinstance(b, Tensor)
        a_value = a._data if a_is_tensor else a
        b_value = b._data if b_is_tensor else b
        out = (node.forward(a_value, b_value, **params) if params
               else node.forward(a_value, b_value))
        if a_is_tensor and a.requires_grad:
            needs = _BOTH if b_is_tensor and b.requires_grad else _FIRST
        else:
            needs = _SECOND if b_is_tensor and b.requires_grad else _NEITHER
    else:
        values, needs = [], []
        for x in inputs:
            is_tensor = isinstance(x, Tensor)
            values.append(x._data if is_tensor else x)
            needs.append(is_tensor and x.requires_grad)
        out = node.forward(*values, **params)
        needs = tuple(needs)
    if type(out) is not np.ndarray:
        out = np.asarray(out)
    result = Tensor.__new__(Tensor)
    result._data = out
    result._grad = None
    if True in needs and _grad_mode.enabled:
        if _anomaly_state.enabled:
            node.trace = _anomaly.user_stack()
            _anomaly.note_nonfinite_output(node, inputs, out)
        node.saved_tensors = inputs
        node.needs_input_grad = needs
        node.output_data = out if op.saves_output else None
        node.hooks = None
        node.seq = next(sequence)
        result.grad_fn = node
        result.requires_grad = True
    else:
        result.grad_fn = None
        result.requires_grad = False
    if _tracing.recording:                          # tinytorch.compile records this op
        _tracing.recorder.record_op(node, inputs, params, result)
    return result


def run_numpy(function, *inputs, **params):
    """``function`` (a NumPy function) on the inputs' arrays, as a Tensor without a gradient:
    comparisons, arg-max, conversions to integers. Unlike a bare NumPy call on ``t._data``, a
    recording of ``tinytorch.compile`` sees it, as it sees every op.

    >>> run_numpy(np.greater, x, 0.0)            # a bool Tensor
    """
    node = _NumpyCall(function)
    Tensor = _tensor.Tensor
    result = Tensor._make(node.forward(*[x._data if isinstance(x, Tensor) else x
                                         for x in inputs], **params))
    if _tracing.recording:
        _tracing.recorder.record_op(node, inputs, params, result)
    return result


class _NumpyCall:
    """The op object of :func:`run_numpy`: a NumPy function, no gradient rule."""

    __slots__ = ("function",)

    def __init__(self, function):
        self.function = function

    def forward(self, *values, **params):
        return np.asarray(self.function(*values, **params))


# --------------------------------------------------------------------------------------------
# The backward walk
# --------------------------------------------------------------------------------------------

def unbroadcast(grad, shape):
    """Sum ``grad`` over the axes that broadcasting added or stretched, giving it ``shape``.

    Broadcasting copies an input along new leading axes and along its size-1 axes, so each
    input element contributed to several outputs: its gradient is the sum over those copies.

    >>> unbroadcast(np.ones((4, 3)), (3,))      # -> array([4., 4., 4.])
    >>> unbroadcast(np.ones((4, 3)), (4, 1))    # -> 4x1 array of 3.
    """
    extra = grad.ndim - len(shape)
    if extra:
        grad = grad.sum(axis=0 if extra == 1 else tuple(range(extra)))
        if isinstance(grad, np.generic):          # summed to a NumPy scalar: keep an array
            grad = np.asarray(grad)
    stretched = tuple([i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1])
    if stretched:
        grad = grad.sum(axis=stretched, keepdims=True)
    return grad


def _sum_to_input_shape(node, tensor, grad):
    """``grad`` summed back to ``tensor``'s shape after broadcasting (see :func:`unbroadcast`).

    Any other shape is a fault of ``node``'s rule, reported as PyTorch does: the op, the input's
    index and both shapes.
    """
    shape, returned = tensor._data.shape, tuple(grad.shape)
    if grad.ndim >= len(shape):
        grad = unbroadcast(grad, shape)
    if grad.shape != shape:
        index = next(i for i, t in enumerate(node.saved_tensors) if t is tensor)
        raise RuntimeError(
            f"{repr(node)[1:-1]} returned a gradient of shape {returned} for input "
            f"{index}, which has shape {shape}: a gradient must have its input's shape (or a "
            f"shape the input was broadcast to)")
    return grad


def _checked_gradients(node, grads, create_graph):
    """What a user-defined rule returned, as one array (a Tensor with ``create_graph``) or None
    per input. Like PyTorch, refuse a wrong count or type, naming the op and the input."""
    name = repr(node)[1:-1]
    if grads is None or isinstance(grads, (np.ndarray, np.generic, _tensor.Tensor)):
        grads = (grads,)
    elif not isinstance(grads, (tuple, list)):
        raise TypeError(f"{name} returned a {type(grads).__name__}; a gradient rule returns one "
                        f"gradient (an array, a Tensor or None) per input, in a tuple")
    count = len(node.saved_tensors)
    if len(grads) != count:
        raise RuntimeError(f"{name} returned {len(grads)} gradient(s) for {count} input(s); it "
                           f"must return one per input (None for an input without a gradient)")
    custom = isinstance(node, _CustomFunctionBackward)
    checked = []
    for i, (g, needed) in enumerate(zip(grads, node.needs_input_grad)):
        if custom and g is not None and not isinstance(node.saved_tensors[i], _tensor.Tensor):
            raise TypeError(f"{name} returned a gradient for input {i}, which is not a Tensor "
                            f"({type(node.saved_tensors[i]).__name__}); return None for it, "
                            f"as PyTorch requires")
        if g is None or not needed:
            checked.append(None)
            continue
        if isinstance(g, _tensor.Tensor):
            g = g if create_graph else g._data
        elif isinstance(g, (np.ndarray, np.generic)):
            g = _tensor.Tensor._make(np.asarray(g)) if create_graph else np.asarray(g)
        else:
            raise TypeError(f"{name} returned a {type(g).__name__} as the gradient of input {i}; "
                            f"a gradient is a NumPy array, a Tensor or None")
        dtype = g.dtype
        if dtype.kind not in "fiu":
            raise TypeError(f"{name} returned a gradient of dtype {dtype} for input {i}; a "
                            f"gradient holds numbers")
        checked.append(g)
    return checked


def _apply_differentiable(node, grad):
    """Run ``node``'s rule on Tensors (graph recorded), for gradients of gradients."""
    if type(node).gradient is Function.gradient:
        raise RuntimeError(f"{type(node).__name__} defines apply() but no gradient() rule, so it "
                           f"cannot be used with create_graph=True")
    if node.saved_tensors is None:
        raise RuntimeError(_FREED_GRAPH_MESSAGE)
    values = list(node.saved_tensors)
    if node.saves_output:
        values.append(_tensor.Tensor._make(node.output_data, node))   # the output, as a graph node
    if not isinstance(grad, _tensor.Tensor):
        grad = _tensor.Tensor._make(grad)
    with set_grad_enabled(True):
        return node.gradient(grad, *values)


def _run_backward(roots, root_grads, retain_graph, create_graph, sink):
    """Send each root's gradient back through the graph into ``sink`` (reverse-mode autodiff).

    1. Every node was created after the nodes of its inputs, so nodes run newest first (a heap
       on ``node.seq``): when a node is the newest one waiting, all its consumers have run and
       sent their gradients, so it runs once, with their sum.
    2. Its rule (the chain rule) gives one gradient per input; each is summed back to its
       input's shape after broadcasting, then added to the waiting gradient of the input's
       node, or given to the sink if the input is a leaf.
    3. Unless ``retain_graph``, a node drops what it saved as soon as it has run.

    With ``create_graph`` the rules run on Tensors, so the gradients are differentiable too.
    """
    Tensor = _tensor.Tensor
    pending, waiting = _seed_roots(roots, root_grads, sink)
    edits, check_finite, captured = _inplace.log, _anomaly_state.enabled, sink.nodes
    rebases, timeline = edits.rebases, sink.timeline
    while waiting:
        node = heappop(waiting)[1]
        if timeline is not None:                       # a profile block is open: time the node
            timeline.node_starts(node)
        grad = pending.pop(node)
        if node.saved_tensors is None:
            raise RuntimeError(_FREED_GRAPH_MESSAGE)
        if edits.last_edit > node.seq:                 # something was edited after this node
            _inplace.check_unmodified(node)
        if node.hooks is not None:
            grad = _hooks.run_node_hooks(node, grad)
        if captured and node in captured:              # grad() of a tensor that is not a leaf
            sink.add(captured[node], grad, borrowed=True)
        input_grads = _apply_differentiable(node, grad) if create_graph else node.apply(grad)
        if not node.fresh_gradients:                   # a user-defined rule: check its results
            input_grads = _checked_gradients(node, input_grads, create_graph)
        if check_finite:
            _anomaly.check_finite(node, input_grads)
        if _tracing.recording:                      # tinytorch.compile records this node
            _tracing.recorder.record_node(node, grad, input_grads)
        for t, g in zip(node.saved_tensors, input_grads):
            if g is None or not isinstance(t, Tensor):
                continue
            data = t._data
            if g.shape != data.shape:
                g = _sum_to_input_shape(node, t, g)
            if g.dtype is not data.dtype and g.dtype != data.dtype:
                g = g.astype(data.dtype)
            parent, requires_grad = t.grad_fn, t.requires_grad
            if rebases:
                parent, requires_grad = _inplace.history_seen_by(node, t)
            if parent is None:
                if requires_grad:                      # the incoming gradient passed through,
                    sink.add(t, g, borrowed=g is grad or not node.fresh_gradients  # or a view
                             or getattr(g, "base", None) is not None)
            elif parent in pending:
                pending[parent] = pending[parent] + g
            else:
                pending[parent] = g
                heappush(waiting, (-parent.seq, parent))
        if not retain_graph:
            node.release()


def _seed_roots(roots, root_grads, sink):
    """The walk's start: each root's gradient waits at the root's node (summed when a node is
    a root twice); a root that is itself a leaf gives its gradient straight to the sink."""
    pending, waiting = {}, []
    for root, grad in zip(roots, root_grads):
        node = root.grad_fn
        if node is None:
            if root.requires_grad:
                sink.add(root, grad, borrowed=True)
        elif node in pending:
            pending[node] = pending[node] + grad
        else:
            pending[node] = grad
            heappush(waiting, (-node.seq, node))
    return pending, waiting


class _GradientSink:
    """Where the walk leaves gradients: summed per leaf, then delivered by ``backward()`` into
    each leaf's ``.grad`` or returned by ``grad()`` for its ``inputs``.

    A total that might be held elsewhere (``borrowed``: the caller's seed, a gradient a rule
    passed through, a view, a user-defined rule's result) is copied before anything is added
    into it, so a leaf's ``.grad`` never aliases another array. Leaf hooks run on the total,
    once. ``nodes`` maps the node of a non-leaf ``grad()`` input to that input. ``timeline``
    times the pass for the open profile blocks (None when there are none).
    """

    def __init__(self, inputs=None):
        self.totals = {}               # id(leaf) -> [leaf, total, owned]
        self.wanted = None if inputs is None else {id(t) for t in inputs}
        self.nodes = {} if inputs is None else {t.grad_fn: t for t in inputs
                                                if t.grad_fn is not None}
        self.timeline = _profiler.walk_timeline() if _profiler_state.active else None

    def add(self, leaf, grad, borrowed):
        key = id(leaf)
        if self.wanted is not None and key not in self.wanted:
            return
        entry = self.totals.get(key)
        if entry is None:
            if isinstance(grad, np.generic):           # 0-d arrays make NumPy scalars
                grad, borrowed = np.asarray(grad), False
            self.totals[key] = [leaf, grad, not borrowed and not isinstance(grad, _tensor.Tensor)]
        elif entry[2]:
            np.add(entry[1], grad, out=entry[1])
        else:
            total = entry[1] + grad
            is_tensor = isinstance(total, _tensor.Tensor)
            entry[1], entry[2] = total if is_tensor else np.asarray(total), not is_tensor

    def _finished(self):
        """[(leaf, total)], each total after the leaf's hooks and owned by the sink."""
        finished = []
        for leaf, total, owned in self.totals.values():
            if _hooks.leaf_hooks and id(leaf) in _hooks.leaf_hooks:
                total, owned = _hooks.run_leaf_hooks(leaf, total), False
                if total.dtype != leaf._data.dtype:
                    total = total.astype(leaf._data.dtype)
            if not owned:
                total = total.clone() if isinstance(total, _tensor.Tensor) else total.copy()
            finished.append((leaf, total))
        return finished

    def deliver(self):
        """``backward()``: add each total into its leaf's ``.grad`` (a Tensor owning its array)."""
        Tensor = _tensor.Tensor
        if self.timeline is not None:
            self.timeline.accumulation_starts()
        for leaf, total in self._finished():
            current = leaf._grad
            if current is None:
                leaf._grad = total if isinstance(total, Tensor) else Tensor._make(total)
            elif (isinstance(total, Tensor) or current.grad_fn is not None
                  or not current._data.flags.writeable):
                leaf._grad = current + total
            else:
                np.add(current._data, total, out=current._data)
        if self.timeline is not None:
            self.timeline.ends()

    def results(self, inputs):
        """``grad()``: the total of each input (None where no gradient reached it)."""
        totals = {id(leaf): total for leaf, total in self._finished()}
        if self.timeline is not None:
            self.timeline.ends()
        return [_as_gradient_tensor(totals.get(id(t))) for t in inputs]


def _as_gradient_tensor(total):
    if total is None or isinstance(total, _tensor.Tensor):
        return total
    return _tensor.Tensor._make(total)


# --------------------------------------------------------------------------------------------
# backward() and grad()
# --------------------------------------------------------------------------------------------

def _seed_gradient(tensor, gradient, create_graph=False):
    """The gradient a backward starts from: ones for a one-element tensor, else ``gradient``."""
    if not isinstance(tensor, _tensor.Tensor):
        raise TypeError(f"backward() needs Tensors, got {type(tensor).__name__}")
    if not tensor.requires_grad:
        raise RuntimeError(
            "backward() called on a tensor that does not require grad and has no grad_fn: "
            "create the leaves with requires_grad=True (and not under no_grad()).")
    if gradient is None:
        if tensor._data.size != 1:
            raise RuntimeError(
                f"backward() without a gradient argument only works on a tensor with one "
                f"element, but this one has shape {tensor.shape}. Reduce it first (e.g. "
                f"loss.sum() or loss.mean()) or pass gradient=<tensor of shape {tensor.shape}>.")
        grad = np.ones(tensor._data.shape, tensor._data.dtype)
        return _tensor.Tensor._make(grad) if create_graph else grad
    if isinstance(gradient, _tensor.Tensor) and create_graph:
        grad = gradient
    else:
        grad = np.asarray(gradient._data if isinstance(gradient, _tensor.Tensor) else gradient)
    if grad.shape != tensor._data.shape:
        raise ShapeMismatchError(
            f"backward(): gradient has shape {grad.shape} but the tensor has shape "
            f"{tensor._data.shape}; they must match.")
    if grad.dtype != tensor._data.dtype:
        grad = grad.astype(tensor._data.dtype)
    return _tensor.Tensor._make(grad) if create_graph and not isinstance(grad, _tensor.Tensor) else grad


def _as_list(tensors):
    return [tensors] if isinstance(tensors, _tensor.Tensor) else list(tensors)


def _seeds(tensors, grad_tensors, create_graph, name):
    if grad_tensors is None:
        grad_tensors = [None] * len(tensors)
    else:
        grad_tensors = _as_list(grad_tensors) if not isinstance(grad_tensors, np.ndarray) else [grad_tensors]
    if len(grad_tensors) != len(tensors):
        raise ValueError(f"{name}: got {len(tensors)} tensors but {len(grad_tensors)} gradients")
    return [_seed_gradient(t, g, create_graph) for t, g in zip(tensors, grad_tensors)]


def backward(tensors, grad_tensors=None, retain_graph=None, create_graph=False):
    """Accumulate into the leaves the gradients of ``tensors`` (as ``torch.autograd.backward``).

    ``create_graph=True`` records the backward pass itself, so the leaves' ``.grad`` can be
    differentiated again (it implies ``retain_graph``).

    >>> backward([loss1, loss2])                      # same as (loss1 + loss2).backward()
    """
    tensors = _as_list(tensors)
    if retain_graph is None:
        retain_graph = create_graph
    seeds = _seeds(tensors, grad_tensors, create_graph, "backward")
    sink = _GradientSink()
    if _tracing.recording:
        _tracing.recorder.begin_backward(tensors, seeds, retain_graph, create_graph, sink)
    _run_backward(tensors, seeds, retain_graph, create_graph, sink)
    sink.deliver()
    if _tracing.recording:
        _tracing.recorder.end_backward(sink)


def grad(outputs, inputs, grad_outputs=None, retain_graph=None, create_graph=False,
         allow_unused=False):
    """Return d(outputs)/d(inputs) without touching any ``.grad`` (as ``torch.autograd.grad``).

    With ``create_graph=True`` the returned gradients are differentiable (higher-order
    derivatives); ``retain_graph`` defaults to ``create_graph``.

    >>> x = Tensor([3.0], dtype=np.float64, requires_grad=True)
    >>> (dy,) = grad(x ** 3, x, create_graph=True)    # 3x^2 = 27
    >>> (d2y,) = grad(dy, x)                            # 6x = 18
    """
    if _tracing.recording:
        _tracing.recorder.cannot_replay("autograd.grad()")
    outputs, inputs = _as_list(outputs), _as_list(inputs)
    for i, t in enumerate(inputs):
        if not isinstance(t, _tensor.Tensor) or not t.requires_grad:
            raise RuntimeError(f"grad(): input {i} does not require grad")
    if retain_graph is None:
        retain_graph = create_graph
    seeds = _seeds(outputs, grad_outputs, create_graph, "grad")
    sink = _GradientSink(inputs)
    _run_backward(outputs, seeds, retain_graph, create_graph, sink)
    results = sink.results(inputs)
    for i, g in enumerate(results):
        if g is None and not allow_unused:
            raise RuntimeError(f"grad(): input {i} was not used to compute the outputs; pass "
                               f"allow_unused=True to get None for it")
    return tuple(results)


# --------------------------------------------------------------------------------------------
# The curriculum's names, from the modules beside the engine
# --------------------------------------------------------------------------------------------

# name -> the module defining it; loaded when first asked for (the engine itself imports none
# of the modules above it), then kept here as an ordinary attribute.
_REEXPORTS = {
    "tinytorch.core.inplace": ("note_inplace",),
    "tinytorch.core.hooks": ("register_hook", "RemovableHandle"),
    "tinytorch.core.anomaly": ("detect_anomaly",),
    "tinytorch.core.gradcheck": ("gradcheck", "gradgradcheck", "numerical_gradients",
                                 "GradcheckError"),
}
_OP_MODULES = ("tinytorch.core.ops", "tinytorch.core.functional")


def __getattr__(name):
    """``from tinytorch.core.autograd import MulBackward, gradcheck, ...``: the op classes of
    ops.py and functional.py and the features' public names, under the curriculum's path.

    The first lookup once those modules are loaded copies all their names here and removes
    this function: CPython 3.11 does not specialise ``module.name`` on a module that has a
    ``__getattr__`` (PEP 562), and tensor.py reads ``autograd.run_op`` and
    ``autograd.AddBackward`` for every op.
    """
    if name.startswith("__") and name != "__all__":     # e.g. __path__, which ``from`` asks
        raise AttributeError(name)
    exports = _exports()
    if exports is None:                     # during the package's own import: this name only
        return _export(name)
    globals().update(exports)
    del globals()["__getattr__"]
    if name not in exports:
        raise AttributeError(f"module 'tinytorch.core.autograd' has no attribute {name!r}")
    return exports[name]


def _export(name):
    """One re-exported name (the value ``__getattr__`` returns while modules still import)."""
    if name == "__all__":
        return _public_names()
    for module_name, names in _REEXPORTS.items():
        if name in names:
            return getattr(importlib.import_module(module_name), name)
    for module_name in _OP_MODULES:
        module = importlib.import_module(module_name)
        if name in module.__all__:
            return getattr(module, name)
    raise AttributeError(f"module 'tinytorch.core.autograd' has no attribute {name!r}")


def _exports():
    """Every re-exported name and its value, and ``__all__``; None while one of the modules
    defining them is still being imported (its names are not all there yet)."""
    try:
        exports = {name: _export(name) for name in _public_names() if name not in _ENGINE_NAMES}
    except AttributeError:
        return None
    exports["__all__"] = _public_names()
    return exports


def __dir__():
    return sorted(set(globals()) | set(_public_names()))


def _public_names():
    """``__all__``: the engine's names, the features' and the op classes (computed when asked
    for, since the op modules are loaded only then)."""
    features = [name for names in _REEXPORTS.values() for name in names]
    ops = [name for module_name in _OP_MODULES
           for name in importlib.import_module(module_name).__all__]
    return _ENGINE_NAMES + features + ops


_ENGINE_NAMES = [
    "Function", "FunctionCtx", "run_op", "run_numpy", "backward", "grad", "unbroadcast",
    "sequence",
    "no_grad", "enable_grad", "set_grad_enabled", "is_grad_enabled", "enable_autograd",
    "ShapeMismatchError",
]
