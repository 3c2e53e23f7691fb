"""The backward engine: ordering, accumulation, freeing, grad mode, and the gradient life-cycle."""

import gc
import subprocess
import sys
import time
import weakref

import numpy as np
import pytest

import tinytorch as tt
from tinytorch import Tensor
from tinytorch.core import autograd
from tinytorch.core.autograd import Function, GradcheckError, gradcheck, run_op


def f64(data, requires_grad=True):
    return Tensor(data, dtype=np.float64, requires_grad=requires_grad)


# ----- ordering and shared sub-expressions ---------------------------------------------------------

def test_diamond_of_sixty_doublings_is_fast_and_exact():
    x = f64([1.0])
    y = x
    for _ in range(60):
        y = y + y
    start = time.perf_counter()
    y.backward()
    elapsed = time.perf_counter() - start
    assert x.grad.item() == 2.0 ** 60
    assert elapsed < 0.1, f"diamond backward took {elapsed:.3f}s: nodes are being revisited"


def test_each_node_runs_once_even_when_shared():
    calls = []

    class Counted(Function):
        def forward(self, x):
            return x * 1.0

        def gradient(self, grad, x):
            calls.append(1)
            return (grad,)

    x = f64([2.0, 3.0])
    shared = run_op(Counted, x)
    out = (shared * shared + shared).sum()
    out.backward()
    assert len(calls) == 1, "a node used three times must still run its rule once"
    np.testing.assert_allclose(x.grad.data, 2 * x.data + 1)


def test_hundred_thousand_deep_chain_runs_backward_and_is_freed():
    x = f64([1.0])
    y = x * 1.0
    probe = weakref.ref(y)           # the first intermediate, deep inside the graph
    for _ in range(100_000):
        y = y * 1.0
    y.backward()
    assert x.grad.item() == 1.0
    del y
    gc.collect()
    assert probe() is None, "the graph must be freed once the output is gone"


def test_deep_chain_can_be_dropped_without_backward():
    x = f64([1.0])
    y = x
    for _ in range(100_000):
        y = y + 1.0
    del y                      # deallocating must not recurse 100,000 levels deep
    gc.collect()


def test_gradients_of_independent_roots_add_up():
    x = f64([1.0, 2.0])
    autograd.backward([(x * 3).sum(), (x * x).sum()])
    np.testing.assert_allclose(x.grad.data, 3 + 2 * x.data)


# ----- broadcasting --------------------------------------------------------------------------------

@pytest.mark.parametrize("shape_a, shape_b", [
    ((4, 3), (3,)), ((4, 3), (4, 1)), ((2, 1, 3), (5, 1)), ((), (2, 2)), ((1,), (3, 1)),
])
def test_gradients_are_reduced_to_each_inputs_shape(shape_a, shape_b):
    rng = np.random.default_rng(0)
    a, b = f64(rng.standard_normal(shape_a)), f64(rng.standard_normal(shape_b))
    (a * b).sum().backward()
    assert a.grad.shape == a.shape and b.grad.shape == b.shape
    ones = np.ones(np.broadcast_shapes(shape_a, shape_b))
    np.testing.assert_allclose(a.grad.data, autograd.unbroadcast(ones * b.data, shape_a))
    np.testing.assert_allclose(b.grad.data, autograd.unbroadcast(ones * a.data, shape_b))


def test_unbroadcast_sums_added_and_stretched_axes():
    grad = np.arange(24.0).reshape(2, 3, 4)
    np.testing.assert_array_equal(autograd.unbroadcast(grad, (4,)), grad.sum(axis=(0, 1)))
    np.testing.assert_array_equal(autograd.unbroadcast(grad, (3, 1)), grad.sum(axis=(0, 2))[:, None])
    np.testing.assert_array_equal(autograd.unbroadcast(grad, (2, 3, 4)), grad)


# ----- gradient life-cycle ------------------------------------------------------------------------

def test_only_leaves_keep_grad():
    x = f64([1.0, 2.0])
    hidden = x * 2
    (hidden * hidden).sum().backward()
    assert x.grad is not None
    assert hidden.grad is None


def test_retain_grad_keeps_a_non_leaf_gradient():
    x = f64([1.0, 2.0])
    hidden = x * 2
    hidden.retain_grad()
    (hidden * hidden).sum().backward()
    np.testing.assert_allclose(hidden.grad.data, 2 * hidden.data)


def test_leaf_gradients_accumulate_until_zero_grad():
    x = f64([1.0, -1.0])
    (x * 3).sum().backward()
    (x * 5).sum().backward()
    np.testing.assert_allclose(x.grad.data, [8.0, 8.0])
    x.zero_grad()
    assert x.grad is None
    (x * 2).sum().backward()
    np.testing.assert_allclose(x.grad.data, [2.0, 2.0])


