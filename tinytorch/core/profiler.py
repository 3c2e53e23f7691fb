"""The profiler's side of the engine: what ``tinytorch.profiler.profile()`` records, and how.

While a profile block is open (``state.active``), :func:`record_op` runs each op, times it and
hands it to every open :class:`Recording`; each backward pass gets a :class:`WalkTimeline` that
times each node the walk runs (from the moment the walk takes it up to the next one). When no
block is open the engine pays one attribute check per op (``run_op``) and one test of a local
variable per node (the walk): nothing else of this module runs. (Nodes also have a slot for
weak references, which lets a recording notice a graph dropped without backward.)

Graph memory: the bytes the recorded nodes keep alive for backward. A node keeps its inputs'
arrays, its saved output and the arrays it stores on itself (a softmax's probabilities, im2col
columns, a dropout mask...). The rules of the count:

- an array is counted as the memory it keeps alive: a view counts as the array that owns its
  memory (``base``), so a reshape of a saved array adds nothing;
- each array counts once, at the first node that keeps it while no other recorded node does
  (``Event.saved_bytes``); later nodes that keep it add nothing;
- parameters (leaf tensors with ``requires_grad=True``) and views of them are not graph
  memory: they exist without a graph, and are counted apart (``parameter_bytes``); other leaves
  a node keeps (the input batch, masks) are graph memory; Python numbers an op takes (``x *
  3.0``, kept as cached 0-d arrays) are not;
- an array stops being live when every recorded node that kept it has released it (backward
  without ``retain_graph`` releases a node as it runs it) or is gone (a graph dropped without
  backward); ``peak`` is the most bytes live at once.

This module imports no other tinytorch module by name (tensors are recognised by their
``_data`` array), so the engine can import it first.
"""

import functools
import threading
import time
import weakref
from dataclasses import dataclass

import numpy as np

from tinytorch.core.inplace import _storage


class _ProfilerState:
    """``active`` is True while at least one profile block records (read by ``run_op``)."""

    def __init__(self):
        self.active = False
        self.recordings = []        # the open Recordings, oldest first


state = _ProfilerState()
_thread = threading.local()         # .inside: this thread is running an op being recorded
clock = time.perf_counter


@dataclass(slots=True)
class Event:
    """One record of a profile.

    ``phase`` is ``"forward"`` for an op (run by ``run_op`` or a custom ``Function.apply``) or
    ``"backward"`` for a node the walk ran (``"AccumulateGrad"``: adding the gradients into the
    leaves' ``.grad`` at the end of ``backward()``). Times are in seconds, ``start`` counted from
    the moment the profile block opened; byte counts follow the rules of the module docstring.
    """
    name: str                   # the op's class name, e.g. "MatmulBackward" (forward and backward)
    phase: str                  # "forward" or "backward"
    start: float                # seconds since the block opened
    duration: float             # seconds
    thread: int                 # threading.get_ident() of the thread that ran it
    shape: tuple = None         # forward: the output's shape
    input_shapes: tuple = ()    # forward: each input's shape (None for a number)
    output_bytes: int = 0       # forward: bytes of the output array
    saved_bytes: int = 0        # forward: graph bytes this op's node keeps that no node kept yet
    freed_bytes: int = 0        # backward: graph bytes that stopped being live when it ran
    live_bytes: int = 0         # graph bytes live right after this event
    recorded: bool = False      # forward: a graph node was recorded (grad mode on, an input
                                # requiring grad)


# ----- called by the engine ---------------------------------------------------------------------

def records_op():
    """Whether the op starting now is recorded: not when it runs inside an op being recorded
    (a custom Function's forward runs ops of its own, which are part of it)."""
    return not getattr(_thread, "inside", False)


def record_op(run, op, inputs, params, name=None):
    """``run(op, *inputs, **params)`` (the engine's ``run_op`` or a custom Function's apply),
    timed and handed to every open recording."""
    _thread.inside = True
    start = clock()
    try:
        result = run(op, *inputs, **params)
    finally:
        _thread.inside = False
    end = clock()
    name = name or op.__name__
    for recording in list(state.recordings):
        recording.op_ran(name, inputs, result, start, end)
    return result


def walk_timeline():
    """A timeline for the backward pass starting now (the engine's gradient sink keeps it)."""
    return WalkTimeline(list(state.recordings))


