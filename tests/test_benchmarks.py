"""The benchmark script's sampling order (benchmarks/run.py is a script, imported by path)."""

import collections
import importlib.util
import pathlib

import pytest

_RUN = pathlib.Path(__file__).resolve().parent.parent / "benchmarks" / "run.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("benchmarks_run", _RUN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("libs", [["tinytorch", "floor", "torch"], ["tinytorch", "floor"]])
def test_each_library_follows_each_other_equally_often(bench, libs):
    rounds = 4 * len(libs)
    order = bench._balanced_order(libs, rounds)
    assert collections.Counter(order) == {lib: rounds for lib in libs}
    follows = collections.Counter(zip(order, order[1:]))
    pairs = [(a, b) for a in libs for b in libs if a != b]
    counts = [follows[pair] for pair in pairs]
    assert max(counts) - min(counts) <= 1, follows
