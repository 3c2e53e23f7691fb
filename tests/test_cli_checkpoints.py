"""Checkpoints are untrusted input: 'tinytorch evaluate' answers every damaged or hand-crafted
file with one line and status 1, checks sizes before allocating, and never suggests unpickling.
"""

import io
import json
import random
import struct
import time
import tracemalloc
import warnings
import zipfile

import numpy as np
import pytest

from cli_helpers import nested_zip, one_line_error
from tinytorch.cli import main

META = "__tinytorch__.npy"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """The bytes of a tiny run's model.npz (moons, hidden 8, one epoch)."""
    out = tmp_path_factory.mktemp("tiny-run")
    assert main(["train", "--dataset", "moons", "--epochs", "1", "--hidden", "8",
                 "--out", str(out)]) == 0
    return (out / "model.npz").read_bytes()


def _evaluate(data, tmp_path, capsys, name="model.npz"):
    """(status, stdout, stderr) of 'tinytorch evaluate' on a file holding ``data``."""
    path = tmp_path / name
    path.write_bytes(data)
    capsys.readouterr()
    status = main(["evaluate", str(path)])
    out, err = capsys.readouterr()
    return status, out, err


def _refused(data, tmp_path, capsys, *words):
    status, _, err = _evaluate(data, tmp_path, capsys, name="crafted.npz")
    assert status == 1, err
    line = one_line_error(err, "tinytorch: error:")
    assert "crafted.npz" in line and "pickle" not in line
    for word in words:
        assert word in line, f"{word!r} not in: {line}"
    assert len(line) < 300 + len(str(tmp_path)), f"values from the file echoed in full: {line}"
    return line


# ----- crafting files ---------------------------------------------------------------------------

def _entries(data):
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist()}


def _zip(entries, compression=zipfile.ZIP_STORED):
    out = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")           # duplicate names are part of some cases
        with zipfile.ZipFile(out, "w", compression=compression) as archive:
            for name, body in (entries.items() if isinstance(entries, dict) else entries):
                archive.writestr(name, body)
    return out.getvalue()


def _npy(array, allow_pickle=False):
    out = io.BytesIO()
    np.lib.format.write_array(out, np.asarray(array), allow_pickle=allow_pickle)
    return out.getvalue()


