"""What a user-defined gradient rule returns is checked where it enters the engine.

A custom op (PyTorch's ctx style, our forward/gradient style, or TinyTorch's ``apply`` style)
that returns the wrong number of gradients, a value that is not a gradient, or a gradient of a
shape its input cannot have gives an error naming the op and the input, as PyTorch does, never
a wrongly shaped ``.grad`` or a NumPy error later on. The shape and dtype of every ``.grad``
equal its tensor's.
"""

import numpy as np
import pytest

from tinytorch import Tensor
from tinytorch.core.autograd import Function, grad, run_op


def _ctx_op(returned):
    """A ctx-style op y = 2x whose backward returns ``returned(grad, x)``."""

    class Doubling(Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x * 2

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return returned(g, x)

    return Doubling


class ReturnsWrongShape(Function):
    """Our style: forward y = x.sum(), gradient of shape (5,) whatever the input."""

    def forward(self, x):
        return x.sum()

    def gradient(self, g, x):
        return (np.ones(5),)


class CurriculumStyle(Function):
    """TinyTorch's style: the node is built by hand and ``apply`` returns the gradients."""

    def __init__(self, x, returned):
        super().__init__(x)
        self.returned = returned

    def apply(self, grad_output):
        return self.returned(grad_output)


def _by_hand(x, returned):
    out = Tensor._make(x.data * 3.0)
    out.grad_fn = CurriculumStyle(x, returned)
    out.requires_grad = True
    return out


def leaf(shape=(2, 3), dtype=np.float64):
    return Tensor(np.arange(np.prod(shape), dtype=np.float64).reshape(shape) + 1.0,
                  dtype=dtype, requires_grad=True)


@pytest.mark.parametrize("returned, shape", [
    (lambda g, x: g.reshape(-1), (6,)),                 # the right elements, the wrong shape
    (lambda g, x: g[0], (3,)),                          # too few
    (lambda g, x: g.data.T, (3, 2)),                    # transposed
    (lambda g, x: np.ones((2, 3, 2)), (2, 3, 2)),       # a trailing axis too many
    (lambda g, x: np.ones(()), ()),                     # a scalar for a (2, 3) input
])
def test_ctx_style_gradient_of_the_wrong_shape_names_op_input_and_shapes(returned, shape):
    x = leaf()
    y = _ctx_op(returned).apply(x)
    with pytest.raises(RuntimeError) as error:
        y.sum().backward()
    message = str(error.value)
    assert "DoublingBackward" in message and "input 0" in message, message
    assert str(shape) in message and "(2, 3)" in message, message
    assert x.grad is None


def test_our_style_gradient_of_the_wrong_shape_is_refused():
    x = leaf((4,))
    y = run_op(ReturnsWrongShape, x)
    with pytest.raises(RuntimeError, match=r"ReturnsWrongShape returned a gradient of shape "
                                           r"\(5,\) for input 0, which has shape \(4,\)"):
        y.backward()


def test_curriculum_style_apply_of_the_wrong_shape_is_refused():
    x = leaf((2, 2))
    y = _by_hand(x, lambda g: (np.ones((3,)),))
    with pytest.raises(RuntimeError, match=r"CurriculumStyle.*input 0.*\(2, 2\)"):
        y.sum().backward()


def test_curriculum_style_apply_returning_a_lone_array_counts_as_one_gradient():
    x = leaf((2, 2))
    y = _by_hand(x, lambda g: g * 3.0)              # not wrapped in a tuple
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.data, np.full((2, 2), 3.0))


def test_gradient_in_a_shape_the_input_was_broadcast_to_is_summed_back():
    """As PyTorch: a gradient may come in a shape the input broadcasts to."""
    x = leaf((1, 3))
    y = _ctx_op(lambda g, x: np.ones((4, 2, 3))).apply(x)
    y.sum().backward()
    assert x.grad.shape == (1, 3)
    np.testing.assert_array_equal(x.grad.data, np.full((1, 3), 8.0))


@pytest.mark.parametrize("returned, what", [
    (lambda g, x: (g, g), "2 gradient"),
    (lambda g, x: (), "0 gradient"),
])
def test_wrong_number_of_gradients_is_refused(returned, what):
    y = _ctx_op(returned).apply(leaf())
    with pytest.raises(RuntimeError, match=f"DoublingBackward returned {what}.*1 input"):
        y.sum().backward()


@pytest.mark.parametrize("returned, kind", [
    (lambda g, x: [[1.0, 2.0, 3.0]] * 2, "list"),       # a list is read as gradients, one
    (lambda g, x: (2.0,), "float"),
    (lambda g, x: ("grad",), "str"),
    (lambda g, x: ({"g": g},), "dict"),
    (lambda g, x: {"g": g}, "dict"),
])
def test_a_gradient_that_is_not_an_array_or_tensor_is_refused(returned, kind):
    y = _ctx_op(returned).apply(leaf())
    with pytest.raises((TypeError, RuntimeError), match=f"DoublingBackward returned .*{kind}|"
                                                        f"DoublingBackward returned 2"):
        y.sum().backward()


def test_a_boolean_gradient_is_refused():
    y = _ctx_op(lambda g, x: np.ones((2, 3), dtype=bool)).apply(leaf())
    with pytest.raises(TypeError, match="dtype bool for input 0"):
        y.sum().backward()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("returned_dtype", [np.float16, np.float32, np.float64, np.int64])
def test_grad_has_its_tensors_shape_and_dtype_whatever_the_rule_returned(dtype, returned_dtype):
    x = leaf((2, 3), dtype=dtype)
    y = _ctx_op(lambda g, x: np.ones((2, 3), dtype=returned_dtype) * 2).apply(x)
    y.sum().backward()
    assert x.grad.shape == x.shape and x.grad.dtype == x.dtype
    np.testing.assert_array_equal(x.grad.data, np.full((2, 3), 2.0))


def test_none_for_an_input_that_needs_a_gradient_leaves_it_without_one():
    x = leaf()
    y = _ctx_op(lambda g, x: None).apply(x)
    y.sum().backward()
    assert x.grad is None


def test_gradient_for_an_input_that_needs_none_is_ignored():
    class TwoInputs(Function):
        @staticmethod
        def forward(ctx, a, b):
            return a * 2

        @staticmethod
        def backward(ctx, g):
            return g * 2, "anything: b needs no gradient"

    a = leaf()
    TwoInputs.apply(a, Tensor(np.ones((2, 3)))).sum().backward()
    np.testing.assert_array_equal(a.grad.data, np.full((2, 3), 2.0))


def test_wrong_shape_is_refused_with_create_graph_too():
    x = leaf()
    y = _ctx_op(lambda g, x: g.reshape(-1)).apply(x)
    with pytest.raises(RuntimeError, match=r"DoublingBackward.*\(6,\).*\(2, 3\)"):
        grad(y.sum(), x, create_graph=True)


def test_wrong_shape_is_refused_by_grad():
    x = leaf()
    y = _ctx_op(lambda g, x: g[0]).apply(x)
    with pytest.raises(RuntimeError, match="DoublingBackward.*input 0"):
        grad(y.sum(), x)
