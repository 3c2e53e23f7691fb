"""``tinytorch.compile``: record a training step once, then replay it without the eager engine.

The eager engine pays for its flexibility on every op: a Tensor and a graph node per op, a heap
and per-edge checks in backward, in-place bookkeeping, hooks. For a step that runs the same
ops on same-shaped data again and again, most of that work is the same every time.
``compile(fn)`` runs ``fn`` eagerly once per *signature* (the shapes, dtypes and
``requires_grad`` of its Tensor arguments, the values of its other arguments, the grad mode)
while recording what it does:

- every op ``run_op`` runs: the op object, which of the recorded values are its inputs, its
  parameters; each op's object is kept as the kernel whose ``forward`` and ``gradient`` the
  replay calls (so replayed numbers are eager's numbers, bit for bit);
- every ``backward()``: the order in which the walk ran the nodes, where each input gradient
  went (summed back to its input's shape, cast to its dtype, added to a waiting gradient or to
  a leaf's total), and how the totals were delivered into ``.grad``;
- the calls that change state outside the graph and are replayed as calls: an optimizer's
  ``step()`` and ``zero_grad()``, ``Module.zero_grad()``, ``clip_grad_norm``.

From the record it writes one straight-line Python function (``compiled.code(...)`` shows it):
``v3 = K2(v1, v2)`` for each op, ``(g4, g5) = R7(g9, v1, v2)`` for each rule, sums in the
order the engine made them, values dropped after their last use. What depends only on the
signature is decided while writing it: a gradient summed back to its input's shape is written
as the sums it needs (``t5.sum(axis=0)``), small op methods and the one-line helpers they call
are copied in with shapes and types folded (``inlining.py``), a gradient for a leaf whose
``.grad`` the function has just set to None is assigned without the accumulation checks, and
integer class targets are checked by their range only. Later calls with the same signature run
that function on the new arguments' arrays: no Tensor or node objects, no heap, no per-edge
checks; the call itself checks the signature and, in one generated expression, that the
tensors read from outside kept their shapes, dtypes and ``requires_grad``. Parameters and
other tensors the function reads but does not take as arguments are read when the replay
runs, so optimizer updates and ``p.data = ...`` between calls are seen.

Honest limits, as with ``jax.jit``: Python control flow that depends on tensor values, and any
other Python state read while recording (a Python number from a global, an attribute of your
own object), is baked into the recording; so are NumPy arrays turned into Tensors inside the
function (copied when recording: later changes to the array are not seen) and a module
attribute rebound to a new Tensor. Guarded per call, at a cost of the arguments and modules
(never of the ops): the ``training`` flag of each module the function reaches by name whose
``forward`` reads it (a change records again), arguments that are (or were, when recording)
tensors the function reads by name, the same tensor passed twice, floats by their bits.
Operations a recording cannot replay are detected while recording; the function then runs
eagerly for that signature (correct, just not faster), with a one-time warning naming the
operation: reading values in Python (``.item()``, ``.numpy()``, ``.tolist()``, ``.data``,
``float(t)``, ``bool(t)``, printing a tensor, NumPy functions that are not operators),
assigning ``t.data``, in-place edits of tensors, boolean-mask selection (``x[x > 0]``),
reading ``p.grad`` as a value, a tensor made in the function that requires or receives a
gradient (``tt.zeros(n, requires_grad=True)``, ``x.detach().requires_grad_()``), changing an
optimizer's hyper-parameters inside the function, hooks, ``retain_grad()``, random numbers
drawn outside an op (``tt.randn`` inside the function), custom ``Function`` s,
``autograd.grad()``, ``create_graph``, and returning anything but Tensors and ``None``
(nested in tuples, lists or dicts). A recorded function runs eagerly under anomaly mode, in a
profiler block, while another compiled function records (it records these ops), and when a
leaf it delivers gradients to has a hook. A recording belongs to its thread: other threads'
ops run eagerly and stay out of it. Replayed results that are Tensors carry no graph
(``grad_fn`` is None); call ``backward()`` inside the function.

>>> model = tt.Sequential(tt.Linear(4, 8), tt.ReLU(), tt.Linear(8, 3))
>>> optimizer = tt.SGD(model.parameters(), lr=0.1)
>>> @tt.compile
... def step(x, y):
...     optimizer.zero_grad()
...     loss = tt.CrossEntropyLoss()(model(x), y)
...     loss.backward()
...     optimizer.step()
...     return loss
>>> loss = step(x, y)       # records (eager), then every call with same-shaped x, y replays
"""

import builtins
import collections
import functools
import inspect
import itertools
import os
import re
import sys
import threading
import time
import types
import warnings

import numpy as np

from tinytorch import inlining
from tinytorch.core import autograd, hooks as _hooks, inplace
from tinytorch.core.functional import _class_indices
from tinytorch.core.tensor import Tensor
from tinytorch.core.grad_mode import state as _grad_mode
from tinytorch.core.profiler import state as _profiler_state
from tinytorch.core.tracing import recording_here, state as _tracing
from tinytorch.core.anomaly import state as _anomaly_state

__all__ = ["compile", "CompiledFunction"]


