"""Reverse-mode automatic differentiation: graph nodes, grad mode, and the backward engine.

Every differentiable operation is a :class:`Function` subclass (they live in
``tinytorch/core/ops.py`` and are re-exported here). Running an op through :func:`run_op`
computes its output and, when an input needs a gradient, records a node that remembers the
inputs. :func:`backward` then walks those nodes from the output back to the leaves, once each,
in reverse topological order.

>>> from tinytorch import Tensor
>>> x = Tensor([2.0], requires_grad=True)
>>> y = x * x + 3 * x
>>> y.backward()
>>> x.grad            # dy/dx = 2x + 3
Tensor([7.], dtype=float32)
"""

import functools
from heapq import heappop, heappush
import inspect
import itertools
import os
import threading
import traceback
import weakref

import numpy as np

from tinytorch.core.tensor import Tensor


# --------------------------------------------------------------------------------------------
# Grad mode
# --------------------------------------------------------------------------------------------

class _GradModeState(threading.local):
    """Per-thread switch (as in PyTorch): when off, ops record no graph at all."""
    enabled = True


_GradMode = _GradModeState()


def is_grad_enabled():
    """Return True when operations currently record a graph for backward."""
    return _GradMode.enabled


def _decorate(func, make_context):
    """Run ``func`` (or each step of a generator function) inside ``make_context()``."""
    if inspect.isgeneratorfunction(func):
        @functools.wraps(func)
        def generator(*args, **kwargs):
            steps = func(*args, **kwargs)
            advance = functools.partial(steps.send, None)
            while True:
                try:
                    with make_context():
                        value = advance()
                except StopIteration as stop:
                    return stop.value
                try:
                    sent = yield value
                except GeneratorExit:
                    with make_context():
                        steps.close()
                    raise
                except BaseException as error:             # generator.throw(): pass it on
                    advance = functools.partial(steps.throw, error)
                else:
                    advance = functools.partial(steps.send, sent)
        return generator

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with make_context():
            return func(*args, **kwargs)
    return wrapper


class _GradModeContext:
    """Base for no_grad/enable_grad/set_grad_enabled: a context manager and a decorator, with
    or without parentheses (``@no_grad()`` and ``@no_grad``, as in PyTorch)."""

    mode = True

    def __new__(cls, *args, **kwargs):
        if len(args) == 1 and callable(args[0]) and cls is not set_grad_enabled:
            return cls()(args[0])                      # @no_grad without parentheses
        return super().__new__(cls)

    def __enter__(self):
        self._previous = _GradMode.enabled
        _GradMode.enabled = self.mode

    def __exit__(self, *exc_info):
        _GradMode.enabled = self._previous
        return False

    def __call__(self, func):
        return _decorate(func, self.__class__)


class no_grad(_GradModeContext):
    """Context manager / decorator under which no graph is recorded.

    >>> with no_grad():
    ...     y = x * 2          # y.requires_grad is False, no node is created
    """
    mode = False


class enable_grad(_GradModeContext):
    """Context manager / decorator that turns graph recording back on (e.g. inside no_grad)."""
    mode = True


class set_grad_enabled(_GradModeContext):
    """Turn graph recording on or off: immediately as a call, or for a ``with`` block.

    >>> set_grad_enabled(False)      # off from here on
    >>> with set_grad_enabled(True):  # on inside the block, restored after it
    ...     pass
    """

    def __init__(self, mode):
        self.mode = bool(mode)
        self._previous = _GradMode.enabled
        _GradMode.enabled = self.mode

    def __enter__(self):
        pass

    def __call__(self, func):
        _GradMode.enabled = self._previous
        mode = self.mode
        return _decorate(func, lambda: set_grad_enabled(mode))


def enable_autograd(quiet=True):
    """Kept for TinyTorch compatibility: autograd is built into Tensor and always on.

    Idempotent and silent (``quiet`` is accepted so that curriculum code keeps working; the
    library never prints). It only makes sure graph recording is switched on.
    """
    _GradMode.enabled = True


class _AnomalyMode:
    """When on, nodes remember where they were created and backward checks every gradient."""
    enabled = False
    first_nonfinite = None          # (op name, creation stack) of the first NaN/inf in forward


