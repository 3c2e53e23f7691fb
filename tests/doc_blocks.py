"""The code examples of the project's Markdown files: each ```python block, and the ```text
block right after it (what it printed when the document was written), if there is one."""

import contextlib
import io
import re

_EXAMPLE = re.compile(r"```python\n(.*?)```(?:\n\n```text\n(.*?)```)?", re.S)
# what varies from run to run: times ("12.30 ms", "0.0029 s", "150.0 us"), shares of the total
# time ("97.7%"), ratios of times ("took 1.6x forward") and the spaces aligning a table
_TIME = re.compile(r"\d+(\.\d+)? (us|ms|s)\b")
_PERCENT = re.compile(r"\d+\.\d%")
_TIME_RATIO = re.compile(r"took \d+\.\dx forward")
_RULE = re.compile(r"-{3,}")


def python_blocks(text):
    """The source of every ```python block of ``text``."""
    return [code for code, _ in examples(text)]


def examples(text):
    """[(code, printed)] for every ```python block; printed is None without a ```text block."""
    return [(m.group(1), m.group(2)) for m in _EXAMPLE.finditer(text)]


def run(code, name):
    """Run ``code`` in a fresh namespace; return what it printed."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, name, "exec"), {"__name__": "__doc__"})
    return out.getvalue()


def normalised(printed):
    """``printed`` with times, time shares and time ratios replaced and spaces collapsed, so
    that what does not depend on the machine can be compared exactly."""
    lines = []
    for line in printed.strip().splitlines():
        line = _TIME_RATIO.sub("took <ratio>x forward", line)
        line = _PERCENT.sub("<share>", _TIME.sub("<time>", line))
        line = _RULE.sub("---", line)
        lines.append(" ".join(line.split()))
    return lines
