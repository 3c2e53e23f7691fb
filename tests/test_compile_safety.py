"""tinytorch.compile never replays a recording that would give other numbers than eager.

Each test is one kind of silent mismatch a reviewer found (aliased arguments, hooks, tensors
made inside the function, nested compiled functions, ...): the compiled function must give
eager's results and ``.grad`` bit for bit, recording again or running eagerly (with a
warning naming the operation) where a replay cannot.
"""

import threading
import warnings

import numpy as np
import pytest

import tinytorch as tt
from tinytorch.core import tracing


def _t(values, requires_grad=False):
    return tt.Tensor(np.asarray(values, dtype=np.float32), requires_grad=requires_grad)


def _same(a, b):
    a = a.data if isinstance(a, tt.Tensor) else a
    b = b.data if isinstance(b, tt.Tensor) else b
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(a, b)


def _quiet(compiled, *args):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = compiled(*args)
    return result, [str(w.message) for w in caught if "tinytorch.compile" in str(w.message)]


# ----- 1: argument identity ----------------------------------------------------------------------

def test_an_argument_passed_twice_is_part_of_the_signature():
    def f(a, b):
        loss = (a * b).sum()
        loss.backward()
        return loss
    compiled = tt.compile(f)
    x = _t(np.ones(3), True)
    compiled(x, x)
    a, b = _t(np.full(3, 2.0), True), _t(np.full(3, 5.0), True)
    a2, b2 = _t(np.full(3, 2.0), True), _t(np.full(3, 5.0), True)
    _same(compiled(a, b), f(a2, b2))
    _same(a.grad, a2.grad)
    _same(b.grad, b2.grad)


def test_an_argument_that_the_function_also_reads_by_name_must_be_that_tensor_again():
    w = _t(np.full(3, 3.0), True)

    def f(x):
        loss = (x * w).sum()
        loss.backward()
        return loss
    compiled = tt.compile(f)
    compiled(w)                                      # recorded with x is w
    w.grad = None
    x = _t(np.full(3, 2.0), True)
    loss = compiled(x)
    got = (loss, x.grad, w.grad)
    w.grad = None
    x2 = _t(np.full(3, 2.0), True)
    expected = (f(x2), x2.grad, w.grad)
    for g, e in zip(got, expected):
        _same(g, e)
    w.grad = None                                    # and the other way round: now w is an
    compiled(w)                                      # argument and the tensor read by name
    got = w.grad
    w.grad = None
    f(w)
    _same(got, w.grad)


# ----- 2: hooks on leaves ------------------------------------------------------------------------

def _loss_of_w(w):
    def f(x):
        loss = (x * w).sum()
        loss.backward()
        return loss
    return f


@pytest.mark.parametrize("when", ["before recording", "after recording"])
def test_a_hook_on_a_leaf_runs_as_in_eager(when):
    w = _t(np.ones(3), True)
    calls = []
    compiled = tt.compile(_loss_of_w(w))
    if when == "after recording":
        compiled(_t(np.ones(3)))
        compiled(_t(np.ones(3)))
    w.register_hook(lambda g: calls.append(1) or g * 10)
    for call in (1, 2):                              # recording (or not) and a later call
        w.grad = None
        _quiet(compiled, _t(np.ones(3)))
        assert len(calls) == call
        _same(w.grad, np.full(3, 10.0, np.float32))


# ----- 3: tensors made inside the function, .grad read -------------------------------------------

def test_returning_or_computing_with_a_grad_read_inside_the_function_is_eagers():
    w = _t(np.full(3, 3.0), True)

    def f(x):
        w.grad = None
        loss = (x * w).sum()
        loss.backward()
        return loss, (w.grad * w.grad).sum(), w.grad
    compiled = tt.compile(f)
    with pytest.warns(RuntimeWarning, match=r"gradient read from \.grad"):
        compiled(_t(np.ones(3)))
    x = _t(np.full(3, 7.0))
    got = compiled(x)
    expected = f(x)
    for g, e in zip(got, expected):
        _same(g, e)


def test_a_leaf_made_inside_the_function_gets_its_gradient_on_every_call():
    model = tt.Linear(2, 2)

    def fgsm(x):                                     # input gradient of a fresh leaf
        delta = tt.zeros(x.shape, requires_grad=True)
        loss = (model(x + delta) ** 2).sum()
        loss.backward()
        return delta.grad

    def saliency(x):
        v = x.detach().requires_grad_()
        (model(v) ** 2).sum().backward()
        return v.grad
    for fn in (fgsm, saliency):
        compiled = tt.compile(fn)
        for i in range(3):
            x = _t(np.random.default_rng(i).normal(size=(1, 2)))
            got, _ = _quiet(compiled, x)
            _same(got, fn(x))