class detect_anomaly:
    """Context manager: backward raises at the first NaN/inf gradient, naming the op and the
    line of user code that created it.

    >>> with detect_anomaly():
    ...     y = (x * 0).log()          # log(0) = -inf: its gradient is inf
    ...     y.sum().backward()          # RuntimeError: LogBackward returned ... created at ...
    """

    def __enter__(self):
        self._previous = _AnomalyMode.enabled
        _AnomalyMode.enabled = True
        _AnomalyMode.first_nonfinite = None
        return self

    def __exit__(self, *exc_info):
        _AnomalyMode.enabled = self._previous
        return False


def _user_stack():
    """The creation point of a node: the call stack without tinytorch's own frames."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    frames = [f for f in traceback.extract_stack()[:-1]
              if not os.path.abspath(f.filename).startswith(package + os.sep)]
    return "".join(traceback.format_list(frames[-6:]))


def _check_finite(node, input_grads):
    """Raise if ``node`` produced a NaN or infinite gradient (anomaly mode)."""
    for i, g in enumerate(input_grads):
        if g is not None and not np.all(np.isfinite(g._data if isinstance(g, Tensor) else g)):
            kind = "nan" if np.any(np.isnan(g._data if isinstance(g, Tensor) else g)) else "inf"
            where = getattr(node, "trace", None) or "(unknown: created outside detect_anomaly)\n"
            origin = ""
            if _AnomalyMode.first_nonfinite is not None:
                op_name, stack = _AnomalyMode.first_nonfinite
                origin = f"The first NaN/inf of the forward pass came from {op_name}, created at:\n{stack}"
            raise RuntimeError(
                f"{type(node).__name__} returned {kind} values in its gradient for input {i}. "
                f"The forward operation was created at:\n{where}{origin}")


def _note_nonfinite_output(node, inputs, out):
    """Remember the first op whose output is NaN/inf while its inputs were finite (anomaly mode)."""
    if _AnomalyMode.first_nonfinite is None and not np.all(np.isfinite(out)):
        if all(np.all(np.isfinite(x._data)) for x in inputs if isinstance(x, Tensor)):
            _AnomalyMode.first_nonfinite = (type(node).__name__, node.trace)


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

    __slots__ = ("saved_tensors", "needs_input_grad", "output_data", "hooks", "trace", "seq")
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
        self.needs_input_grad = tuple(isinstance(t, Tensor) and t.requires_grad for t in tensors)
        self.output_data = None
        self.hooks = None
        self.seq = next(_sequence)

    def value_needed(self, i):
        """Whether the gradient rule reads the values of input ``i`` (for in-place checks)."""
        return self.reads_inputs

    @property
    def next_functions(self):
        """The nodes that produced this node's inputs (leaves and constants have none)."""
        if self.saved_tensors is None:
            return ()
        return tuple(t.grad_fn for t in self.saved_tensors
                     if isinstance(t, Tensor) and t.grad_fn is not None)

    def forward(self, *values, **params):
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def gradient(self, grad, *values):
        raise NotImplementedError(f"{type(self).__name__} does not define gradient()")

    def apply(self, grad_output):
        """Return the gradient for each input, given the gradient of the output (arrays)."""
        if self.saved_tensors is None:
            raise RuntimeError(_FREED_GRAPH_MESSAGE)
        saved = self.saved_tensors
        if len(saved) == 1 and isinstance(saved[0], Tensor):      # the common cases, unrolled
            if self.saves_output:
                return self.gradient(grad_output, saved[0]._data, self.output_data)
            return self.gradient(grad_output, saved[0]._data)
        if len(saved) == 2 and not self.saves_output:
            a, b = saved
            return self.gradient(grad_output, a._data if isinstance(a, Tensor) else a,
                                 b._data if isinstance(b, Tensor) else b)
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
    needs = tuple(isinstance(x, Tensor) and x.requires_grad for x in inputs)
    ctx = FunctionCtx(needs)
    with no_grad():
        out = fn_cls.forward(ctx, *inputs)
    if not isinstance(out, Tensor):
        raise TypeError(f"{fn_cls.__name__}.forward must return one Tensor, "
                        f"got {type(out).__name__}")
    if not (_GradMode.enabled and True in needs):
        return out
    node = _CustomFunctionBackward.__new__(_CustomFunctionBackward)
    node.saved_tensors, node.needs_input_grad = inputs, needs
    node.output_data, node.hooks = None, None
    node.seq = next(_sequence)
    node.fn_cls, node.ctx = fn_cls, ctx
    if _AnomalyMode.enabled:
        node.trace = _user_stack()
    return Tensor._make(out._data, node)


