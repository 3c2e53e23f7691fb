"""Run folders: each training run gets a folder of its own, written so that no work is lost.

- The folder is claimed atomically: ``runs/<timestamp>`` gets a suffix (``-2``, ``-3``...) when
  taken, even by a run started at the same moment; an explicit ``--out`` that holds a run is
  refused unless overwriting is asked for.
- Files are written to a temporary name and renamed (with the permissions the umask gives new
  files), and the checkpoint and history of an epoch are written together with Ctrl-C (and
  the other stop signals, :data:`STOP_SIGNALS`) held back until both are on disk.
- A run that ends before it saved anything removes what it created, folders included.
"""

import contextlib
import errno
import json
import math
import os
import signal
import stat
import threading
import time

import numpy as np

from tinytorch.cli.options import UsageError
from tinytorch.core.serialization import file_kind, write_atomically

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
            created = make_folders(base)
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
        mode = _mode(out)
        if mode is not None and not stat.S_ISDIR(mode):
            kind = "a file" if stat.S_ISREG(mode) else file_kind(mode)
            raise UsageError(f"argument --out: {out} is {kind}, not a folder")
        for name in RUN_FILES:              # what --overwrite would have to replace
            mode = _mode(os.path.join(out, name))
            if mode is not None and not stat.S_ISREG(mode):
                raise UsageError(f"argument --out: {os.path.join(out, name)} is "
                                 f"{file_kind(mode)}, not a file a run can write")
        created = make_folders(out)
        if not overwrite:
            held = [name for name in RUN_FILES[:2] if os.path.exists(os.path.join(out, name))]
            claimed = None if held else _create_exclusively(out, CLAIM)
            if held or claimed is None:
                remove_folders(created)
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
        with contextlib.suppress(_Discarded), write_atomically(
                os.path.join(self.path, name)) as temporary:
            result = write(temporary)
            if result is False:
                raise _Discarded
            self.written.add(name)
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
        remove_folders(self._created)


class _Discarded(Exception):
    """Raised in :meth:`RunFolder.write_file`'s block to drop the temporary file."""


def _mode(path):
    """``st_mode`` of ``path`` (links followed), or None when there is nothing there."""
    try:
        return os.stat(path).st_mode
    except OSError:
        return None


def make_folders(path):
    """Create the folder ``path`` and its missing parents; returns the folders created,
    outermost first (to undo with :func:`remove_folders`). A file in the way raises
    NotADirectoryError saying which (see :func:`missing_folders`)."""
    missing = missing_folders(path)
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
        remove_folders(created)
        raise
    return created


def missing_folders(path):
    """The folders (absolute, innermost first) that creating the folder ``path`` would make;
    NotADirectoryError saying which when a file (or a pipe, a device...) stands where one of
    them would be, before anything is created."""
    missing, head = [], os.path.abspath(path)
    while not os.path.isdir(head):
        missing.append(head)
        parent = os.path.dirname(head)
        if parent == head:
            break
        head = parent
    for folder in missing:
        mode = _mode(folder)
        if mode is not None and not stat.S_ISDIR(mode):     # e.g. --out a-file/run
            kind = "a file" if stat.S_ISREG(mode) else file_kind(mode)
            where = "" if folder == missing[0] else f"cannot create the folder {path}: "
            raise NotADirectoryError(f"{where}{folder} is {kind}, not a folder")
    return missing


def remove_folders(folders):
    """Remove the folders (innermost first) that are empty; others are left alone."""
    for folder in reversed(folders):
        with contextlib.suppress(OSError):
            os.rmdir(folder)


def _create_exclusively(folder, name):
    """Create the empty file ``folder/name``; its path, or None when it exists already."""
    path = os.path.join(folder, name)
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    except FileExistsError:
        return None
    return path


# Signals that stop a command as Ctrl-C does, each raising a KeyboardInterrupt (see
# :func:`stop_signals_interrupt`); the command then exits with status 128 + the signal's number.
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP")
                     if hasattr(signal, name))


class Terminated(KeyboardInterrupt):
    """The KeyboardInterrupt a stop signal other than Ctrl-C raises (SIGTERM, SIGHUP)."""

    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum


def stop_status(interrupt):
    """The exit status after the KeyboardInterrupt ``interrupt``: 128 + its signal's number
    (130 for Ctrl-C, 143 for SIGTERM)."""
    return 128 + getattr(interrupt, "signum", signal.SIGINT)


def stop_reason(interrupt):
    """What stopped the command, for its message: "interrupted" (Ctrl-C), or "stopped by
    SIGTERM"."""
    signum = getattr(interrupt, "signum", signal.SIGINT)
    return "interrupted" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}"


def _raise_terminated(signum, frame):
    raise Terminated(signum)


@contextlib.contextmanager
def stop_signals_interrupt():
    """Within the block, the stop signals besides Ctrl-C (SIGTERM, SIGHUP) raise
    :class:`Terminated`, a KeyboardInterrupt, so that they stop a command as Ctrl-C does: the
    last good checkpoint is kept and what the command created unfinished is removed. Signals
    the process ignores stay ignored (e.g. SIGHUP under ``nohup``). Outside the main thread
    (where signal handlers cannot be set) the block runs unchanged."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    for signum in STOP_SIGNALS:
        if signum != signal.SIGINT and signal.getsignal(signum) == signal.SIG_DFL:
            previous[signum] = signal.signal(signum, _raise_terminated)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def deferred_interrupt():
    """Within the block, Ctrl-C (SIGINT) and the other :data:`STOP_SIGNALS` are held back, the
    first received delivered when the block ends.

    Files written together inside the block are then consistent. Outside the main thread
    (where signal handlers cannot be set) the block runs unprotected.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received, previous = [], {}
    for signum in STOP_SIGNALS:
        if signal.getsignal(signum) not in (signal.SIG_IGN, None):
            previous[signum] = signal.signal(
                signum, lambda number, frame: received.append((number, frame)))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if received:
        signum, frame = received[0]
        handler = previous[signum]
        if callable(handler):
            handler(signum, frame)
        elif handler == signal.SIG_DFL:
            signal.raise_signal(signum)           # the default action: the process ends


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
    with write_atomically(path) as temporary, open(temporary, "w") as f:
        f.write(text)