def _npy_declaring(shape, descr="<f4", body=b"\0" * 16):
    """An .npy entry whose header declares ``shape`` but holds only ``body``."""
    header = repr({"descr": descr, "fortran_order": False, "shape": shape}).encode("latin1")
    header += b" " * (-(10 + len(header) + 1) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + body


def _with_meta_text(data, text):
    entries = _entries(data)
    entries[META] = _npy(np.array(text))
    return _zip(entries)


def _with_config_text(data, key, text):
    """The checkpoint with ``metadata.config[key]`` (or the config itself when key is None)
    replaced by the JSON ``text`` (which may be far deeper than json.dumps could write)."""
    meta = json.loads(str(np.load(io.BytesIO(_entries(data)[META]))))
    if key is None:
        meta["tree"]["metadata"]["config"] = "@@@"
    else:
        meta["tree"]["metadata"]["config"][key] = "@@@"
    return _with_meta_text(data, json.dumps(meta).replace('"@@@"', text))


def _with_model_array(data, name, array):
    """The checkpoint with the model entry ``name`` set to ``array`` (added when new)."""
    entries = _entries(data)
    meta = json.loads(str(np.load(io.BytesIO(entries[META]))))
    meta["tree"]["model"][name] = {"__tensor__": f"model/{name}"}
    entries[META] = _npy(np.array(json.dumps(meta)))
    entries[f"model/{name}.npy"] = _npy(array)
    return _zip(entries)


def _with_entry(data, name, body):
    entries = _entries(data)
    entries[name] = body
    return _zip(entries)


def _with_metadata_array(data, name, array):
    """The checkpoint with the metadata entry ``name`` (e.g. the standardisation's mean) set to
    ``array``, or set to the JSON value ``array`` when it is not an array."""
    entries = _entries(data)
    meta = json.loads(str(np.load(io.BytesIO(entries[META]))))
    if isinstance(array, np.ndarray):
        meta["tree"]["metadata"][name] = {"__array__": f"metadata/{name}"}
        entries[f"metadata/{name}.npy"] = _npy(array)
    else:
        meta["tree"]["metadata"][name] = array
        entries.pop(f"metadata/{name}.npy", None)
    entries[META] = _npy(np.array(json.dumps(meta)))
    return _zip(entries)


def _stored(data, name):
    return np.load(io.BytesIO(_entries(data)[f"metadata/{name}.npy"]))


DEEP = 100_000
WEIGHT = "model/0.weight.npy"
NOT_A_CHECKPOINT = ["not a tinytorch checkpoint"]

# name: (the file made from a good checkpoint's bytes, words the one-line error must contain)
CRAFTED = {
    "text-file": (lambda d: b"hello, I am a text file, not an archive\n", NOT_A_CHECKPOINT),
    "empty-file": (lambda d: b"", NOT_A_CHECKPOINT),
    "npy-file": (lambda d: _npy(np.ones(3)), NOT_A_CHECKPOINT),
    "json-nested-100000": (lambda d: _with_meta_text(d, "[" * DEEP + "]" * DEEP),
                           ["nested too deeply"]),
    "config-nested-100000": (lambda d: _with_config_text(d, None, "[" * DEEP + "]" * DEEP),
                             ["nested too deeply"]),
    "config-nested-200": (lambda d: _with_config_text(d, "hidden", '{"a": ' * 200 + "1"
                                                      + "}" * 200), ["more than 64 levels"]),
    "huge-declared-array": (lambda d: _with_entry(d, WEIGHT, _npy_declaring((10 ** 12,))),
                            ["model/0.weight", "declares the shape"]),
    "huge-declared-3d": (lambda d: _with_entry(d, WEIGHT, _npy_declaring((2 ** 31,) * 3)),
                         ["declares the shape"]),
    "negative-shape": (lambda d: _with_entry(d, WEIGHT, _npy_declaring((-1, 4))),
                       ["declares the shape"]),
    "pickled-objects": (lambda d: _with_entry(d, WEIGHT, _npy(np.array([{"code": 1}]),
                                                              allow_pickle=True)),
                        ["model/0.weight", "object"]),
    "structured-dtype": (lambda d: _with_entry(d, WEIGHT, _npy(np.zeros(2, dtype="f4,i4"))),
                         ["model/0.weight"]),
    "text-weights": (lambda d: _with_entry(d, WEIGHT, _npy(np.array(["a", "b"]))),
                     ["model/0.weight"]),
    "meta-not-text": (lambda d: _with_entry(d, META, _npy(np.ones(3))), ["__tinytorch__"]),
    "meta-invalid-utf32": (lambda d: _with_entry(d, META, _npy(np.array("x")).replace(
        b"x\0\0\0", b"\xff" * 4)), ["__tinytorch__"]),
    "compressed": (lambda d: _zip(_entries(d), zipfile.ZIP_DEFLATED), ["compressed"]),
    "zip-bomb": (lambda d: _zip({**_entries(d), "bomb.npy": _npy(np.zeros(50_000_000, "u1"))},
                                zipfile.ZIP_DEFLATED), ["compressed"]),
    "duplicate-entry": (lambda d: _zip([*_entries(d).items(),
                                        ("model/0.bias.npy", _npy(np.ones(8)))]),
                        ["appears twice"]),
    "extra-weights": (lambda d: _with_model_array(d, "9.weight", np.ones((8, 8), "f4")),
                      ["do not match its config", "9.weight"]),
    "wrong-shape-weights": (lambda d: _with_model_array(d, "3.weight", np.ones((8, 9), "f4")),
                            ["do not match its config", "3.weight", "(8, 9)"]),
    "hidden_layers-1000000": (lambda d: _with_config_text(d, "hidden_layers", "1000000"),
                              ["hidden_layers", "16"]),
    "classes-1e9": (lambda d: _with_config_text(d, "classes", "1000000000"), ["classes"]),
    "hidden-mismatch": (lambda d: _with_config_text(d, "hidden", "9"),
                        ["do not match its config", "shape"]),
    "unknown-model": (lambda d: _with_config_text(d, "model", '"gpt9"'), ["model"]),
    "model-list": (lambda d: _with_config_text(d, "model", "[1]"), ["model"]),
    # the CLI review's findings: sizes, headers, long values, the standardisation
    "overlapping-entries": (lambda d: nested_zip(100, b"\0" * 20_000),
                            ["entries declare", "overlap"]),
    "bool-in-shape": (lambda d: _with_entry(d, WEIGHT, _npy_declaring((True, 4))),
                      ["model/0.weight", "declares the shape (True, 4)"]),
    "non-bool-order": (lambda d: _with_entry(d, WEIGHT, _npy_declaring((4,)).replace(
        b"'fortran_order': False", b"'fortran_order': 0    ")), ["model/0.weight"]),
    "json-int-5000-digits": (lambda d: _with_config_text(d, "seed", "9" * 5000),
                             ["5,000 digits"]),
    "seed-4300-digits": (lambda d: _with_config_text(d, "seed", "9" * 4300),
                         ["'seed' must be an int from 0 to 4294967295"]),
    "seed-negative": (lambda d: _with_config_text(d, "seed", "-1"), ["'seed'"]),
    "seed-2**40": (lambda d: _with_config_text(d, "seed", str(2 ** 40)), ["'seed'"]),
    "seed-true": (lambda d: _with_config_text(d, "seed", "true"), ["'seed'"]),
    "version-4000-digits": (lambda d: _with_meta_text(d, json.dumps(
        {"format": "tinytorch", "version": 1, "tree": {}}).replace("1", "9" * 4000)),
        ["newer tinytorch"]),
    "long-entry-name": (lambda d: _with_entry(d, "n" * 60_000 + ".txt", _npy(np.ones(2))),
                        NOT_A_CHECKPOINT + ["nnn..."]),
    "long-weight-name": (lambda d: _with_model_array(d, "w" * 50_000, np.ones(2, "f4")),
                         ["has no place for www"]),
    "long-model-name": (lambda d: _with_config_text(d, "model", json.dumps("m" * 100_000)),
                        ["'model'"]),
    "long-option-value": (lambda d: _with_config_text(d, "optimizer", json.dumps("o" * 100_000)),
                          ["'optimizer'"]),
    "mean-of-another-shape": (lambda d: _with_metadata_array(d, "mean", np.zeros(5, "f4")),
                              ["'mean'", "shape (2,)", "(5,)"]),
    "mean-nan": (lambda d: _with_metadata_array(d, "mean", np.full(2, np.nan, "f4")),
                 ["'mean'", "finite"]),
    "mean-of-ints": (lambda d: _with_metadata_array(d, "mean", np.zeros(2, "i8")), ["'mean'"]),
    "mean-a-number": (lambda d: _with_metadata_array(d, "mean", 0.5), ["'mean'"]),
    "std-zero": (lambda d: _with_metadata_array(d, "std", np.zeros(2, "f4")),
                 ["'std'", "positive"]),
    "std-negative": (lambda d: _with_metadata_array(d, "std", -_stored(d, "std")),
                     ["'std'", "positive"]),
    "std-of-other-data": (lambda d: _with_metadata_array(d, "std", 2 * _stored(d, "std")),
                          ["'std'", "other data"]),
}


@pytest.mark.parametrize("case", CRAFTED)
def test_a_crafted_checkpoint_is_refused_in_one_line(checkpoint, tmp_path, capsys, case):
    craft, words = CRAFTED[case]
    _refused(craft(checkpoint), tmp_path, capsys, *words)


@pytest.mark.parametrize("name, value, words", [
    ("mean", np.full(64, np.nan, "f4"), ["'mean'", "finite"]),
    ("std", np.zeros(64, "f4"), ["'std'", "positive"]),
    ("mean", np.zeros(3, "f4"), ["'mean'", "shape (64,)"]),
])
def test_a_cnn_checkpoint_s_standardisation_is_checked_as_the_mlp_s(
        tmp_path_factory, tmp_path, capsys, name, value, words):
    out = tmp_path_factory.getbasetemp() / "tiny-cnn-run"
    if not (out / "model.npz").exists():
        assert main(["train", "--model", "cnn", "--channels", "2", "--epochs", "1",
                     "--out", str(out)]) == 0
    _refused(_with_metadata_array((out / "model.npz").read_bytes(), name, value), tmp_path,
             capsys, *words)


def test_a_config_that_disagrees_with_the_weights_allocates_nothing(checkpoint, tmp_path,
                                                                      capsys):
    # within the limits, but 16 layers of 4096 units would be 1 GB of weights to build
    data = _with_config_text(checkpoint, "hidden", "4096")
    data = _with_config_text(data, "hidden_layers", "16")
    tracemalloc.start()
    start = time.perf_counter()
    try:
        line = _refused(data, tmp_path, capsys, "do not match its config")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 30e6, f"{peak / 1e6:.0f} MB allocated before refusing"
    assert time.perf_counter() - start < 10
    assert "34 arrays" in line, "16 hidden layers and the output layer, a weight and bias each"


def test_a_checkpoint_larger_than_the_largest_model_needs_is_refused_before_reading(
        checkpoint, tmp_path, capsys, monkeypatch):
    import tinytorch.cli as cli

    assert cli.MAX_CHECKPOINT_BYTES >= 3 * 4 * cli.MAX_PARAMETERS, "weights and AdamW's moments"
    monkeypatch.setattr(cli, "MAX_CHECKPOINT_BYTES", len(checkpoint) // 2)
    _refused(checkpoint, tmp_path, capsys, "entries declare", f"the {len(checkpoint) // 2:,} a")


def test_a_text_file_named_npz_never_suggests_unpickling(tmp_path, capsys):
    line = _refused(b"just some notes\n", tmp_path, capsys, "not a tinytorch checkpoint")
    assert "allow_pickle" not in line and "pickle" not in line


def test_an_unchanged_checkpoint_evaluates(checkpoint, tmp_path, capsys):
    status, out, _ = _evaluate(checkpoint, tmp_path, capsys)
    assert status == 0 and "test accuracy:" in out


# ----- seeded fuzzing ---------------------------------------------------------------------------

def _structure(data):
    """Byte ranges of the zip's headers (with each entry's .npy header) and its directory."""
    ranges = []
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for info in archive.infolist():
            start = info.header_offset
            name_length, extra_length = struct.unpack("<HH", data[start + 26:start + 30])
            ranges.append((start, start + 30 + name_length + extra_length + 128))
    ranges.append((data.find(b"PK\x01\x02"), len(data)))
    return ranges


def _flipped(data, rng, ranges):
    """``data`` with 1 to 3 bytes replaced, mostly in the archive's headers."""
    data = bytearray(data)
    for _ in range(rng.choice([1, 1, 2, 3])):
        start, end = rng.choice(ranges) if rng.random() < 0.8 else (0, len(data))
        data[rng.randrange(start, min(end, len(data)))] = rng.randrange(256)
    return bytes(data)


def _rewritten(data, rng):
    """``data`` with 1 to 3 bytes of one entry replaced (mostly in its .npy header or its JSON)
    and the archive rebuilt with valid checksums: a hand-edited file, not a damaged one."""
    entries = list(_entries(data).items())
    k = rng.randrange(len(entries))
    name, body = entries[k]
    body = bytearray(body)
    header_end = body.index(b"\n") + 1
    for _ in range(rng.choice([1, 1, 2, 3])):
        in_header = rng.random() < 0.5 and name != META
        position = rng.randrange(8, header_end) if in_header else rng.randrange(len(body))
        body[position] = rng.choice([rng.randrange(256), *b'9[{",-0'])
    entries[k] = (name, bytes(body))
    return _zip(entries)


def test_seeded_fuzzing_never_escapes_the_one_line_error(checkpoint, tmp_path, capsys):
    rng = random.Random(12)
    ranges = _structure(checkpoint)
    cases = ([("flip", _flipped(checkpoint, rng, ranges)) for _ in range(200)]
             + [("rewrite", _rewritten(checkpoint, rng)) for _ in range(200)]
             + [("truncate", checkpoint[:rng.randrange(len(checkpoint))]) for _ in range(60)])
    failures, statuses = [], {0: 0, 1: 0}
    for i, (kind, data) in enumerate(cases):
        try:
            status, out, err = _evaluate(data, tmp_path, capsys)
        except BaseException as error:         # noqa: B036 -- anything escaping is the bug
            failures.append(f"case {i} ({kind}): {type(error).__name__}: {error}")
            continue
        statuses[status] = statuses.get(status, 0) + 1
        lines = err.strip().splitlines()
        if status == 0 and "test accuracy:" in out:
            continue                           # the change did not matter (e.g. a weight)
        if status != 1 or len(lines) != 1 or not lines[0].startswith("tinytorch: error:") \
                or "pickle" in err or len(lines[0]) > 300 + len(str(tmp_path)):
            failures.append(f"case {i} ({kind}): status {status}: {err.strip()[:300]}")
    assert not failures, f"{len(failures)} cases escaped:\n" + "\n".join(failures[:10])
    assert statuses[1] > 300, statuses
