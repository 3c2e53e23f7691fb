"""tinytorch.compile: a recorded and replayed step gives eager's numbers, bit for bit.

Each check runs a function eagerly and compiled from the same starting state (parameters,
gradients, random generator) and requires equal arrays (NaN equal to NaN): the values it
returns and every ``.grad``, on the recording call and on replays with new data.
"""

import re
import warnings

import numpy as np
import pytest

import tinytorch as tt
from op_helpers import leaf, random_array, table_cases

CASES = {name: (fn, arrays) for name, fn, arrays in table_cases()}
# cases that a recording cannot replay: they must run eagerly, with a warning naming why
EAGER_CASES = {"nn:custom_function": "custom Function", "nn:setitem": "in-place op",
               **{f"index:{name}": "boolean mask" for name in (
                   "bool_mask_first_axis", "bool_mask_after_slice", "bool_mask_tensor",
                   "bool_list_mask")}}


def _assert_same(actual, expected, what):
    assert (actual is None) == (expected is None), what
    if actual is not None:
        actual = actual.data if isinstance(actual, tt.Tensor) else actual
        expected = expected.data if isinstance(expected, tt.Tensor) else expected
        assert actual.dtype == expected.dtype and actual.shape == expected.shape, what
        np.testing.assert_array_equal(actual, expected, err_msg=what)


def _step_of(fn, upstream):
    def step(*inputs):
        out = fn(*inputs)
        (out * upstream).sum().backward()
        return out
    return step


def _run(step, arrays, seed):
    inputs = [leaf(a) for a in arrays]
    tt.manual_seed(seed)                     # dropout draws the same masks in both runs
    out = step(*inputs)
    return out, [x.grad for x in inputs]


@pytest.mark.parametrize("name", CASES)
def test_every_op_replays_eagers_values_and_gradients_bit_for_bit(name):
    fn, arrays = CASES[name]
    with tt.no_grad():
        shape = fn(*[leaf(a) for a in arrays]).shape
    upstream = tt.Tensor(random_array(shape, 7), dtype=np.float64)
    step = _step_of(fn, upstream)
    compiled = tt.compile(step)
    later = [random_array(a.shape, 11) if a.dtype.kind == "f" and a.size else a for a in arrays]
    if name.startswith(("nn:binary_cross_entropy", "nn:bce")):
        later = [np.clip(a, 0.05, 0.95) for a in later]         # probabilities stay in [0, 1]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for call, values in enumerate([arrays, later, later]):
            expected, expected_grads = _run(step, values, seed=call)
            actual, actual_grads = _run(compiled, values, seed=call)
            _assert_same(actual, expected, f"{name}: call {call}: values")
            for i, (a, e) in enumerate(zip(actual_grads, expected_grads)):
                _assert_same(a, e, f"{name}: call {call}: gradient of input {i}")
    messages = [str(w.message) for w in caught if "tinytorch.compile" in str(w.message)]
    if name in EAGER_CASES:
        assert compiled.replays == 0 and any(EAGER_CASES[name] in m for m in messages)
    else:
        assert not messages, messages
        assert compiled.recordings == 1 and compiled.replays == 2


# ----- a training step ----------------------------------------------------------------------------

def _mlp():
    tt.manual_seed(3)
    return tt.Sequential(tt.Linear(6, 16), tt.ReLU(), tt.Dropout(0.25), tt.Linear(16, 4))


def _batches(count, rows=8, seed=0):
    rng = np.random.default_rng(seed)
    return [(tt.Tensor(rng.standard_normal((rows, 6))),
             tt.Tensor(rng.integers(0, 4, rows), dtype=np.int64)) for _ in range(count)]


def _train(make_step, compiled, batches, seed=5):
    model = _mlp()
    optimizer = tt.Adam(model.parameters(), lr=0.01)
    step = make_step(model, optimizer)
    step = tt.compile(step) if compiled else step
    tt.manual_seed(seed)
    losses = [step(x, y) for x, y in batches]
    return model, losses, step


def _full_step(model, optimizer):
    def step(x, y):
        optimizer.zero_grad()
        loss = tt.CrossEntropyLoss()(model(x), y)
        loss.backward()
        tt.clip_grad_norm(model.parameters(), 0.5)
        optimizer.step()
        return loss
    return step