def test_a_constant_made_inside_the_function_and_a_detached_result_replay():
    def f(x):
        y = x * 2
        return y.detach() + tt.ones(3), y.detach()
    compiled = tt.compile(f)
    for i in range(3):
        x = _t(np.full(3, float(i)))
        got, messages = _quiet(compiled, x)
        for g, e in zip(got, f(x)):
            _same(g, e)
        assert not messages
    assert compiled.replays == 2


# ----- 4: nested compiled functions --------------------------------------------------------------

def test_a_compiled_function_called_while_another_records_runs_eagerly():
    inner = tt.compile(lambda x: x * 3)
    inner(_t(np.ones(3)))
    inner(_t(np.ones(3)))                            # inner replays now
    outer = tt.compile(lambda x: inner(x) + 1)
    outer(_t(np.ones(3)))                            # records inner's ops as its own
    x = _t(np.full(3, 5.0))
    _same(outer(x), x * 3 + 1)
    assert outer.replays == 1


# ----- 5: backward(gradient) of another dtype ----------------------------------------------------

def test_a_backward_gradient_cast_to_the_tensors_dtype_is_replayed():
    w = _t(np.ones(3), True)

    def f(g):
        w.grad = None
        (w * 2).backward(g)
    compiled = tt.compile(f)
    compiled(tt.Tensor(np.ones(3), dtype=np.float64))
    compiled(tt.Tensor(np.array([5.0, 6.0, 7.0]), dtype=np.float64))
    _same(w.grad, np.array([10.0, 12.0, 14.0], np.float32))
    assert compiled.replays == 1


# ----- 6, 13: value-dependent shapes -------------------------------------------------------------

def test_boolean_mask_selection_runs_eagerly_with_a_warning():
    w = _t(np.ones(6), True)

    def f(x):
        w.grad = None
        selected = (x * w)[x > 0]
        loss = selected.sum() * selected.shape[0]
        loss.backward()
        return loss
    compiled = tt.compile(f)
    _, messages = _quiet(compiled, _t([1, -1, 1, -1, 1, -1]))
    assert any("boolean mask" in m for m in messages)
    x = _t([1, 1, 1, 1, 1, -1])
    got = (compiled(x), w.grad)
    expected = (f(x), w.grad)
    for g, e in zip(got, expected):
        _same(g, e)


# ----- 7: .data assignment inside the function ---------------------------------------------------

def test_assigning_data_inside_the_function_runs_eagerly():
    target, online = _t(np.zeros(3)), _t(np.ones(3), True)

    def f(x):
        loss = ((x * online - target) ** 2).sum()
        loss.backward()
        target.data = (online * 0.5).detach()        # target-network sync
        return loss
    compiled = tt.compile(f)
    _, messages = _quiet(compiled, _t(np.ones(3)))
    assert any("t.data =" in m for m in messages)
    target.data = np.zeros(3, np.float32)
    compiled(_t(np.ones(3)))
    _same(target.data, online.data * 0.5)


# ----- 8: other threads --------------------------------------------------------------------------

def test_another_threads_ops_stay_out_of_a_recording():
    w, v = _t(np.ones(3), True), _t(np.ones(3), True)
    started, go_on = threading.Event(), threading.Event()

    def f(x):
        started.set()
        go_on.wait(5)
        loss = (x * w).sum()
        loss.backward()
        return loss

    def other():
        started.wait(5)
        assert tracing.state.recording
        (v * 10).sum().backward()                    # while f records
        go_on.set()
    thread = threading.Thread(target=other)
    thread.start()
    compiled = tt.compile(f)
    compiled(_t(np.ones(3)))
    thread.join()
    go_on.set()
    v.grad = None
    for _ in range(3):
        compiled(_t(np.ones(3)))
    assert v.grad is None and compiled.replays == 3


# ----- 9: anomaly mode ---------------------------------------------------------------------------

