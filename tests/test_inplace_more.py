"""In-place safety around views, saved outputs, optimizers, retain_grad, and leaf hooks."""

import threading

import numpy as np
import pytest

import tinytorch as tt
from tinytorch import Tensor
from tinytorch.core.optimizers import SGD


def leaf(values):
    return Tensor(values, dtype=np.float64, requires_grad=True)


def test_inplace_on_a_recorded_view_is_refused():
    w = leaf([1.0, 2.0, 3.0])
    view = (w * 1)[0:2]
    with pytest.raises(RuntimeError, match="view"):
        view *= 2


def test_inplace_on_a_view_of_a_leaf_is_refused():
    w = leaf([1.0, 2.0])
    with pytest.raises(RuntimeError, match="view"):
        w[0:1] += 1.0                         # Python: tmp = w[0:1]; tmp += 1; w[0:1] = tmp
    np.testing.assert_array_equal(w.data, [1.0, 2.0])


def test_changing_a_base_after_taking_a_view_is_caught_at_backward():
    w = leaf([1.0, 2.0])
    y = w * 2
    z = y.reshape(2)                          # shares y's memory
    y *= w
    with pytest.raises(RuntimeError, match="ReshapeBackward.*view"):
        z.sum().backward()


def test_advanced_indexing_copies_so_later_changes_are_fine():
    w = leaf([1.0, 2.0, 3.0])
    y = w * 2
    picked = y[[0, 2]]                        # a copy, not a view
    y += 1.0
    picked.sum().backward()
    np.testing.assert_allclose(w.grad.data, [2.0, 0.0, 2.0])


def test_changing_a_saved_output_without_recording_is_caught():
    x = leaf([1.0, 2.0])
    y = x.exp()
    with tt.no_grad():
        y += 1.0
    with pytest.raises(RuntimeError, match="ExpBackward.*output"):
        y.sum().backward()


def test_an_optimizer_step_counts_as_an_inplace_change():
    w, x = leaf([1.0, 2.0]), leaf([3.0, 4.0])
    optimizer = SGD([w], lr=0.5)
    loss = (w * x).sum()
    loss.backward(retain_graph=True)
    optimizer.step()
    with pytest.raises(RuntimeError, match="SGD.step"):
        loss.backward()


def test_retain_grad_follows_the_tensor_through_an_inplace_op():
    torch = pytest.importorskip("torch")
    x = leaf([1.0, 2.0])
    y = x * 2
    y.retain_grad()
    y *= 3
    (y * y).sum().backward()
    xt = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    yt = xt * 2
    yt.retain_grad()
    yt *= 3
    (yt * yt).sum().backward()
    np.testing.assert_allclose(y.grad.data, yt.grad.numpy())
    np.testing.assert_allclose(x.grad.data, xt.grad.numpy())


def test_second_backward_after_inplace_edits_names_retain_graph():
    w = leaf([1.0, 2.0])
    with tt.no_grad():
        w -= 0.1
    loss = (w * 2).sum()
    loss.backward()
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        loss.backward()


def test_leaf_hook_runs_once_on_the_summed_gradient():
    x = leaf([1.0, 2.0])
    seen = []
    x.register_hook(lambda g: seen.append(g.data.copy()) or tt.ones(2, dtype=np.float64))
    (x * x).sum().backward()
    assert len(seen) == 1
    np.testing.assert_allclose(seen[0], 2 * x.data)
    np.testing.assert_allclose(x.grad.data, [1.0, 1.0])


def test_leaf_hook_result_keeps_the_leaf_dtype():
    x = Tensor([1.0, 2.0], requires_grad=True)                # float32
    x.register_hook(lambda g: np.ones(2, dtype=np.float64))
    (x * 3).sum().backward()
    assert x.grad.dtype == np.float32


def test_grad_mode_is_per_thread():
    inside, release = threading.Event(), threading.Event()

    def worker():
        with tt.no_grad():
            inside.set()
            release.wait(5)

    thread = threading.Thread(target=worker)
    thread.start()
    inside.wait(5)
    try:
        assert (leaf([1.0]) * 2).requires_grad, "another thread's no_grad leaked into this one"
    finally:
        release.set()
        thread.join()