def test_a_training_step_with_the_optimizer_inside_gives_eagers_trajectory():
    batches = _batches(6)
    eager_model, eager_losses, _ = _train(_full_step, False, batches)
    model, losses, step = _train(_full_step, True, batches)
    assert step.recordings == 1 and step.replays == 5
    for actual, expected in zip(losses, eager_losses):
        _assert_same(actual, expected, "loss")
    for (name, p), q in zip(model.named_parameters(), eager_model.parameters()):
        _assert_same(p, q, name)
        _assert_same(p.grad, q.grad, f"{name}.grad")


def test_the_optimizer_step_may_stay_outside_the_compiled_function():
    def outside(model, optimizer):
        compiled = tt.compile(lambda x, y: _backward(tt.CrossEntropyLoss()(model(x), y)))

        def step(x, y):
            optimizer.zero_grad()
            loss = compiled(x, y)
            optimizer.step()
            return loss
        return step

    batches = _batches(5)
    eager_model, eager_losses, _ = _train(_full_step, False, batches)
    model, losses, _ = _train(outside, False, batches)
    # the eager trajectory clips, this one does not: compare against an unclipped eager run
    unclipped_model, unclipped_losses, _ = _train(
        lambda m, o: lambda x, y: (o.zero_grad(), _backward(tt.CrossEntropyLoss()(m(x), y)),
                                   o.step())[1], False, batches)
    for actual, expected in zip(losses, unclipped_losses):
        _assert_same(actual, expected, "loss")
    for p, q in zip(model.parameters(), unclipped_model.parameters()):
        _assert_same(p, q, "parameter")


def _backward(loss):
    loss.backward()
    return loss


def test_gradients_accumulate_across_replays_as_in_eager_mode():
    """Without zero_grad, each replay adds into .grad, as each eager backward does."""
    w = tt.Tensor([1.0, -2.0, 3.0], dtype=np.float64, requires_grad=True)
    manual = tt.Tensor([1.0, -2.0, 3.0], dtype=np.float64, requires_grad=True)
    compiled = tt.compile(lambda x: _backward((w * x).tanh().sum()))
    for value in (0.5, -1.5, 2.0):
        x = tt.Tensor([value] * 3, dtype=np.float64)
        compiled(x)
        _backward((manual * x).tanh().sum())
        _assert_same(w.grad, manual.grad, f"after x = {value}")
    assert compiled.replays == 2


# ----- signatures ---------------------------------------------------------------------------------

def test_new_shapes_and_grad_modes_record_again_and_a_cache_keeps_each():
    w = tt.Tensor(np.ones((3, 2)), requires_grad=True)
    compiled = tt.compile(lambda x: _backward((x @ w).sum()), cache_size=2)
    compiled(tt.Tensor(np.ones((4, 3))))
    compiled(tt.Tensor(np.ones((4, 3))))
    compiled(tt.Tensor(np.ones((5, 3))))
    assert (compiled.recordings, compiled.replays) == (2, 1)
    compiled(tt.Tensor(np.ones((4, 3))))                     # both shapes are kept
    assert (compiled.recordings, compiled.replays) == (2, 2)
    compiled(tt.Tensor(np.ones((6, 3))))                     # the least recently used goes
    compiled(tt.Tensor(np.ones((5, 3))))
    assert compiled.recordings == 4


def test_python_values_are_part_of_the_signature():
    w = tt.Tensor([2.0], requires_grad=True)
    compiled = tt.compile(lambda x, power: (x * w) ** power)
    x = tt.Tensor([3.0])
    assert compiled(x, 2).item() == 36.0 and compiled(x, 3).item() == 216.0
    assert compiled(x, 2).item() == 36.0
    assert compiled.recordings == 2 and compiled.replays == 1


