"""The ``tinytorch`` command: train, evaluate, determinism, and one-line errors."""

import importlib.util
import json
import subprocess
import sys

import pytest

from tinytorch.cli import main

HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


def _train(tmp_path, *extra, name="run"):
    out = tmp_path / name
    code = main(["train", "--dataset", "moons", "--epochs", "3", "--hidden", "16",
                 "--out", str(out), *extra])
    return code, out


def test_train_writes_checkpoint_history_and_curves(tmp_path, capsys):
    code, out = _train(tmp_path)
    stdout = capsys.readouterr().out
    assert code == 0
    assert (out / "model.npz").is_file()
    history = json.loads((out / "history.json").read_text())
    for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr"):
        assert len(history[key]) == 3, key
    assert 0.0 <= history["test_accuracy"] <= 1.0
    assert history["config"]["dataset"] == "moons" and history["config"]["seed"] == 0
    if HAS_MATPLOTLIB:
        assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert "matplotlib" in stdout
    epoch_lines = [line for line in stdout.splitlines() if line.startswith("epoch ")]
    assert len(epoch_lines) == 3
    assert f"test accuracy: {history['test_accuracy']:.2%}" in stdout


def test_train_without_matplotlib_skips_the_curves_with_a_note(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    code, out = _train(tmp_path)
    assert code == 0
    assert not (out / "curves.png").exists()
    assert (out / "model.npz").is_file() and (out / "history.json").is_file()
    assert "matplotlib is not installed" in capsys.readouterr().out


def test_evaluate_reproduces_the_recorded_test_accuracy(tmp_path, capsys):
    code, out = _train(tmp_path)
    assert code == 0
    recorded = json.loads((out / "history.json").read_text())["test_accuracy"]
    capsys.readouterr()
    assert main(["evaluate", str(out / "model.npz")]) == 0
    assert f"test accuracy: {recorded:.2%}" in capsys.readouterr().out


def test_same_seed_gives_the_same_run_and_another_seed_does_not(tmp_path):
    runs = []
    for name, seed in (("a", "7"), ("b", "7"), ("c", "8")):
        code, out = _train(tmp_path, "--seed", seed, name=name)
        assert code == 0
        runs.append(json.loads((out / "history.json").read_text()))
    a, b, c = runs
    for key in ("train_loss", "val_loss", "val_accuracy", "test_accuracy"):
        assert a[key] == b[key], key
    assert a["train_loss"] != c["train_loss"]


@pytest.mark.parametrize("dataset", ["spirals", "xor"])
def test_train_on_other_datasets_with_other_optimizers(tmp_path, dataset):
    code, out = _train(tmp_path, "--dataset", dataset, "--optimizer", "sgd", "--lr", "0.05",
                       "--batch-size", "64")
    assert code == 0
    config = json.loads((out / "history.json").read_text())["config"]
    assert (config["dataset"], config["optimizer"], config["lr"], config["batch_size"]) == \
           (dataset, "sgd", 0.05, 64)


def test_default_train_reaches_97_percent_on_digits(tmp_path, capsys):
    out = tmp_path / "digits"
    assert main(["train", "--out", str(out)]) == 0
    history = json.loads((out / "history.json").read_text())
    assert history["config"]["dataset"] == "digits"
    assert history["test_accuracy"] >= 0.97, "the main job promises >= 97% test accuracy"


@pytest.mark.parametrize("argv", [
    ["train", "--epochs", "0"],
    ["train", "--dataset", "mnist"],
    ["train", "--lr", "abc"],
    ["train", "--optimizer", "rmsprop"],
    ["train", "--batch-size", "-4"],
    ["fly"],
    [],
])
def test_bad_arguments_exit_non_zero_with_a_usage_error(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code != 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("tinytorch")


def test_evaluate_missing_file_is_a_one_line_error(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "missing.npz")]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tinytorch: error:") and "missing.npz" in err[0]


def test_evaluate_corrupt_file_is_a_one_line_error(tmp_path, capsys):
    code, out = _train(tmp_path)
    checkpoint = out / "model.npz"
    checkpoint.write_bytes(checkpoint.read_bytes()[:200])
    capsys.readouterr()
    assert main(["evaluate", str(checkpoint)]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model.npz" in err[0]


def test_console_entry_point_reports_errors_without_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "tinytorch", "evaluate",
                             str(tmp_path / "nothing.npz")], capture_output=True, text=True)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_demo_still_runs(capsys):
    assert main(["demo", "--steps", "20"]) == 0
    assert "learned y =" in capsys.readouterr().out


