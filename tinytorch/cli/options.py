"""Settings of the command line, each parsed, checked and documented in one place.

An :class:`Option` checks a value typed on the command line and the same setting read back
from a checkpoint (untrusted input) against the same types and sane limits, so that no size
reaches an allocation unchecked.
"""

import argparse
import math


class UsageError(ValueError):
    """A bad value of an option: the command exits with status 2 and this message."""


class Option:
    """A setting: config key ``name`` (flag ``--name``, dashes for underscores), its type,
    limits, default and help text.

    ``kind`` is ``int``, ``float`` or ``str``. Ints lie in ``[low, high]``; floats are finite
    and lie between ``low`` and ``high`` (``low_open``/``high_open`` exclude the bound); strings
    are one of ``choices``. ``default`` is a value, or a function of the settings resolved
    before this one (then ``default_text`` describes it in --help).

    >>> Option("hidden", int, 128, "units per layer", low=1, high=4096).check(10**7)
    Traceback (most recent call last):
    ValueError: must be an int from 1 to 4096, got 10000000
    """

    def __init__(self, name, kind, default, help, low=None, high=None, low_open=False,
                 high_open=False, choices=None, default_text=None, metavar=None):
        self.name, self.kind, self.default, self.help = name, kind, default, help
        self.low, self.high, self.low_open, self.high_open = low, high, low_open, high_open
        self.choices = tuple(choices) if choices is not None else None
        self.default_text = default_text if default_text is not None else str(default)
        self.metavar = metavar or {int: "N", float: "X", str: None}[kind]

    @property
    def flag(self):
        return "--" + self.name.replace("_", "-")

    @property
    def expected(self):
        """What a valid value is, in words: "an int from 1 to 4096"."""
        if self.kind is str:
            return f"one of {', '.join(self.choices)}"
        if self.kind is int:
            if self.low is not None and self.high is not None:
                return f"an int from {self.low} to {self.high}"
            return f"an int >= {self.low}" if self.low is not None else "an int"
        bounds = []
        if self.low is not None:
            bounds.append(f"{'>' if self.low_open else '>='} {self.low:g}")
        if self.high is not None:
            bounds.append(f"{'<' if self.high_open else '<='} {self.high:g}")
        return "a finite number" + (" " + " and ".join(bounds) if bounds else "")

    def check(self, value):
        """``value`` when it is valid; ValueError "must be ..., got ..." otherwise."""
        if self._valid(value):
            return value
        text = repr(value)
        text = text if len(text) <= 40 else text[:37] + "..."      # values from files may be huge
        raise ValueError(f"must be {self.expected}, got {text}")

    def _valid(self, value):
        if self.kind is str:
            return isinstance(value, str) and value in self.choices
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.kind is int:
            return (isinstance(value, int) and (self.low is None or value >= self.low)
                    and (self.high is None or value <= self.high))
        if not math.isfinite(value):
            return False
        above = self.low is None or (value > self.low if self.low_open else value >= self.low)
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return above and below

    def parse(self, text):
        """The argparse ``type``: the value of ``text``, checked."""
        try:
            value = self.kind(text)
        except ValueError:
            article = "an" if self.kind is int else "a"
            raise argparse.ArgumentTypeError(
                f"expected {article} {'number' if self.kind is float else self.kind.__name__}, "
                f"got {text!r}") from None
        try:
            return self.check(value)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    def default_for(self, settings):
        """The default, given the settings resolved so far (a dict)."""
        return self.default(settings) if callable(self.default) else self.default

    def add_to(self, parser, help_suffix="", unset=False):
        """Add ``--flag`` to an argparse parser. With ``unset`` its value stays None when the
        flag is not given (the default then comes from :meth:`default_for`)."""
        limits = "" if self.kind is str else f"; {self.expected}"
        parser.add_argument(self.flag, type=self.parse, choices=self.choices, dest=self.name,
                            default=None if unset or callable(self.default) else self.default,
                            metavar=self.metavar,
                            help=f"{self.help}{limits} (default: {self.default_text})"
                                 f"{help_suffix}")

SEED = Option("seed", int, 0, "seeds the data split, the initial weights and the shuffling",
              low=0, high=2**32 - 1)