def test_parameters_are_read_when_the_replay_runs():
    w = tt.Tensor([1.0, 2.0], requires_grad=True)
    compiled = tt.compile(lambda x: x * w)
    x = tt.Tensor([3.0, 4.0])
    compiled(x)
    with tt.no_grad():
        w.data *= 10                                         # an update in place
    np.testing.assert_array_equal(compiled(x).data, [30.0, 80.0])
    w.data = np.array([5.0, 6.0], dtype=np.float32)          # a new array
    np.testing.assert_array_equal(compiled(x).data, [15.0, 24.0])
    assert (compiled.recordings, compiled.replays) == (1, 2)
    w.data = np.array([2.0], dtype=np.float32)               # a new shape: recorded again
    np.testing.assert_array_equal(compiled(x).data, [6.0, 8.0])
    assert compiled.recordings == 2


def test_replayed_results_are_new_tensors_without_a_graph():
    w = tt.Tensor([1.0, 2.0], requires_grad=True)
    compiled = tt.compile(lambda x: (x * w, {"twice": x * 2}, None))
    x = tt.Tensor([3.0, 4.0])
    first = compiled(x)
    out, extra, nothing = compiled(x)
    assert nothing is None and out.grad_fn is None
    np.testing.assert_array_equal(out.data, first[0].data)
    np.testing.assert_array_equal(extra["twice"].data, [6.0, 8.0])


# ----- what a recording cannot replay ------------------------------------------------------------

def _w():
    return tt.Tensor([0.5, -1.0], requires_grad=True)


UNREPLAYABLE = {
    "t.item()": lambda w, x: (w * x).sum().item() * w,
    "t.numpy()": lambda w, x: w * float((x * 2).numpy().sum()),
    "t.tolist()": lambda w, x: w * len((x * 2).tolist()),
    "printing a tensor": lambda w, x: (repr(x * 2), w * x)[1],
    "bool(t)": lambda w, x: w * x if (x.sum() > 0) else w - x,
    "t.data": lambda w, x: w * tt.Tensor(x.data * 2),
    "the in-place op +=": lambda w, x: _iadd(w * 1.0, x),
    "register_hook": lambda w, x: _hooked(w * x),
    "retain_grad": lambda w, x: _retained(w * x),
    "tt.randn": lambda w, x: w * tt.randn(2),
    "autograd.grad": lambda w, x: tt.autograd.grad((w * x).sum(), w)[0],
    "np.exp on a tensor": lambda w, x: w * tt.Tensor(np.exp(x)),
    "returning a float": lambda w, x: 1.5,
}


def _iadd(t, x):
    t += x
    return t


def _hooked(t):
    t.register_hook(lambda g: g * 2)
    return t


def _retained(t):
    t.retain_grad()
    return t


