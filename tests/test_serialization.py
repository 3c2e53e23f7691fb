"""tinytorch.save / tinytorch.load: round trips, no pickle, clear errors for bad files."""

import json
import zipfile

import numpy as np
import pytest

import tinytorch as tt
from cli_helpers import nested_zip, npy_declaring


def test_round_trip_of_nested_state(tmp_path):
    state = {
        "model": {"0.weight": tt.randn(3, 4), "0.bias": tt.zeros(4)},
        "optimizer": {"state": {0: {"step": 7, "exp_avg": np.arange(3.0)}},
                      "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "params": [0]}]},
        "epoch": 5, "name": "digits", "flag": True, "nothing": None, "scores": [0.5, 0.75],
    }
    path = tmp_path / "state.npz"
    tt.save(state, path)
    loaded = tt.load(path)
    assert isinstance(loaded["model"]["0.weight"], tt.Tensor)
    np.testing.assert_array_equal(loaded["model"]["0.weight"].data, state["model"]["0.weight"].data)
    assert loaded["model"]["0.weight"].dtype == np.float32
    assert isinstance(loaded["optimizer"]["state"][0]["exp_avg"], np.ndarray)
    np.testing.assert_array_equal(loaded["optimizer"]["state"][0]["exp_avg"], np.arange(3.0))
    assert loaded["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)
    assert {k: loaded[k] for k in ("epoch", "name", "flag", "nothing", "scores")} == \
           {k: state[k] for k in ("epoch", "name", "flag", "nothing", "scores")}


def test_dtypes_are_kept(tmp_path):
    path = tmp_path / "a.npz"
    tt.save({"x": tt.Tensor([1.0, 2.0], dtype=np.float64), "i": np.array([1, 2], np.int64)}, path)
    loaded = tt.load(path)
    assert loaded["x"].dtype == np.float64
    assert loaded["i"].dtype == np.int64


def test_file_is_a_plain_npz_readable_without_pickle(tmp_path):
    path = tmp_path / "model.npz"
    tt.save({"w": tt.ones(2, 2)}, path)
    with np.load(path, allow_pickle=False) as archive:
        np.testing.assert_array_equal(archive["w"], np.ones((2, 2)))
        meta = json.loads(str(archive["__tinytorch__"]))
    assert meta["format"] == "tinytorch"


def test_path_is_used_exactly_even_without_npz_suffix(tmp_path):
    path = tmp_path / "weights.bin"
    tt.save({"w": tt.ones(1)}, path)
    assert path.is_file() and not (tmp_path / "weights.bin.npz").exists()
    assert list(tmp_path.iterdir()) == [path], "no temporary file should be left behind"


def test_unsupported_objects_are_rejected_with_their_location(tmp_path):
    with pytest.raises(TypeError, match="model/act"):
        tt.save({"model": {"act": object()}}, tmp_path / "x.npz")
    with pytest.raises(TypeError, match="dtype"):
        tt.save({"s": np.array(["a", "b"])}, tmp_path / "x.npz")


def test_truncated_file_gives_a_value_error_naming_it(tmp_path):
    path = tmp_path / "model.npz"
    tt.save({"w": tt.randn(50, 50)}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="model.npz"):
        tt.load(path)


def test_file_that_is_not_npz_gives_a_value_error(tmp_path):
    path = tmp_path / "notes.npz"
    path.write_text("hello, I am not an archive")
    with pytest.raises(ValueError, match="notes.npz"):
        tt.load(path)
    single = tmp_path / "single.npy"
    np.save(single, np.ones(3))
    with pytest.raises(ValueError, match="single.npy"):
        tt.load(single)


def test_plain_npz_without_metadata_gives_a_value_error(tmp_path):
    path = tmp_path / "plain.npz"
    np.savez(path, w=np.ones(3))
    with pytest.raises(ValueError, match="not a tinytorch file"):
        tt.load(path)


def test_missing_array_entry_gives_a_value_error(tmp_path):
    path = tmp_path / "model.npz"
    tt.save({"w": tt.ones(2), "b": tt.ones(2)}, path)
    with np.load(path) as archive:
        kept = {k: archive[k] for k in archive.files if k != "b"}
    np.savez(path, **kept)
    with pytest.raises(ValueError, match="'b' is missing"):
        tt.load(path)


def test_pickled_arrays_are_refused(tmp_path):
    good, path = tmp_path / "good.npz", tmp_path / "evil.npz"
    tt.save({"w": tt.ones(2)}, good)
    with zipfile.ZipFile(good) as source, zipfile.ZipFile(path, "w") as archive:
        archive.writestr("__tinytorch__.npy", source.read("__tinytorch__.npy"))
        with archive.open("w.npy", "w") as f:
            np.save(f, np.array([{"code": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="evil.npz"):
        tt.load(path)


def test_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        tt.load(tmp_path / "nope.npz")


def test_zero_dim_tensors_and_arrays_keep_their_shape(tmp_path):
    path = tmp_path / "scalars.npz"
    tt.save({"t": tt.tensor(3.0), "a": np.array(2.0), "i": np.array(7, np.int64),
             "m": tt.ones(2, 3).data.T}, path)
    loaded = tt.load(path)
    assert isinstance(loaded["t"], tt.Tensor) and loaded["t"].shape == ()
    assert loaded["t"].item() == 3.0
    assert isinstance(loaded["a"], np.ndarray) and loaded["a"].shape == () and loaded["a"] == 2.0
    assert loaded["i"].shape == () and loaded["i"].dtype == np.int64
    assert loaded["m"].shape == (3, 2)       # a non-contiguous view is stored as its values


def _counting_model():
    from tinytorch.core.layers import Linear, Module

    class Counting(Module):
        def __init__(self):
            super().__init__()
            self.linear = Linear(3, 2)
            self.register_buffer("count", tt.tensor(0.0))

        def forward(self, x):
            return self.linear(x)

    return Counting()


def test_state_dict_with_a_zero_dim_buffer_round_trips(tmp_path):
    model = _counting_model()
    model.count.data[...] = 5.0
    path = tmp_path / "state.npz"
    tt.save(model.state_dict(), path)
    loaded = tt.load(path)
    assert loaded["count"].shape == ()
    fresh = _counting_model()
    fresh.load_state_dict(loaded)
    assert fresh.count.shape == () and fresh.count.item() == 5.0
    np.testing.assert_array_equal(fresh.linear.weight.data, model.linear.weight.data)


def test_trainer_checkpoint_with_a_zero_dim_buffer_round_trips(tmp_path):
    from tinytorch.core.losses import MSELoss
    from tinytorch.core.optimizers import Adam
    from tinytorch.core.training import Trainer

    model = _counting_model()
    model.count.data[...] = 9.0
    trainer = Trainer(model, Adam(model.parameters(), lr=0.1), MSELoss())
    trainer.epoch = 4
    path = tmp_path / "ckpt.npz"
    trainer.save_checkpoint(path, note="scalar buffer")
    fresh = _counting_model()
    other = Trainer(fresh, Adam(fresh.parameters(), lr=0.1), MSELoss())
    assert other.load_checkpoint(path) == {"note": "scalar buffer"}
    assert other.epoch == 4
    assert fresh.count.shape == () and fresh.count.item() == 9.0
    np.testing.assert_array_equal(fresh.linear.weight.data, model.linear.weight.data)


# ----- untrusted files: sizes, headers, special files, JSON (the CLI review's findings) ----------

def _npy(shape, body, descr="|u1", fortran_order=False):
    """An .npy file whose header says ``shape``, ``descr`` and ``fortran_order``, holding
    ``body`` (whatever the header says)."""
    return npy_declaring(shape, body, descr, fortran_order)


def test_entries_that_overlap_are_refused_before_anything_is_read(tmp_path):
    import tracemalloc

    path = tmp_path / "overlap.npz"
    path.write_bytes(nested_zip(100, b"\0" * 400_000))
    with zipfile.ZipFile(path) as archive:              # a valid zip, read naively: ~150x
        declared = sum(info.file_size for info in archive.infolist())
        assert len(archive.read("e0050.npy")) > 400_000
    assert declared > 50 * path.stat().st_size
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="overlap.npz: damaged .*entries declare") as error:
            tt.load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < path.stat().st_size, f"{peak:,} bytes allocated before refusing"
    assert f"{declared:,} bytes" in str(error.value)


def test_entries_declaring_more_than_max_bytes_are_refused_before_reading(tmp_path):
    from tinytorch.core.serialization import _load

    path = tmp_path / "model.npz"
    tt.save({"w": tt.ones(1000)}, path)
    assert _load(path, "file", max_bytes=10_000)["w"].shape == (1000,)
    with pytest.raises(ValueError, match=r"model.npz: its entries declare .* more than the 1,000"):
        _load(path, "file", max_bytes=1000)


@pytest.mark.parametrize("shape, descr, fortran_order, body", [
    ((True, 4), "<f4", False, b"\0" * 16),         # True == 1: NumPy's parser lets it through
    ((False,), "<f4", False, b""),
    ((2, True), "<f4", False, b"\0" * 8),
    ((2 ** 70,), "<f4", False, b"\0" * 16),
    ((-2, -2), "<f4", False, b"\0" * 16),
    ((4,), "<f4", 1, b"\0" * 16),                 # fortran_order must be a bool
    ((4,), "<f4", None, b"\0" * 16),
    ((2,), "<f4", False, b"\0" * 16),             # more bytes than the shape
    ((2, "2"), "<f4", False, b"\0" * 16),
    ([4], "<f4", False, b"\0" * 16),
    ((4,), "<U2", False, b"\0" * 32),
    ((4,), "O", False, b"\0" * 32),
    ((4,), "|V4", False, b"\0" * 16),
    ((4,), "('<f4', (2,))", False, b"\0" * 32),
], ids=lambda value: f"{len(value)}-bytes" if isinstance(value, bytes) else repr(value)[:20])
def test_every_malformed_npy_header_is_a_value_error_naming_the_file(tmp_path, shape, descr,
                                                                    fortran_order, body):
    good = tmp_path / "good.npz"
    tt.save({"w": tt.ones(4)}, good)
    path = tmp_path / "crafted.npz"
    with zipfile.ZipFile(good) as source, zipfile.ZipFile(path, "w") as archive:
        archive.writestr("__tinytorch__.npy", source.read("__tinytorch__.npy"))
        archive.writestr("w.npy", _npy(shape, body, descr, fortran_order))
    with pytest.raises(ValueError, match="crafted.npz: ") as error:
        tt.load(path)
    assert "'w'" in str(error.value) and "\n" not in str(error.value)


def test_special_files_are_refused_without_blocking(tmp_path):
    import os
    import threading

    fifo = tmp_path / "pipe.npz"
    os.mkfifo(fifo)
    outcome = []

    def load():
        try:
            tt.load(fifo)
        except Exception as error:          # noqa: BLE001 -- what the loader raised is checked
            outcome.append(error)
    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    thread.join(20)
    if thread.is_alive():                   # release the reader blocked in open()
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("tt.load waited for a writer to open the named pipe")
    assert isinstance(outcome[0], ValueError) and "named pipe" in str(outcome[0])
    for path, kind in ((tmp_path, "a folder"), ("/dev/null", "a device")):
        with pytest.raises(ValueError, match=f"not a tinytorch file .it is {kind}"):
            tt.load(path)


def test_saving_over_a_folder_or_a_named_pipe_is_refused_without_blocking(tmp_path):
    import os

    os.mkfifo(tmp_path / "pipe.npz")
    for name, kind in (("pipe.npz", "a named pipe"), ("", "a folder")):
        with pytest.raises(ValueError, match=f"cannot be written: it is {kind}"):
            tt.save({"w": tt.ones(2)}, tmp_path / name)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe.npz"], "no temporary left"


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_saved_files_get_the_permissions_the_umask_gives_new_files(tmp_path, umask):
    import os

    from tinytorch.core.tokenization import CharTokenizer

    previous = os.umask(umask)
    try:
        tt.save({"w": tt.ones(2)}, tmp_path / "model.npz")
        CharTokenizer(["a", "b"]).save(tmp_path / "tokenizer.json")
        with open(tmp_path / "plain.txt", "w"):
            pass
    finally:
        os.umask(previous)
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in tmp_path.iterdir()}
    assert modes == dict.fromkeys(["model.npz", "tokenizer.json", "plain.txt"],
                                  oct(0o666 & ~umask))


def test_a_failed_write_names_the_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    import errno

    def full(file, **arrays):
        file.write(b"PK")
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(np, "savez", full)
    path = tmp_path / "model.npz"
    with pytest.raises(OSError) as error:
        tt.save({"w": tt.ones(2)}, path)
    assert error.value.errno == errno.ENOSPC and error.value.filename == str(path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("text, words", [
    ('{"format": "tinytorch", "version": 1, "tree": ' + "9" * 5000 + "}", "5,000 digits"),
    ('{"format": "tinytorch", "version": 1, "tree": -' + "9" * 4301 + "}", "4,301 digits"),
    ('{"format": "tinytorch", "version": ' + "9" * 4000 + ', "tree": 1}', "newer tinytorch"),
    ('{"format": "tinytorch", "version": "' + "x" * 100_000 + '", "tree": 1}', "format version"),
    ('{"format": "tinytorch", "version": 1, "tree": ' + "[" * 100_000 + "]" * 100_000 + "}",
     "nested too deeply"),
], ids=["int-5000-digits", "int-minus-4301-digits", "version-4000-digits", "version-long-text",
        "nested-100000"])
def test_metadata_json_problems_are_short_messages_naming_the_file(tmp_path, text, words):
    path = tmp_path / "crafted.npz"
    np.savez(path, __tinytorch__=np.array(text))
    with pytest.raises(ValueError, match="crafted.npz: ") as error:
        tt.load(path)
    message = str(error.value)
    assert words in message and len(message) < 200 + len(str(path)), message
    assert "set_int_max_str_digits" not in message


def test_a_long_entry_name_is_cut_in_messages(tmp_path):
    path = tmp_path / "crafted.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("n" * 60_000 + ".txt", b"")
    with pytest.raises(ValueError, match="is not an .npy array") as error:
        tt.load(path)
    assert len(str(error.value)) < 200 + len(str(path))