class _CustomFunctionBackward(Function):
    """The graph node of a PyTorch-style custom op: its gradient is ``fn_cls.backward``."""

    __slots__ = ("fn_cls", "ctx")
    fresh_gradients = False     # the user's backward may return tensors it also keeps

    def gradient(self, grad, *values):
        """``fn_cls.backward`` on Tensors; the engine checks what it returns."""
        differentiable = isinstance(grad, Tensor)          # create_graph: stay on Tensors
        with set_grad_enabled(differentiable):
            return self.fn_cls.backward(self.ctx, grad if differentiable else Tensor._make(grad))

    def __repr__(self):
        return f"<{self.fn_cls.__name__}Backward>"


# Numbers graph nodes (``node.seq``) and in-place edits in the order they happen. Backward runs
# nodes in decreasing ``seq``; an in-place edit numbered after a node was created changed values
# that node may have saved.
_sequence = itertools.count(1)


class _InplaceLog:
    """What in-place operations did, by id(tensor), until the tensor is freed.

    ``edits``, by id of the array that owns the memory (shared by views and detached
    tensors): (sequence number, description) of the last in-place edit of that memory.
    ``rebases``, by id(tensor): (sequence number, grad_fn, requires_grad) the tensor had before
    each recorded in-place op made it the output of a new node; ops created earlier still see
    that history.
    """
    edits = {}
    rebases = {}
    last_edit = 0          # sequence number of the latest edit: older nodes need no check


def _storage(array):
    """The array owning the memory that ``array`` views (views and detached tensors share it)."""
    while isinstance(array.base, np.ndarray):
        array = array.base
    return array


def note_inplace(tensor, operation, new_grad_fn=None):
    """Record that ``operation`` (e.g. ``'+='``) changed ``tensor``'s values in place.

    With ``new_grad_fn`` (a recorded in-place op), ``tensor`` becomes that node's output, while
    the nodes that used it before keep sending their gradient to its previous history.
    """
    number = _InplaceLog.last_edit = next(_sequence)
    storage = _storage(tensor._data)
    if id(storage) not in _InplaceLog.edits:
        weakref.finalize(storage, _InplaceLog.edits.pop, id(storage), None)
    _InplaceLog.edits[id(storage)] = (number, operation)
    if new_grad_fn is not None:
        if id(tensor) not in _InplaceLog.rebases:
            weakref.finalize(tensor, _InplaceLog.rebases.pop, id(tensor), None)
            _InplaceLog.rebases[id(tensor)] = []
        _InplaceLog.rebases[id(tensor)].append(
            (number, tensor.grad_fn, tensor.requires_grad))
        old_node = tensor.grad_fn
        if old_node is not None and old_node.hooks:          # retain_grad() follows the tensor
            retained = [h for h in old_node.hooks if getattr(h, "tensor_ref", None)
                        and h.tensor_ref() is tensor]
            for hook in retained:
                old_node.hooks.remove(hook)
            if retained:
                new_grad_fn.hooks = (new_grad_fn.hooks or []) + retained
        tensor.grad_fn, tensor.requires_grad = new_grad_fn, True


def _history_seen_by(node, tensor):
    """(grad_fn, requires_grad) of ``tensor`` when ``node`` used it (see in-place rebases)."""
    for seq, grad_fn, requires_grad in _InplaceLog.rebases.get(id(tensor), ()):
        if seq > node.seq:
            return grad_fn, requires_grad
    return tensor.grad_fn, tensor.requires_grad


