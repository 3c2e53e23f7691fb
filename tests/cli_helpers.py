"""Run the real ``tinytorch`` command (``python -m tinytorch``) from this checkout, and check
what users see: one-line errors, strict JSON; craft hostile files for it to read."""

import json
import os
import pathlib
import struct
import subprocess
import sys
import zlib

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


def overflow_adam_at(monkeypatch, step_count):
    """Make Adam's second moment overflow (one entry set to inf) right after step
    ``step_count``: training must stop there as diverged."""
    from tinytorch.core.optimizers import Adam

    step = Adam.step

    def overflowing_step(self):
        step(self)
        if self.step_count == step_count:
            self.state[self.params[0]]["exp_avg_sq"][0, 0] = float("inf")
    monkeypatch.setattr(Adam, "step", overflowing_step)


def strict_json(path):
    """Parse ``path`` as standard JSON (NaN and Infinity are not JSON)."""
    def refuse(constant):
        raise AssertionError(f"{path} holds {constant}, which is not JSON")
    return json.loads(pathlib.Path(path).read_text(), parse_constant=refuse)


# ----- crafted files ----------------------------------------------------------------------------

def npy_declaring(shape, body, descr="|u1", fortran_order=False):
    """An .npy file whose header says ``shape``, ``descr`` and ``fortran_order`` (any Python
    values), holding ``body`` whatever the header says."""
    header = repr({"descr": descr, "fortran_order": fortran_order, "shape": shape}).encode()
    header += b" " * (-(10 + len(header) + 1) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + body


def nested_zip(count, tail):
    """A zip of ``count`` stored .npy entries that nest: each entry's bytes hold all the entries
    after it (their local headers and data) and ``tail``, so the entries declare about
    ``count / 2`` times the file's size while every header and checksum is right (the review's
    overlapping entries)."""
    following, entries = tail, []
    for k in reversed(range(count)):
        name = f"e{k:04d}.npy".encode()
        data = npy_declaring((len(following),), following)
        local = struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, 0, 0, 0, zlib.crc32(data),
                            len(data), len(data), len(name), 0) + name
        entries.append((name, data, len(local) + len(data) - len(following)))
        following = local + data
    entries.reverse()
    directory, offset = b"", 0
    for name, data, own in entries:
        directory += struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, 0, 0, 0, 0,
                                 zlib.crc32(data), len(data), len(data), len(name), 0, 0, 0, 0,
                                 0, offset) + name
        offset += own
    end = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, count, count, len(directory),
                      len(following), 0)
    return following + directory + end