@pytest.mark.parametrize("operation", UNREPLAYABLE)
def test_an_operation_a_recording_cannot_replay_falls_back_to_eager_with_one_warning(operation):
    fn = UNREPLAYABLE[operation]
    eager_w, compiled_w = _w(), _w()
    compiled = tt.compile(lambda x: fn(compiled_w, x))
    x = tt.Tensor([2.0, 3.0])
    tt.manual_seed(0)
    with pytest.warns(RuntimeWarning, match=operation.split(" (")[0].replace("(", r"\(")
                      .replace(")", r"\)").replace("+", r"\+")):
        first = compiled(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                        # the warning comes once
        tt.manual_seed(0)
        second = compiled(x)
    tt.manual_seed(0)
    expected = fn(eager_w, x)
    for value in (first, second):
        if isinstance(expected, tt.Tensor):
            np.testing.assert_array_equal(value.data, expected.data)
        else:
            assert value == expected
    assert compiled.replays == 0


def test_create_graph_and_anomaly_mode_run_eagerly():
    w = tt.Tensor([0.5, 2.0], dtype=np.float64, requires_grad=True)
    compiled = tt.compile(lambda x: tt.autograd.backward((w * x).exp().sum(), create_graph=True))
    with pytest.warns(RuntimeWarning, match="create_graph"):
        compiled(tt.Tensor([1.0, 2.0], dtype=np.float64))
    assert w.grad.grad_fn is not None                        # differentiable, as in eager mode
    plain = tt.compile(lambda x: (w * x).sum())
    with tt.autograd.detect_anomaly():
        plain(tt.Tensor([1.0, 2.0], dtype=np.float64))
        plain(tt.Tensor([1.0, 2.0], dtype=np.float64))
    assert plain.recordings == 0


def test_inside_a_profile_block_a_compiled_step_runs_eagerly_so_its_ops_are_seen():
    w = tt.Tensor([0.5, 2.0], dtype=np.float64, requires_grad=True)
    compiled = tt.compile(lambda x: _backward((w * x).tanh().sum()))
    x = tt.Tensor([1.0, 2.0], dtype=np.float64)
    compiled(x)
    compiled(x)                                              # recorded, then replayed
    assert (compiled.recordings, compiled.replays) == (1, 1)
    with tt.profiler.profile() as prof:
        compiled(x)
    names = {event.name for event in prof.events}
    assert {"MulBackward", "TanhBackward", "SumBackward"} <= names
    assert (compiled.recordings, compiled.replays) == (1, 1)   # neither recorded nor replayed
    np.testing.assert_allclose(w.grad.data, 3 * np.array([1.0, 2.0]) / np.cosh([0.5, 4.0]) ** 2)


def test_the_replay_source_reads_as_the_step_it_records():
    w = tt.Tensor([1.0, 2.0], requires_grad=True)
    compiled = tt.compile(lambda x: _backward((x * w).tanh().sum()))
    x = tt.Tensor([3.0, 4.0])
    compiled(x)
    source = compiled.code(x)
    assert source.startswith("def replay(T):") and "_deliver(E" in source
    # small ops are inlined: the product, tanh and its derivative appear as code
    assert re.search(r"v\d+ = a0 \* e\d+", source), source
    assert re.search(r"\.tanh\(v\d+\)", source) and "(1 - v" in source, source
    assert compiled.code(tt.Tensor([1.0])) is None


def test_bad_arguments_to_compile():
    with pytest.raises(TypeError, match="needs a function"):
        tt.compile(3)
    with pytest.raises(ValueError, match="cache_size must be a positive int"):
        tt.compile(lambda: None, cache_size=0)


# ----- Trainer(compile=True) and 'tinytorch train --compile' --------------------------------------

TIMINGS = ("seconds", "tokens_per_second", "train_seconds")


def _trained(compile, accumulation_steps=1, loss=None, arrays=False):
    tt.manual_seed(0)
    model = tt.Sequential(tt.Linear(6, 12), tt.BatchNorm1d(12), tt.ReLU(), tt.Dropout(0.3),
                          tt.Linear(12, 3))
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(45, 6)), rng.integers(0, 3, 45)
    trainer = tt.Trainer(model, tt.Adam(model.parameters(), lr=1e-2),
                         loss or tt.CrossEntropyLoss(), grad_clip_norm=1.0, compile=compile)
    if arrays:                  # train_step with NumPy class indices, as the GPT's loop has
        losses = [trainer.train_step(tt.Tensor(x[i:i + 9]), y[i:i + 9]) for i in range(0, 45, 9)]
        return losses, model, trainer
    data = tt.TensorDataset(tt.Tensor(x), tt.Tensor(y, dtype=np.int64))
    history = trainer.fit(tt.DataLoader(data, batch_size=8, shuffle=True, seed=1),
                          tt.DataLoader(data, batch_size=16), epochs=3,
                          accumulation_steps=accumulation_steps)
    return {k: v for k, v in history.items() if k not in TIMINGS}, model, trainer


@pytest.mark.parametrize("accumulation_steps, arrays", [(1, False), (2, False), (1, True)])
def test_a_compiled_trainer_gives_eagers_history_and_parameters(accumulation_steps, arrays):
    eager, eager_model, _ = _trained(False, accumulation_steps, arrays=arrays)
    compiled, model, trainer = _trained(True, accumulation_steps, arrays=arrays)
    assert compiled == eager
    for p, q in zip(model.parameters(), eager_model.parameters()):
        np.testing.assert_array_equal(p.data, q.data)
    step = trainer._compiled_step
    # batches of 8 and a last one of 5 (or 9 each): one recording per shape, the rest replays
    assert step.recordings == (1 if arrays else 2) and step.replays > step.recordings