def _check_unmodified(node):
    """Raise if values ``node`` relies on were changed in place after it was created.

    Checked: the inputs whose values the rule reads, the memory a view op's output shares
    with its input, and the saved output of ops that use it.
    """
    name = repr(node)[1:-1]                  # e.g. MulBackward, or CubeBackward for custom ops
    if node.reads_inputs or node.returns_view:
        for i, t in enumerate(node.saved_tensors):
            if not (node.returns_view or node.value_needed(i)):
                continue
            edit = _InplaceLog.edits.get(id(_storage(t._data))) if isinstance(t, Tensor) else None
            if edit is not None and edit[0] > node.seq:
                what = ("its output is a view of its input " if node.returns_view
                        else "it needs the values of its input ")
                raise RuntimeError(
                    f"{name}: {what}{i} (a tensor of shape {t.shape} and dtype {t.dtype}), but "
                    f"they were modified by an in-place operation ({edit[1]}) after {name} was "
                    f"recorded. Use an out-of-place operation (e.g. x = x + y instead of "
                    f"x += y), clone() the tensor first, or make the change after backward().")
    for t in getattr(getattr(node, "ctx", None), "saved_tensors", ()):   # custom Functions
        edit = _InplaceLog.edits.get(id(_storage(t._data))) if isinstance(t, Tensor) else None
        if edit is not None and edit[0] > node.seq:
            raise RuntimeError(
                f"{name}: a tensor it saved with ctx.save_for_backward (shape {t.shape}) was "
                f"modified by an in-place operation ({edit[1]}) after it was saved")
    if node.output_data is not None:
        edit = _InplaceLog.edits.get(id(_storage(node.output_data)))
        if edit is not None and edit[0] > node.seq:
            raise RuntimeError(
                f"{name}: it needs the values of its output (shape {node.output_data.shape}) to "
                f"compute its gradient, but they were modified by an in-place operation "
                f"({edit[1]}) after {name} was recorded. Use an out-of-place operation, or "
                f"clone() the output before changing it.")


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
        out = node.forward(*[x._data if isinstance(x, Tensor) else x for x in inputs], **params)
        needs = tuple([isinstance(x, Tensor) and x.requires_grad for x in inputs])
    if type(out) is not np.ndarray:
        out = np.asarray(out)
    result = Tensor.__new__(Tensor)
    result._data = out
    result._grad = None
    if True in needs and _GradMode.enabled:
        if _AnomalyMode.enabled:
            node.trace = _user_stack()
            _note_nonfinite_output(node, inputs, out)
        node.saved_tensors = inputs
        node.needs_input_grad = needs
        node.output_data = out if op.saves_output else None
        node.hooks = None
        node.seq = next(_sequence)
        result.grad_fn = node
        result.requires_grad = True
    else:
        result.grad_fn = None
        result.requires_grad = False
    return result


# --------------------------------------------------------------------------------------------
# The backward engine
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


def _accumulate(sinks, key, grad, borrowed):
    """Add ``grad`` into ``sinks[key]``, a Tensor that owns its array (never an alias).

    A first gradient that is a Tensor (``create_graph``) is cloned, as in PyTorch: it may be
    the very Tensor another leaf or node receives.
    """
    total = sinks[key]
    if total is None:
        if isinstance(grad, Tensor):
            sinks[key] = grad.clone()
        else:
            sinks[key] = Tensor._make(grad.copy() if borrowed else np.asarray(grad))
    elif isinstance(grad, Tensor) or total.grad_fn is not None:
        sinks[key] = total + grad
    else:
        np.add(total._data, grad, out=total._data)


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
    if grads is None or isinstance(grads, (np.ndarray, np.generic, Tensor)):
        grads = (grads,)
    elif not isinstance(grads, (tuple, list)):
        raise TypeError(f"{name} returned a {type(grads).__name__}; a gradient rule returns one "
                        f"gradient (an array, a Tensor or None) per input, in a tuple")
    count = len(node.saved_tensors)
    if len(grads) != count:
        raise RuntimeError(f"{name} returned {len(grads)} gradient(s) for {count} input(s); it "
                           f"must return one per input (None for an input without a gradient)")
    checked = []
    for i, (g, needed) in enumerate(zip(grads, node.needs_input_grad)):
        if g is None or not needed:
            checked.append(None)
            continue
        if isinstance(g, Tensor):
            g = g if create_graph else g._data
        elif isinstance(g, (np.ndarray, np.generic)):
            g = Tensor._make(np.asarray(g)) if create_graph else np.asarray(g)
        else:
            raise TypeError(f"{name} returned a {type(g).__name__} as the gradient of input {i}; "
                            f"a gradient is a NumPy array, a Tensor or None")
        dtype = g.dtype
        if dtype.kind not in "fiu":
            raise TypeError(f"{name} returned a gradient of dtype {dtype} for input {i}; a "
                            f"gradient holds numbers")
        checked.append(g)
    return checked