def compile(fn=None, *, cache_size=8):
    """Record ``fn`` once per signature and replay the record on later calls (see the module's
    docstring). Use as ``compile(fn)``, ``@compile`` or ``@compile(cache_size=16)``.

    ``cache_size`` recordings are kept, the least recently used dropped first. A function
    whose signature keeps changing (typically a NumPy array argument, which is part of the
    signature by its values: pass a Tensor instead) would record on every call; after
    ``cache_size`` recordings dropped that way it warns once and runs eagerly from then on.
    """
    if fn is None:
        return functools.partial(compile, cache_size=cache_size)
    if not callable(fn):
        raise TypeError(f"compile() needs a function, got {type(fn).__name__}")
    if isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 1:
        raise ValueError(f"compile(): cache_size must be a positive int, got {cache_size!r}")
    return CompiledFunction(fn, cache_size)


class CompiledFunction:
    """What :func:`compile` returns: call it like the function it wraps.

    ``recordings`` counts the recordings made, ``replays`` the calls replayed; ``code(*args)``
    is the Python source of the replay for those arguments' signature (for reading), and
    ``record_seconds`` the time each recording took.
    """

    def __init__(self, fn, cache_size):
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.cache_size = cache_size
        self._signature = inspect.signature(fn)
        parameters = self._signature.parameters.values()
        self._positional = (len(self._signature.parameters) if all(
            p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in parameters) else -1)
        self._cache = collections.OrderedDict()        # signature key -> _Replay or _Eager
        self._warned = set()
        self._dropped = 0                              # recordings dropped from a full cache
        self._varied = set()                           # what differed: "shapes", "values"
        self.recordings = 0
        self.replays = 0
        self.record_seconds = []

    def __call__(self, *args, **kwargs):
        arguments = self._arguments(args, kwargs)
        key = _signature_key(arguments)
        if key is None:
            self._warn("an argument that is neither a Tensor nor a hashable value")
            return self.fn(*args, **kwargs)
        cache = self._cache
        entry = cache.get(key)
        if entry is not None:
            if len(cache) > 1:
                cache.move_to_end(key)
            if entry.__class__ is _Replay:
                if (_tracing.recording or _anomaly_state.enabled or _profiler_state.active
                        or _hooks.leaf_hooks):
                    if self._runs_eagerly_now(entry, arguments):
                        return self.fn(*args, **kwargs)
                if entry.guards_hold():
                    tensors = arguments if entry.flat else _tensors_in(arguments, [])
                    if entry.arguments_fit(tensors):
                        self.replays += 1
                        return entry.function(tensors)
            elif entry.__class__ is _Eager:
                return self.fn(*args, **kwargs)
        return self._record(key, arguments, args, kwargs)

    @staticmethod
    def _runs_eagerly_now(entry, arguments):
        """Whether a call that has a recording must still run eagerly: inside another compiled
        function's recording (which must see its ops), in anomaly mode or a profiler block
        (both watch the ops), or when a leaf the replay delivers to has a hook now."""
        if recording_here() or _anomaly_state.enabled or _profiler_state.active:
            return True
        if _hooks.leaf_hooks:
            hooked = _hooks.leaf_hooks
            return any(id(t) in hooked for t in entry.leaves) or any(
                id(t) in hooked for t in _tensors_in(arguments, []))
        return False

    def _record(self, key, arguments, args, kwargs):
        if (_tracing.recording or _anomaly_state.enabled or _profiler_state.active
                or self._dropped > self.cache_size):
            return self.fn(*args, **kwargs)   # nested or another thread records, eager modes, thrashing
        start = time.perf_counter()
        recorder = _Recorder(arguments, _reachable(self.fn))
        _tracing.recorder, _tracing.recording = recorder, True
        try:
            with _watching_tensors(recorder):
                result = self.fn(*args, **kwargs)
        finally:
            _tracing.recording, _tracing.recorder = False, None
        entry = recorder.finish(result)
        self.recordings += 1
        self.record_seconds.append(time.perf_counter() - start)
        if isinstance(entry, _Eager):
            self._warn(entry.reason)
        self._cache[key] = entry
        if len(self._cache) > self.cache_size:
            dropped, _ = self._cache.popitem(last=False)
            self._dropped += 1
            self._varied.add(_what_varied(dropped, key))
            if self._dropped > self.cache_size:
                reasons = []
                if "shapes" in self._varied:
                    reasons.append(f"its Tensor arguments came in more shapes (or dtypes) than "
                                   f"cache_size={self.cache_size} keeps: raise cache_size")
                if "values" in self._varied:
                    reasons.append("a NumPy array or Python number argument changed (they are "
                                   "part of the signature by their values): pass a Tensor")
                warnings.warn(
                    f"tinytorch.compile: {self.fn.__name__} was recorded {self.recordings} times "
                    f"for as many signatures; it runs eagerly from now on. "
                    f"{'; '.join(reasons)[:1].upper()}{'; '.join(reasons)[1:]}.", RuntimeWarning, stacklevel=_user_frame())
        return result

    def _warn(self, reason):
        if reason not in self._warned:
            self._warned.add(reason)
            warnings.warn(f"tinytorch.compile: {self.fn.__name__} runs eagerly for this signature "
                          f"because it uses {reason}, which a recording cannot replay",
                          RuntimeWarning, stacklevel=_user_frame())

    def code(self, *args, **kwargs):
        """The source of the replay for these arguments' signature (None if it runs eagerly)."""
        entry = self._cache.get(_signature_key(self._arguments(args, kwargs)))
        return entry.source if isinstance(entry, _Replay) else None

    def _arguments(self, args, kwargs):
        """Every parameter's value, in order (keywords and defaults bound)."""
        if not kwargs and len(args) == self._positional:
            return args
        bound = self._signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return tuple(bound.arguments.values())


