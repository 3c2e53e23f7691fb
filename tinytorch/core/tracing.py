"""The switch ``tinytorch.compile`` turns on while it records a function (see compiler.py).

While ``state.recording`` is true, the engine tells ``state.recorder`` about every op it runs
and every node backward runs, and the operations a recording cannot replay (reading a
tensor's values in Python, in-place edits, hooks...) report themselves with :func:`note`. The
engine pays one attribute check per op and per node for this; nothing else when not recording.

A recording belongs to the thread that started it: ``state.recording`` is one process-wide
flag (the engine's cheap check), and the recorder ignores what other threads report
(``recorder.listening()``), so their ops run eagerly and stay out of the recording.
"""

import collections.abc
import dis
import functools
import sys


class _TracingState:
    def __init__(self):
        self.recording = False
        self.recorder = None


state = _TracingState()


def note(operation):
    """Report that ``operation`` (e.g. ``"t.item()"``) ran: a recording cannot replay it."""
    if state.recording:
        state.recorder.cannot_replay(operation)


def recording_here():
    """Whether this thread is recording a function now (ops it runs go into the recording)."""
    recorder = state.recorder
    return state.recording and recorder is not None and recorder.listening()


def replayed_as_a_call(function):
    """Decorate a function or method that changes state outside the graph (an optimizer's
    ``step`` and ``zero_grad``, ``clip_grad_norm``): a recording keeps it as one call, which the
    replay makes again; nothing inside it is recorded."""
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        if not state.recording:
            return function(*args, **kwargs)
        recorder = state.recorder
        if recorder is None or not recorder.listening():
            return function(*args, **kwargs)
        name = function.__qualname__
        if any(isinstance(a, collections.abc.Iterator) for a in (*args, *kwargs.values())):
            recorder.cannot_replay(f"an iterator passed to {name} (a replay would find it used "
                                   f"up; pass a list)")
        recorder.record_call(function, args, kwargs)
        recorder.paused += 1
        try:
            result = function(*args, **kwargs)
        finally:
            recorder.paused -= 1
        if result is not None and not _discarded(sys._getframe(1)):
            recorder.cannot_replay(f"the value {name} returns (a replay would return the "
                                   f"recording's value)")
        return result
    return wrapper


def _discarded(frame):
    """Whether the call ``frame`` is making throws its result away (a statement such as
    ``clip_grad_norm(...)`` alone on its line): the next bytecode instruction pops it.
    (``f_lasti`` is the call's offset, or that of its last inline cache entry.)"""
    for instruction in dis.get_instructions(frame.f_code):
        if instruction.offset > frame.f_lasti:
            return instruction.opname == "POP_TOP"
    return False


__all__ = ["note", "recording_here", "replayed_as_a_call"]