class _LeafGrads:
    """The sink of an ordinary backward: a leaf's gradient is summed into ``leaf.grad``."""

    __slots__ = ()

    def __getitem__(self, leaf):
        return leaf._grad

    def __setitem__(self, leaf, grad):
        leaf._grad = grad


def _run_backward(roots, root_grads, retain_graph, create_graph=False, inputs=None):
    """Send each root's gradient back through the graph, summing it into the leaves' ``.grad``.

    1. Nodes run newest first. Every node was created after the nodes of its inputs, so by the
       time a node is the newest one waiting, all its consumers have run and sent their
       gradient: it runs exactly once, with the sum (however often its output was used).
    2. Each input gradient is reduced to its input's shape and dtype (after broadcasting) and
       then summed into the leaf's ``.grad`` or into the waiting gradient of the input's node.
    3. Unless ``retain_graph``, each node drops its saved tensors as soon as it has run.

    With ``create_graph`` the rules run on Tensors, so the gradients are themselves
    differentiable. With ``inputs`` (used by :func:`grad`) the gradients of those tensors are
    returned, by id, instead of being summed into ``.grad``.
    """
    sinks = _LeafGrads() if inputs is None else {id(t): None for t in inputs}
    captured_nodes = {} if inputs is None else {t.grad_fn: id(t) for t in inputs if t.grad_fn}
    pending = {}                       # node -> gradient of its output, summed so far
    waiting = []                       # heap of (-node.seq, node): the newest node on top
    hooked = {}                        # id(leaf) -> (leaf, key, summed gradient), for leaf hooks
    for root, grad in zip(roots, root_grads):
        if root.grad_fn is None:       # backward() of a leaf: its gradient is the seed itself
            key = root if inputs is None else id(root)
            if _leaf_hooks and id(root) in _leaf_hooks:
                earlier = hooked.get(id(root))
                hooked[id(root)] = (root, key, grad if earlier is None else earlier[2] + grad)
            elif inputs is None or key in sinks:
                _accumulate(sinks, key, grad, borrowed=True)
            continue
        node = root.grad_fn
        if node in pending:
            pending[node] = pending[node] + grad
        else:
            pending[node] = grad
            heappush(waiting, (-node.seq, node))
    seeds = {id(grad) for grad in root_grads}
    check_finite = _AnomalyMode.enabled
    rebases = _InplaceLog.rebases

    while waiting:
        node = heappop(waiting)[1]
        grad = pending.pop(node)
        if node.saved_tensors is None:
            raise RuntimeError(_FREED_GRAPH_MESSAGE)
        if _InplaceLog.last_edit > node.seq:          # something was edited after this node
            _check_unmodified(node)
        if node.hooks is not None:
            grad = _run_node_hooks(node, grad)
        if captured_nodes and node in captured_nodes:
            _accumulate(sinks, captured_nodes[node], grad, borrowed=True)
        input_grads = _apply_differentiable(node, grad) if create_graph else node.apply(grad)
        if not node.fresh_gradients:                # a user-defined rule: check what it returned
            input_grads = _checked_gradients(node, input_grads, create_graph)
        if check_finite:
            _check_finite(node, input_grads)
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
                parent, requires_grad = _history_seen_by(node, t)
            if parent is None:
                key = t if inputs is None else id(t)
                if not requires_grad or (inputs is not None and key not in sinks):
                    continue
                if _leaf_hooks and id(t) in _leaf_hooks:    # hooks see the leaf's total, once
                    earlier = hooked.get(id(t))
                    hooked[id(t)] = (t, key, g if earlier is None else earlier[2] + g)
                    continue
                # The leaf keeps (and later adds into) this array unless something else may
                # hold it: the incoming gradient passed through, a caller's seed, a view, or
                # whatever a user-defined rule returned. Then it gets a copy.
                borrowed = (g is grad or id(g) in seeds or not node.fresh_gradients
                            or getattr(g, "base", None) is not None)
                _accumulate(sinks, key, g, borrowed)
                continue
            earlier = pending.get(parent)
            if earlier is None:
                pending[parent] = g
                heappush(waiting, (-parent.seq, parent))
            else:
                pending[parent] = earlier + g
        if not retain_graph:
            node.release()
    for leaf, key, g in hooked.values():
        if inputs is not None and key not in sinks:
            continue
        for hook in _leaf_hooks.get(id(leaf), ()):
            g = _call_hook(hook, g)
        if g.dtype != leaf._data.dtype:
            g = g.astype(leaf._data.dtype)
        _accumulate(sinks, key, g, borrowed=True)
    return sinks