class WalkTimeline:
    """Times the nodes of one backward pass for the recordings open when it started.

    ``node_starts(node)`` closes the previous node's interval and opens this one's: a node's
    time is everything the walk does for it (hooks, checks, its rule, passing the gradients on,
    releasing what it saved). ``accumulation_starts()`` times the delivery into ``.grad``;
    ``ends()`` closes the last interval. If the walk raises, the node that raised is not
    recorded.
    """

    __slots__ = ("recordings", "node", "start", "walks", "thread")

    def __init__(self, recordings):
        self.recordings = recordings
        self.node = None
        self.start = clock()
        self.thread = threading.get_ident()
        self.walks = [recording.walk_started(self.start, self.thread) for recording in recordings]

    def node_starts(self, node):
        now = clock()
        if self.node is not None:
            self._close(now)
        self.node, self.start = node, now

    def accumulation_starts(self):
        self.node_starts(_ACCUMULATE)

    def ends(self):
        if self.node is not None:
            self._close(clock())
            self.node = None

    def _close(self, now):
        node = self.node
        name = "AccumulateGrad" if node is _ACCUMULATE else node_name(node)
        for recording, walk in zip(self.recordings, self.walks):
            walk[1] = now
            recording.node_ran(name, node, self.start, now, self.thread)


_ACCUMULATE = object()      # stands for the delivery into .grad at the end of backward()


def node_name(node):
    """``MulBackward``, or ``CubeBackward`` for a custom Function ``Cube``."""
    return repr(node)[1:-1]


# ----- one profile block's records ---------------------------------------------------------------

class Recording:
    """The events and graph memory of one profile block (see the module docstring)."""

    def __init__(self):
        self.events = []
        self.walks = []              # [start, end, thread] of each backward pass (clock() times)
        self.memory = GraphMemory()
        self.origin = clock()
        self.closed_at = None

    def op_ran(self, name, inputs, result, start, end):
        data = getattr(result, "_data", None)
        node = getattr(result, "grad_fn", None)
        self.memory.note_parameters(inputs)
        saved = self.memory.hold(node) if node is not None else 0
        self.events.append(Event(
            name, "forward", start - self.origin, end - start, threading.get_ident(),
            shape=None if data is None else data.shape,
            input_shapes=tuple(getattr(getattr(t, "_data", None), "shape", None) for t in inputs),
            output_bytes=0 if data is None else data.nbytes, saved_bytes=saved,
            live_bytes=self.memory.live, recorded=node is not None))

    def walk_started(self, start, thread):
        walk = [start, start, thread]
        self.walks.append(walk)
        return walk

    def node_ran(self, name, node, start, end, thread):
        if self.closed_at is not None:            # closed while the backward pass ran
            return
        freed = 0 if node is _ACCUMULATE else self.memory.ran(node)
        self.events.append(Event(name, "backward", start - self.origin, end - start, thread,
                                 freed_bytes=freed, live_bytes=self.memory.live))

    def close(self):
        """Stop: sort the events by start, fix the parameter and gradient bytes, forget the
        graph (nothing of it is kept alive or watched after the block)."""
        self.closed_at = clock()
        self.events.sort(key=lambda e: e.start)
        self.memory.close()


