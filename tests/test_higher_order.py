"""Gradients of gradients (create_graph), gradgradcheck, and anomaly detection."""

import numpy as np
import pytest

import tinytorch as tt
from tinytorch import Tensor
from tinytorch.core import autograd
from tinytorch.core.autograd import detect_anomaly, gradgradcheck


def f64(data):
    return Tensor(data, dtype=np.float64, requires_grad=True)


RNG = np.random.default_rng(7)
POSITIVE = f64(RNG.uniform(0.5, 2.0, size=(2, 3)))
OTHER = f64(RNG.uniform(0.5, 2.0, size=(2, 3)))

SECOND_ORDER_CASES = {
    "mul": lambda a, b: a * b * a,
    "div": lambda a, b: a / b,
    "pow_scalar": lambda a, b: a ** 3 + b ** 0.5,
    "pow_tensor": lambda a, b: a ** b,
    "exp_log": lambda a, b: a.exp() * b.log(),
    "sqrt": lambda a, b: (a * b).sqrt(),
    "tanh_sigmoid": lambda a, b: a.tanh() * b.sigmoid(),
    "sin_cos": lambda a, b: a.sin() * b.cos(),
    "abs_relu": lambda a, b: (a - 1).abs() * (b - 1).relu(),
    "matmul": lambda a, b: (a @ b.T).tanh(),
    "reductions": lambda a, b: a.sum(axis=0) * b.mean(axis=0) + a.max() * b.min(axis=1).sum(),
    "var_std": lambda a, b: a.var(axis=1) * b.std(axis=0).sum(),
    "shape_ops": lambda a, b: a.reshape(3, 2).T.permute(1, 0).T * b.transpose().T,
    "indexing": lambda a, b: a[:, [0, 0, 2]] * b[1] + a[a.data > 1].sum(),
    "join": lambda a, b: tt.concatenate([a, b], axis=1) * tt.stack([b, a], axis=2).sum(axis=2).sum(),
    "where_clip_maximum": lambda a, b: tt.where(a.data > 1, a * a, b) + a.clip(0.7, 1.5) * b.maximum(a),
    "expand": lambda a, b: a[:1].expand(4, 2, 3) * b,
}


@pytest.mark.parametrize("name", sorted(SECOND_ORDER_CASES))
def test_second_derivatives_match_finite_differences(name):
    assert gradgradcheck(SECOND_ORDER_CASES[name], [POSITIVE, OTHER])


def test_gradgradcheck_rejects_a_rule_whose_gradient_is_not_differentiable():
    class Frozen(autograd.Function):
        """Correct first derivative, but its rule uses a constant where x is needed."""

        def forward(self, x):
            return x * x

        def gradient(self, grad, x):
            constant = x.data if isinstance(x, Tensor) else x
            return (grad * 2 * constant,)

    x = f64([1.0, 2.0])
    assert autograd.gradcheck(lambda t: autograd.run_op(Frozen, t), [x])
    with pytest.raises(autograd.GradcheckError):
        gradgradcheck(lambda t: autograd.run_op(Frozen, t), [x])


def test_backward_with_create_graph_gives_differentiable_grads():
    x = f64([1.0, 2.0])
    (x ** 3).sum().backward(create_graph=True)
    first = x.grad
    assert first.requires_grad
    np.testing.assert_allclose(first.data, 3 * x.data ** 2)
    (second,) = autograd.grad(first.sum(), x)
    np.testing.assert_allclose(second.data, 6 * x.data)


def test_gradient_penalty_training_step_lowers_the_penalty():
    tt.manual_seed(0)
    w = Tensor(np.random.default_rng(0).standard_normal((3, 1)), dtype=np.float64, requires_grad=True)
    x = f64(np.random.default_rng(1).standard_normal((8, 3)))
    penalties = []
    for _ in range(20):
        out = (x @ w).tanh().sum()
        (gx,) = autograd.grad(out, x, create_graph=True)
        penalty = ((gx * gx).sum(axis=1) - 1.0) ** 2
        loss = penalty.mean()
        w.grad = None
        loss.backward()
        penalties.append(loss.item())
        with tt.no_grad():
            w.data -= 0.05 * w.grad.data
    assert penalties[-1] < penalties[0]


# ----- anomaly detection ---------------------------------------------------------------------------

def test_anomaly_mode_names_the_op_and_the_line_for_log_of_negative():
    x, w = f64([1.0, -1.0]), f64([2.0, 3.0])
    with detect_anomaly():
        with np.errstate(invalid="ignore"):
            y = x.log()  # the planted NaN
            loss = (y * w).sum()
            with pytest.raises(RuntimeError) as error:
                loss.backward()
    message = str(error.value)
    assert "MulBackward returned nan" in message, "the first NaN gradient is d(y*w)/dw = y"
    assert "loss = (y * w).sum()" in message
    assert "came from LogBackward" in message and "y = x.log()  # the planted NaN" in message


def test_anomaly_mode_catches_zero_over_zero():
    x = f64([0.0, 1.0])
    with detect_anomaly():
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = x / x.sum() * 0 / x  # 0/0 at x = 0
            with pytest.raises(RuntimeError, match="DivBackward"):
                ratio.sum().backward()


def test_without_anomaly_mode_nans_flow_silently():
    x = f64([-1.0])
    with np.errstate(invalid="ignore"):
        x.log().backward()
    assert x.grad.item() == -1.0            # d log(x)/dx = 1/x is finite here; only the value is NaN


def test_anomaly_mode_leaves_a_healthy_backward_alone():
    from tinytorch.core.functional import layer_norm
    x = f64(np.random.default_rng(2).standard_normal((3, 4)))
    with detect_anomaly():
        loss = (layer_norm(x, 4) * x.tanh()).sum()      # layer_norm has None inputs (no weight)
        loss.backward()
    assert np.all(np.isfinite(x.grad.data))


def test_create_graph_gives_each_leaf_its_own_gradient_tensor():
    a, b = f64([1.0, 2.0]), f64([3.0, 4.0])
    (a + b).sum().backward(create_graph=True)      # both leaves receive the same gradient
    assert a.grad is not b.grad
    (a * 1.0).sum().backward()                     # accumulates into a.grad only
    np.testing.assert_array_equal(a.grad.data, [2.0, 2.0])
    np.testing.assert_array_equal(b.grad.data, [1.0, 1.0])