_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _user_frame():
    """The ``stacklevel`` of a warning issued here that names the first caller outside the
    tinytorch package: the line that called the compiled function (or the Trainer)."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    return level


def _signature_key(arguments):
    """What a recording depends on besides values: shapes, dtypes, requires_grad of the
    Tensors, which Tensors (or arrays) are the same object, the other arguments' values, the
    grad mode. None when an argument is unhashable."""
    parts = [_grad_mode.enabled]
    ids = []
    for value in arguments:
        if value.__class__ is Tensor:                         # the common case, first
            data = value._data
            parts.append((data.shape, data.dtype, value.requires_grad))
            ids.append(id(value))
            ids.append(id(data))
            continue
        part = _value_key(value, ids)
        if part is None:
            return None
        parts.append(part)
    if len(ids) > 2 and len(set(ids)) != len(ids):           # aliases: the same tensor twice
        first = {}
        parts.append(("aliases", tuple(first.setdefault(i, n) for n, i in enumerate(ids))))
    return tuple(parts)


def _value_key(value, ids):
    if isinstance(value, Tensor):
        ids.append(id(value))
        ids.append(id(value._data))
        return (value._data.shape, value._data.dtype, value.requires_grad)
    if isinstance(value, (float, np.floating)):               # -0.0 is not 0.0, NaN is NaN
        return ("F", type(value).__name__, float(value).hex())
    if isinstance(value, (complex, np.complexfloating)):
        return ("F", type(value).__name__, value.real.hex(), value.imag.hex())
    if isinstance(value, (tuple, list)):
        parts = tuple(_value_key(v, ids) for v in value)
        return None if None in parts else (type(value).__name__, parts)
    if isinstance(value, dict):
        parts = tuple((k, _value_key(v, ids)) for k, v in value.items())
        return None if any(p is None for _, p in parts) else ("dict", parts)
    if isinstance(value, np.ndarray):
        return ("A", value.shape, value.dtype.str, value.tobytes())
    try:
        hash(value)
    except TypeError:
        return None
    return ("V", type(value).__name__, value)


def _what_varied(old, new):
    """``"shapes"`` if two signature keys differ in their Tensors' shapes, dtypes or
    requires_grad only, else ``"values"`` (a NumPy array or other value argument)."""
    if len(old) != len(new):
        return "values"
    for a, b in zip(old[1:], new[1:]):
        if a != b and (isinstance(a[0], str) or isinstance(b[0], str)):
            return "values"
    return "shapes"


def _tensors_in(value, found):
    """The Tensors inside an argument, in a fixed order (recording and replay agree on it)."""
    if isinstance(value, Tensor):
        found.append(value)
    elif isinstance(value, (tuple, list)):
        for v in value:
            _tensors_in(v, found)
    elif isinstance(value, dict):
        for v in value.values():
            _tensors_in(v, found)
    return found


class _Eager:
    """A signature whose recording met something it cannot replay: run it eagerly."""

    def __init__(self, reason):
        self.reason = reason


class _CannotReplay(Exception):
    """Raised while writing the replay for a structure it cannot express."""


# ----- recording ----------------------------------------------------------------------------------

class _Recorder:
    """Writes the replay function while the eager run goes on (see the module docstring).

    Every array the run produces or reads gets a name: ``T[i]`` are the argument Tensors,
    ``a<i>`` their arrays, ``v<n>`` op outputs, ``g<n>``/``t<n>`` gradients, ``E<n>`` Tensors
    the function reads without taking them as arguments (``e<n>`` their arrays, read at first
    use and again after each replayed call, which may replace them), ``C<n>`` constants,
    ``K<n>``/``R<n>`` the ops' forward and gradient methods.
    """

    def __init__(self, arguments, reachable=((), (), ())):
        self.inputs = _tensors_in(arguments, [])
        self.arguments = arguments
        self.thread = threading.get_ident()     # the recording thread: others are not recorded
        self.paused = 0              # > 0 inside a call replayed as a call
        self.fresh = set()           # id(Tensor) made while recording (kept in fresh_objects)
        self.fresh_objects = []
        self.grad_reads = set()      # id(Tensor) the function got by reading some t.grad
        tensors, self.modules, self.optimizers = reachable
        self.hyper = _hyper_parameters(self.optimizers)
        reachable_ids = {id(t) for t in tensors}
        self.same_objects = [(i, t) for i, t in enumerate(self.inputs) if id(t) in reachable_ids]
        self.lines = []
        self.env = {"_asarray": np.asarray, "_deliver": _deliver, "Tensor": Tensor}
        self.names = {}              # id(Tensor or array) -> its name in the replay
        self.constants = {}          # id(constant) -> its name
        self.kept = []               # everything named, so that no id is reused while recording
        self.counter = itertools.count()
        self.externals = {}          # id(Tensor) -> (name, tensor)
        self.fresh_reads = set()     # external names whose array variable is current
        self.guards = []             # (tensor, shape, dtype, requires_grad) of external Tensors
        self.no_grad_yet = set()     # id(Tensor) whose ._grad the replay has just set to None
        self.reason = None
        self.backward = None         # the walk being recorded
        self.inliner = inlining.Inliner(self._constant)
        for i, t in enumerate(self.inputs):
            self._name(t, f"T[{i}]")
            self._name(t._data, f"a{i}")
            self.lines.append(f"a{i} = T[{i}]._data")

    # names ------------------------------------------------------------------------------------
    def _name(self, obj, name):
        self.names[id(obj)] = name
        self.kept.append(obj)
        return name

    def _new(self, prefix):
        return f"{prefix}{next(self.counter)}"

    def _constant(self, value):
        name = self.constants.get(id(value))
        if name is None:
            name = self.constants[id(value)] = self._new("C")
            self.env[name] = value
            self.kept.append(value)
        return name

    def listening(self):
        """Whether what the engine reports now belongs to the recording: it runs in the
        recording thread, outside a call replayed as a call."""
        return not self.paused and threading.get_ident() == self.thread

    def _tensor(self, t):
        """The name of a Tensor object in the replay (an argument or an external)."""
        name = self.names.get(id(t))
        if name is not None and not name[0] in "vgt":
            return name
        if id(t) in self.grad_reads:
            self.cannot_replay("a gradient read from .grad inside the function (as a value)")
        elif id(t) in self.fresh:
            self.cannot_replay("a tensor made inside the function without an op that requires "
                               "or receives a gradient (tt.zeros(..., requires_grad=True), "
                               "detach().requires_grad_(), a new layer)")
        if id(t) not in self.externals:
            name = self._new("E")
            self.externals[id(t)] = (name, t)
            self.env[name] = t
            self.guards.append((t, t._data.shape, t._data.dtype, t.requires_grad))
            self.kept.append(t)
        return self.externals[id(t)][0]

    def _array_of(self, t):
        """The name of a Tensor's array in the replay."""
        if id(t) in self.grad_reads:
            return self._tensor(t)               # cannot be replayed
        name = self.names.get(id(t._data))
        if name is not None and (name in self.fresh_reads or not name.startswith("e")):
            return name
        if id(t) in self.fresh and not t.requires_grad and id(t) not in self.grad_reads:
            return self._constant(t._data)       # made in the function from constants
        tensor_name = self._tensor(t)
        if tensor_name.startswith("T["):
            return self.names[id(t._data)]
        array_name = "e" + tensor_name[1:]
        self.lines.append(f"{array_name} = {tensor_name}._data")
        self.fresh_reads.add(array_name)
        self._name(t._data, array_name)
        return array_name

    def _value(self, x):
        """The name of an op's input or parameter value (arrays, Tensors, constants)."""
        if isinstance(x, Tensor):
            return self._array_of(x)
        if isinstance(x, np.ndarray):
            name = self.names.get(id(x))
            return name if name is not None else self._constant(x)
        if isinstance(x, tuple):
            inner = [self._value(v) for v in x]
            return "(" + "".join(f"{v}, " for v in inner) + ")"
        return self._constant(x)

    def _param(self, x):
        """A parameter of an op: a Tensor parameter (a buffer an op updates, e.g. batch norm's
        running statistics) is passed as the Tensor itself, not as its array."""
        if isinstance(x, Tensor):
            if id(x) in self.names and self.names[id(x)][0] == "v":
                raise _CannotReplay("a tensor computed in the function as an op's parameter")
            return self._tensor(x)
        return self._value(x)

    # what the engine reports ---------------------------------------------------------------------
    def cannot_replay(self, operation):
        if self.reason is None and self.listening():
            self.reason = operation

    def record_op(self, node, inputs, params, result):
        if self.reason is not None or not self.listening():
            return
        if _selects_by_mask(params.get("key")):
            self.cannot_replay("indexing with a boolean mask (x[mask]: its shape depends on the "
                               "values)")
            return
        try:
            values = [self._value(x) for x in inputs]
            keywords = {k: self._param(v) for k, v in params.items()}
        except _CannotReplay as error:
            self.cannot_replay(str(error))
            return
        out = self._new("v")
        if _checks_class_targets(node, inputs):
            self.env["_class_targets"] = _class_targets
            self.lines.append(f"{out} = _class_targets({', '.join(values)})")
            self._name(result, out)
            self._name(result._data, out)
            return
        try:
            facts = {i: (x._data if isinstance(x, Tensor) else x) for i, x in enumerate(inputs)}
            facts.update(params)
            lines, call = self.inliner.inline(node.forward, node, values, keywords, facts)
            self.lines.extend(lines)
        except inlining.NotInlinable:
            kernel = self._new("K")
            self.env[kernel] = node.forward
            call = f"{kernel}({', '.join(values + [f'{k}={v}' for k, v in keywords.items()])})"
        self.lines.append(f"{out} = _asarray({call})" if result._data.ndim == 0 else
                          f"{out} = {call}")
        self._name(result, out)
        self._name(result._data, out)
        self.kept.append(node)

    def record_call(self, function, args, kwargs):
        """A call that changes state outside the graph (an optimizer's step...): replayed as a
        call, after which every external array is read again."""
        self._check_hyper_parameters()
        if self.reason is not None:
            return
        name = self._new("F")
        self.env[name] = functools.partial(function, *args, **kwargs)
        self.lines.append(f"{name}()")
        self.fresh_reads.clear()
        self.no_grad_yet.clear()

    def _check_hyper_parameters(self):
        if self.optimizers and _hyper_parameters(self.optimizers) != self.hyper:
            self.cannot_replay("a change of an optimizer's hyper-parameters (lr...) inside the "
                               "function (change them between calls)")

    def seed_cast(self, gradient, seed):
        """backward(gradient) made its seed from ``gradient`` (a cast, an array of a list)."""
        if self.reason is not None:
            return
        name = self._value(gradient)
        cast = "" if np.asarray(gradient._data if isinstance(gradient, Tensor) else gradient
                                ).dtype == seed.dtype else f".astype({self._constant(seed.dtype)})"
        out = self._new("v")
        self.lines.append(f"{out} = _asarray({name}){cast}")
        self._name(seed, out)

    def grad_assigned(self, tensor, value):
        if not self.listening():
            return
        if value is not None:
            self.cannot_replay("an assignment to .grad")
        elif self.reason is None:
            self.lines.append(f"{self._tensor(tensor)}._grad = None")
            self.no_grad_yet.add(id(tensor))

    def begin_backward(self, roots, seeds, retain_graph, create_graph, sink):
        if not self.listening():
            return
        if create_graph:
            self.cannot_replay("backward(create_graph=True)")
        if self.reason is not None:
            return
        self.backward = _WalkRecord(self, sink)
        self.backward.seed(roots, seeds)

    def record_node(self, node, grad, input_grads):
        if self.reason is None and self.backward is not None and self.listening():
            try:
                self.backward.node(node, grad, input_grads)
            except _CannotReplay as error:
                self.cannot_replay(str(error))

    def end_backward(self, sink):
        if not self.listening():
            return
        if self.reason is None and self.backward is not None:
            self.backward.deliver()
        self.backward = None

    # the result ------------------------------------------------------------------------------
    def finish(self, result):
        self._check_hyper_parameters()
        if self.reason is None:
            try:
                returned = self._returned(result)
            except _CannotReplay as error:
                self.cannot_replay(str(error))
        if self.reason is not None:
            return _Eager(self.reason)
        body = _drop_dead_values(self.lines + [f"return {returned}"])
        source = "def replay(T):\n" + "".join(f"    {line}\n" for line in body)
        namespace = dict(self.env)
        exec(builtins.compile(source, "<tinytorch.compile replay>", "exec"), namespace)
        flat = all(a.__class__ is Tensor for a in self.arguments)     # T is the arguments
        leaves = [t for _, t in self.externals.values() if t.requires_grad]
        return _Replay(namespace["replay"], source, self.guards, flat, leaves,
                       [t for _, t in self.externals.values()], self.same_objects,
                       [(m, m.training) for m in self.modules if _reads_training(m)],
                       len(self.inputs))

    def _returned(self, value):
        if value is None:
            return "None"
        if isinstance(value, Tensor):
            name = self.names.get(id(value))
            if (name is None and id(value) in self.fresh and not value.requires_grad
                    and id(value) not in self.grad_reads):
                return f"Tensor._make({self._array_of(value)}.copy())"
            if name is None:
                name = self._tensor(value)
            if name.startswith("v"):
                return f"Tensor._make({name})"
            return name
        if isinstance(value, (tuple, list)):
            inner = "".join(f"{self._returned(v)}, " for v in value)
            return f"({inner})" if isinstance(value, tuple) else f"[{inner}]"
        if isinstance(value, dict):
            return "{" + ", ".join(f"{k!r}: {self._returned(v)}" for k, v in value.items()) + "}"
        raise _CannotReplay(f"returning a {type(value).__name__} (return Tensors or None)")


