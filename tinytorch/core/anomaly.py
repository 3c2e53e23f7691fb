"""Anomaly mode: find where a NaN or infinity entered the gradients.

Inside ``detect_anomaly()``, every recorded node keeps the line of user code that created it,
and backward raises at the first node whose rule returns a NaN or infinite gradient, naming
the op, that line, and the first op whose forward output was already non-finite.
"""

import os
import traceback

import numpy as np



class _AnomalyState:
    """When on, nodes remember where they were created and backward checks every gradient."""

    def __init__(self):
        self.enabled = False
        self.first_nonfinite = None     # (op name, creation stack) of the first NaN/inf forward


state = _AnomalyState()


class detect_anomaly:
    """Context manager: backward raises at the first NaN/inf gradient, naming the op and the
    line of user code that created it.

    >>> with detect_anomaly():
    ...     y = (x * 0).log()          # log(0) = -inf: its gradient is inf
    ...     y.sum().backward()          # RuntimeError: LogBackward returned ... created at ...
    """

    def __enter__(self):
        self._previous = state.enabled
        state.enabled = True
        state.first_nonfinite = None
        return self

    def __exit__(self, *exc_info):
        state.enabled = self._previous
        return False


def user_stack():
    """The creation point of a node: the call stack without tinytorch's own frames."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    frames = [f for f in traceback.extract_stack()[:-1]
              if not os.path.abspath(f.filename).startswith(package + os.sep)]
    return "".join(traceback.format_list(frames[-6:]))


def check_finite(node, input_grads):
    """Raise if ``node`` produced a NaN or infinite gradient (anomaly mode)."""
    for i, g in enumerate(input_grads):
        if g is not None and not np.all(np.isfinite(_values(g))):
            kind = "nan" if np.any(np.isnan(_values(g))) else "inf"
            where = getattr(node, "trace", None) or "(unknown: created outside detect_anomaly)\n"
            origin = ""
            if state.first_nonfinite is not None:
                op_name, stack = state.first_nonfinite
                origin = f"The first NaN/inf of the forward pass came from {op_name}, created at:\n{stack}"
            raise RuntimeError(
                f"{type(node).__name__} returned {kind} values in its gradient for input {i}. "
                f"The forward operation was created at:\n{where}{origin}")


def note_nonfinite_output(node, inputs, out):
    """Remember the first op whose output is NaN/inf while its inputs were finite (anomaly mode)."""
    if state.first_nonfinite is None and not np.all(np.isfinite(out)):
        if all(np.all(np.isfinite(x._data)) for x in inputs if hasattr(x, "_data")):
            state.first_nonfinite = (type(node).__name__, node.trace)


def _values(value):
    """The numbers behind a gradient: a Tensor's array (this module imports no Tensor class, so
    that the engine can import it first), or the array itself."""
    return getattr(value, "_data", value)


__all__ = ["detect_anomaly"]
