"""User-defined differentiable ops: our forward/gradient style and PyTorch's ctx style."""

import numpy as np
import pytest

from tinytorch import Tensor
from tinytorch.core.autograd import Function, gradcheck, gradgradcheck, run_op


def f64(values):
    return Tensor(values, dtype=np.float64, requires_grad=True)


class ScaledCube(Function):
    """PyTorch style: y = k x^3, dy/dx = 3 k x^2."""

    @staticmethod
    def forward(ctx, x, k):
        ctx.save_for_backward(x)
        ctx.k = k
        return x * x * x * k

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * 3 * ctx.k * x * x, None


class Softplus(Function):
    """tinytorch style: y = log(1 + e^x), dy/dx = sigmoid(x)."""

    def forward(self, x):
        return np.logaddexp(0.0, x)

    def gradient(self, grad, x):
        return (grad / (1 + np.exp(-x)),)


def test_ctx_style_function_passes_gradcheck():
    x = f64([0.5, -1.5, 2.0])
    assert gradcheck(lambda t: ScaledCube.apply(t, 2.5), [x])


def test_ctx_style_function_supports_second_derivatives():
    x = f64([0.5, -1.5, 2.0])
    assert gradgradcheck(lambda t: ScaledCube.apply(t, 2.5), [x])


def test_ctx_style_function_records_a_named_node():
    y = ScaledCube.apply(f64([1.0]), 2.0)
    assert repr(y.grad_fn) == "<ScaledCubeBackward>"
    assert y.item() == 2.0


def test_ctx_needs_input_grad_reports_which_inputs_need_gradients():
    seen = []

    class Probe(Function):
        @staticmethod
        def forward(ctx, a, b):
            seen.append(ctx.needs_input_grad)
            return a * b

        @staticmethod
        def backward(ctx, grad):
            return grad, grad

    Probe.apply(f64([1.0]), Tensor([2.0], dtype=np.float64))
    assert seen == [(True, False)]


def test_ctx_style_without_inputs_needing_grad_records_nothing():
    y = ScaledCube.apply(Tensor([1.0], dtype=np.float64), 2.0)
    assert y.grad_fn is None and not y.requires_grad


def test_backward_returning_the_wrong_number_of_gradients_is_an_error():
    class Bad(Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, grad):
            return grad, grad

    with pytest.raises(RuntimeError, match="BadBackward returned 2 gradient.* for 1 input.*one per input"):
        Bad.apply(f64([1.0])).sum().backward()


def test_apply_on_a_non_ctx_class_explains_run_op():
    with pytest.raises(TypeError, match="run_op"):
        Softplus.apply(f64([1.0]))


def test_forward_gradient_style_function_passes_gradcheck():
    x = f64([-3.0, 0.0, 4.0])
    assert gradcheck(lambda t: run_op(Softplus, t), [x])


# ----- gradients a user's rule hands back may be shared: the leaves must not adopt them ------

def _double_product(ctx, x, a):
    return x * a * 2.0


def _one_gradient_for_both(ctx, grad):
    shared = grad * 2.0
    return shared, shared


class SameGradientTwice(Function):
    """y = 2 x a, with a backward that returns one tensor for both inputs (valid, if lazy)."""
    forward = staticmethod(_double_product)
    backward = staticmethod(_one_gradient_for_both)


def test_one_tensor_returned_for_two_inputs_is_not_corrupted_by_leaf_accumulation():
    torch = pytest.importorskip("torch")
    TorchSameGradientTwice = type("TorchSameGradientTwice", (torch.autograd.Function,), {
        "forward": staticmethod(_double_product), "backward": staticmethod(_one_gradient_for_both)})

    def run(apply, x):
        a = x * 1.0                    # a node whose gradient waits while x gets another one
        w = x * 3.0
        (apply(x, a).sum() + w.sum()).backward()
        return x.grad

    ours = run(SameGradientTwice.apply, f64([1.0, 2.0]))
    theirs = run(TorchSameGradientTwice.apply,
                 torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True))
    np.testing.assert_allclose(ours.data, theirs.numpy())
    np.testing.assert_allclose(ours.data, [7.0, 7.0])      # 2 (to x) + 2 (via a) + 3 (via w)


class ReturnsItsSavedInput(Function):
    """Our style, with a rule that returns an array it keeps: y = x^2 / 2, dy/dx = x (grad 1)."""

    def forward(self, x):
        return x * x / 2

    def gradient(self, grad, x):
        return (x,)                    # correct only for grad == 1, as used below


def test_leaf_gradient_never_aliases_an_array_a_users_rule_returned():
    x = f64([1.0, 2.0])
    for _ in range(2):
        run_op(ReturnsItsSavedInput, x).sum().backward()
    np.testing.assert_array_equal(x.data, [1.0, 2.0])
    np.testing.assert_array_equal(x.grad.data, [2.0, 4.0])
    assert not np.shares_memory(x.grad.data, x.data)
