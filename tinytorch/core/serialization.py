"""Save and load state dicts and checkpoints as ``.npz`` files that load without running code.

>>> import tinytorch as tt
>>> tt.save({"weight": tt.ones(2, 3), "epoch": 4}, "model.npz")
>>> tt.load("model.npz")["epoch"]
4

A file is a NumPy ``.npz`` archive (a zip of ``.npy`` arrays). Every array of the saved
structure is one entry, named by its path (``"model/0.weight"``); everything else (nested dicts,
lists, numbers, strings, and where each array goes) is one JSON document in the entry
``__tinytorch__``. Loading accepts only bool, integer and float arrays (never Python objects),
so a file can hold data but never code, and checks every size before allocating anything.
"""

import contextlib
import io
import json
import math
import os
import secrets
import stat
import sys
import warnings
import zipfile

import numpy as np

from tinytorch.core.tensor import Tensor

FORMAT = "tinytorch"
VERSION = 1
_META = "__tinytorch__"


def save(obj, path):
    """Write ``obj`` (nested dicts/lists/tuples of Tensors, arrays, numbers, strings) to ``path``.

    Tensors come back as Tensors and arrays as arrays; dict keys may be strings or ints. The file
    is written to a temporary name first (see :func:`write_atomically`), so an interrupted save
    never leaves a half file, and an OSError (disk full, permission denied) names ``path``.
    """
    arrays = {}
    tree = _encode(obj, "", arrays)
    meta = json.dumps({"format": FORMAT, "version": VERSION, "tree": tree})
    arrays[_META] = np.array(meta)
    with write_atomically(path) as temporary, open(temporary, "wb") as f:
        np.savez(f, **arrays)