def test_a_compiled_trainer_stops_at_a_non_finite_loss_before_the_update():
    model = tt.Linear(2, 1)
    before = model.weight.data.copy()
    trainer = tt.Trainer(model, tt.SGD(model.parameters(), lr=0.1), tt.MSELoss(), compile=True)
    with pytest.raises(tt.DivergenceError, match="the loss is nan"):
        trainer.train_step(tt.Tensor([[1.0, np.nan]]), tt.Tensor([[0.0]]))
    np.testing.assert_array_equal(model.weight.data, before)


def test_a_signature_new_on_every_call_warns_once_and_runs_eagerly():
    w = tt.Tensor([1.0, 2.0], requires_grad=True)
    compiled = tt.compile(lambda ids: _backward((w * tt.Tensor(ids)).sum()), cache_size=2)
    with pytest.warns(RuntimeWarning, match="recorded 5 times.*pass a Tensor"):
        for i in range(6):
            compiled(np.array([i, i + 1.0]))                  # an array: keyed by its values
    assert compiled.recordings == 5 and compiled.replays == 0      # 2 kept, 3 dropped
    np.testing.assert_array_equal(w.grad.data, [sum(range(6)), sum(range(1, 7))])


@pytest.mark.parametrize("model, options", [
    ("mlp", ["--epochs", "4"]), ("cnn", ["--epochs", "2"]),
    ("gpt", ["--steps", "20", "--eval-interval", "10", "--layers", "1"]),
])
def test_train_with_compile_writes_the_same_history_number_for_number(model, options, tmp_path,
                                                                    capsys):
    import json

    from tinytorch.cli import main

    histories = []
    for flags in ([], ["--compile"]):
        out = tmp_path / ("compiled" if flags else "eager")
        assert main(["train", "--model", model, *options, "--out", str(out), *flags]) == 0
        history = json.loads((out / "history.json").read_text())
        histories.append({k: v for k, v in history.items() if k not in TIMINGS})
    assert histories[0] == histories[1]
    assert len(histories[0]) > 3
    summary = re.search(r"compiled: (\d+) step shapes? recorded in [\d.]+s, (\d+) steps replayed",
                        capsys.readouterr().out)
    recordings, replays = map(int, summary.groups())
    assert 1 <= recordings <= 2 and replays >= 15          # the steps ran replayed


# ----- what the recording decides once (issue 17 follow-up: the replay's fixed costs) -------------

def test_the_fallback_and_thrashing_warnings_point_at_the_callers_line():
    compiled = tt.compile(lambda x: (x * 2).sum().item())
    with pytest.warns(RuntimeWarning, match="item") as caught:
        compiled(tt.Tensor([1.0, 2.0]))
    assert [w.filename for w in caught] == [__file__]
    w = tt.Tensor([1.0, 2.0], requires_grad=True)
    thrashing = tt.compile(lambda ids: _backward((w * tt.Tensor(ids)).sum()), cache_size=1)
    with pytest.warns(RuntimeWarning, match="recorded 3 times") as caught:
        for i in range(3):
            thrashing(np.array([i, i + 1.0]))
    assert {w.filename for w in caught} == {__file__}


def test_a_step_reads_as_the_floors_code_where_the_recording_knows_the_shapes():
    """Bias gradients summed with the axes written out, transposes as .T, one-line helpers
    inlined, gradients of leaves whose .grad the step reset assigned directly; the numbers
    stay eager's (checked bit for bit by the training-step tests above and below)."""
    w = tt.Tensor(random_array((3, 4), 3), requires_grad=True)
    b = tt.Tensor(random_array((4,), 4), requires_grad=True)
    compiled = tt.compile(lambda x, y: _backward(_mse_after_zeroing(w, b, x, y)))
    x, y = tt.Tensor(random_array((5, 3), 1)), tt.Tensor(random_array((5, 4), 2))
    compiled(x, y)
    source = compiled.code(x, y)
    assert "_unbroadcast" not in source and ".sum(axis=0)" in source, source
    assert "_swap_last_two" not in source and re.search(r"\w+\.T @ ", source), source
    assert re.search(r"E\d+\._grad = Tensor\._make\(t\d+\)", source), source
    assert "_deliver" not in source and "R" not in re.findall(r"\b([KR])\d+\(", source), source


