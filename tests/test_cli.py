"""The ``tinytorch`` command: train, evaluate, graph, demo, help, and one-line errors."""

import argparse
import importlib.util
import os
import stat
import sys

import pytest

import tinytorch
from cli_helpers import cli_env, one_line_error, run_cli, strict_json
from tinytorch.cli import build_parser, main

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
    history = strict_json(out / "history.json")
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
    recorded = strict_json(out / "history.json")["test_accuracy"]
    capsys.readouterr()
    assert main(["evaluate", str(out / "model.npz")]) == 0
    assert f"test accuracy: {recorded:.2%}" in capsys.readouterr().out


def test_same_seed_gives_the_same_run_and_another_seed_does_not(tmp_path):
    runs = []
    for name, seed in (("a", "7"), ("b", "7"), ("c", "8")):
        code, out = _train(tmp_path, "--seed", seed, name=name)
        assert code == 0
        runs.append(strict_json(out / "history.json"))
    a, b, c = runs
    for key in ("train_loss", "val_loss", "val_accuracy", "test_accuracy"):
        assert a[key] == b[key], key
    assert a["train_loss"] != c["train_loss"]


@pytest.mark.parametrize("dataset", ["spirals", "xor"])
def test_train_on_other_datasets_with_other_optimizers(tmp_path, dataset):
    code, out = _train(tmp_path, "--dataset", dataset, "--optimizer", "sgd", "--lr", "0.05",
                       "--batch-size", "64")
    assert code == 0
    config = strict_json(out / "history.json")["config"]
    assert (config["dataset"], config["optimizer"], config["lr"], config["batch_size"]) == \
           (dataset, "sgd", 0.05, 64)


def test_default_train_reaches_97_percent_on_digits(default_digits_run):
    history = strict_json(default_digits_run / "history.json")
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
    result = run_cli("evaluate", tmp_path / "nothing.npz")
    assert result.returncode == 1
    assert "nothing.npz" in one_line_error(result.stderr, "tinytorch: error:")


@pytest.mark.parametrize("lr, words", [
    ("10", "training diverged at step 13: the loss is inf"),      # overflows
    ("0.8", "training diverged at step 200: the loss rose from 16.25 at step 0 to"),  # stays finite
])
def test_demo_that_diverges_stops_with_a_one_line_error(lr, words, capsys):
    assert main(["demo", "--lr", lr]) == 1
    line = one_line_error(capsys.readouterr().err, "tinytorch: error:")
    assert words in line and line.endswith(f"; lower --lr (it was {lr})")


@pytest.mark.parametrize("argv", [["train"], ["evaluate", "run"], ["generate", "run"], ["graph"],
                                  ["demo"], ["profile"]])
def test_an_unknown_argument_is_reported_by_its_command(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--bogus", "extra"])
    assert exit_info.value.code == 2
    prefix = f"tinytorch {argv[0]}: error: unrecognized arguments: --bogus extra"
    assert one_line_error(capsys.readouterr().err, prefix).endswith(
        f"(see 'tinytorch {argv[0]} --help')")


@pytest.mark.parametrize("argv, text", [
    (["demo"], "--seed N seeds the 64 noisy points;"),
    (["profile"], "--seed N seeds the data split and the initial weights;"),
])
def test_seed_help_says_what_the_command_seeds(argv, text, capsys):
    with pytest.raises(SystemExit):
        main([*argv, "--help"])
    assert text in " ".join(capsys.readouterr().out.split())


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
    (lambda checkpoint: checkpoint.update(metadata="moons"), "metadata"),
    (lambda checkpoint: checkpoint.update(epoch=[1]), "epoch"),
    (lambda checkpoint: checkpoint.update(step="many"), "step"),
], ids=["seed-str", "seed-float", "hidden_layers-str", "hidden-str", "hidden-zero",
        "classes-list", "dataset-int", "dataset-unknown", "dropout-str", "dropout-too-big",
        "config-list", "metadata-str", "epoch-list", "step-str"])