@contextlib.contextmanager
def write_atomically(path):
    """Context manager for writing the file ``path`` all at once: yields the path of a new,
    empty file in the same folder, which replaces ``path`` when the block ends without an
    exception and is removed otherwise. Its name (hidden, ``.model.1f2e3d4c.npz``) keeps the
    extension of ``path``.

    The temporary file is created exclusively (an existing file, link or named pipe of that
    name is never opened) with the permissions ``open(path, "w")`` would give a new file
    (``0o666`` less the umask). ``path`` must be a regular file or not exist: a folder, device,
    named pipe or socket raises ValueError. An OSError from the block or the rename (disk full,
    permission denied) is raised again naming ``path`` rather than the temporary file.

    >>> with write_atomically("notes.txt") as temporary:
    ...     with open(temporary, "w") as f:
    ...         f.write("all or nothing")
    """
    path = os.fspath(path)
    try:
        mode = os.stat(path).st_mode
    except OSError:
        mode = None                                 # missing (or unreachable: open says why)
    if mode is not None and not stat.S_ISREG(mode):
        raise ValueError(f"{path}: cannot be written: it is {file_kind(mode)}, not a regular "
                         f"file")
    folder, name = os.path.split(path)
    stem, extension = os.path.splitext(name)      # kept: writers may read the format from it
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        temporary = os.path.join(folder, f".{stem}.{secrets.token_hex(4)}{extension}")
        try:
            os.close(os.open(temporary, flags, 0o666))
            break
        except FileExistsError:
            continue
        except OSError as error:
            raise _naming(error, path, temporary) from None
    else:
        raise FileExistsError(f"{path}: no free temporary name next to it")
    try:
        yield temporary
        os.replace(temporary, path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        if isinstance(error, OSError):
            raise _naming(error, path, temporary) from None
        raise


def _naming(error, path, temporary):
    """``error`` (an OSError) naming ``path`` when it named nothing or the temporary file."""
    if error.errno is None or error.filename not in (None, temporary):
        return error
    return OSError(error.errno, error.strerror or os.strerror(error.errno), path)


def file_kind(mode):
    """What a file of ``st_mode`` ``mode`` is, in words: "a folder", "a named pipe"..."""
    for test, kind in ((stat.S_ISREG, "a regular file"), (stat.S_ISDIR, "a folder"),
                       (stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device")):
        if test(mode):
            return kind
    return "a special file"


def open_regular(path, what):
    """Open ``path`` for reading in binary mode, refusing anything but a regular file (a
    folder, device, named pipe or socket) with ValueError naming ``path`` and ``what`` the
    file should be, before reading a byte: opening a named pipe would wait for a writer.
    A missing file raises FileNotFoundError."""
    path = os.fspath(path)
    mode = os.stat(path).st_mode
    if stat.S_ISREG(mode):                          # O_NONBLOCK: a pipe swapped in since the
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)   # stat cannot block
                     | getattr(os, "O_CLOEXEC", 0))
        try:
            mode = os.fstat(fd).st_mode
            if stat.S_ISREG(mode):
                if hasattr(os, "set_blocking"):
                    os.set_blocking(fd, True)
                return os.fdopen(fd, "rb")
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    raise ValueError(f"{path}: not a {what} (it is {file_kind(mode)}, not a regular file)")


# Python reads integers of up to 4300 digits by default (sys.set_int_max_str_digits); longer
# ones are refused whatever the interpreter's setting, since parsing them takes quadratic time.
MAX_INT_DIGITS = 4300


def parse_json(text):
    """``json.loads(text)`` for untrusted text: ValueError with a short message for invalid
    JSON, for nesting deeper than Python's recursion limit, and for integers of more than
    :data:`MAX_INT_DIGITS` digits."""
    def parse_int(digits):
        if len(digits) > MAX_INT_DIGITS + digits.startswith("-"):
            raise _LongInteger(f"it holds an integer of {len(digits.lstrip('-')):,} digits, "
                               f"more than the {MAX_INT_DIGITS} read")
        return int(digits)

    try:
        return json.loads(text, parse_int=parse_int)
    except RecursionError:
        raise ValueError("it is nested too deeply") from None
    except _LongInteger as error:
        raise ValueError(str(error)) from None
    except ValueError as error:                 # json.JSONDecodeError, or int()'s digit limit
        raise ValueError(f"it is not valid JSON: {_one_line(error)}") from None


class _LongInteger(Exception):
    """An integer too long to read (raised inside json.loads, which would hide a ValueError)."""


def load(path):
    """Read what :func:`save` wrote.

    The file is untrusted input: anything that is not such a file (another format, a damaged,
    truncated or hand-crafted archive) raises ValueError naming the file, and nothing is
    allocated beyond the size of the file itself. Arrays never hold Python objects, so loading
    never runs code. A missing file raises FileNotFoundError.
    """
    return _load(path, "tinytorch file")


def _load(path, what, max_bytes=None):
    """:func:`load`, with ``what`` the kind of file the messages say the file is not, refusing
    files whose entries declare more than ``max_bytes`` bytes in all (before reading them)."""
    path = os.fspath(path)
    entries = _read_archive(path, what, max_bytes)
    if _META not in entries:
        names = ", ".join(_quoted(name) for name in sorted(entries)[:5])
        raise ValueError(f"{path}: not a {what} (an .npz archive without the '{_META}' entry; "
                         f"its entries: {names or 'none'})")
    meta = entries.pop(_META)
    try:
        if meta.ndim != 0:
            raise UnicodeError
        # decoded by hand: NumPy's str() fails with SystemError on invalid code points
        big = meta.dtype.byteorder == ">" or (meta.dtype.byteorder == "=" and
                                               sys.byteorder == "big")
        text = meta.tobytes().decode("utf-32-be" if big else "utf-32-le").rstrip("\0")
    except UnicodeError:
        raise ValueError(f"{path}: not a {what} (its '{_META}' entry is not a text)") from None
    try:
        meta = parse_json(text)
    except ValueError as error:
        raise ValueError(f"{path}: not a {what} (its '{_META}' entry: {error})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or "tree" not in meta:
        raise ValueError(f"{path}: not a {what} (its '{_META}' entry does not describe one)")
    version = meta.get("version", 0)
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise ValueError(f"{path}: damaged {what}: format version {_short(version)}")
    if version > VERSION:
        raise ValueError(f"{path}: written by a newer tinytorch (format version "
                         f"{_short(version)}, this one reads up to {VERSION})")
    try:
        return _decode(meta["tree"], entries, depth=0)
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{path}: damaged {what}: {_one_line(error)}") from None


# How deeply the saved structure may nest (checkpoints need 6); deeper files are refused
# rather than risking Python's recursion limit.
MAX_DEPTH = 64
# .npy header versions and how their header length is stored (see numpy.lib.format).
_HEADER_READERS = {(1, 0): "read_array_header_1_0", (2, 0): "read_array_header_2_0"}


def _read_archive(path, what, max_bytes=None):
    """{entry name: array} of the .npz archive at ``path``, checked before anything is allocated.

    Only what :func:`save` writes is accepted: a regular file holding a zip archive of
    uncompressed, unencrypted ``.npy`` entries of bool, integer or float arrays (and the text
    entry ``__tinytorch__``), each exactly as long as its header declares. The sizes the entries
    declare must add up to no more than the file's size (entries that overlap or misstate
    their sizes could otherwise make a small file read as gigabytes) nor ``max_bytes``, so
    memory use is bounded by the file's size.
    """
    with open_regular(path, what) as f:
        size = os.fstat(f.fileno()).st_size
        try:
            archive = zipfile.ZipFile(f)
        except zipfile.BadZipFile:
            raise ValueError(f"{path}: not a {what} (not an .npz archive)") from None
        except MemoryError:
            raise
        except Exception as error:          # see _read_entry for why everything is caught
            raise ValueError(f"{path}: not a readable {what} (damaged or truncated archive: "
                             f"{_one_line(error)})") from None
        with archive:
            infos = archive.infolist()
            for info in infos:
                _check_entry(info, path, what)
            declared = sum(info.file_size for info in infos)
            if declared > size:
                raise ValueError(f"{path}: damaged {what}: its entries declare {declared:,} "
                                 f"bytes in all, more than the file's {size:,} (entries that "
                                 f"overlap or misstate their sizes)")
            if max_bytes is not None and declared > max_bytes:
                raise ValueError(f"{path}: its entries declare {declared:,} bytes in all, more "
                                 f"than the {max_bytes:,} a {what} may hold")
            entries = {}
            for info in infos:
                name, array = _read_entry(archive, info, path, what)
                if name in entries:
                    raise ValueError(f"{path}: damaged {what}: the entry {_quoted(name)} "
                                     f"appears twice")
                entries[name] = array
    return entries


def _check_entry(info, path, what):
    """Refuse a zip entry (its directory record ``info``) that :func:`save` never writes."""
    name = info.filename
    if not name.endswith(".npy"):
        raise ValueError(f"{path}: not a {what} (its entry {_quoted(name)} is not an .npy "
                         f"array)")
    if info.flag_bits & 0x1:
        raise ValueError(f"{path}: not a {what} (the entry {_quoted(name[:-4])} is encrypted)")
    if info.compress_type != zipfile.ZIP_STORED:
        raise ValueError(f"{path}: not a {what} (the entry {_quoted(name[:-4])} is compressed; "
                         f"tinytorch writes uncompressed archives)")
    if info.file_size != info.compress_size:
        raise ValueError(f"{path}: damaged {what}: the entry {_quoted(name[:-4])} declares "
                         f"{info.file_size:,} bytes stored in {info.compress_size:,}")


def _read_entry(archive, info, path, what):
    """(name, array) of one ``.npy`` entry of ``archive`` (checked by :func:`_check_entry`);
    ValueError for anything else.

    The zip and .npy parsers raise a wide and undocumented set of exceptions on damaged bytes
    (zipfile.BadZipFile, NotImplementedError, RuntimeError, EOFError, struct.error, zlib.error,
    UnicodeDecodeError, tokenize.TokenError, ...), so any exception while parsing means a damaged
    file; only MemoryError passes through. Their messages are not shown: some suggest unpickling.
    """
    name = info.filename[:-4]
    entry = f"{path}: damaged {what}: the entry {_quoted(name)}"
    try:
        data = archive.read(info)
    except MemoryError:
        raise
    except Exception as error:
        raise ValueError(f"{entry} cannot be read ({_one_line(error)})") from None
    try:
        stream = io.BytesIO(data)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            version = np.lib.format.read_magic(stream)
            reader = getattr(np.lib.format, _HEADER_READERS[version])
            shape, fortran_order, dtype = reader(stream)
    except MemoryError:
        raise
    except Exception:
        raise ValueError(f"{entry} has no valid .npy header") from None
    allowed = "U" if name == _META else "biuf"
    if dtype.kind not in allowed or dtype.hasobject or dtype.fields is not None:
        raise ValueError(f"{path}: not a {what} (the entry {_quoted(name)} holds {dtype} data, "
                         f"which tinytorch files never hold)")
    # NumPy's header parser accepts any Python ints in the shape, bools (True == 1) included
    if (type(fortran_order) is not bool or not isinstance(shape, tuple) or len(shape) > 32
            or any(type(n) is not int or n < 0 for n in shape)):
        raise ValueError(f"{entry} declares the shape {_short(shape)}"
                         f"{'' if type(fortran_order) is bool else ' in an unknown order'}")
    count = math.prod(shape)
    offset = stream.tell()
    if count * dtype.itemsize != len(data) - offset:
        raise ValueError(f"{entry} declares the shape {shape} of {count * dtype.itemsize:,} "
                         f"bytes but holds {len(data) - offset:,}")
    try:
        array = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
        return name, array.reshape(shape, order="F" if fortran_order else "C").copy(order="C")
    except MemoryError:
        raise
    except Exception as error:
        raise ValueError(f"{entry} cannot be read as an array ({_one_line(error)})") from None


def _quoted(name, limit=60):
    """An entry's name in quotes for a message, cut to ``limit`` characters (a zip entry's name
    may be 65,535 bytes long)."""
    return repr(name) if len(name) <= limit else repr(name[:limit - 3] + "...")


def _short(value, limit=40):
    """repr(value), cut to ``limit`` characters (values from files may be huge)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _one_line(error):
    """An exception's message on one short line (a KeyError's without the quotes repr adds)."""
    text = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
    text = " ".join(text.split()) or type(error).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def _encode(obj, path, arrays):
    """A JSON-able description of ``obj``; arrays are moved into ``arrays`` under their path."""
    if isinstance(obj, (Tensor, np.ndarray)):
        name = path.lstrip("/") or "array"
        if name in arrays or name == _META:
            name = f"{name}#{len(arrays)}"
        # np.asarray keeps 0-d arrays 0-d (np.ascontiguousarray would make them shape (1,))
        arrays[name] = np.asarray(obj.data if isinstance(obj, Tensor) else obj, order="C")
        if arrays[name].dtype.kind not in "biuf":
            raise TypeError(f"save: cannot store the array at '{name}' of dtype "
                            f"{arrays[name].dtype} (only bool, integer and float arrays)")
        return {"__tensor__" if isinstance(obj, Tensor) else "__array__": name}
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: _encode(v, f"{path}/{k}", arrays) for k, v in obj.items()}
        for k in obj:
            if not isinstance(k, (str, int)) or isinstance(k, bool):
                raise TypeError(f"save: dict keys must be str or int, got {k!r} at '{path}'")
        return {"__items__": [[k, _encode(v, f"{path}/{k}", arrays)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, f"{path}/{i}", arrays) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, f"{path}/{i}", arrays) for i, v in enumerate(obj)]
    raise TypeError(f"save: cannot store a {type(obj).__name__} at '{path or '/'}' (use "
                    f"Tensors, arrays, numbers, strings, lists and dicts)")


def _decode(node, arrays, depth):
    """Rebuild the saved object from its JSON description and the arrays."""
    if depth > MAX_DEPTH:
        raise ValueError(f"the saved structure nests more than {MAX_DEPTH} levels deep")
    depth += 1
    if isinstance(node, list):
        return [_decode(v, arrays, depth) for v in node]
    if not isinstance(node, dict):
        return node
    if "__tensor__" in node:
        data = _entry(arrays, node["__tensor__"])
        return Tensor(data, dtype=data.dtype)
    if "__array__" in node:
        return _entry(arrays, node["__array__"])
    if "__tuple__" in node:
        return tuple(_decode(v, arrays, depth) for v in node["__tuple__"])
    if "__items__" in node:
        return {k: _decode(v, arrays, depth) for k, v in node["__items__"]}
    return {k: _decode(v, arrays, depth) for k, v in node.items()}


def _entry(arrays, name):
    if not isinstance(name, str) or name not in arrays:
        raise ValueError(f"the array entry '{name}' is missing")
    return arrays[name]


__all__ = ["save", "load"]