def _from_user_code(depth=2):
    """Whether the caller ``depth`` frames up is outside the tinytorch package."""
    return not sys._getframe(depth).f_globals.get("__name__", "").startswith("tinytorch.")


class _watching_tensors:
    """While recording, what the engine does not report is watched on the Tensor class:
    ``t.data`` read or assigned by the user's code (not tinytorch's), ``t.grad`` read by it,
    every Tensor made (so that one made in the function without an op is not taken for a
    tensor from outside), and the seed ``backward(gradient)`` makes from its argument."""

    def __init__(self, recorder):
        self.recorder = recorder

    def __enter__(self):
        recorder = self.recorder
        self.saved = {name: Tensor.__dict__[name] for name in ("data", "grad", "_make", "__init__")}
        self.seed_gradient = autograd._seed_gradient
        data, grad = self.saved["data"], self.saved["grad"]
        make, init = self.saved["_make"].__func__, self.saved["__init__"]
        fresh, fresh_objects, grad_reads = (recorder.fresh, recorder.fresh_objects,
                                            recorder.grad_reads)

        def read_data(tensor):
            if _from_user_code() and recorder.listening():
                recorder.cannot_replay("t.data (a tensor's values)")
            return tensor._data

        def write_data(tensor, value):
            if _from_user_code() and recorder.listening():
                recorder.cannot_replay("t.data = ... (replacing a tensor's values)")
            data.fset(tensor, value)

        def read_grad(tensor):
            value = tensor._grad
            if value is not None and _from_user_code() and recorder.listening():
                grad_reads.add(id(value))
                fresh_objects.append(value)
            return value

        def made(tensor):
            if recorder.listening():
                fresh.add(id(tensor))
                fresh_objects.append(tensor)

        def new_make(cls, array, grad_fn=None):
            tensor = make(cls, array, grad_fn)
            made(tensor)
            return tensor

        def new_init(tensor, *args, **kwargs):
            init(tensor, *args, **kwargs)
            made(tensor)

        def seed_gradient(tensor, gradient, create_graph=False):
            seed = self.seed_gradient(tensor, gradient, create_graph)
            if (gradient is not None and not create_graph and recorder.listening()
                    and seed is not (gradient._data if isinstance(gradient, Tensor) else gradient)):
                recorder.seed_cast(gradient, seed)
            return seed

        Tensor.data = property(read_data, write_data, doc=data.__doc__)
        Tensor.grad = property(read_grad, grad.fset, doc=grad.__doc__)
        Tensor._make = classmethod(new_make)
        Tensor.__init__ = new_init
        autograd._seed_gradient = seed_gradient

    def __exit__(self, *exc_info):
        for name, value in self.saved.items():
            setattr(Tensor, name, value)
        autograd._seed_gradient = self.seed_gradient
        return False


