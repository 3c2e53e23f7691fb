"""Grad mode: whether operations record a graph for backward (per thread, as in PyTorch).

``no_grad``, ``enable_grad`` and ``set_grad_enabled`` are context managers and decorators (with
or without parentheses); generator functions keep the mode across each step.

>>> with no_grad():
...     y = x * 2              # no node is recorded: y.requires_grad is False
"""

import functools
import inspect
import threading


class _GradModeState(threading.local):
    """Per-thread switch (as in PyTorch): when off, ops record no graph at all."""
    enabled = True


state = _GradModeState()      # read by run_op for every op


def is_grad_enabled():
    """Return True when operations currently record a graph for backward."""
    return state.enabled


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
        self._previous = state.enabled
        state.enabled = self.mode

    def __exit__(self, *exc_info):
        state.enabled = self._previous
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
        self._previous = state.enabled
        state.enabled = self.mode

    def __enter__(self):
        pass

    def __call__(self, func):
        state.enabled = self._previous
        mode = self.mode
        return _decorate(func, lambda: set_grad_enabled(mode))


def enable_autograd(quiet=True):
    """Kept for TinyTorch compatibility: autograd is built into Tensor and always on.

    Idempotent and silent (``quiet`` is accepted so that curriculum code keeps working; the
    library never prints). It only makes sure graph recording is switched on.
    """
    state.enabled = True


__all__ = ["is_grad_enabled", "no_grad", "enable_grad", "set_grad_enabled", "enable_autograd"]
