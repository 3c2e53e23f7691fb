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

    with pytest.raises(RuntimeError, match="one per forward input"):
        Bad.apply(f64([1.0])).sum().backward()


def test_apply_on_a_non_ctx_class_explains_run_op():
    with pytest.raises(TypeError, match="run_op"):
        Softplus.apply(f64([1.0]))


def test_forward_gradient_style_function_passes_gradcheck():
    x = f64([-3.0, 0.0, 4.0])
    assert gradcheck(lambda t: run_op(Softplus, t), [x])
