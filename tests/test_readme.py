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


def _option_table(header):
    """{flag: row} of the README's table that starts with ``header``."""
    table = TEXT[TEXT.index(header):]
    table = table[:table.index("\n\n")]
    return {re.match(r"\| `(--[a-z-]+)", row).group(1): row
            for row in table.splitlines()[2:]}


def _check_row(row, option):
    """The row names the option's default and its limits or choices."""
    if not callable(option.default) and option.default is not None:
        assert f"`{option.default}`" in row, (option.name, row)
    if option.kind is int:
        assert f"{option.low} to {option.high}" in row, (option.name, row)
    for choice in option.choices or ():
        assert choice in row, (option.name, choice, row)


def _flags_of(command):
    """The long options of ``tinytorch COMMAND`` as its parser reads them (without --help)."""
    import argparse

    from tinytorch.cli import build_parser

    commands = next(a for a in build_parser()._actions
                    if isinstance(a, argparse._SubParsersAction)).choices
    return {flag for action in commands[command]._actions for flag in action.option_strings
            if flag.startswith("--") and flag != "--help"}


def test_the_option_table_lists_every_train_option_with_its_default_and_limits():
    from tinytorch.cli import KINDS, THREADS, _option_variants, _train_options
    from tinytorch.cli.options import SEED

    rows = _option_table("| option | models | default | meaning |")
    flags = {o.flag for o in _train_options().values()} | {SEED.flag, THREADS.flag}
    assert flags <= set(rows)
    assert set(rows) == _flags_of("train")                 # every option of the parser, no other
    for name, variants in _option_variants().items():
        for option, users in variants:
            row = rows[option.flag]
            _check_row(row, option)
            for user in users:
                assert user in row.split("|")[2], (name, user, row)
    _check_row(rows["--seed"], SEED)
    assert "{" + ",".join(KINDS) + "}" in rows["--model"]


def test_the_generate_table_lists_every_option_with_its_default_and_limits():
    from tinytorch.cli import GENERATE_OPTIONS

    rows = _option_table("| option of `generate` | default | meaning |")
    assert set(rows) == {o.flag for o in GENERATE_OPTIONS} | {"--prompt", "--threads"}
    for option in GENERATE_OPTIONS:
        _check_row(rows[option.flag], option)


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


def _output_block(first_words):
    """The README's ``` block of command output whose first line starts with ``first_words``."""
    start = TEXT.index("```\n" + first_words)
    return TEXT[start:TEXT.index("```\n", start + 4)]


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_the_sample_output_of_tinytorch_train_matches_a_run(model, request):
    from cli_helpers import strict_json
    from tinytorch.core.training import format_loss

    run = request.getfixturevalue({"mlp": "default_digits_run", "cnn": "default_cnn_run"}[model])
    block = _output_block({"mlp": "training an MLP", "cnn": "training a CNN"}[model])
    history = strict_json(run / "history.json")
    pattern = (r"epoch +(\d+)/30 \| train loss +(\S+) \| acc +(\S+)% \| val loss +(\S+) \| "
               r"acc +(\S+)%")
    lines = re.findall(pattern, block)
    assert len(lines) >= 4
    for epoch, train_loss, train_accuracy, val_loss, val_accuracy in lines:
        i = int(epoch) - 1
        assert train_loss == format_loss(history["train_loss"][i]).strip(), epoch
        assert val_loss == format_loss(history["val_loss"][i]).strip(), epoch
        assert float(train_accuracy) == round(history["train_accuracy"][i] * 100, 2), epoch
        assert float(val_accuracy) == round(history["val_accuracy"][i] * 100, 2), epoch
    assert f"test accuracy: {history['test_accuracy']:.2%}" in block
    assert f"test loss {history['test_loss']:.4f}" in block


@pytest.mark.slow
def test_the_sample_output_of_the_default_gpt_run_matches_a_run(default_gpt_run):
    """The full default GPT run (minutes): python -m pytest -m slow."""
    from cli_helpers import strict_json
    from tinytorch.core.training import format_loss

    out, _, _ = default_gpt_run
    history = strict_json(out / "history.json")
    block = _output_block("training a GPT")
    lines = re.findall(r"step +(\d+)/2000 \| train loss +(\S+) \| (?:val loss +(\S+) )?", block)
    assert len(lines) >= 8
    for step, train_loss, val_loss in lines:
        i = history["step"].index(int(step))
        assert train_loss == format_loss(history["train_loss"][i]).strip(), step
        if val_loss:
            j = history["eval_step"].index(int(step))
            assert val_loss == format_loss(history["val_loss"][j]).strip(), step
    assert f"validation loss: {history['final_val_loss']:.4f}" in block
    assert history["sample"] in block
