"""``tinytorch.profiler``: time and graph memory per op, measured inside the engine (module 14).

``with profile() as prof:`` records every op run inside the block (forward) and every node a
backward pass runs, with the bytes each node keeps alive for backward: the computation graph's
memory. ``prof.table()`` aggregates them per op type (as ``torch.profiler``'s
``key_averages().table()``), ``prof.summary()`` gives the totals, ``prof.events`` the raw
records and ``prof.export_chrome_trace(path)`` a trace for chrome://tracing or Perfetto.

>>> import tinytorch as tt
>>> from tinytorch.profiler import profile
>>> model = tt.Sequential(tt.Linear(64, 128), tt.ReLU(), tt.Linear(128, 10))
>>> x, y = tt.randn(32, 64), tt.Tensor([i % 10 for i in range(32)])
>>> with profile() as prof:
...     tt.CrossEntropyLoss()(model(x), y).backward()
>>> print(prof.table())          # one row per op type: calls, times, output and saved bytes
>>> print(prof.summary())        # graph memory = 1.1x parameter memory; backward took ...

What is counted (details in :mod:`tinytorch.core.profiler`):

- Times are spent inside the engine: an op's forward from ``run_op``'s start to its end; a
  node's backward is everything the walk does for it; ``AccumulateGrad`` is the adding of the
  gradients into the leaves' ``.grad``. Python code between ops (module calls, loops, the
  optimizer's update) is in neither; ``summary().wall_time`` is the whole block.
- Graph memory (``saved`` bytes) is what the recorded nodes keep alive for backward, each array
  counted once, at the first node that keeps it; parameters are counted apart. The peak is the
  most graph bytes alive at once during the block: nodes free theirs as backward runs them.
- Blocks may be nested or overlap: each records what runs while it is open, independently
  (its graph memory counts the nodes recorded inside it). An exception inside a block closes
  it as usual and propagates; what ran before it stays recorded (an op or node that raised is
  not). A profile object records one block.
- Ops run inside a custom Function's forward are part of that op; ops that gradient rules run
  for ``create_graph=True`` are recorded as ops (of the new graph) and their time counts as
  backward time.
"""

import bisect
import json
import os
import threading
from dataclasses import dataclass

from tinytorch.core import profiler as _recorder
from tinytorch.core.profiler import Event, state as _state

SORT_KEYS = ("total_time", "forward_time", "backward_time", "calls", "nodes", "output_bytes",
             "saved_bytes", "name")


