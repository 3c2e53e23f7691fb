"""Run the real ``tinytorch`` command (``python -m tinytorch``) from this checkout, and check
what users see: one-line errors, strict JSON."""

import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def cli_env(**extra):
    """The environment of a command run from this checkout (one BLAS thread: tiny models)."""
    return {**os.environ, "PYTHONPATH": str(ROOT), "OPENBLAS_NUM_THREADS": "1",
            "OMP_NUM_THREADS": "1", **extra}


def command(*args):
    return [sys.executable, "-m", "tinytorch", *map(str, args)]


def run_cli(*args, cwd=None, timeout=120, **kwargs):
    """``tinytorch *args`` in a subprocess: the CompletedProcess (text output captured)."""
    return subprocess.run(command(*args), capture_output=True, text=True, cwd=cwd,
                          env=kwargs.pop("env", None) or cli_env(), timeout=timeout, **kwargs)


def start_cli(*args, cwd=None, **kwargs):
    """``tinytorch *args`` started in a subprocess with pipes for stdout and stderr."""
    return subprocess.Popen(command(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=cwd, env=kwargs.pop("env", None) or cli_env(),
                            **kwargs)


def one_line_error(stderr, prefix="tinytorch"):
    """The single line of ``stderr``; fails unless it is one line with no traceback, no Python
    warning and no path into tinytorch's sources."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{stderr}"
    line = lines[0]
    assert line.startswith(prefix), line
    for leak in ("Traceback", "Warning", ".py", "allow_pickle"):
        assert leak not in line, f"{leak!r} leaked into: {line}"
    return line


def strict_json(path):
    """Parse ``path`` as standard JSON (NaN and Infinity are not JSON)."""
    def refuse(constant):
        raise AssertionError(f"{path} holds {constant}, which is not JSON")
    return json.loads(pathlib.Path(path).read_text(), parse_constant=refuse)