def test_grad_is_a_tensor_of_the_leafs_shape_and_dtype():
    for dtype in (np.float32, np.float64):
        x = Tensor(np.ones((2, 3)), dtype=dtype, requires_grad=True)
        (x * 2.5).sum().backward()
        assert isinstance(x.grad, Tensor)
        assert x.grad.shape == (2, 3) and x.grad.dtype == dtype


def test_grad_keeps_the_leaf_dtype_when_mixed_with_float64():
    x = Tensor([1.0, 2.0], requires_grad=True)                 # float32
    w = Tensor([0.5, 0.25], dtype=np.float64)
    (x * w).sum().backward()
    assert x.grad.dtype == np.float32


def test_leaf_grads_never_alias_each_other_or_the_seed():
    a, b = f64([1.0, 2.0]), f64([3.0, 4.0])
    seed = np.ones(2)
    (a + b).backward(seed)
    a.grad.data *= 10
    np.testing.assert_allclose(b.grad.data, [1.0, 1.0])
    np.testing.assert_allclose(seed, [1.0, 1.0])


@pytest.mark.parametrize("shape", [(3, 4), (100, 50)])     # small and large reductions
def test_reduction_gradients_accumulate_into_a_leaf_of_its_own(shape):
    a, b = f64(np.ones(shape)), f64(np.ones(shape))
    for _ in range(2):
        (a + b).sum().backward()
        a.mean(axis=0).sum().backward()
    np.testing.assert_allclose(a.grad.data, np.full(shape, 2 + 2 / shape[0]))
    np.testing.assert_allclose(b.grad.data, np.full(shape, 2.0))
    assert not np.shares_memory(a.grad.data, b.grad.data)


def test_second_backward_without_retain_graph_raises_clear_error():
    x = f64([1.0, 2.0])
    y = (x * x).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        y.backward()


def test_saved_tensors_are_released_after_backward():
    x = f64([1.0, 2.0])
    hidden = x * x
    y = hidden.sum()
    node = hidden.grad_fn
    y.backward()
    assert node.saved_tensors is None


def test_retain_graph_allows_a_second_backward():
    x = f64([1.0, 2.0])
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(x.grad.data, 4 * x.data)


def test_backward_on_non_scalar_needs_a_gradient():
    x = f64([1.0, 2.0])
    with pytest.raises(RuntimeError, match="shape \\(2,\\)"):
        (x * 2).backward()
    (x * 2).backward(np.array([1.0, 10.0]))
    np.testing.assert_allclose(x.grad.data, [2.0, 20.0])


def test_backward_gradient_shape_must_match():
    x = f64([1.0, 2.0])
    with pytest.raises(RuntimeError, match="gradient has shape"):
        (x * 2).backward(np.ones(3))


def test_backward_on_tensor_without_grad_raises():
    with pytest.raises(RuntimeError, match="does not require grad"):
        Tensor([1.0]).backward()


def test_backward_on_a_leaf_sets_its_grad():
    x = f64([4.0])
    x.backward()
    assert x.grad.item() == 1.0


def test_hooks_on_unused_branches_do_not_break_counts():
    x, y = f64([1.0]), f64([2.0])
    frozen = Tensor([3.0], dtype=np.float64)
    out = x * y + frozen * y
    out.backward()
    assert x.grad.item() == 2.0 and y.grad.item() == 4.0
    assert frozen.grad is None


# ----- grad mode ---------------------------------------------------------------------------------

def test_no_grad_builds_no_graph():
    x = f64([1.0])
    with tt.no_grad():
        y = x * 2 + 1
    assert not y.requires_grad and y.grad_fn is None
    assert tt.is_grad_enabled()


def test_no_grad_and_enable_grad_nest_and_decorate():
    x = f64([1.0])

    @tt.no_grad()
    def frozen(t):
        return t * 2

    @tt.enable_grad()
    def tracked(t):
        return t * 2

    assert frozen(x).grad_fn is None
    with tt.no_grad():
        assert tracked(x).grad_fn is not None
        assert not tt.is_grad_enabled()
    assert tt.is_grad_enabled()


def test_set_grad_enabled_as_call_context_and_decorator():
    x = f64([1.0])
    with tt.set_grad_enabled(False):
        assert (x * 2).grad_fn is None
    assert tt.is_grad_enabled()
    tt.set_grad_enabled(False)
    try:
        assert not tt.is_grad_enabled()
    finally:
        tt.set_grad_enabled(True)

    @tt.set_grad_enabled(False)
    def frozen(t):
        return t * 2

    assert tt.is_grad_enabled(), "decorating must not switch the mode"
    assert frozen(x).grad_fn is None


