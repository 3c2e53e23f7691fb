"""Save and load state dicts and checkpoints as ``.npz`` files that load without running code.

>>> import tinytorch as tt
>>> tt.save({"weight": tt.ones(2, 3), "epoch": 4}, "model.npz")
>>> tt.load("model.npz")["epoch"]
4

A file is a NumPy ``.npz`` archive (a zip of ``.npy`` arrays). Every array of the saved
structure is one entry, named by its path (``"model/0.weight"``); everything else (nested dicts,
lists, numbers, strings, and where each array goes) is one JSON document in the entry
``__tinytorch__``. Loading uses ``allow_pickle=False``, so a file can hold data but never code.
"""

import io
import json
import os
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
    with open(partial, "wb") as f:
        np.savez(f, **arrays)
    os.replace(partial, path)


def load(path):
    """Read what :func:`save` wrote. Raises ValueError naming the file if it is not such a file."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        raw = f.read()
    try:
        archive = np.load(io.BytesIO(raw), allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ValueError("it holds a single .npy array, not an .npz archive")
        with archive:
            entries = {name: archive[name] for name in archive.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as error:
        raise ValueError(f"{path}: not a readable tinytorch file (corrupt or truncated?): "
                         f"{error}") from None
    if _META not in entries:
        raise ValueError(f"{path}: not a tinytorch file (no '{_META}' entry; it is a plain "
                         f".npz with entries {sorted(entries)[:5]})")
    try:
        meta = json.loads(str(entries.pop(_META)))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: the '{_META}' entry is not valid JSON: {error}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or "tree" not in meta:
        raise ValueError(f"{path}: the '{_META}' entry does not describe a tinytorch file")
    if meta.get("version", 0) > VERSION:
        raise ValueError(f"{path}: written by a newer tinytorch (format version "
                         f"{meta['version']}, this one reads up to {VERSION})")
    try:
        return _decode(meta["tree"], entries)
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{path}: damaged contents: {error}") from None


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


def _decode(node, arrays):
    """Rebuild the saved object from its JSON description and the arrays."""
    if isinstance(node, list):
        return [_decode(v, arrays) for v in node]
    if not isinstance(node, dict):
        return node
    if "__tensor__" in node:
        data = _entry(arrays, node["__tensor__"])
        return Tensor(data, dtype=data.dtype)
    if "__array__" in node:
        return _entry(arrays, node["__array__"])
    if "__tuple__" in node:
        return tuple(_decode(v, arrays) for v in node["__tuple__"])
    if "__items__" in node:
        return {k: _decode(v, arrays) for k, v in node["__items__"]}
    return {k: _decode(v, arrays) for k, v in node.items()}


def _entry(arrays, name):
    if name not in arrays:
        raise ValueError(f"the array entry '{name}' is missing")
    return arrays[name]


__all__ = ["save", "load"]