def _apply_differentiable(node, grad):
    """Run ``node``'s rule on Tensors (graph recorded), for gradients of gradients."""
    if type(node).gradient is Function.gradient:
        raise RuntimeError(f"{type(node).__name__} defines apply() but no gradient() rule, so it "
                           f"cannot be used with create_graph=True")
    if node.saved_tensors is None:
        raise RuntimeError(_FREED_GRAPH_MESSAGE)
    values = list(node.saved_tensors)
    if node.saves_output:
        values.append(Tensor._make(node.output_data, node))   # the output, as a graph node
    if not isinstance(grad, Tensor):
        grad = Tensor._make(grad)
    with enable_grad():
        return node.gradient(grad, *values)


def _run_node_hooks(node, grad):
    """Run the hooks of the tensor that ``node`` produced; ``retain_grad`` ones run last."""
    for hook in node.hooks:
        if not getattr(hook, "runs_last", False):
            grad = _call_hook(hook, grad)
    for hook in node.hooks:
        if getattr(hook, "runs_last", False):
            hook(grad)
    return grad


def _call_hook(hook, grad):
    """Call a user hook with the gradient as a Tensor; a returned value replaces the gradient."""
    result = hook(grad if isinstance(grad, Tensor) else Tensor._make(grad))
    if result is None:
        return grad
    if isinstance(grad, Tensor):
        replacement = result if isinstance(result, Tensor) else Tensor._make(np.asarray(result))
    else:
        replacement = np.asarray(result._data if isinstance(result, Tensor) else result)
    if replacement.shape != grad.shape:
        raise RuntimeError(f"hook {hook!r} returned a gradient of shape {replacement.shape}, "
                           f"expected {grad.shape}")
    return replacement


_leaf_hooks = {}        # id(leaf Tensor) -> its hooks in registration order, until it is freed


class RemovableHandle:
    """What ``register_hook`` returns: ``handle.remove()`` unregisters the hook."""

    __slots__ = ("hooks", "hook")

    def __init__(self, hooks, hook):
        self.hooks, self.hook = hooks, hook

    def remove(self):
        if self.hook in self.hooks:
            self.hooks.remove(self.hook)


def register_hook(tensor, hook):
    """Call ``hook(grad)`` whenever the gradient of ``tensor`` is computed (see Tensor.register_hook)."""
    if not tensor.requires_grad:
        raise RuntimeError("cannot register a hook on a tensor that does not require grad")
    if tensor.grad_fn is None:
        if id(tensor) not in _leaf_hooks:
            _leaf_hooks[id(tensor)] = []
            weakref.finalize(tensor, _leaf_hooks.pop, id(tensor), None)
        hooks = _leaf_hooks[id(tensor)]
    else:
        if tensor.grad_fn.hooks is None:
            tensor.grad_fn.hooks = []
        hooks = tensor.grad_fn.hooks
    hooks.append(hook)
    return RemovableHandle(hooks, hook)