def _selects_by_mask(key):
    """Whether an index key holds a boolean mask (the result's shape depends on its values)."""
    if isinstance(key, tuple):
        return any(_selects_by_mask(k) for k in key)
    return isinstance(key, np.ndarray) and key.dtype == np.bool_ and key.ndim > 0


def _reads_training(module):
    """Whether a module's own code reads a ``training`` flag (dropout, batch norm...): its
    ``forward`` or any method its class defines (``Module``'s own ``train``/``eval`` aside)."""
    from tinytorch.core.layers import Module
    for klass in type(module).__mro__:
        if klass is Module or klass is object:
            continue
        for value in vars(klass).values():
            code = getattr(getattr(value, "__func__", value), "__code__", None)
            if code is not None and "training" in _names_in(code):
                return True
    return False


def _names_in(code):
    """The global and attribute names ``code`` and the functions nested in it use."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _names_in(const)
    return names


def _hyper_parameters(optimizers):
    """The optimizers' hyper-parameters (each group's entries but its parameters)."""
    return [[(k, v) for k, v in group.items() if k != "params"]
            for optimizer in optimizers for group in optimizer.param_groups]


def _reachable(fn, depth=4):
    """``(tensors, modules, optimizers)`` that ``fn`` can read by name: through its closure,
    the globals its code names and its ``self``, then the same for the functions those are,
    the items of lists, tuples and dicts and the attributes of other objects, up to ``depth``
    steps; then into the Modules' parameters and buffers and the optimizers' parameters. A
    recording guards on these: an argument that is one of them must be it again, a module's
    ``training`` flag must not change, an optimizer's hyper-parameters must not change inside
    the function."""
    from tinytorch.core.layers import Module
    from tinytorch.core.optimizers import Optimizer
    tensors, modules, optimizers, seen = [], [], [], set()
    frontier = [(fn, 0)]
    while frontier:
        obj, level = frontier.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, Tensor):
            tensors.append(obj)
        elif isinstance(obj, Module):
            for m in obj.modules():
                if id(m) not in seen or m is obj:
                    seen.add(id(m))
                    modules.append(m)
            tensors.extend(obj.parameters())
            tensors.extend(b for _, b in obj.named_buffers() if isinstance(b, Tensor))
        elif isinstance(obj, Optimizer):
            optimizers.append(obj)
            tensors.extend(p for g in obj.param_groups for p in g["params"])
        elif level < depth:
            frontier.extend((child, level + 1) for child in _named_by(obj))
    return tensors, modules, optimizers


def _named_by(obj):
    """What ``obj`` gives access to by name: a function's closure and the globals its code
    names, a bound method's ``self`` and function, a small container's items, another object's
    attributes (not those of modules, classes or NumPy arrays)."""
    if isinstance(obj, (types.FunctionType, types.MethodType)):
        function = getattr(obj, "__func__", obj)
        found = [getattr(obj, "__self__", None)]
        names, code = function.__globals__, function.__code__
        found += [names[n] for n in _names_in(code) if n in names]
        for cell in function.__closure__ or ():
            try:
                found.append(cell.cell_contents)
            except ValueError:                      # a cell not yet filled
                pass
        return found
    if isinstance(obj, dict):
        return list(obj.values()) if len(obj) < 256 else []
    if isinstance(obj, (list, tuple, set, frozenset)):
        return list(obj) if len(obj) < 256 else []
    if isinstance(obj, (types.ModuleType, type, np.ndarray)) or not hasattr(obj, "__dict__"):
        return []
    return list(vars(obj).values())


class _WalkRecord:
    """One ``backward()`` as the engine walked it, written as straight-line code.

    It follows the engine's walk (``autograd._run_backward``) node by node: the gradient each
    node received, its rule, and where each input gradient went, in the same order, so the
    sums are the same sums.
    """

    def __init__(self, recorder, sink):
        self.r = recorder
        self.sink = sink
        self.pending = {}            # node -> name of its summed gradient so far
        self.totals = {}             # id(leaf) -> [leaf, name of its total, owned]

    def seed(self, roots, seeds):
        for root, grad in zip(roots, seeds):
            name = self.r.names.get(id(grad)) or self.r._constant(grad)
            node = root.grad_fn
            if node is None:
                if root.requires_grad:
                    self._to_leaf(root, name, borrowed=True)
            elif node in self.pending:
                total = self.r._new("g")
                self.r.lines.append(f"{total} = {self.pending[node]} + {name}")
                self.pending[node] = total
            else:
                self.pending[node] = name

    def node(self, node, grad, input_grads):
        if node.hooks is not None:
            raise _CannotReplay("a hook or retain_grad() on a tensor of the graph")
        if not node.fresh_gradients or _overrides_apply(type(node)):
            raise _CannotReplay(f"the user-defined op {type(node).__name__}")
        incoming = self.pending.pop(node)
        saved = [t._data if isinstance(t, Tensor) else t for t in node.saved_tensors]
        if node.saves_output:
            saved.append(node.output_data)
        values = [self.r._value(v) for v in saved]
        if len(input_grads) != len(node.saved_tensors):
            raise _CannotReplay(f"{type(node).__name__} returning a gradient per input")
        outputs = [self.r._new("t") if g is not None else "_" for g in input_grads]
        try:
            lines, results = self.r.inliner.inline(node.gradient, node, [incoming] + values, {},
                                                   dict(enumerate([grad] + saved)))
            if [r is None for r in results] != [g is None for g in input_grads]:
                raise inlining.NotInlinable("its gradients differ from the recording's")
            self.r.lines.extend(lines)
            self.r.lines.extend(f"{o} = {r}" for o, r in zip(outputs, results) if r is not None)
        except inlining.NotInlinable:
            rule = self.r._new("R")
            self.r.env[rule] = node.gradient
            self.r.lines.append(f"({''.join(o + ', ' for o in outputs)}) = "
                                f"{rule}({', '.join([incoming] + values)})")
        for t, g, name in zip(node.saved_tensors, input_grads, outputs):
            if g is None or not isinstance(t, Tensor):
                continue
            data = t._data
            if g.shape != data.shape:
                self.r.lines.append(f"{name} = {_unbroadcast_code(name, g.shape, data.shape)}")
                g = autograd.unbroadcast(g, data.shape)
            if g.dtype != data.dtype:
                self.r.lines.append(f"{name} = {name}.astype({self.r._constant(data.dtype)})")
                g = g.astype(data.dtype)
            parent, requires_grad = t.grad_fn, t.requires_grad
            if inplace.log.rebases:
                parent, requires_grad = inplace.history_seen_by(node, t)
            if parent is None:
                if requires_grad:
                    borrowed = (g is grad or not node.fresh_gradients
                                or getattr(g, "base", None) is not None)
                    self._to_leaf(t, name, borrowed)
            elif parent in self.pending:
                total = self.r._new("g")
                self.r.lines.append(f"{total} = {self.pending[parent]} + {name}")
                self.pending[parent] = total
            else:
                self.pending[parent] = name

    def _to_leaf(self, leaf, name, borrowed):
        entry = self.totals.get(id(leaf))
        if entry is None:
            self.totals[id(leaf)] = [leaf, name, not borrowed]
            return
        total = self.r._new("g")
        self.r.lines.append(f"{total} = {entry[1]} + {name}")
        entry[1], entry[2] = total, True

    def deliver(self):
        for leaf, name, owned in self.totals.values():
            if _hooks.leaf_hooks and id(leaf) in _hooks.leaf_hooks:
                self.r.cannot_replay("a hook on a leaf tensor (register_hook)")
                return
            tensor = self.r._tensor(leaf)
            if id(leaf) in self.r.no_grad_yet:         # .grad is None: _deliver would wrap it
                self.r.no_grad_yet.discard(id(leaf))
                total = name if owned else f"{name}.copy()"
                self.r.lines.append(f"{tensor}._grad = Tensor._make({total})")
            else:
                self.r.lines.append(f"_deliver({tensor}, {name}, {owned})")


def _unbroadcast_code(name, grad_shape, shape):
    """``autograd.unbroadcast(name, shape)`` for a gradient of ``grad_shape``, written out: the
    same sums, with the decisions (which axes, whether a scalar comes out) taken now, since
    both shapes are fixed for the recording's signature."""
    code, extra = name, len(grad_shape) - len(shape)
    if extra < 0:                                 # the engine reports this shape as an error
        raise _CannotReplay("a gradient of the wrong shape")
    if extra:
        code = f"{code}.sum(axis={0 if extra == 1 else tuple(range(extra))!r})"
        if not shape:                             # summed to a NumPy scalar: keep an array
            code = f"_asarray({code})"
        grad_shape = grad_shape[extra:]
    stretched = tuple([i for i, n in enumerate(shape) if n == 1 and grad_shape[i] != 1])
    if stretched:
        code = f"{code}.sum(axis={stretched!r}, keepdims=True)"
    return code


