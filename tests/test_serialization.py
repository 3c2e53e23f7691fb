"""tinytorch.save / tinytorch.load: round trips, no pickle, clear errors for bad files."""

import json
import zipfile

import numpy as np
import pytest

import tinytorch as tt


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
