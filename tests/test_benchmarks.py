"""The benchmark script's sampling order (benchmarks/run.py is a script, imported by path)."""

import collections
import importlib.util
import pathlib
import warnings

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
    results = _two_steps(bench, spec, ("tinytorch", "floor", "bare"))
    errors = bench.check_gradients(name, results, spec.get("extra_check"))
    assert set(errors) == {"floor", "bare"}
    assert errors["bare"] <= 1e-6


def _two_steps(bench, spec, libs):
    """(loss, gradients) of each library after two steps from the workload's data; a second
    step must not accumulate into the first, and W1's and W7's include the SGD update."""
    data = spec["data"](np.random.default_rng(0))
    results = {}
    for lib, build in bench.library_steps(spec).items():
        if lib in libs:
            step, result = build(data)
            step()
            step()
            results[lib] = result()
    return results


def test_lenet_workload_floor_matches_tinytorch_and_torch_over_two_steps(bench):
    # W7's hand-written floor (im2col, col2im, first-max pooling) must compute what tinytorch and
    # PyTorch compute, or its timings mean nothing; two steps: the SGD update is included.
    results = _two_steps(bench, bench.WORKLOADS["W7"], ("tinytorch", "floor", "torch"))
    errors = bench.check_gradients("W7", results)
    assert errors["floor"] <= 1e-5


# Sizes for the compiled check that keep it quick (the benchmark runs the full ones): W3's
# recording of 40,000 ops takes seconds, W8's batch of 16 sequences ~0.2 s a step.
_SMALL = {"W3": {"W3_STEPS": 500}, "W8": {"W8_B": 2}}


@pytest.mark.parametrize("name", ["W1", "W2", "W3", "W4", "W5", "W6", "W7", "W8"])
def test_compiled_steps_replay_eagers_gradients_bit_for_bit_and_match_the_floor(
        bench, name, monkeypatch):
    # The 'tinytorch compiled' column times replays of tt.compile's recording; its numbers mean
    # something only if a replay computes what eager mode computes (bit for bit, as compile
    # promises) and what the hand-written floor computes. Two replays after the recording
    # (which the harness undoes): W1's and W7's include the SGD update.
    for constant, value in _SMALL.get(name, {}).items():
        monkeypatch.setattr(bench, constant, value)
    spec = bench.WORKLOADS[name]
    data = spec["data"](np.random.default_rng(0))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)      # no fallback to eager
        step, result = bench.tinytorch_step(spec["fns"][0], data, compiled=True)
    step()
    step()
    assert step.fallback is None
    assert (step.compiled.recordings, step.compiled.replays) == (1, 2)
    assert step.compiled.record_seconds[0] > 0
    results = _two_steps(bench, spec, ("tinytorch", "floor"))
    results["compiled"] = result()
    assert results["compiled"][0] == results["tinytorch"][0], "loss"
    for key, grad in results["tinytorch"][1].items():
        got = results["compiled"][1][key]
        assert got.dtype == grad.dtype and got.shape == grad.shape, key
        np.testing.assert_array_equal(got, grad, err_msg=f"{name}: gradient of {key}")
    errors = bench.check_gradients(name, results, spec.get("extra_check"),
                                   spec.get("exact_zero", ()), ours="compiled",
                                   against=("floor",))
    assert set(errors) == {"floor"}