def test_no_grad_decorates_generator_functions_step_by_step():
    x = leaf([1.0])

    @tt.no_grad()
    def doubled(t, times):
        for _ in range(times):
            yield t * 2

    results = []
    for item in doubled(x, 2):
        results.append(item)
        assert tt.is_grad_enabled(), "the mode must not leak out between steps"
    assert all(not r.requires_grad for r in results)


def test_recording_into_an_unrecorded_view_is_refused():
    base = tt.zeros(3, 4, dtype=np.float64)
    w = leaf([1.0, 2.0])
    with pytest.raises(RuntimeError, match="view of another tensor"):
        base[1][1:3] = w                      # base[1] is a plain view: base would get no graph
    base[1, 1:3] = w                          # assigning into the base itself is recorded
    (base * 3).sum().backward()
    np.testing.assert_allclose(w.grad.data, [3.0, 3.0])


def test_mask_and_condition_are_copied_so_later_edits_do_not_change_the_graph():
    x = leaf([1.0, -2.0, 3.0])
    mask = Tensor([True, False, True])
    picked = x[mask]
    chosen = tt.where(mask, x * 2, x * 3)
    mask[...] = False
    (picked.sum() + chosen.sum()).backward()
    np.testing.assert_allclose(x.grad.data, [3.0, 3.0, 3.0])


def test_custom_function_saved_tensor_changed_in_place_is_caught():
    from tinytorch.core.autograd import Function

    class SavedExp(Function):
        @staticmethod
        def forward(ctx, x):
            y = x.exp()
            ctx.save_for_backward(y)
            return y

        @staticmethod
        def backward(ctx, grad):
            (y,) = ctx.saved_tensors
            return grad * y

    x = leaf([0.0, 1.0])
    y = SavedExp.apply(x)
    with tt.no_grad():
        y += 1.0
    with pytest.raises(RuntimeError, match="SavedExpBackward.*save_for_backward"):
        y.sum().backward()


def test_hook_on_a_leaf_that_is_also_a_backward_root():
    from tinytorch.core import autograd
    x = leaf([1.0])
    x.register_hook(lambda g: g * 10)
    autograd.backward([x, x * 3], [np.ones(1), np.ones(1)])
    assert x.grad.item() == 40.0


def test_no_grad_generator_forwards_throw_and_close():
    @tt.no_grad()
    def steps():
        try:
            yield 1
        except ValueError:
            yield "caught"
        finally:
            finals.append(tt.is_grad_enabled())

    finals = []
    gen = steps()
    assert next(gen) == 1
    assert gen.throw(ValueError()) == "caught"
    gen.close()
    assert finals == [False]


def test_scaling_by_a_constant_does_not_need_the_scaled_values():
    w, y = leaf([1.0, 2.0]), leaf([3.0, 4.0]) * 1
    z = y * 3                                  # MulBackward needs 3, not y's values
    y *= w
    (z.sum() + y.sum()).backward()
    np.testing.assert_allclose(w.grad.data, [3.0, 4.0])


def test_ops_that_use_only_their_output_allow_changes_to_their_input():
    x = leaf([0.5, 1.0])
    y = x * x
    z = y.exp()                                # ExpBackward uses exp(y), not y
    y.detach().__iadd__(1.0)
    z.sum().backward()
    np.testing.assert_allclose(x.grad.data, 2 * x.data * np.exp(x.data * x.data))


def test_edits_made_before_a_graph_was_built_do_not_affect_it():
    w = leaf([1.0, 2.0])
    optimizer = SGD([w], lr=0.1)
    for _ in range(2):                       # an ordinary training loop: step, then a new graph
        optimizer.zero_grad()
        loss = (w * w).sum()
        loss.backward()
        optimizer.step()
    np.testing.assert_allclose(w.data, np.array([1.0, 2.0]) * 0.8 ** 2)