def test_grad_mode_is_restored_after_an_exception():
    with pytest.raises(ValueError):
        with tt.no_grad():
            raise ValueError
    assert tt.is_grad_enabled()


def test_detach_shares_data_and_cuts_the_graph():
    x = f64([1.0, 2.0])
    y = x * 2
    d = y.detach()
    assert d.grad_fn is None and not d.requires_grad
    assert np.shares_memory(d.data, y.data)


def test_requires_grad_():
    x = Tensor([1.0])
    assert x.requires_grad_() is x and x.requires_grad
    with pytest.raises(TypeError, match="floating-point"):
        Tensor([1, 2], dtype=np.int64).requires_grad_()
    with pytest.raises(TypeError, match="floating-point"):
        Tensor([1, 2], dtype=np.int64, requires_grad=True)


def test_enable_autograd_is_idempotent_and_silent(capsys):
    autograd.enable_autograd()
    autograd.enable_autograd()
    assert capsys.readouterr().out == ""
    assert tt.is_grad_enabled()


def test_importing_prints_nothing():
    out = subprocess.run([sys.executable, "-c", "import tinytorch, tinytorch.core.autograd"],
                         capture_output=True, text=True, check=True)
    assert out.stdout == "" and out.stderr == ""


# ----- dtypes ----------------------------------------------------------------------------------------

def test_default_dtype_is_float32_for_lists_ints_and_float64_arrays():
    assert Tensor([1, 2]).dtype == np.float32
    assert Tensor(3).dtype == np.float32
    assert Tensor(np.zeros(2, dtype=np.float64)).dtype == np.float32
    assert Tensor([True, False]).dtype == np.bool_


def test_explicit_dtype_is_honoured():
    assert Tensor([1, 2], dtype=np.float64).dtype == np.float64
    assert Tensor([1, 2], dtype=np.int64).dtype == np.int64
    assert Tensor([1, 2], dtype=np.float16).dtype == np.float16


def test_python_scalars_do_not_promote_float32():
    x = Tensor([1.0, 2.0], requires_grad=True)
    for y in (x * 2.5, 2.5 * x, x + 1, 1 - x, x / 3, 3 / x, x ** 2, 2 ** x, -x):
        assert y.dtype == np.float32, y
    (x * 2.5).sum().backward()
    assert x.grad.dtype == np.float32


def test_set_default_dtype():
    try:
        tt.set_default_dtype(np.float64)
        assert Tensor([1.0]).dtype == np.float64
        assert tt.randn(2).dtype == np.float64
    finally:
        tt.set_default_dtype(np.float32)
    with pytest.raises(TypeError, match="float"):
        tt.set_default_dtype(np.int32)


# ----- higher-order gradients (the rule format serves them) ------------------------------------------

def test_grad_returns_gradients_without_touching_dot_grad():
    x = f64([1.0, 2.0])
    (g,) = autograd.grad((x * x).sum(), x)
    np.testing.assert_allclose(g.data, 2 * x.data)
    assert x.grad is None


def test_grad_of_grad_gives_second_derivative():
    x = f64([3.0])
    (dy,) = autograd.grad(x ** 3, x, create_graph=True)
    (d2y,) = autograd.grad(dy, x)
    assert dy.item() == pytest.approx(27.0) and d2y.item() == pytest.approx(18.0)


def test_grad_reports_unused_inputs():
    x, unused = f64([1.0]), f64([2.0])
    with pytest.raises(RuntimeError, match="allow_unused"):
        autograd.grad(x * 2, [x, unused])
    assert autograd.grad(x * 2, [x, unused], allow_unused=True)[1] is None


# ----- gradcheck ------------------------------------------------------------------------------------

def test_gradcheck_accepts_a_correct_rule():
    x = f64(np.random.default_rng(1).standard_normal((3, 4)))
    assert gradcheck(lambda t: (t * t).sum(axis=1), [x])


def test_gradcheck_rejects_a_wrong_rule():
    class WrongSquare(Function):
        def forward(self, x):
            return x * x

        def gradient(self, grad, x):
            return (grad * x,)                     # should be 2 * x

    x = f64([1.0, 2.0, 3.0])
    with pytest.raises(GradcheckError, match="input 0"):
        gradcheck(lambda t: run_op(WrongSquare, t), [x])


def test_gradcheck_requires_float64():
    with pytest.raises(ValueError, match="float64"):
        gradcheck(lambda t: t * 2, [Tensor([1.0], requires_grad=True)])
