"""Tensor hooks: replacement, removal, order, and their interplay with retain_grad."""

import numpy as np
import pytest

from tinytorch import Tensor


def leaf(values):
    return Tensor(values, dtype=np.float64, requires_grad=True)


def test_leaf_hook_sees_the_gradient_and_can_replace_it():
    x = leaf([1.0, 2.0])
    seen = []
    x.register_hook(lambda g: seen.append(g.data.copy()))
    x.register_hook(lambda g: g * 10)
    (x * 3).sum().backward()
    np.testing.assert_allclose(seen[0], [3.0, 3.0])
    np.testing.assert_allclose(x.grad.data, [30.0, 30.0])


def test_non_leaf_hook_changes_what_flows_upstream():
    x = leaf([1.0, 2.0])
    hidden = x * 2
    hidden.register_hook(lambda g: g * 0)
    (hidden * x).sum().backward()
    np.testing.assert_allclose(x.grad.data, hidden.data, err_msg="only the direct path remains")


def test_hooks_run_in_registration_order():
    x = leaf([1.0])
    hidden = x * 1.0
    order = []
    hidden.register_hook(lambda g: order.append("first") or g + 1)
    hidden.register_hook(lambda g: order.append("second") or g * 2)
    hidden.sum().backward()
    assert order == ["first", "second"]
    assert x.grad.item() == (1 + 1) * 2


def test_removed_hook_no_longer_runs():
    x = leaf([1.0])
    handle = x.register_hook(lambda g: g * 100)
    handle.remove()
    handle.remove()                      # removing twice is harmless
    (x * 2).sum().backward()
    assert x.grad.item() == 2.0


def test_retain_grad_stores_the_gradient_after_hooks():
    x = leaf([1.0, 2.0])
    hidden = x * 2
    hidden.retain_grad()
    hidden.register_hook(lambda g: g * 5)
    hidden.sum().backward()
    np.testing.assert_allclose(hidden.grad.data, [5.0, 5.0])
    np.testing.assert_allclose(x.grad.data, [10.0, 10.0])


def test_hook_returning_wrong_shape_is_an_error():
    x = leaf([1.0, 2.0])
    x.register_hook(lambda g: np.ones(3))
    with pytest.raises(RuntimeError, match="shape"):
        (x * 2).sum().backward()


def test_hook_on_tensor_without_grad_is_an_error():
    with pytest.raises(RuntimeError, match="does not require grad"):
        Tensor([1.0]).register_hook(lambda g: g)
