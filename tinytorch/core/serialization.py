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

import io
import json
import math
import os
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
    is written to a temporary name first, so an interrupted save never leaves a half file.
    """
    arrays = {}
    tree = _encode(obj, "", arrays)
    meta = json.dumps({"format": FORMAT, "version": VERSION, "tree": tree})
    arrays[_META] = np.array(meta)
    path = os.fspath(path)
    partial = path + ".partial"
    try:
        with open(partial, "wb") as f:
            np.savez(f, **arrays)
        os.replace(partial, path)
    except BaseException:
        if os.path.exists(partial):
            os.remove(partial)
        raise


def load(path):
    """Read what :func:`save` wrote.

    The file is untrusted input: anything that is not such a file (another format, a damaged,
    truncated or hand-crafted archive) raises ValueError naming the file, and nothing is
    allocated beyond the size of the file itself. Arrays never hold Python objects, so loading
    never runs code. A missing file raises FileNotFoundError.
    """
    return _load(path, "tinytorch file")


def _load(path, what):
    """:func:`load`, with ``what`` the kind of file the messages say the file is not."""
    path = os.fspath(path)
    entries = _read_archive(path, what)
    if _META not in entries:
        raise ValueError(f"{path}: not a {what} (an .npz archive without the '{_META}' entry; "
                         f"its entries: {', '.join(sorted(entries)[:5]) or 'none'})")
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
        meta = json.loads(text)
    except RecursionError:
        raise ValueError(f"{path}: not a {what} (its '{_META}' entry is nested too "
                         f"deeply)") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not a {what} (its '{_META}' entry is not valid JSON: "
                         f"{error})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or "tree" not in meta:
        raise ValueError(f"{path}: not a {what} (its '{_META}' entry does not describe one)")
    version = meta.get("version", 0)
    if isinstance(version, bool) or not isinstance(version, int):
        raise ValueError(f"{path}: damaged {what}: format version {version!r}")
    if version > VERSION:
        raise ValueError(f"{path}: written by a newer tinytorch (format version {version}, "
                         f"this one reads up to {VERSION})")
    try:
        return _decode(meta["tree"], entries, depth=0)
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{path}: damaged {what}: {_one_line(error)}") from None


# How deeply the saved structure may nest (checkpoints need 6); deeper files are refused
# rather than risking Python's recursion limit.
MAX_DEPTH = 64
# .npy header versions and how their header length is stored (see numpy.lib.format).
_HEADER_READERS = {(1, 0): "read_array_header_1_0", (2, 0): "read_array_header_2_0"}


def _read_archive(path, what):
    """{entry name: array} of the .npz archive at ``path``, checked before anything is allocated.

    Only what :func:`save` writes is accepted: a zip archive of uncompressed, unencrypted
    ``.npy`` entries of bool, integer or float arrays (and the text entry ``__tinytorch__``),
    each exactly as long as its header declares, so memory use is bounded by the file's size.
    """
    with open(path, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise ValueError(f"{path}: not a {what} (not a regular file)")
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
            entries = {}
            for info in archive.infolist():
                name, array = _read_entry(archive, info, size, path, what)
                if name in entries:
                    raise ValueError(f"{path}: damaged {what}: the entry '{name}' appears twice")
                entries[name] = array
    return entries


def _read_entry(archive, info, file_size, path, what):
    """(name, array) of one ``.npy`` entry of ``archive``; ValueError for anything else.

    The zip and .npy parsers raise a wide and undocumented set of exceptions on damaged bytes
    (zipfile.BadZipFile, NotImplementedError, RuntimeError, EOFError, struct.error, zlib.error,
    UnicodeDecodeError, tokenize.TokenError, ...), so any exception while parsing means a damaged
    file; only MemoryError passes through. Their messages are not shown: some suggest unpickling.
    """
    name = info.filename
    damaged = f"{path}: damaged {what}"
    if not name.endswith(".npy"):
        raise ValueError(f"{path}: not a {what} (its entry {name!r} is not an .npy array)")
    name = name[:-4]
    if info.flag_bits & 0x1:
        raise ValueError(f"{path}: not a {what} (the entry '{name}' is encrypted)")
    if info.compress_type != zipfile.ZIP_STORED:
        raise ValueError(f"{path}: not a {what} (the entry '{name}' is compressed; tinytorch "
                         f"writes uncompressed archives)")
    if info.file_size != info.compress_size or info.file_size > file_size:
        raise ValueError(f"{damaged}: the entry '{name}' declares {info.file_size} bytes, more "
                         f"than the file holds")
    try:
        data = archive.read(info)
    except MemoryError:
        raise
    except Exception as error:
        raise ValueError(f"{damaged}: the entry '{name}' cannot be read "
                         f"({_one_line(error)})") from None
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
        raise ValueError(f"{damaged}: the entry '{name}' has no valid .npy header") from None
    allowed = "U" if name == _META else "biuf"
    if dtype.kind not in allowed or dtype.hasobject or dtype.fields is not None:
        raise ValueError(f"{path}: not a {what} (the entry '{name}' holds {dtype} data, "
                         f"which tinytorch files never hold)")
    if len(shape) > 32 or any(n < 0 for n in shape):
        raise ValueError(f"{damaged}: the entry '{name}' declares the shape {shape}")
    count = math.prod(shape)
    offset = stream.tell()
    if count * dtype.itemsize != len(data) - offset:
        raise ValueError(f"{damaged}: the entry '{name}' declares the shape {shape} of "
                         f"{count * dtype.itemsize} bytes but holds {len(data) - offset}")
    array = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
    return name, array.reshape(shape, order="F" if fortran_order else "C").copy(order="C")


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