def test_evaluate_checkpoint_with_a_bad_config_is_a_one_line_error(
        trained_checkpoint, tmp_path, capsys, change, field):
    path = _rewritten(trained_checkpoint, tmp_path / "bad.npz", change)
    capsys.readouterr()
    assert main(["evaluate", str(path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("tinytorch: error:") and "bad.npz" in err[0] and field in err[0]


def test_evaluate_accepts_an_unchanged_rewritten_checkpoint(trained_checkpoint, tmp_path, capsys):
    path = _rewritten(trained_checkpoint, tmp_path / "same.npz", lambda checkpoint: None)
    assert main(["evaluate", str(path)]) == 0
    assert "test accuracy:" in capsys.readouterr().out


def test_evaluate_reports_a_type_error_from_the_file_contents_in_one_line(
        trained_checkpoint, capsys, monkeypatch):
    from tinytorch.cli.kinds import MLP

    def broken(*args, **kwargs):
        raise TypeError("unsupported operand type(s)")
    monkeypatch.setattr(MLP, "build", broken)
    capsys.readouterr()
    assert main(["evaluate", str(trained_checkpoint)]) == 1
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


# ----- bad option values: one line, status 2, the option named ---------------------------------

@pytest.mark.parametrize("argv, words", [
    (["train", "--lr", "inf"], ["--lr", "finite"]),
    (["train", "--lr", "nan"], ["--lr", "finite"]),
    (["train", "--lr", "0"], ["--lr", "> 0"]),
    (["train", "--seed", "-1"], ["--seed", "from 0 to"]),
    (["train", "--seed", str(2 ** 32)], ["--seed"]),
    (["train", "--hidden", "10000000"], ["--hidden", "from 1 to 4096"]),
    (["train", "--hidden", "abc"], ["--hidden", "expected an int"]),
    (["train", "--epochs", "1.5"], ["--epochs", "an int"]),
    (["train", "--batch-size", "0"], ["--batch-size"]),
    (["graph", "--batch-size", "100000"], ["--batch-size"]),
    (["graph", "--batch-size", "5000"], ["--batch-size", "1258"]),
    (["graph", "--out", "graph.xyz"], ["--out", ".xyz", ".svg"]),
    (["graph", "--out", "graph"], ["--out", "without an extension"]),
    (["demo", "--lr", "inf"], ["--lr"]),
    (["demo", "--steps", "0"], ["--steps"]),
])
def test_a_bad_option_value_is_a_one_line_usage_error_naming_it(argv, words, capsys,
                                                                  tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    try:
        status = main(argv)
    except SystemExit as exit_info:
        status = exit_info.code
    assert status == 2
    line = one_line_error(capsys.readouterr().err, f"tinytorch {argv[0]}: error:")
    for word in words:
        assert word in line, f"{word!r} not in: {line}"
    assert os.listdir(tmp_path) == [], "nothing is written"


def test_a_huge_hidden_size_is_refused_by_the_real_command_before_allocating():
    result = run_cli("train", "--hidden", "10000000")
    assert result.returncode == 2
    assert "--hidden" in one_line_error(result.stderr, "tinytorch train: error:")


def test_an_option_of_another_model_kind_is_refused(monkeypatch):
    import tinytorch.cli as cli
    from tinytorch.cli.options import Option

    class Other(ToyLinear):
        name = "other"
        options = ToyLinear.options + (Option("steps", int, 100, "steps", low=1),)
    monkeypatch.setitem(cli.KINDS, "other", Other())
    args = argparse.Namespace(dataset=None, epochs=None, optimizer=None, lr=None,
                              batch_size=None, hidden=None, steps=5)
    with pytest.raises(cli.UsageError, match="--steps: does not apply to --model mlp"):
        cli._settings(cli.KINDS["mlp"], args)
    assert cli._settings(cli.KINDS["other"], args)["steps"] == 5


# ----- help and small conveniences ------------------------------------------------------------

def test_version_prints_the_package_version():
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"tinytorch {tinytorch.__version__}"


def _subparsers(parser):
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


def test_every_command_has_a_description_and_every_option_a_help_text():
    commands = _subparsers(build_parser())
    assert set(commands) == {"train", "evaluate", "generate", "graph", "demo", "profile"}
    for name, parser in commands.items():
        assert parser.description and len(parser.description) > 40, name
        for action in parser._actions:
            assert action.help and action.help.strip(), f"{name} {action.option_strings}"


def test_the_top_level_help_shows_no_rest_markup(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for markup in ("``", ":func:", ":class:", ":mod:", ":meth:", ">>>"):
        assert markup not in text, markup
    for command in ("train", "evaluate", "generate", "graph", "demo", "profile"):
        assert f"tinytorch {command}" in text


def test_messages_say_an_int_and_1_epoch(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["train", "--epochs", "x"])
    assert "expected an int, got 'x'" in capsys.readouterr().err
    code, out = _train(tmp_path, "--epochs", "1")
    assert code == 0 and ", 1 epoch, seed" in capsys.readouterr().out
    assert main(["evaluate", str(out)]) == 0
    assert "trained 1 epoch\n" in capsys.readouterr().out


def test_evaluate_finds_model_npz_in_a_run_folder(tmp_path, capsys):
    code, out = _train(tmp_path)
    recorded = strict_json(out / "history.json")["test_accuracy"]
    capsys.readouterr()
    assert main(["evaluate", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"test accuracy: {recorded:.2%}" in text and "trained 3 epochs" in text


def test_evaluate_of_a_folder_without_a_checkpoint_is_a_one_line_error(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path)]) == 1
    assert "holds no model.npz" in one_line_error(capsys.readouterr().err, "tinytorch: error:")


def test_graph_creates_missing_folders(tmp_path, capsys, monkeypatch):
    import shutil
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert main(["graph", "--out", str(tmp_path / "new" / "dir" / "g.dot"), "--hidden", "4"]) == 0
    assert (tmp_path / "new" / "dir" / "g.dot").read_text().startswith("digraph")


FAKE_DOT = """#!/bin/sh
# A stand-in for Graphviz's dot: 'dot -Tsvg -o FILE' copies the DOT text on stdin to FILE.
# With FAIL set it fails, leaving half a FILE; with NOISY also set, after 5000 lines of stderr.
while [ $# -gt 0 ]; do
  case "$1" in -T*) format="${1#-T}";; -o) shift; out="$1";; esac
  shift
done
if [ -n "$FAIL" ]; then
  echo "<svg" > "$out"
  [ -n "$NOISY" ] && yes "Warning: a complaint of the renderer" | head -n 5000 >&2
  echo "Error: <stdin>: syntax error in line 1" >&2
  exit 1
fi
cat > "$out"
"""


@pytest.fixture
def fake_graphviz(tmp_path):
    """An environment whose PATH has a fake 'dot' first (Graphviz itself may be missing)."""
    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / "dot").write_text(FAKE_DOT)
    (folder / "dot").chmod(stat.S_IRWXU)
    return cli_env(PATH=f"{folder}{os.pathsep}{os.environ.get('PATH', '')}")


def test_graph_with_graphviz_renders_into_missing_folders(tmp_path, fake_graphviz):
    path = tmp_path / "out" / "sub" / "graph.svg"
    result = run_cli("graph", "--out", path, "--hidden", "4", env=fake_graphviz)
    assert result.returncode == 0, result.stderr
    assert path.read_text().startswith("digraph"), "the fake dot got the graph's DOT text"


@pytest.mark.parametrize("out, status, words", [
    ("graph.xyz", 2, ["cannot draw a graph as a .xyz file"]),
    ("graph.svg", 1, ["Graphviz", "syntax error"]),
])
def test_graph_with_graphviz_reports_failures_in_one_line(tmp_path, fake_graphviz, out, status,
                                                          words):
    result = run_cli("graph", "--out", tmp_path / out, "--hidden", "4",
                     env={**fake_graphviz, "FAIL": "1"})
    assert result.returncode == status
    line = one_line_error(result.stderr)
    for word in words:
        assert word in line, line


def test_graph_when_graphviz_fails_leaves_nothing_behind_and_says_so_briefly(tmp_path,
                                                                             fake_graphviz):
    out = tmp_path / "new" / "sub" / "graph.svg"
    result = run_cli("graph", "--out", out, "--hidden", "4",
                     env={**fake_graphviz, "FAIL": "1", "NOISY": "1"})
    assert result.returncode == 1
    line = one_line_error(result.stderr, f"tinytorch: error: {out} was not written: Graphviz")
    assert len(line) < 400 + len(str(out)), "dot's 5000 lines of stderr are cut"
    assert not (tmp_path / "new").exists(), "dot's half file and the folders made are removed"


def test_graph_writes_the_file_asked_for_and_nothing_else(tmp_path, fake_graphviz):
    (tmp_path / "graphs").mkdir()
    for name in ("graph.svg", "graph.dot"):
        result = run_cli("graph", "--out", tmp_path / "graphs" / name, "--hidden", "4",
                         env=fake_graphviz)
        assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(tmp_path / "graphs")) == ["graph.dot", "graph.svg"]
    assert (tmp_path / "graphs" / "graph.svg").read_text().startswith("digraph")


# ----- a new model kind plugs in --------------------------------------------------------------

from tinytorch.cli.kinds import (  # noqa: E402  (the example kind below)
    BATCH_SIZE, EPOCHS, LR, OPTIMIZER, ClassifierKind, dataset_option,
)


class ToyLinear(ClassifierKind):
    """The smallest model kind: softmax regression (one Linear layer)."""

    name = "linear"
    title = "a linear classifier"
    summary = "softmax regression"
    options = (dataset_option(), EPOCHS, OPTIMIZER, LR, BATCH_SIZE)

    def state_shapes(self, config, data):
        return {"weight": (data.features, data.classes), "bias": (data.classes,)}

    def build(self, config, data):
        from tinytorch.core.layers import Linear
        return Linear(data.features, data.classes)

    def sizes(self, config, data):
        return f"{data.features}-{data.classes}"


@pytest.fixture
def with_toy_kind(monkeypatch):
    import tinytorch.cli as cli

    monkeypatch.setitem(cli.KINDS, "linear", ToyLinear())
    cli._parser.cache_clear()
    yield
    cli._parser.cache_clear()


def test_a_new_model_kind_trains_and_evaluates_through_the_command_line(
        with_toy_kind, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--model", "linear", "--dataset", "moons", "--epochs", "2",
                 "--out", str(out)]) == 0
    assert "training a linear classifier 2-2 on moons" in capsys.readouterr().out
    assert strict_json(out / "history.json")["config"]["model"] == "linear"
    assert main(["evaluate", str(out)]) == 0
    assert "a linear classifier 2-2 on moons" in capsys.readouterr().out
    assert main(["train", "--model", "linear", "--hidden", "8",
                 "--out", str(tmp_path / "x")]) == 2
    assert "--hidden: does not apply to --model linear" in capsys.readouterr().err


@pytest.mark.parametrize("hidden_layers, dropout", [(0, 0.1), (1, 0.0), (2, 0.1), (3, 0.5)])
def test_mlp_state_shapes_match_the_built_model_without_building_it(hidden_layers, dropout):
    from tinytorch.cli.kinds import MLP, prepare_data

    kind, data = MLP(), prepare_data("moons", seed=0)
    config = {"hidden": 5, "hidden_layers": hidden_layers, "dropout": dropout}
    built = {name: array.shape for name, array in kind.build(config, data).state_dict().items()}
    assert kind.state_shapes(config, data) == built


# ----- the real command's exit statuses -----------------------------------------------------------

@pytest.mark.parametrize("argv, status", [
    ([], 2),
    (["train", "--lr", "nan"], 2),
    (["train", "--seed", "-1"], 2),
    (["graph", "--batch-size", "100000"], 2),
    (["evaluate", "{tmp}/notes.npz"], 1),
    (["train", "--epochs", "1", "--out", "{tmp}/notes.npz/run"], 1),
    (["demo", "--lr", "10"], 1),
])
def test_the_real_command_exits_2_for_usage_and_1_for_other_failures(tmp_path, argv, status):
    (tmp_path / "notes.npz").write_text("not a checkpoint\n")
    result = run_cli(*(arg.format(tmp=tmp_path) for arg in argv), cwd=tmp_path)
    assert result.returncode == status
    one_line_error(result.stderr)
    assert sorted(os.listdir(tmp_path)) == ["notes.npz"], "nothing is written"


def test_warnings_are_shown_in_one_line_without_a_source_path(tmp_path, capsys, monkeypatch):
    import warnings

    from tinytorch.cli.kinds import MLP

    describe = MLP.describe

    def warning_describe(self, config, data):
        warnings.warn("something odd\nhappened", RuntimeWarning)
        return describe(self, config, data)
    monkeypatch.setattr(MLP, "describe", warning_describe)
    assert _train(tmp_path)[0] == 0
    err = capsys.readouterr().err
    assert err == "tinytorch: warning: something odd happened\n"


def test_evaluate_reads_checkpoints_written_before_model_kinds(trained_checkpoint, tmp_path,
                                                               capsys):
    def as_in_version_0_1(checkpoint):        # no "model" field; no fixed sizes recorded
        for key in ("model", "hidden_layers", "dropout"):
            del checkpoint["metadata"]["config"][key]
    path = _rewritten(trained_checkpoint, tmp_path / "old.npz", as_in_version_0_1)
    capsys.readouterr()
    assert main(["evaluate", str(path)]) == 0
    assert "an MLP 2-8-8-2 on moons" in capsys.readouterr().out