def _mse_after_zeroing(w, b, x, y):
    w.grad = b.grad = None
    return tt.functional.mse_loss((x @ w + b).tanh(), y)


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan, 3e30])
def test_relus_gradient_with_non_finite_or_huge_numbers_is_eagers_bit_for_bit(bad):
    """ReLU's rule selects (an inf or NaN at a blocked position gives 0, not NaN): the replay
    inlines around it and keeps its test; the bits, signed zeros included, are eager's."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 30)).astype(np.float32)
    upstream = rng.standard_normal((40, 30)).astype(np.float32)
    upstream[0, :5] = bad                      # at blocked (x < 0) and passed positions
    upstream[3] = -upstream[3]

    def step(x, u):
        return _backward((x.relu() * u).sum())

    results = []
    with np.errstate(invalid="ignore"):                   # inf * 0 in the product, both ways
        for run in (step, tt.compile(step)):
            for call in range(3):
                leaf_x = tt.Tensor(x, requires_grad=True)
                run(leaf_x, tt.Tensor(upstream))
                results.append(leaf_x.grad.data.view(np.uint32))
    for got in results[1:]:
        np.testing.assert_array_equal(got, results[0])


def test_a_replay_checks_class_targets_as_eager_does():
    """The replay checks integer targets' range only (their shape and dtype are the signature's);
    a target out of range raises eager's error, and float targets keep eager's full check."""
    w = tt.Tensor(random_array((3, 4), 5), requires_grad=True)
    compiled = tt.compile(lambda x, t: _backward(tt.functional.cross_entropy(x @ w, t)))
    x = tt.Tensor(random_array((5, 3), 6))
    for targets in ([0, 1, 2, 3, 0], [3, 3, 0, 1, 2]):
        compiled(x, tt.Tensor(np.array(targets), dtype=np.int64))
    assert compiled.replays == 1 and "_class_targets(" in compiled.code(
        x, tt.Tensor(np.zeros(5), dtype=np.int64))
    for bad in ([0, 1, 4, 0, 0], [0, -1, 0, 0, 0]):
        with pytest.raises(tt.functional.ClassIndexError, match="out of range") as replayed:
            compiled(x, tt.Tensor(np.array(bad), dtype=np.int64))
        with pytest.raises(tt.functional.ClassIndexError) as eager:
            tt.functional.cross_entropy(x @ w, tt.Tensor(np.array(bad), dtype=np.int64))
        assert str(replayed.value) == str(eager.value)
    floats = tt.compile(lambda x, t: _backward(tt.functional.cross_entropy(x @ w, t)))
    floats(x, tt.Tensor([0.0, 1.0, 2.0, 3.0, 0.0]))
    with pytest.raises(ValueError, match="finite integer"):
        floats(x, tt.Tensor([0.0, 1.5, 2.0, 3.0, 0.0]))


def test_the_inliners_tree_copy_equals_the_tree_for_every_op_method():
    import ast

    from tinytorch import inlining
    from tinytorch.core import autograd, functional, ops, spatial_ops

    methods = [getattr(cls, name) for module in (ops, functional, spatial_ops)
               for cls in vars(module).values()
               if isinstance(cls, type) and issubclass(cls, autograd.Function)
               for name in ("forward", "gradient") if name in vars(cls)]
    trees = [inlining._definition(m) for m in methods] + [
        ast.parse("def f(x):\n    global g\n    return {**x, 'a': [1, (2, None)]}")]
    assert len(trees) > 50
    for tree in filter(None, trees):
        copy = inlining._copy_tree(tree)
        assert ast.dump(copy, include_attributes=True) == ast.dump(tree, include_attributes=True)
        assert copy is not tree and all(a is not b for a, b in zip(ast.walk(copy), ast.walk(tree))
                                        if isinstance(a, ast.AST))


def test_code_binds_defaults_as_a_call_does():
    def f(x, scale=2.0):
        return x * scale
    compiled = tt.compile(f)
    x = tt.Tensor([1.0, 2.0])
    compiled(x)
    compiled(x)
    assert compiled.code(x) is not None and compiled.code(x) == compiled.code(x, 2.0)