def _overrides_apply(cls):
    """Whether an op class replaces Function.apply (then only apply knows its rule)."""
    owner = next(c for c in cls.__mro__ if "apply" in c.__dict__)
    return owner is not autograd.Function


def _deliver(leaf, total, owned):
    """Add a replayed gradient total into ``leaf.grad``, as the engine's sink delivers it."""
    if not owned:
        total = total.copy()
    elif not isinstance(total, np.ndarray):
        total = np.asarray(total)
    current = leaf._grad
    if current is None:
        leaf._grad = Tensor._make(total)
    elif current.grad_fn is not None or not current._data.flags.writeable:
        leaf._grad = current + total
    else:
        np.add(current._data, total, out=current._data)


def _checks_class_targets(node, inputs):
    """Whether an op validates integer class targets for (N, C) logits (cross-entropy's)."""
    if node.__class__ is not autograd._NumpyCall or node.function is not _class_indices:
        return False
    target, shape = inputs[0], inputs[1]
    data = target._data if isinstance(target, Tensor) else target
    return (isinstance(data, np.ndarray) and data.dtype.kind in "iu" and len(shape) == 2
            and data.shape == (shape[0],))


def _class_targets(target, logits_shape, name):
    """``functional._class_indices`` in a replay: the targets' shape and integer dtype are the
    recording's (the signature and the guards fix them), so only their range is checked, by
    two reductions; out of range, ``_class_indices`` itself raises its error."""
    if target.size and (target.min() < 0 or target.max() >= logits_shape[1]):
        _class_indices(target, logits_shape, name)
    return target.astype(np.intp)


