"""The switch ``tinytorch.compile`` turns on while it records a function (see compile.py).

While ``state.recording`` is true, the engine tells ``state.recorder`` about every op it runs
and every node backward runs, and the operations a recording cannot replay (reading a
tensor's values in Python, in-place edits, hooks...) report themselves with :func:`note`. The
engine pays one attribute check per op and per node for this; nothing else when not recording.
"""

import functools


class _TracingState:
    def __init__(self):
        self.recording = False
        self.recorder = None


state = _TracingState()


def note(operation):
    """Report that ``operation`` (e.g. ``"t.item()"``) ran: a recording cannot replay it."""
    if state.recording:
        state.recorder.cannot_replay(operation)


def replayed_as_a_call(function):
    """Decorate a function or method that changes state outside the graph (an optimizer's
    ``step`` and ``zero_grad``, ``clip_grad_norm``): a recording keeps it as one call, which the
    replay makes again; nothing inside it is recorded."""
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        if not state.recording:
            return function(*args, **kwargs)
        state.recorder.record_call(function, args, kwargs)
        state.recording = False
        try:
            return function(*args, **kwargs)
        finally:
            state.recording = True
    return wrapper


__all__ = ["note", "replayed_as_a_call"]
