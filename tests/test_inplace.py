"""In-place operations: allowed where safe, recorded in the graph, refused where values were saved."""

import numpy as np
import pytest

import tinytorch as tt
from tinytorch import Tensor
from tinytorch.core.autograd import gradcheck


def leaf(values):
    return Tensor(values, dtype=np.float64, requires_grad=True)


@pytest.mark.parametrize("symbol, update", [
    ("+=", lambda t: t.__iadd__(1.0)), ("-=", lambda t: t.__isub__(1.0)),
    ("*=", lambda t: t.__imul__(2.0)), ("/=", lambda t: t.__itruediv__(2.0)),
    ("x[...] = value", lambda t: t.__setitem__(0, 5.0)),
])
def test_changing_a_saved_tensor_fails_at_backward_naming_op_and_tensor(symbol, update):
    x = leaf([1.0, 2.0])
    hidden = x * 3
    product = hidden * hidden                # MulBackward saves hidden
    update(hidden)
    with pytest.raises(RuntimeError) as error:
        product.sum().backward()
    message = str(error.value)
    assert "MulBackward" in message and symbol in message and "shape (2,)" in message


def test_changing_an_input_of_a_shape_only_op_is_fine():
    x = leaf([1.0, 2.0])
    hidden = x * 3
    total = (hidden + 1.0).sum()             # AddBackward does not read hidden's values
    hidden += 10.0
    total.backward()
    np.testing.assert_allclose(x.grad.data, [3.0, 3.0])


def test_inplace_ops_on_non_leaves_are_differentiable():
    def fn(x):
        hidden = x * 1.0
        hidden *= x
        hidden += 2.0
        hidden /= x + 3.0
        hidden -= x
        return hidden

    assert gradcheck(fn, [leaf([0.5, 1.5, -2.0])])


def test_setitem_is_differentiable_in_both_tensors():
    def fn(x, value):
        out = x * 1.0
        out[1:] = value * 2
        return out

    assert gradcheck(fn, [leaf([1.0, 2.0, 3.0]), leaf([4.0, 5.0])])


def test_setitem_with_a_grad_value_into_a_plain_tensor_joins_the_graph():
    value = leaf(4.0)
    target = tt.zeros(3, dtype=np.float64)
    target[2] = value
    assert target.requires_grad
    (target * 3).sum().backward()
    assert value.grad.item() == 3.0


def test_inplace_on_the_output_of_exp_keeps_exp_gradient_exact():
    x = leaf([0.0, 1.0])
    y = x.exp()
    y *= 2                                     # ExpBackward saved y's old values
    y.sum().backward()
    np.testing.assert_allclose(x.grad.data, 2 * np.exp(x.data))


def test_leaf_that_requires_grad_refuses_inplace_change():
    x = leaf([1.0])
    with pytest.raises(RuntimeError, match="leaf tensor that requires grad"):
        x += 1.0
    with pytest.raises(RuntimeError, match="leaf tensor that requires grad"):
        x[0] = 3.0


def test_optimizer_style_update_under_no_grad_is_allowed_and_keeps_the_leaf():
    w = leaf([1.0, 2.0])
    (w * w).sum().backward()
    with tt.no_grad():
        w -= 0.1 * w.grad
        w[0] = 0.0
    assert w.is_leaf and w.requires_grad
    np.testing.assert_allclose(w.data, [0.0, 1.6])


def test_inplace_result_must_fit_the_tensor():
    with pytest.raises(ValueError, match="does not fit"):
        t = tt.zeros(2)
        t += tt.ones(3, 2)


def test_data_is_the_documented_escape_hatch():
    x = leaf([1.0, 2.0])
    hidden = x * 3
    product = hidden * hidden
    hidden.data[0] = 100.0                  # bypasses version tracking, as documented
    product.sum().backward()
    assert x.grad.data[0] == 2 * 100.0 * 3


def test_ops_recorded_before_an_inplace_op_keep_the_old_history():
    torch = pytest.importorskip("torch")
    x = leaf([1.0, 2.0])
    hidden = x * 3
    before = hidden + 1                      # used hidden before it changed
    hidden *= 2
    (before.sum() + hidden.sum()).backward()
    xt = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    ht = xt * 3
    bt = ht + 1
    ht *= 2
    (bt.sum() + ht.sum()).backward()
    np.testing.assert_allclose(x.grad.data, xt.grad.numpy())


def test_a_constant_that_joins_the_graph_in_place_was_constant_for_earlier_ops():
    weight = leaf([1.0, 1.0])
    constant = tt.zeros(2, dtype=np.float64)
    early = constant + weight                 # constant was not part of the graph here
    constant += weight * 2
    (early.sum() + constant.sum()).backward()
    np.testing.assert_allclose(weight.grad.data, [3.0, 3.0])


def test_changing_saved_values_through_a_detached_alias_is_caught():
    x = leaf([1.0, 2.0])
    hidden = x * 3
    product = hidden * hidden
    alias = hidden.detach()                  # shares hidden's memory
    alias += 1.0
    with pytest.raises(RuntimeError, match="in-place operation"):
        product.sum().backward()


def test_changing_saved_values_through_a_view_is_caught():
    x = leaf([1.0, 2.0])
    hidden = x * 3
    product = hidden * hidden
    with tt.no_grad():
        row = hidden[0:1]                    # a view of hidden's memory
    row *= 2.0
    with pytest.raises(RuntimeError, match="in-place operation"):
        product.sum().backward()


def test_setitem_value_with_extra_leading_axes_gets_its_gradient():
    w = leaf([[1.0, 2.0, 3.0]])
    x = tt.zeros(2, 3, dtype=np.float64)
    x[0] = w
    (x * 2).sum().backward()
    np.testing.assert_allclose(w.grad.data, [[2.0, 2.0, 2.0]])
