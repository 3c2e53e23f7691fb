"""Fixtures shared by the test modules."""

import pytest


@pytest.fixture(scope="session")
def torch():
    """PyTorch, the oracle of the comparison tests (a test-only dependency); skip without it."""
    return pytest.importorskip("torch")


# ----- the default 'tinytorch train' run, shared by the CLI and README tests --------------------

@pytest.fixture(scope="session")
def default_digits_run(tmp_path_factory):
    """The folder of one 'tinytorch train' run with every default (digits, 30 epochs)."""
    from tinytorch.cli import main

    out = tmp_path_factory.mktemp("default-run") / "run"
    assert main(["train", "--out", str(out)]) == 0
    return out
