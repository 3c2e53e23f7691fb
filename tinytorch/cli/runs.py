"""Run folders: each training run gets a folder of its own, written so that no work is lost.

- The folder is claimed atomically: ``runs/<timestamp>`` gets a suffix (``-2``, ``-3``...) when
  taken, even by a run started at the same moment; an explicit ``--out`` that holds a run is
  refused unless overwriting is asked for.
- Files are written to a temporary name and renamed, and the checkpoint and history of an
  epoch are written together with Ctrl-C held back until both are on disk.
- A run that ends before it saved anything removes what it created, folders included.
"""

import contextlib
import errno
import json
import math
import os
import signal
import tempfile
import threading
import time

import numpy as np

from tinytorch.cli.options import UsageError

RUN_FILES = ("model.npz", "history.json", "curves.png")
CLAIM = "history.json"          # created exclusively when a run claims its folder
_MAX_SUFFIX = 10_000


class RunFolder:
    """The folder of one run; create it with :meth:`claim`.

    ``path`` is the folder, ``saved`` names what is on disk (e.g. ``"epoch 3"``), None until
    the first :meth:`save`; ``written`` holds the names of the files this run wrote.
    """

    def __init__(self, path, created, claimed, overwrite):
        self.path = path
        self.saved = None
        self._created = created            # folders this run made, outermost first
        self._claimed = claimed            # the claim file this run made exclusively
        self._overwrite = overwrite
        self.written = set()

    @classmethod
    def claim(cls, out=None, overwrite=False, base="runs", stamp=None):
        """Claim ``out``, or a new folder ``base/<timestamp>`` when ``out`` is None.

        Raises UsageError when ``out`` is a file or holds a run (``model.npz`` or
        ``history.json``) and ``overwrite`` is false, OSError when it cannot be created.
        """
        if out is None:
            created = _make_parents(base)
            stamp = stamp or time.strftime("%Y%m%d-%H%M%S")
            for suffix in range(1, _MAX_SUFFIX):
                path = os.path.join(base, stamp if suffix == 1 else f"{stamp}-{suffix}")
                try:
                    os.mkdir(path)
                except FileExistsError:
                    continue
                return cls(path, created + [path], _create_exclusively(path, CLAIM), False)
            raise OSError(errno.EEXIST, f"{base} already holds {_MAX_SUFFIX} runs named {stamp}")
        if not out:
            raise UsageError("argument --out: must name a folder, got an empty string")
        if os.path.exists(out) and not os.path.isdir(out):
            raise UsageError(f"argument --out: {out} is a file, not a folder")
        created = _make_parents(out)
        if not overwrite:
            held = [name for name in RUN_FILES[:2] if os.path.exists(os.path.join(out, name))]
            claimed = None if held else _create_exclusively(out, CLAIM)
            if held or claimed is None:
                _remove_folders(created)
                raise UsageError(f"argument --out: {out} already holds a run "
                                 f"({', '.join(held) or CLAIM}); give --overwrite to replace it, "
                                 f"or choose another folder")
            return cls(out, created, claimed, False)
        return cls(out, created, None, True)

    def save(self, label, write_checkpoint, history):
        """Write ``model.npz`` (``write_checkpoint(path)``) and ``history.json`` (strict JSON),
        together: Ctrl-C waits until both are on disk. ``label`` names what was saved."""
        with deferred_interrupt():
            write_checkpoint(os.path.join(self.path, "model.npz"))
            write_json(os.path.join(self.path, "history.json"), history)
            self.written.update(("model.npz", "history.json"))
            if self._overwrite and self.saved is None:     # files of the run replaced
                for name in RUN_FILES:
                    if name not in self.written:
                        with contextlib.suppress(FileNotFoundError):
                            os.remove(os.path.join(self.path, name))
            self.saved = label

    def write_file(self, name, write):
        """Write the file ``name`` with ``write(path)`` (to a temporary name, then renamed);
        returns what ``write`` returned, and keeps the file only when that is not False."""
        final = os.path.join(self.path, name)
        stem, extension = os.path.splitext(name)
        fd, temporary = tempfile.mkstemp(dir=self.path, prefix=f".{stem}.", suffix=extension)
        os.close(fd)
        try:
            result = write(temporary)
            if result is not False:
                os.replace(temporary, final)
                self.written.add(name)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.remove(temporary)
        return result

    def where(self):
        """Where the run's files are, as a clause: "the checkpoint and history of epoch 3 are
        in runs/x", or "nothing was saved" before the first save."""
        if self.saved is None:
            return "nothing was saved"
        return f"the checkpoint and history of {self.saved} are in {self.path}"

    def close(self):
        """When nothing was saved: remove the claim and the folders this run created."""
        if self.saved is not None:
            return
        if self._claimed is not None:
            with contextlib.suppress(FileNotFoundError):
                os.remove(self._claimed)
        _remove_folders(self._created)


def _make_parents(path):
    """Create ``path`` and its missing parents; returns the folders created, outermost first."""
    missing, head = [], os.path.abspath(path)
    while not os.path.isdir(head):
        missing.append(head)
        parent = os.path.dirname(head)
        if parent == head:
            break
        head = parent
    created = []
    try:
        for folder in reversed(missing):
            try:
                os.mkdir(folder)
                created.append(folder)
            except FileExistsError:         # made by a run started at the same moment
                if not os.path.isdir(folder):
                    raise
    except OSError:
        _remove_folders(created)
        raise
    return created


def _remove_folders(folders):
    """Remove the folders (innermost first) that are empty; others are left alone."""
    for folder in reversed(folders):
        with contextlib.suppress(OSError):
            os.rmdir(folder)


def _create_exclusively(folder, name):
    """Create the empty file ``folder/name``; its path, or None when it exists already."""
    path = os.path.join(folder, name)
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    except FileExistsError:
        return None
    return path


@contextlib.contextmanager
def deferred_interrupt():
    """Within the block, Ctrl-C (SIGINT) is held back and delivered when the block ends.

    Files written together inside the block are then consistent. Outside the main thread
    (where signal handlers cannot be set) the block runs unprotected.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(frame))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received and callable(previous):
        previous(signal.SIGINT, received[0])


def strict_json(value):
    """``value`` with NaN and infinities as None and NumPy numbers as Python ones, so that
    ``json.dumps(..., allow_nan=False)`` writes standard JSON."""
    if isinstance(value, dict):
        return {key: strict_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path, value):
    """Write ``value`` to ``path`` as strict JSON (see :func:`strict_json`), atomically."""
    text = json.dumps(strict_json(value), indent=1, allow_nan=False) + "\n"
    folder, name = os.path.split(path)
    fd, temporary = tempfile.mkstemp(dir=folder or ".", prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
        raise