class profile:
    """Context manager recording the ops and backward nodes run inside it (see the module).

    >>> with profile() as prof:
    ...     loss = (x @ w).relu().sum()
    ...     loss.backward()
    >>> prof.summary().peak_saved_bytes      # bytes the graph kept alive for backward
    """

    def __init__(self):
        self._recording = None

    def __enter__(self):
        if self._recording is not None:
            raise RuntimeError("this profile object already recorded a block; create a new "
                               "profile() for each block")
        self._recording = _recorder.Recording()
        _state.recordings.append(self._recording)
        _state.active = True
        return self

    def __exit__(self, *exc_info):
        if self._recording in _state.recordings:
            _state.recordings.remove(self._recording)
        _state.active = bool(_state.recordings)
        self._recording.close()
        return False

    @property
    def recording(self):
        """True while the block is open."""
        return self._recording is not None and self._recording.closed_at is None

    @property
    def events(self):
        """The raw records (:class:`~tinytorch.core.profiler.Event`), in order of start."""
        return sorted(self._records().events, key=lambda e: e.start)

    def key_averages(self):
        """One :class:`OpStats` per op type (the rows of :meth:`table`), in order of first use."""
        stats = {}
        for e in self.events:
            row = stats.get(e.name) or stats.setdefault(e.name, OpStats(e.name))
            if e.phase == "forward":
                row.calls += 1
                row.forward_time += e.duration
                row.output_bytes += e.output_bytes
                row.saved_bytes += e.saved_bytes
            else:
                row.nodes += 1
                row.backward_time += e.duration
        return list(stats.values())

    def table(self, sort_by="total_time", row_limit=None):
        """The per-op table as text, with aligned columns and a totals row.

        ``sort_by``: one of ``total_time`` (default), ``forward_time``, ``backward_time``,
        ``calls``, ``nodes``, ``output_bytes``, ``saved_bytes`` (largest first) or ``name``;
        ``row_limit`` keeps the first rows only.
        """
        if sort_by not in SORT_KEYS:
            raise ValueError(f"table(sort_by={sort_by!r}): sort by one of {', '.join(SORT_KEYS)}")
        if row_limit is not None and (not isinstance(row_limit, int) or isinstance(row_limit, bool)
                                      or row_limit < 0):
            raise ValueError(f"table(row_limit={row_limit!r}): give a number of rows >= 0, or None")
        rows = self.key_averages()
        total = OpStats("Total", *(sum(getattr(r, f) for r in rows) for f in _SUMMED))
        if sort_by == "name":
            rows.sort(key=lambda r: r.name)
        else:
            rows.sort(key=lambda r: getattr(r, sort_by), reverse=True)
        rows = rows[:row_limit] if row_limit is not None else rows
        everything = total.total_time or 1.0
        cells = [[r.name, str(r.calls), format_time(r.forward_time), str(r.nodes),
                  format_time(r.backward_time), format_time(r.total_time),
                  f"{100 * r.total_time / everything:.1f}%", format_bytes(r.output_bytes),
                  format_bytes(r.saved_bytes)] for r in rows + [total]]
        return _aligned(_COLUMNS, cells)

    def summary(self):
        """The totals of the block (:class:`ProfileSummary`); ``str()`` of it reads as two lines."""
        recording = self._records()
        events = recording.events
        walks = [(start - recording.origin, end - recording.origin, thread)
                 for start, end, thread in recording.walks]
        forward = [e for e in events if e.phase == "forward"]
        spans = _backward_spans(walks)
        forward_time = sum(e.duration for e in forward if not _inside(e, spans))
        parameter_bytes, gradient_bytes = recording.memory.parameter_bytes()
        end = recording.closed_at if recording.closed_at is not None else _recorder.clock()
        return ProfileSummary(
            forward_time=forward_time, backward_time=_union_length(spans),
            wall_time=end - recording.origin, parameter_bytes=parameter_bytes,
            gradient_bytes=gradient_bytes, saved_bytes=sum(e.saved_bytes for e in forward),
            peak_saved_bytes=recording.memory.peak, ops=len(forward),
            nodes=sum(1 for e in events if e.phase == "backward" and e.name != "AccumulateGrad"),
            backward_passes=len(walks))

    def chrome_trace(self):
        """The events in the Chrome trace event format (a dict; see :meth:`export_chrome_trace`).

        Each op and node is a complete event (``"ph": "X"``, microseconds) on its thread's
        track, each backward pass a span around its nodes, and the live graph bytes a counter
        track (``"ph": "C"``).
        """
        recording = self._records()
        pid = os.getpid()
        threads = {}
        trace = [{"name": "process_name", "ph": "M", "pid": pid, "tid": 0,
                  "args": {"name": "tinytorch"}}]

        def tid(ident):
            if ident not in threads:
                threads[ident] = len(threads)
                trace.append({"name": "thread_name", "ph": "M", "pid": pid,
                              "tid": threads[ident], "args": {"name": _thread_name(ident)}})
            return threads[ident]

        for start, end, thread in recording.walks:
            trace.append({"name": "backward pass", "cat": "backward", "ph": "X", "pid": pid,
                          "tid": tid(thread), "ts": _us(start - recording.origin),
                          "dur": _us(end - start), "args": {}})
        for e in self.events:
            if e.phase == "forward":
                args = {"shape": _listed(e.shape),
                        "input_shapes": [_listed(shape) for shape in e.input_shapes],
                        "output_bytes": e.output_bytes, "saved_bytes": e.saved_bytes,
                        "recorded": e.recorded}
            else:
                args = {"freed_bytes": e.freed_bytes}
            trace.append({"name": e.name, "cat": e.phase, "ph": "X", "pid": pid,
                          "tid": tid(e.thread), "ts": _us(e.start), "dur": _us(e.duration),
                          "args": args})
            trace.append({"name": "graph memory", "ph": "C", "pid": pid,
                          "ts": _us(e.start + e.duration), "args": {"live bytes": e.live_bytes}})
        return {"traceEvents": trace, "displayTimeUnit": "ms"}

    def export_chrome_trace(self, path):
        """Write :meth:`chrome_trace` as JSON to ``path`` (open it in chrome://tracing or
        https://ui.perfetto.dev)."""
        with open(path, "w") as f:
            json.dump(self.chrome_trace(), f)

    def _records(self):
        if self._recording is None:
            raise RuntimeError("this profile has recorded nothing yet: use it as "
                               "'with profile() as prof: ...'")
        return self._recording


@dataclass
class OpStats:
    """The totals of one op type in a profile (a row of ``profile.table()``); times in seconds."""
    name: str
    calls: int = 0                  # forward runs
    forward_time: float = 0.0
    nodes: int = 0                  # nodes of this op type run by backward
    backward_time: float = 0.0
    output_bytes: int = 0
    saved_bytes: int = 0            # graph bytes its nodes were the first to keep

    @property
    def total_time(self):
        return self.forward_time + self.backward_time


_SUMMED = ("calls", "forward_time", "nodes", "backward_time", "output_bytes", "saved_bytes")
_COLUMNS = ("Op", "Calls", "Forward", "Nodes", "Backward", "Total", "Total %", "Output",
            "Saved")