def _drop_dead_values(lines):
    """``del`` each local array after its last use, so the replay holds no more memory than
    the eager run (whose nodes free their saved values as backward passes them)."""
    last_use = {}
    for i, line in enumerate(lines):
        for word in _words(line):
            last_use[word] = i
    result = []
    for i, line in enumerate(lines):
        result.append(line)
        assigned = _assigned(line)
        dead = sorted({w for w in _words(line) if last_use.get(w) == i and w[0] in "vgte"
                      and w not in assigned and not line.startswith("return")})
        if dead:
            result.append("del " + ", ".join(dead))
    return result


_VALUE_NAME = re.compile(r"\b[vgtea]\d+\b")


def _words(line):
    """The local value names a line of the replay mentions."""
    return _VALUE_NAME.findall(line)


def _assigned(line):
    left, sep, _ = line.partition(" = ")
    return set(_words(left)) if sep else set()


class _Replay:
    """A recording: the replay function, its source, and what it assumed of the tensors it
    reads without taking them as arguments (checked before each replay)."""

    def __init__(self, function, source, guards, flat=False, leaves=(), externals=(),
                 same_objects=(), modes=(), count=0):
        self.function, self.source = function, source
        self.flat = flat             # the arguments are the Tensors the replay takes, in order
        self.leaves = leaves         # the tensors from outside the replay delivers gradients to
        self.external_ids = frozenset(id(t) for t in externals)
        self.same_objects = same_objects     # (i, tensor): argument i must be that tensor
        self.guards = [[t, t._data, shape, dtype, requires_grad]
                       for t, shape, dtype, requires_grad in guards]
        self.guards_hold = _guard_function(self.guards, self._array_changed, modes)

        self.arguments_fit = _fit_function(self.external_ids, same_objects, count)

    def _array_changed(self, i):
        """Whether external tensor ``i``'s new array has the recorded shape and dtype (then it
        is remembered: an array seen before cannot have changed its shape or dtype)."""
        guard = self.guards[i]
        t, _, shape, dtype, _ = guard
        if t._data.shape != shape or t._data.dtype != dtype:
            return False
        guard[1] = t._data
        return True


