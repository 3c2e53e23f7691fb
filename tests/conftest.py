"""Fixtures shared by the test modules."""

import os

# One BLAS thread for the whole session, set before NumPy is imported (BLAS reads it once). On
# a shared 2-core machine a busy core stalls multi-threaded BLAS calls: a one-layer GPT step
# took 15x longer with OpenBLAS's default 2 threads than with 1 (measured under load). The
# tests need no BLAS parallelism; an explicit setting in the environment wins.
for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import pytest  # noqa: E402


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


# ----- the default 'tinytorch train --model cnn' run, shared by the CLI and README tests ---------

@pytest.fixture(scope="session")
def default_cnn_run(tmp_path_factory):
    """The folder of one 'tinytorch train --model cnn' run with every default (about 10 s)."""
    from tinytorch.cli import main

    out = tmp_path_factory.mktemp("default-cnn-run") / "run"
    assert main(["train", "--model", "cnn", "--out", str(out)]) == 0
    return out


# ----- the default 'tinytorch train --model gpt' run (minutes): only for tests marked slow ------

@pytest.fixture(scope="session")
def default_gpt_run(tmp_path_factory):
    """``(folder, wall seconds, stdout)`` of the real command 'tinytorch train --model gpt' with
    every default, BLAS threads left to the command itself (2-3 minutes on 2 cores)."""
    import subprocess
    import sys
    import time

    from cli_helpers import cli_env, command

    out = tmp_path_factory.mktemp("default-gpt-run") / "run"
    env = {name: value for name, value in cli_env().items()
           if name not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    start = time.perf_counter()
    result = subprocess.run(command("train", "--model", "gpt", "--out", out), env=env,
                            capture_output=True, text=True, timeout=900)
    wall = time.perf_counter() - start
    assert result.returncode == 0, result.stderr
    print(f"tinytorch train --model gpt: {wall:.0f} s", file=sys.stderr)
    return out, wall, result.stdout