def test_graph_writes_the_loss_graph_with_parameter_names(tmp_path, capsys):
    path = tmp_path / "graph.dot"
    assert main(["graph", "--out", str(path), "--hidden", "8"]) == 0
    dot = path.read_text()
    assert dot.startswith("digraph")
    for name in ("CrossEntropy", "Linear", "0.weight", "0.bias", "3.weight", "6.bias"):
        assert name in dot, f"{name} missing from the graph"
    assert str(path) in capsys.readouterr().out


def test_graph_without_graphviz_falls_back_to_dot_text(tmp_path, capsys, monkeypatch):
    import shutil
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert main(["graph", "--out", str(tmp_path / "graph.svg"), "--hidden", "8"]) == 0
    assert (tmp_path / "graph.dot").read_text().startswith("digraph")
    assert "graphviz" in capsys.readouterr().out.lower()


@pytest.fixture(scope="module")
def trained_checkpoint(tmp_path_factory):
    """A checkpoint of a tiny one-epoch run, written once for the tests that damage copies of it."""
    out = tmp_path_factory.mktemp("tiny-run")
    assert main(["train", "--dataset", "moons", "--epochs", "1", "--hidden", "8",
                 "--out", str(out)]) == 0
    return out / "model.npz"


def _rewritten(source, target, change):
    """Copy the checkpoint ``source`` to ``target`` with ``change(checkpoint)`` applied to it."""
    from tinytorch.core import serialization

    checkpoint = serialization.load(source)
    change(checkpoint)
    serialization.save(checkpoint, target)
    return target


def _set_config(key, value):
    def change(checkpoint):
        checkpoint["metadata"]["config"][key] = value
    return change


@pytest.mark.parametrize("change, field", [
    (_set_config("seed", "x"), "seed"),
    (_set_config("seed", 1.5), "seed"),
    (_set_config("hidden_layers", "2"), "hidden_layers"),
    (_set_config("hidden", "16"), "hidden"),
    (_set_config("hidden", 0), "hidden"),
    (_set_config("classes", [2]), "classes"),
    (_set_config("dataset", 3), "dataset"),
    (_set_config("dataset", "mnist"), "dataset"),
    (_set_config("dropout", "0.1"), "dropout"),
    (_set_config("dropout", 2.0), "dropout"),
    (lambda checkpoint: checkpoint["metadata"].update(config=["moons"]), "config"),
    (lambda checkpoint: checkpoint.update(metadata="moons"), "config"),
    (lambda checkpoint: checkpoint.update(epoch=[1]), "epoch"),
    (lambda checkpoint: checkpoint.update(step="many"), "step"),
], ids=["seed-str", "seed-float", "hidden_layers-str", "hidden-str", "hidden-zero",
        "classes-list", "dataset-int", "dataset-unknown", "dropout-str", "dropout-too-big",
        "config-list", "metadata-str", "epoch-list", "step-str"])
def test_evaluate_checkpoint_with_a_bad_config_is_a_one_line_error(
        trained_checkpoint, tmp_path, capsys, change, field):
    path = _rewritten(trained_checkpoint, tmp_path / "bad.npz", change)
    capsys.readouterr()
    assert main(["evaluate", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("tinytorch: error:") and "bad.npz" in err[0] and field in err[0]


def test_evaluate_accepts_an_unchanged_rewritten_checkpoint(trained_checkpoint, tmp_path, capsys):
    path = _rewritten(trained_checkpoint, tmp_path / "same.npz", lambda checkpoint: None)
    assert main(["evaluate", str(path)]) == 0
    assert "test accuracy:" in capsys.readouterr().out


def test_evaluate_reports_a_type_error_from_the_file_contents_in_one_line(
        trained_checkpoint, capsys, monkeypatch):
    import tinytorch.cli as cli

    def broken(*args, **kwargs):
        raise TypeError("unsupported operand type(s)")
    monkeypatch.setattr(cli, "build_mlp", broken)
    capsys.readouterr()
    assert main(["evaluate", str(trained_checkpoint)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tinytorch: error:")
    assert "model.npz" in err[0] and "TypeError" in err[0]


def test_evaluate_keeps_the_traceback_of_errors_not_caused_by_the_file(
        trained_checkpoint, monkeypatch):
    from tinytorch.core.training import Trainer

    def broken(self, loader):
        raise TypeError("a bug in the evaluation loop")
    monkeypatch.setattr(Trainer, "evaluate", broken)
    with pytest.raises(TypeError, match="a bug"):
        main(["evaluate", str(trained_checkpoint)])