@dataclass
class ProfileSummary:
    """The totals of a profile block. Times in seconds, memory in bytes.

    ``forward_time``: time inside ops, outside backward passes; ``backward_time``: time inside
    backward passes (nodes and the adding into ``.grad``); ``wall_time``: the whole block.
    ``parameter_bytes``: the parameters (leaves requiring grad) the block's ops used;
    ``gradient_bytes``: their ``.grad`` arrays when the block closed; ``saved_bytes``: all the
    graph bytes the block's nodes kept, ``peak_saved_bytes``: the most alive at once.
    """
    forward_time: float
    backward_time: float
    wall_time: float
    parameter_bytes: int
    gradient_bytes: int
    saved_bytes: int
    peak_saved_bytes: int
    ops: int
    nodes: int
    backward_passes: int

    @property
    def backward_forward_ratio(self):
        """backward_time / forward_time (None without forward time)."""
        return self.backward_time / self.forward_time if self.forward_time else None

    @property
    def graph_parameter_ratio(self):
        """peak_saved_bytes / parameter_bytes (None without parameters)."""
        return self.peak_saved_bytes / self.parameter_bytes if self.parameter_bytes else None

    def __str__(self):
        ratio = self.graph_parameter_ratio
        memory = (f"graph memory = {ratio:.1f}x parameter memory" if ratio is not None
                  else "graph memory (no parameters were used)")
        speed = self.backward_forward_ratio
        if not self.backward_passes:
            timing = "no backward pass ran"
        elif speed is None:
            timing = "backward ran, with no forward op in the block"
        else:
            timing = f"backward took {speed:.1f}x forward"
        outside = max(self.wall_time - self.forward_time - self.backward_time, 0.0)
        return (f"{memory}; {timing}\n"
                f"  memory: graph peak {format_bytes(self.peak_saved_bytes)} kept for backward "
                f"({format_bytes(self.saved_bytes)} in all), parameters "
                f"{format_bytes(self.parameter_bytes)}, gradients "
                f"{format_bytes(self.gradient_bytes)}\n"
                f"  time: forward {format_time(self.forward_time)} in {self.ops} ops, backward "
                f"{format_time(self.backward_time)} in {self.nodes} nodes and AccumulateGrad, "
                f"{format_time(outside)} outside both; {format_time(self.wall_time)} in the "
                f"block")


# ----- formatting ---------------------------------------------------------------------------------

def format_time(seconds):
    """``0.000123`` -> ``'123.0 us'``, ``0.0123`` -> ``'12.30 ms'``, ``1.5`` -> ``'1.500 s'``."""
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} us"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.3f} s"


def format_bytes(n):
    """``512`` -> ``'512 B'``, ``2048`` -> ``'2.0 KiB'``, ``3 * 2**20`` -> ``'3.0 MiB'``."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def _aligned(header, rows):
    """Text table: the first column left-aligned, the others right-aligned, a dashed rule under
    the header and above the last row (the totals)."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells):
        return "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths)))

    rule = "  ".join("-" * w for w in widths)
    body = [line(r) for r in rows]
    return "\n".join([line(header), rule, *body[:-1], rule, body[-1]])


def _listed(shape):
    return list(shape) if shape is not None else None


def _us(seconds):
    return round(seconds * 1e6, 3)


def _thread_name(ident):
    for thread in threading.enumerate():
        if thread.ident == ident:
            return thread.name
    return f"thread {ident}"


def _backward_spans(walks):
    """Per thread, the time the backward passes ``(start, end, thread)`` cover, as sorted
    disjoint spans (a pass run from a hook inside another merges with it):
    ``{thread: ([start, ...], [end, ...])}``."""
    spans = {}
    for start, end, thread in sorted(walks, key=lambda walk: (walk[2], walk[0])):
        starts, ends = spans.setdefault(thread, ([], []))
        if ends and start <= ends[-1]:
            ends[-1] = max(ends[-1], end)
        else:
            starts.append(start)
            ends.append(end)
    return spans


def _inside(event, spans):
    """Whether ``event`` ran inside a backward pass of its thread (create_graph rules); a
    binary search in :func:`_backward_spans`."""
    starts, ends = spans.get(event.thread, ((), ()))
    i = bisect.bisect_right(starts, event.start) - 1
    return i >= 0 and event.start <= ends[i]


def _union_length(spans):
    """Total time covered by the backward passes, per thread (see :func:`_backward_spans`)."""
    return sum(end - start for starts, ends in spans.values() for start, end in zip(starts, ends))


def __getattr__(name):
    if name == "Profiler":                  # module 14's class, importing the layers it knows
        from tinytorch.perf.profiling import Profiler
        return Profiler
    raise AttributeError(f"module 'tinytorch.profiler' has no attribute {name!r}")


__all__ = ["profile", "Profiler", "ProfileSummary", "OpStats", "Event", "format_bytes",
           "format_time"]