def _seed_gradient(tensor, gradient, create_graph=False):
    """The gradient a backward starts from: ones for a one-element tensor, else ``gradient``."""
    if not isinstance(tensor, Tensor):
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
        return Tensor._make(grad) if create_graph else grad
    if isinstance(gradient, Tensor) and create_graph:
        grad = gradient
    else:
        grad = np.asarray(gradient._data if isinstance(gradient, Tensor) else gradient)
    if grad.shape != tensor._data.shape:
        raise ShapeMismatchError(
            f"backward(): gradient has shape {grad.shape} but the tensor has shape "
            f"{tensor._data.shape}; they must match.")
    if grad.dtype != tensor._data.dtype:
        grad = grad.astype(tensor._data.dtype)
    return Tensor._make(grad) if create_graph and not isinstance(grad, Tensor) else grad


def _as_list(tensors):
    return [tensors] if isinstance(tensors, Tensor) else list(tensors)


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
    _run_backward(tensors, seeds, retain_graph, create_graph)


def grad(outputs, inputs, grad_outputs=None, retain_graph=None, create_graph=False,
         allow_unused=False):
    """Return d(outputs)/d(inputs) without touching any ``.grad`` (as ``torch.autograd.grad``).

    With ``create_graph=True`` the returned gradients are differentiable (higher-order
    derivatives); ``retain_graph`` defaults to ``create_graph``.

    >>> x = Tensor([3.0], dtype=np.float64, requires_grad=True)
    >>> (dy,) = grad(x ** 3, x, create_graph=True)    # 3x^2 = 27
    >>> (d2y,) = grad(dy, x)                            # 6x = 18
    """
    outputs, inputs = _as_list(outputs), _as_list(inputs)
    for i, t in enumerate(inputs):
        if not isinstance(t, Tensor) or not t.requires_grad:
            raise RuntimeError(f"grad(): input {i} does not require grad")
    if retain_graph is None:
        retain_graph = create_graph
    seeds = _seeds(outputs, grad_outputs, create_graph, "grad")
    sinks = _run_backward(outputs, seeds, retain_graph, create_graph, inputs=inputs)
    results = []
    for i, t in enumerate(inputs):
        g = sinks[id(t)]
        if g is None and not allow_unused:
            raise RuntimeError(f"grad(): input {i} was not used to compute the outputs; pass "
                               f"allow_unused=True to get None for it")
        results.append(g)
    return tuple(results)


# --------------------------------------------------------------------------------------------
# Gradient checking
# --------------------------------------------------------------------------------------------

class GradcheckError(AssertionError):
    """Raised by :func:`gradcheck` when analytic and numerical gradients disagree."""


def _as_tuple(inputs):
    return tuple(inputs) if isinstance(inputs, (list, tuple)) else (inputs,)