class GraphMemory:
    """Live graph bytes of the nodes recorded in one block (rules: the module docstring).

    ``held`` maps id(storage) to [storage, number of unreleased recorded nodes keeping it]: the
    reference keeps the id from being reused while it is counted. ``nodes`` maps id(node) to a
    weak reference (to notice a node that dies unreleased) and the ids of what it keeps.
    """

    def __init__(self):
        self.held = {}
        self.nodes = {}
        self.parameters = {}        # id(tensor) -> weak reference, for every parameter seen
        self.parameter_storages = {}   # id(storage) -> weak reference, to tell views of them
        self.live = self.peak = 0
        self.final = None           # (parameter_bytes, gradient_bytes), fixed by close()

    def note_parameters(self, inputs):
        for t in inputs:
            if _is_parameter_tensor(t) and id(t) not in self.parameters:
                self.parameters[id(t)] = weakref.ref(t)
                storage = _storage(t._data)
                self.parameter_storages[id(storage)] = weakref.ref(storage)

    def _is_parameter(self, storage):
        ref = self.parameter_storages.get(id(storage))
        return ref is not None and ref() is storage

    def hold(self, node):
        """Count what ``node`` keeps; returns the bytes no recorded node kept before."""
        entry = self.nodes.get(id(node))
        if entry is not None and entry[0]() is node:
            return 0                  # a custom Function that returned an input's history
        new, kept = 0, []
        for storage in _storages(node):
            if self._is_parameter(storage):
                continue
            entry = self.held.get(id(storage))
            if entry is None:
                self.held[id(storage)] = [storage, 1]
                new += storage.nbytes
            else:
                entry[1] += 1
            kept.append(id(storage))
        self.live += new
        self.peak = max(self.peak, self.live)
        self.nodes[id(node)] = (weakref.ref(node, functools.partial(self._died, id(node))), kept)
        return new

    def ran(self, node):
        """Backward ran ``node``: if it released what it saved, what it no longer keeps stops
        counting for it. Returns the bytes that stopped being live."""
        entry = self.nodes.get(id(node))
        if entry is None or entry[0]() is not node or node.saved_tensors is not None:
            return 0                               # not recorded here, or retain_graph
        still = {id(s) for s in _storages(node)}
        kept = [key for key in entry[1] if key in still]
        freed = self._let_go([key for key in entry[1] if key not in still])
        self.nodes[id(node)] = (entry[0], kept)
        return freed

    def _died(self, key, _ref):
        entry = self.nodes.pop(key, None)
        if entry is not None:
            self._let_go(entry[1])

    def _let_go(self, keys):
        freed = 0
        for key in keys:
            entry = self.held.get(key)
            if entry is None:
                continue
            entry[1] -= 1
            if entry[1] == 0:
                del self.held[key]
                freed += entry[0].nbytes
        self.live -= freed
        return freed

    def parameter_bytes(self):
        """Bytes of the parameters the block's ops used, and of their ``.grad`` arrays."""
        if self.final is not None:
            return self.final
        parameters = [ref() for ref in self.parameters.values()]
        parameters = [t for t in parameters if t is not None]
        grads = [t._grad._data for t in parameters if getattr(t, "_grad", None) is not None]
        return _distinct_bytes(t._data for t in parameters), _distinct_bytes(grads)

    def close(self):
        self.final = self.parameter_bytes()
        self.held, self.nodes, self.parameters, self.parameter_storages = {}, {}, {}, {}


# ----- what a node keeps ------------------------------------------------------------------------

_NODE_FIELDS = frozenset(("saved_tensors", "needs_input_grad", "output_data", "hooks", "trace",
                          "seq", "__weakref__", "__dict__", "ctx", "fn_cls"))


@functools.cache
def _attribute_slots(cls):
    """The slots a node class adds to Function's (where ops keep arrays: ``probs``, ``cols``)."""
    names = []
    for c in cls.__mro__:
        slots = c.__dict__.get("__slots__", ())
        names += [slots] if isinstance(slots, str) else list(slots)
    return tuple(n for n in dict.fromkeys(names) if n not in _NODE_FIELDS)


def _arrays_in(value, nested=True):
    """The arrays of a saved value: an array, a tensor's array, or those in a tuple or list."""
    if isinstance(value, np.ndarray):
        yield value
    elif isinstance(getattr(value, "_data", None), np.ndarray):
        yield value._data
    elif nested and isinstance(value, (tuple, list)):
        for item in value:
            yield from _arrays_in(item, nested=False)


def _storages(node):
    """The distinct arrays owning the memory ``node`` keeps (see the module docstring)."""
    values = [t for t in node.saved_tensors or () if not _is_number(t)]
    values.append(node.output_data)
    values += [getattr(node, name, None) for name in _attribute_slots(type(node))]
    values += list(getattr(node, "__dict__", {}).values())
    ctx = getattr(node, "ctx", None)             # a custom Function: what it saved on ctx
    if ctx is not None:
        values += list(ctx.saved_tensors) + list(vars(ctx).values())
    storages = {}
    for value in values:
        for array in _arrays_in(value):
            storage = _storage(array)
            storages[id(storage)] = storage
    return storages.values()


def _is_number(value):
    """A Python number given to an op, which it keeps as a 0-d array (shared through a cache
    of constants, alive without the graph)."""
    return isinstance(value, np.ndarray) and value.ndim == 0 or isinstance(value, (int, float))


def _is_parameter_tensor(value):
    """A leaf tensor that requires grad (tensors are recognised by their ``_data`` array)."""
    return (isinstance(getattr(value, "_data", None), np.ndarray) and value.grad_fn is None
            and value.requires_grad)


def _distinct_bytes(arrays):
    return sum({id(s): s.nbytes for s in map(_storage, arrays)}.values())


__all__ = ["Event"]
