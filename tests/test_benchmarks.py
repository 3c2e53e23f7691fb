"""The benchmark script's sampling order (benchmarks/run.py is a script, imported by path)."""

import collections
import importlib.util
import pathlib

import numpy as np
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


@pytest.mark.parametrize("name", ["W2", "W3", "W4", "W6"])
def test_bare_engine_computes_the_same_gradients_as_tinytorch_and_the_floor(bench, name):
    # The bare engine is the benchmark's yardstick for the small-tensor workloads: its timings
    # only mean something if it computes the same loss and gradients.
    spec = bench.WORKLOADS[name]
    data = spec["data"](np.random.default_rng(0))
    results = {}
    for lib, fn in zip(bench.LIBS, spec["fns"]):
        if lib in ("tinytorch", "floor", "bare"):
            step, result = fn(data)
            step()
            step()                          # a second step must not accumulate into the first
            results[lib] = result()
    errors = bench.check_gradients(name, results, spec.get("extra_check"))
    assert set(errors) == {"floor", "bare"}
    assert errors["bare"] <= 1e-6


def test_lenet_workload_floor_matches_tinytorch_and_torch_over_two_steps(bench):
    # W7's hand-written floor (im2col, col2im, first-max pooling) must compute what tinytorch and
    # PyTorch compute, or its timings mean nothing; two steps: the SGD update is included.
    spec = bench.WORKLOADS["W7"]
    data = spec["data"](np.random.default_rng(0))
    results = {}
    for lib, fn in zip(bench.LIBS, spec["fns"]):
        if fn is not None and lib != "bare":
            step, result = fn(data)
            step()
            step()
            results[lib] = result()
    errors = bench.check_gradients("W7", results)
    assert errors["floor"] <= 1e-5