def numerical_gradients(fn, inputs, eps=1e-6):
    """Central differences ``(f(x + eps) - f(x - eps)) / 2eps`` of sum(fn(*inputs)*w) per input.

    Returns, for each input, d/d(input) of ``sum(fn(*inputs) * weights)`` where ``weights`` is a
    fixed random tensor (so a non-scalar output is checked in every direction at once), together
    with those weights.
    """
    inputs = _as_tuple(inputs)
    with no_grad():
        out = fn(*inputs)
    weights = np.random.default_rng(0).standard_normal(np.shape(out._data))
    grads = []
    for x in inputs:
        if not isinstance(x, Tensor):
            grads.append(None)
            continue
        grad = np.zeros(x._data.shape, dtype=np.float64)
        flat, gflat = x._data.flat, grad.reshape(-1)        # .flat writes through any layout
        for i in range(x._data.size):
            original = flat[i]
            with no_grad():
                flat[i] = original + eps
                plus = float(np.sum(fn(*inputs)._data * weights))
                flat[i] = original - eps
                minus = float(np.sum(fn(*inputs)._data * weights))
            flat[i] = original
            gflat[i] = (plus - minus) / (2 * eps)
        grads.append(grad)
    return grads, weights


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3):
    """Check ``fn``'s backward against central finite differences in float64.

    ``inputs`` is a Tensor or a sequence of float64 Tensors; those with ``requires_grad`` are
    checked. Returns True, or raises :class:`GradcheckError` naming the input and the worst
    element.

    >>> x = Tensor(np.random.randn(3, 4), dtype=np.float64, requires_grad=True)
    >>> gradcheck(lambda t: (t * t).sum(axis=1), [x])
    True
    """
    inputs = _as_tuple(inputs)
    checked = [x for x in inputs if isinstance(x, Tensor) and x.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input Tensor has requires_grad=True")
    for i, x in enumerate(checked):
        if x.dtype != np.float64:
            raise ValueError(f"gradcheck: input {i} is {x.dtype}; finite differences need "
                             f"float64 inputs (Tensor(..., dtype=np.float64))")
    numeric, weights = numerical_gradients(fn, inputs, eps)
    numeric = [g for x, g in zip(inputs, numeric) if isinstance(x, Tensor) and x.requires_grad]
    saved = [x.grad for x in checked]
    for x in checked:
        x.grad = None
    try:
        out = fn(*inputs)
        if out.requires_grad:                # else fn ignores its inputs: its gradient is zero
            out.backward(weights.astype(out.dtype))
        analytic = [np.zeros(x.shape) if x.grad is None else x.grad._data for x in checked]
    finally:
        for x, g in zip(checked, saved):
            x.grad = g
    for i, (a, n) in enumerate(zip(analytic, numeric)):
        if a.shape != n.shape:
            raise GradcheckError(f"gradcheck: input {i}: gradient shape {a.shape} != {n.shape}")
        if not np.allclose(a, n, atol=atol, rtol=rtol):
            worst = np.unravel_index(np.argmax(np.abs(a - n)), a.shape) if a.ndim else ()
            raise GradcheckError(
                f"gradcheck: input {i}: analytic and numerical gradients differ; worst at "
                f"index {worst}: analytic {a[worst]!r} vs numerical {n[worst]!r}\n"
                f"analytic:\n{a}\nnumerical:\n{n}")
    return True


def gradgradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3):
    """Check second derivatives: :func:`gradcheck` of the first derivatives of ``fn``.

    The first derivatives (for fixed random output weights) are computed with
    ``create_graph=True``, so their own gradient comes from the rules running on Tensors.

    >>> gradgradcheck(lambda t: (t ** 3).sum(), [Tensor([0.5, 2.0], dtype=np.float64, requires_grad=True)])
    True
    """
    inputs = _as_tuple(inputs)
    with no_grad():
        out = fn(*inputs)
    weights = Tensor._make(np.random.default_rng(1).standard_normal(np.shape(out._data)))

    def first_derivatives(*xs):
        with enable_grad():
            wrt = [x for x in xs if isinstance(x, Tensor) and x.requires_grad]
            grads = grad(fn(*xs), wrt, grad_outputs=weights.astype(out.dtype),
                         create_graph=True, allow_unused=True)
            flat = [(g if g is not None else Tensor._make(np.zeros(x.shape, x.dtype))).reshape(-1)
                    for g, x in zip(grads, wrt)]
            from tinytorch.core.tensor import concatenate
            return concatenate(flat)

    return gradcheck(first_derivatives, inputs, eps, atol, rtol)


# The op table (every Function subclass, forward and gradient side by side) lives in ops.py.
from tinytorch.core.ops import *  # noqa: E402,F401,F403
from tinytorch.core.ops import __all__ as _ops_all  # noqa: E402
from tinytorch.core.functional import *  # noqa: E402,F401,F403
from tinytorch.core.functional import __all__ as _functional_all  # noqa: E402

__all__ = [
    "Function", "run_op", "backward", "grad", "unbroadcast", "gradcheck", "GradcheckError",
    "numerical_gradients", "no_grad", "enable_grad", "set_grad_enabled", "is_grad_enabled",
    "enable_autograd", "detect_anomaly", "gradgradcheck", "register_hook", "RemovableHandle",
    "FunctionCtx", "note_inplace",
] + list(_ops_all) + list(_functional_all)