def test_anomaly_mode_makes_a_recorded_function_run_eagerly():
    def f(x):
        loss = x.sqrt().sum()
        loss.backward()
        return loss
    compiled = tt.compile(f)
    compiled(_t([1.0, 4.0], True))
    with tt.autograd.detect_anomaly(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(RuntimeError, match="SqrtBackward"):
            compiled(_t([0.0, 2.0], True))
    assert compiled.replays == 0


# ----- 12: floats keyed by their bits ------------------------------------------------------------

def test_minus_zero_and_nan_arguments_are_keyed_by_their_bits():
    f = lambda x, s: x * s
    compiled = tt.compile(f)
    x = _t([1.0, -2.0])
    compiled(x, 0.0)
    _same(compiled(x, -0.0), f(x, -0.0))
    assert np.signbit(compiled(x, -0.0).data).tolist() == [True, False]
    compiled(x, float("nan"))
    compiled(x, float("nan"))
    assert compiled.recordings == 3 and compiled.replays == 2


# ----- 14: memory --------------------------------------------------------------------------------

def test_a_recording_keeps_none_of_the_recording_calls_arrays():
    model = tt.Linear(64, 64)

    def f(x):
        loss = (model(x) ** 2).sum()
        loss.backward()
        return loss
    compiled = tt.compile(f)
    x = _t(np.ones((32, 64)))
    compiled(x)
    entry = next(iter(compiled._cache.values()))
    assert not hasattr(entry, "kept")
    import gc
    import weakref
    ref = weakref.ref(x._data)
    del x
    gc.collect()
    assert ref() is None


# ----- 10, 11: Python state ----------------------------------------------------------------------

def test_a_learning_rate_changed_inside_the_function_runs_eagerly():
    w = _t(np.ones(3), True)
    optimizer = tt.SGD([w], lr=0.1)

    def step(x):
        optimizer.zero_grad()
        (x * w).sum().backward()
        optimizer.step()
        optimizer.param_groups[0]["lr"] *= 0.5       # a schedule inside the step
    compiled = tt.compile(step)
    _, messages = _quiet(compiled, _t(np.ones(3)))
    assert any("hyper-parameters" in m for m in messages)
    compiled(_t(np.ones(3)))
    assert optimizer.param_groups[0]["lr"] == 0.025


def test_switching_train_and_eval_between_calls_records_again():
    model = tt.Sequential(tt.Linear(4, 4), tt.Dropout(0.5))

    def f(x):
        return model(x)
    compiled = tt.compile(f)
    x = _t(np.ones((2, 4)))
    compiled(x)
    model.eval()
    _same(compiled(x), model(x))
    assert compiled.recordings == 2


def test_a_closed_over_numpy_array_is_baked_in_as_documented():
    scale = np.ones(3, np.float32)
    compiled = tt.compile(lambda x: x * tt.Tensor(scale))
    compiled(_t(np.ones(3)))
    scale[:] = 5.0                                   # an in-place change the replay misses
    _same(compiled(_t(np.ones(3))), np.ones(3, np.float32))
    assert compiled.replays == 1


# ----- 16: the warning about recording on every call ---------------------------------------------

def test_the_thrashing_warning_says_what_varied():
    f = lambda x: x * 2
    compiled = tt.compile(f, cache_size=1)
    xs = [_t(np.ones(n)) for n in (3, 4)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i in range(6):
            compiled(xs[i % 2])
    messages = [str(w.message) for w in caught]
    assert any("cache_size=1" in m and "pass a Tensor" not in m for m in messages), messages
    compiled = tt.compile(lambda x, a: x * float(a.sum()), cache_size=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i in range(4):
            compiled(xs[0], np.full(2, float(i)))
    assert any("pass a Tensor" in str(w.message) for w in caught)


def test_trainer_compile_takes_float_numpy_batches_as_tensors():
    rng = np.random.default_rng(0)
    batches = [(rng.normal(size=(8, 4)), rng.integers(0, 3, 8)) for _ in range(6)]
    histories = []
    for compile in (False, True):
        tt.manual_seed(0)
        model = tt.Sequential(tt.Linear(4, 8), tt.ReLU(), tt.Linear(8, 3))
        trainer = tt.Trainer(model, tt.SGD(model.parameters(), lr=0.1), tt.CrossEntropyLoss(),
                             compile=compile)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            histories.append([trainer.train_step(x, y) for x, y in batches])
        assert not [w for w in caught if "tinytorch.compile" in str(w.message)]
    assert histories[0] == histories[1]
    assert trainer._compiled_step.recordings == 1


# ----- a second review: models reached indirectly, values of replayed calls, KV caches --------

class _Holder:
    def __init__(self, model):
        self.model = model


def _model_with_dropout():
    tt.manual_seed(0)
    return tt.Sequential(tt.Linear(4, 4), tt.Dropout(0.5), tt.Linear(4, 1))


@pytest.mark.parametrize("reach", ["helper function", "attribute", "dict of lists"])
def test_eval_on_a_model_reached_indirectly_records_again(reach):
    model = _model_with_dropout()
    holder, table = _Holder(model), {"blocks": [model]}

    def predict(x):
        return model(x)
    use = {"helper function": lambda x: predict(x),
           "attribute": lambda x: holder.model(x),
           "dict of lists": lambda x: table["blocks"][0](x)}[reach]
    compiled = tt.compile(lambda x: use(x).sum())
    x = _t(np.ones((8, 4)))
    compiled(x)                                      # recorded in train mode
    model.eval()
    _same(compiled(x), model(x).sum())


def test_a_module_reading_training_outside_forward_is_guarded():
    class Net(tt.Module):
        def __init__(self):
            super().__init__()
            self.fc = tt.Linear(4, 4)

        def forward(self, x):
            return self._drop(self.fc(x))

        def _drop(self, h):
            return tt.functional.dropout(h, 0.5, self.training)
    tt.manual_seed(0)
    net = Net()
    compiled = tt.compile(lambda x: net(x).sum())
    x = _t(np.ones((8, 4)))
    compiled(x)
    net.eval()
    _same(compiled(x), net(x).sum())


def test_a_parameter_reached_through_an_attribute_and_passed_as_an_argument_is_guarded():
    tt.manual_seed(0)
    holder = _Holder(tt.Linear(3, 1))

    def f(w, x):
        return (holder.model.weight * w * x).sum()
    compiled = tt.compile(f)
    x = _t(np.ones((1, 3)))
    compiled(holder.model.weight, x)                 # recorded with w the weight itself
    other = tt.Linear(3, 1).weight                   # the same signature, another tensor
    _same(compiled(other, x), f(other, x))


def test_the_value_clip_grad_norm_returns_is_not_replayed_when_used():
    tt.manual_seed(0)
    model = tt.Linear(3, 1)

    def step(x):
        model.zero_grad()
        loss = (model(x) ** 2).sum()
        loss.backward()
        norm = tt.clip_grad_norm(model.parameters(), 1e9)
        return loss, tt.Tensor(np.float32(norm))
    compiled = tt.compile(step)
    rng = np.random.default_rng(0)
    batches = [_t(rng.standard_normal((4, 3))) for _ in range(3)]
    with pytest.warns(RuntimeWarning, match="the value clip_grad_norm returns"):
        compiled(batches[0])
    for x in batches[1:]:
        got = compiled(x)
        _same(got[1], step(x)[1])


def test_an_iterator_of_parameters_given_to_clip_grad_norm_runs_eagerly():
    import itertools
    tt.manual_seed(0)
    a, b = tt.Linear(3, 3), tt.Linear(3, 1)
    a2, b2 = tt.Linear(3, 3), tt.Linear(3, 1)
    a2.load_state_dict(a.state_dict())
    b2.load_state_dict(b.state_dict())

    def make_step(first, second):
        optimizer = tt.SGD(first.parameters() + second.parameters(), lr=0.5)

        def step(x):
            optimizer.zero_grad()
            loss = (second(first(x)) ** 2).sum()
            loss.backward()
            tt.clip_grad_norm(itertools.chain(first.parameters(), second.parameters()), 0.01)
            optimizer.step()
            return loss
        return step
    compiled, eager = tt.compile(make_step(a, b)), make_step(a2, b2)
    x = _t(np.ones((2, 3)))
    with pytest.warns(RuntimeWarning, match="an iterator passed to clip_grad_norm"):
        compiled(x)
    eager(x)
    for _ in range(2):
        compiled(x)
        eager(x)
    _same(a.weight, a2.weight)


def test_generation_with_a_kv_cache_runs_eagerly():
    from tinytorch.core.transformer import GPT, KVCache
    tt.manual_seed(0)
    model = GPT(vocab_size=11, embed_dim=8, num_layers=1, num_heads=2, max_seq_len=16)
    model.eval()
    cache, eager_cache = KVCache(1), KVCache(1)
    compiled = tt.compile(lambda tokens, kv: model(tokens, cache=kv))
    with tt.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for token in [1, 4, 2, 7]:
            tokens = tt.Tensor(np.array([[token]]), dtype=np.int64)
            _same(compiled(tokens, cache), model(tokens, cache=eager_cache))
    assert cache.length == eager_cache.length == 4
