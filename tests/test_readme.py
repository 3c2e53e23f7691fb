"""The README's Python examples run as written (a newcomer copies them first), and what it says
about the command line matches the program."""

import pathlib
import re
import subprocess
import sys

import pytest

from doc_blocks import python_blocks

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"
TEXT = README.read_text()
BLOCKS = python_blocks(TEXT)
TRAINING_IN_PYTHON = next(i for i, block in enumerate(BLOCKS) if "trainer.fit(" in block)
_namespaces = {}                   # block index -> the globals it left, for the tests below


def _run_block(index, folder, monkeypatch):
    if index not in _namespaces:
        monkeypatch.chdir(folder)          # examples may write checkpoints
        namespace = {"__name__": "__readme__"}
        exec(compile(BLOCKS[index], f"README.md example {index}", "exec"), namespace)
        _namespaces[index] = namespace
    return _namespaces[index]


def test_readme_has_python_examples():
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index, tmp_path, monkeypatch):
    _run_block(index, tmp_path, monkeypatch)


def test_training_in_python_reproduces_the_command_number_for_number(
        default_digits_run, tmp_path, monkeypatch):
    from cli_helpers import strict_json

    example = _run_block(TRAINING_IN_PYTHON, tmp_path, monkeypatch)
    cli = strict_json(default_digits_run / "history.json")
    for key in ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr"):
        assert example["history"][key] == cli[key], key
    assert example["test_loss"] == cli["test_loss"]
    assert example["test_accuracy"] == cli["test_accuracy"]
    assert f"test accuracy: {cli['test_accuracy']:.2%}" in TEXT


def _train_option_table():
    """{flag: row} of the README's table of 'tinytorch train' options."""
    table = TEXT[TEXT.index("| option | default | meaning |"):]
    table = table[:table.index("\n\n")]
    return {re.match(r"\| `(--[a-z-]+)", row).group(1): row
            for row in table.splitlines()[2:]}


def test_the_option_table_lists_every_train_option_with_its_default_and_limits():
    from tinytorch.cli import KINDS, _train_options
    from tinytorch.cli.options import SEED

    rows = _train_option_table()
    options = {**_train_options(), "seed": SEED}
    assert set(rows) == {o.flag for o in options.values()} | {"--model", "--out", "--overwrite"}
    for option in options.values():
        row = rows[option.flag]
        if not callable(option.default):
            assert f"| `{option.default}` |" in row, row
        if option.kind is int:
            assert f"{option.low} to {option.high}" in row, row
        if option.choices:
            assert "{" + ",".join(option.choices) + "}" in row, row
    assert "{" + ",".join(KINDS) + "}" in rows["--model"]


def test_the_error_paragraph_names_the_statuses_the_program_uses():
    paragraph = TEXT[TEXT.index("**When something goes wrong**"):]
    paragraph = paragraph[:paragraph.index("\n\n")]
    for words in ("status 2 for a bad option value", "1 for everything", "status 130",
                  "status 1", "leaves no folder behind", "never a traceback"):
        assert words in paragraph, words


@pytest.mark.parametrize("extra", [[], ["-q"]])
def test_python_m_pytest_prints_its_passed_line(tmp_path, extra):
    (tmp_path / "test_one.py").write_text("def test_one():\n    assert True\n")
    root = README.parent
    result = subprocess.run([sys.executable, "-m", "pytest", *extra, "-c",
                             str(root / "pyproject.toml"), "--rootdir", str(root),
                             "-p", "no:cacheprovider", str(tmp_path / "test_one.py")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"^=* ?1 passed", result.stdout, flags=re.M), result.stdout


def test_the_sample_output_of_tinytorch_train_matches_a_run(default_digits_run):
    from cli_helpers import strict_json
    from tinytorch.core.training import format_loss

    history = strict_json(default_digits_run / "history.json")
    pattern = (r"epoch +(\d+)/30 \| train loss +(\S+) \| acc +(\S+)% \| val loss +(\S+) \| "
               r"acc +(\S+)%")
    lines = re.findall(pattern, TEXT)
    assert len(lines) >= 4
    for epoch, train_loss, train_accuracy, val_loss, val_accuracy in lines:
        i = int(epoch) - 1
        assert train_loss == format_loss(history["train_loss"][i]).strip(), epoch
        assert val_loss == format_loss(history["val_loss"][i]).strip(), epoch
        assert float(train_accuracy) == round(history["train_accuracy"][i] * 100, 2), epoch
        assert float(val_accuracy) == round(history["val_accuracy"][i] * 100, 2), epoch
    assert f"test accuracy: {history['test_accuracy']:.2%}" in TEXT
    assert f"test loss {history['test_loss']:.4f}" in TEXT