def _fit_function(external_ids, same_objects, count):
    """``arguments_fit(tensors)``: whether the argument Tensors stand in the relation to the
    tensors the replay reads from outside that the recording's did: none of those, and the
    one it was where the recording's was one (the function may read it by name too).
    O(arguments): one set lookup per argument, one ``is`` per such position."""
    namespace = {"_external": external_ids}
    tests = []
    for i, t in same_objects:
        namespace[f"s{i}"] = t
        tests.append(f"T[{i}] is s{i}")
    if external_ids:
        tests.extend(f"id(T[{i}]) not in _external" for i in range(count))
    if not tests:
        return lambda tensors: True
    source = "def arguments_fit(T):\n    return " + " and ".join(tests) + "\n"
    exec(builtins.compile(source, "<tinytorch.compile guards>", "exec"), namespace)
    return namespace["arguments_fit"]


def _guard_function(guards, array_changed, modes=()):
    """``guards_hold()``: whether each external tensor still has its recorded shape, dtype and
    requires_grad, and each module the function can reach its recorded ``training`` flag, as
    one generated expression (an array already seen passes with one ``is``)."""
    if not guards and not modes:
        return lambda: True
    namespace = {"_seen": [g[1] for g in guards]}
    tests = []
    for i, (module, training) in enumerate(modes):
        namespace[f"m{i}"] = module
        tests.append(f"m{i}.training is {training!r}")
    for i, (t, _, _, _, requires_grad) in enumerate(guards):
        namespace[f"t{i}"] = t
        tests.append(f"(t{i}._data is _seen[{i}] or _record({i})) "
                     f"and t{i}.requires_grad == {bool(requires_grad)}")
    source = "def guards_hold():\n    return (" + "\n            and ".join(tests) + ")\n"

    def record(i):
        if not array_changed(i):
            return False
        namespace["_seen"][i] = guards[i][1]
        return True

    namespace["_record"] = record
    exec(builtins.compile(source, "<tinytorch.compile guards>", "exec"), namespace)
    return namespace["guards_hold"]
