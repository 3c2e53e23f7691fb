"""Losses: values and gradients against PyTorch (float64) for every reduction and for extreme
inputs, exact limits and clamping without PyTorch, finite-difference checks, error messages,
and the TinyTorch node classes used standalone."""

import math
import warnings

import numpy as np
import pytest

import tinytorch as tt
from tinytorch.core import functional, losses
from tinytorch.core.autograd import (
    BCEBackward, CrossEntropyBackward, MSEBackward, grad, gradcheck,
)
from tinytorch.core.losses import (
    BCELoss, BCEWithLogitsLoss, BinaryCrossEntropyLoss, CrossEntropyLoss, MSELoss,
)
from tinytorch.core.tensor import Tensor

from op_helpers import leaf

RNG = np.random.default_rng(99)
REDUCTIONS = ["mean", "sum", "none"]
REL, ABS = 1e-9, 1e-13


def run_ours(loss_fn, pred, target, reduction):
    x = leaf(pred)
    loss = loss_fn(x, target, reduction=reduction)
    weights = RNG.standard_normal(loss.shape)
    (loss * Tensor(weights, dtype=np.float64)).sum().backward()
    return loss.data, x.grad.data, weights


def run_torch(torch, loss_fn, pred, target, reduction, weights):
    x = torch.tensor(pred, dtype=torch.float64, requires_grad=True)
    loss = loss_fn(x, target, reduction=reduction)
    (loss * torch.tensor(weights)).sum().backward()
    return loss.detach().numpy(), x.grad.numpy()


def compare(torch, ours, theirs, pred, target, torch_target, reduction):
    value, gradient, weights = run_ours(ours, pred, target, reduction)
    expected_value, expected_gradient = run_torch(torch, theirs, pred, torch_target, reduction,
                                                  weights)
    assert value.shape == expected_value.shape
    np.testing.assert_allclose(value, expected_value, rtol=REL, atol=ABS)
    np.testing.assert_allclose(gradient, expected_gradient, rtol=REL, atol=ABS)


# ----- against PyTorch ----------------------------------------------------------------------------

LOGITS = {
    "normal": RNG.standard_normal((6, 4)) * 3,
    "1e4": np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4], [1e4, 1e4, 1e4], [-1e4, 0.0, 1e-8]]),
    "tiny": np.array([[1e-8, -1e-8, 0.0], [0.0, 0.0, 0.0]]),
}
CLASSES = {"normal": [0, 3, 1, 2, 3, 0], "1e4": [1, 0, 2, 0], "tiny": [2, 0]}


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("case", list(LOGITS))
def test_cross_entropy_matches_torch(torch, case, reduction):
    target = np.array(CLASSES[case])
    compare(torch, functional.cross_entropy, torch.nn.functional.cross_entropy, LOGITS[case],
            target, torch.tensor(target), reduction)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("case", ["normal", "1e4", "tiny"])
def test_mse_matches_torch(torch, case, reduction):
    pred = {"normal": RNG.standard_normal((3, 5)),
            "1e4": np.array([[1e4, -1e4, 0.0], [1e-8, -1e-8, 1e4]]),
            "tiny": np.array([1e-8, -1e-8, 0.0])}[case]
    target = np.roll(pred, 1) * 0.5 + 0.25
    compare(torch, functional.mse_loss, torch.nn.functional.mse_loss, pred, target,
            torch.tensor(target), reduction)


def test_mse_target_that_requires_grad_gets_its_gradient(torch):
    pred, target = RNG.standard_normal((4, 3)), RNG.standard_normal((4, 3))
    p, t = leaf(pred), leaf(target)
    functional.mse_loss(p, t).backward()
    tp = torch.tensor(pred, requires_grad=True)
    tt_ = torch.tensor(target, requires_grad=True)
    torch.nn.functional.mse_loss(tp, tt_).backward()
    np.testing.assert_allclose(p.grad.data, tp.grad.numpy(), rtol=REL)
    np.testing.assert_allclose(t.grad.data, tt_.grad.numpy(), rtol=REL)


PROBABILITIES = {
    "normal": (RNG.uniform(0.05, 0.95, (4, 3)), RNG.uniform(0, 1, (4, 3))),
    "edges": (np.array([0.0, 1.0, 0.0, 1.0, 1e-8, 1 - 1e-8, 0.5, 1e-300]),
              np.array([0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.3, 1.0])),
}


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("case", list(PROBABILITIES))
def test_binary_cross_entropy_matches_torch(torch, case, reduction):
    pred, target = PROBABILITIES[case]
    compare(torch, functional.binary_cross_entropy, torch.nn.functional.binary_cross_entropy,
            pred, target, torch.tensor(target), reduction)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("case", ["normal", "extreme"])
def test_bce_with_logits_matches_torch(torch, case, reduction):
    if case == "normal":
        logits, target = RNG.standard_normal((5, 2)) * 4, RNG.uniform(0, 1, (5, 2))
    else:
        logits = np.array([1e4, -1e4, 1e4, -1e4, 0.0, 1e-8, -1e-8, 40.0, -40.0])
        target = np.array([1.0, 0.0, 0.0, 1.0, 0.5, 1.0, 0.0, 0.25, 0.75])
    compare(torch, functional.binary_cross_entropy_with_logits,
            torch.nn.functional.binary_cross_entropy_with_logits, logits, target,
            torch.tensor(target), reduction)


SECOND_ORDER = [
    ("cross_entropy", lambda x: functional.cross_entropy(x, [2, 0, 1]),
     lambda torch, x: torch.nn.functional.cross_entropy(x, torch.tensor([2, 0, 1]))),
    ("bce_with_logits",
     lambda x: functional.binary_cross_entropy_with_logits(x, np.full((3, 3), 0.3)),
     lambda torch, x: torch.nn.functional.binary_cross_entropy_with_logits(
         x, torch.full((3, 3), 0.3, dtype=torch.float64))),
    ("bce", lambda x: functional.binary_cross_entropy(x.sigmoid(), np.full((3, 3), 0.3), "sum"),
     lambda torch, x: torch.nn.functional.binary_cross_entropy(
         x.sigmoid(), torch.full((3, 3), 0.3, dtype=torch.float64), reduction="sum")),
    ("mse", lambda x: functional.mse_loss(x * x, np.ones((3, 3))),
     lambda torch, x: torch.nn.functional.mse_loss(x * x, torch.ones(3, 3, dtype=torch.float64))),
]


@pytest.mark.parametrize("name,ours,theirs", SECOND_ORDER, ids=[e[0] for e in SECOND_ORDER])
def test_loss_gradients_are_differentiable_again(torch, name, ours, theirs):
    data = RNG.standard_normal((3, 3))
    weights = RNG.standard_normal((3, 3))
    x = leaf(data)
    (first,) = grad(ours(x), [x], create_graph=True)
    (first * Tensor(weights, dtype=np.float64)).sum().backward()
    tx = torch.tensor(data, requires_grad=True)
    (tfirst,) = torch.autograd.grad(theirs(torch, tx), [tx], create_graph=True)
    (tfirst * torch.tensor(weights)).sum().backward()
    np.testing.assert_allclose(first.data, tfirst.detach().numpy(), rtol=REL, atol=ABS)
    np.testing.assert_allclose(x.grad.data, tx.grad.numpy(), rtol=1e-8, atol=1e-12)


# ----- exact limits without PyTorch ---------------------------------------------------------------

def test_cross_entropy_at_plus_minus_1e4_is_exact():
    logits = leaf([[1e4, -1e4], [1e4, -1e4]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss = functional.cross_entropy(logits, [0, 1], reduction="none")
        loss.sum().backward()
    np.testing.assert_array_equal(loss.data, [0.0, 2e4])          # logsumexp - x[target]
    np.testing.assert_array_equal(logits.grad.data, [[0.0, 0.0], [1.0, -1.0]])  # softmax - onehot


def test_cross_entropy_of_equal_logits_is_log_classes():
    for classes in (2, 5, 1000):
        loss = functional.cross_entropy(leaf(np.zeros((3, classes))), [0, 1, 1])
        assert loss.item() == pytest.approx(math.log(classes), rel=1e-14)


def test_bce_with_logits_is_exact_for_huge_logits():
    x = leaf([1e4, -1e4, 1e4, -1e4])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss = functional.binary_cross_entropy_with_logits(x, [1.0, 0.0, 0.0, 1.0], "none")
        loss.sum().backward()
    np.testing.assert_array_equal(loss.data, [0.0, 0.0, 1e4, 1e4])
    np.testing.assert_array_equal(x.grad.data, [0.0, 0.0, 1.0, -1.0])   # sigmoid(x) - t


def test_bce_with_logits_keeps_relative_precision_of_tiny_losses():
    x = leaf([40.0, -40.0, 30.0])
    loss = functional.binary_cross_entropy_with_logits(x, [1.0, 0.0, 1.0], "none")
    np.testing.assert_allclose(loss.data, np.log1p(np.exp([-40.0, -40.0, -30.0])), rtol=1e-15)


def test_binary_cross_entropy_clamps_each_log_at_minus_100():
    p = leaf([0.0, 1.0, 0.0, 1.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss = functional.binary_cross_entropy(p, [1.0, 0.0, 0.0, 1.0], reduction="none")
        loss.sum().backward()
    np.testing.assert_array_equal(loss.data, [100.0, 100.0, 0.0, 0.0])
    assert np.isfinite(p.grad.data).all()


def test_float32_losses_stay_float32():
    x = Tensor(RNG.standard_normal((4, 3)), requires_grad=True)
    for loss in (functional.cross_entropy(x, [0, 1, 2, 0]),
                 functional.mse_loss(x, np.zeros((4, 3))),
                 functional.binary_cross_entropy(x.sigmoid(), np.ones((4, 3))),
                 functional.binary_cross_entropy_with_logits(x, np.ones((4, 3)))):
        assert loss.dtype == np.float32
        loss.backward()
        assert x.grad.dtype == np.float32
        x.grad = None


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_reductions_relate_as_sum_and_mean_of_none(reduction):
    logits = leaf(RNG.standard_normal((5, 3)), requires_grad=False)
    target = [0, 2, 1, 1, 0]
    per_sample = functional.cross_entropy(logits, target, reduction="none").data
    value = functional.cross_entropy(logits, target, reduction=reduction).data
    expected = {"none": per_sample, "sum": per_sample.sum(), "mean": per_sample.mean()}[reduction]
    np.testing.assert_allclose(value, expected, rtol=1e-14)


# ----- finite differences -------------------------------------------------------------------------

@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gradcheck_cross_entropy(reduction):
    logits = leaf(RNG.standard_normal((4, 5)))
    assert gradcheck(lambda x: functional.cross_entropy(x, [4, 0, 2, 2], reduction), [logits])


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gradcheck_mse_in_both_inputs(reduction):
    pred, target = leaf(RNG.standard_normal((3, 4))), leaf(RNG.standard_normal((3, 4)))
    assert gradcheck(lambda p, t: functional.mse_loss(p, t, reduction), [pred, target])


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gradcheck_binary_cross_entropy(reduction):
    p = leaf(RNG.uniform(0.1, 0.9, (3, 4)))
    target = RNG.uniform(0, 1, (3, 4))
    assert gradcheck(lambda x: functional.binary_cross_entropy(x, target, reduction), [p])


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gradcheck_bce_with_logits(reduction):
    x = leaf(RNG.standard_normal((3, 4)) * 3)
    target = RNG.uniform(0, 1, (3, 4))
    assert gradcheck(lambda v: functional.binary_cross_entropy_with_logits(v, target, reduction),
                     [x])


def test_gradcheck_log_softmax_from_losses_module():
    assert losses.log_softmax is functional.log_softmax
    assert gradcheck(lambda x: losses.log_softmax(x, dim=-1), [leaf(RNG.standard_normal((3, 4)))])


# ----- targets and errors -------------------------------------------------------------------------

def test_cross_entropy_accepts_int_arrays_lists_and_float_tensors_of_integers():
    logits = leaf(RNG.standard_normal((3, 4)), requires_grad=False)
    expected = functional.cross_entropy(logits, np.array([3, 0, 1])).data
    for target in ([3, 0, 1], Tensor([3, 0, 1]), Tensor([3.0, 0.0, 1.0], dtype=np.float64),
                   Tensor(np.array([3, 0, 1]), dtype=np.int64)):
        np.testing.assert_array_equal(functional.cross_entropy(logits, target).data, expected)


def test_cross_entropy_target_errors_name_shapes_and_values():
    logits = leaf(np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"logits of shape \(3, 4\) need targets of shape \(3,\).*\(3, 1\)"):
        functional.cross_entropy(logits, np.zeros((3, 1)))
    with pytest.raises(ValueError, match=r"got targets of shape \(2,\)"):
        functional.cross_entropy(logits, [0, 1])
    with pytest.raises(ValueError, match="class probabilities are not supported"):
        functional.cross_entropy(logits, np.full((3, 4), 0.25))
    with pytest.raises(IndexError, match=r"target class 4 is out of range for logits with 4 "
                                         r"classes \(valid targets: 0 to 3\)"):
        functional.cross_entropy(logits, [0, 4, 1])
    with pytest.raises(IndexError, match="target class -1 is out of range"):
        functional.cross_entropy(logits, [0, -1, 1])
    with pytest.raises(ValueError, match="finite integer class indices, got 1.5"):
        functional.cross_entropy(logits, Tensor([0.0, 1.5, 1.0]))
    with pytest.raises(ValueError, match=r"logits must have shape \(N, C\), got logits of shape \(4,\)"):
        functional.cross_entropy(leaf(np.zeros(4)), [1])


def test_shape_mismatch_errors_name_both_shapes():
    pred = leaf(np.full((4, 1), 0.5))
    for fn in (functional.mse_loss, functional.binary_cross_entropy,
               functional.binary_cross_entropy_with_logits):
        with pytest.raises(ValueError,
                           match=r"matching shapes, got input shape \(4, 1\) and target "
                                 r"shape \(4,\)"):
            fn(pred, np.ones(4))
    with pytest.raises(ValueError, match=r"matching shapes.*target shape \(4,\)"):
        functional.mse_loss(pred, leaf(np.ones(4)))


def test_binary_cross_entropy_rejects_values_outside_zero_one():
    with pytest.raises(ValueError, match=r"input must hold finite values in \[0, 1\].*got -0.5.*"
                                         r"with_logits"):
        functional.binary_cross_entropy(leaf([-0.5, 2.0]), [0.0, 1.0])


@pytest.mark.parametrize("bad", [-1.0, -0.1, 1.1, float("nan"), float("inf")])
@pytest.mark.parametrize("loss", [BinaryCrossEntropyLoss, BCEWithLogitsLoss])
def test_binary_targets_outside_zero_one_are_refused_naming_the_target(loss, bad):
    """A target of -1 used to give a negative loss; PyTorch refuses such targets too."""
    with pytest.raises(ValueError, match=r"target must hold finite values in \[0, 1\]"):
        loss()(Tensor([0.3, 0.6]), Tensor([1.0, bad]))


@pytest.mark.parametrize("name, torch_name", [
    ("binary_cross_entropy", "binary_cross_entropy"),
    ("binary_cross_entropy_with_logits", "binary_cross_entropy_with_logits"),
])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_binary_cross_entropy_target_that_requires_grad_gets_torchs_gradient(
        name, torch_name, reduction, torch):
    p_values = np.array([0.7, 0.2, 0.9, 0.5])
    t_values = np.array([0.6, 0.1, 0.3, 1.0])
    p, t = leaf(p_values), leaf(t_values)
    out = getattr(functional, name)(p, t, reduction=reduction)
    tp = torch.tensor(p_values, requires_grad=True)
    tt_ = torch.tensor(t_values, requires_grad=True)
    expected = getattr(torch.nn.functional, torch_name)(tp, tt_, reduction=reduction)
    np.testing.assert_allclose(out.data, expected.detach().numpy(), rtol=1e-12)
    out.sum().backward()
    expected.sum().backward()
    np.testing.assert_allclose(p.grad.data, tp.grad.numpy(), rtol=1e-9)
    np.testing.assert_allclose(t.grad.data, tt_.grad.numpy(), rtol=1e-9)


def test_binary_cross_entropy_gradient_of_the_target_alone():
    target = leaf([0.25, 1.0])
    functional.binary_cross_entropy(Tensor([0.5, 0.75], dtype=np.float64), target).backward()
    np.testing.assert_allclose(target.grad.data, [0.0, -np.log(3.0) / 2], rtol=1e-12)


@pytest.mark.parametrize("loss", [MSELoss, BinaryCrossEntropyLoss, BCEWithLogitsLoss])
def test_integer_targets_keep_a_float32_loss_float32(loss):
    out = loss()(Tensor([0.25, 0.75]), Tensor([0, 1], dtype=np.int64))
    assert out.dtype == np.float32


def test_class_index_out_of_range_is_an_index_error_and_a_value_error():
    """PyTorch raises IndexError, TinyTorch's losses ValueError: code written for either works."""
    for error in (IndexError, ValueError):
        with pytest.raises(error, match="out of range"):
            CrossEntropyLoss()(Tensor([[2.0, 1.0, 0.1]]), Tensor([3]))


@pytest.mark.parametrize("cls", [MSELoss, CrossEntropyLoss, BinaryCrossEntropyLoss,
                                 BCEWithLogitsLoss])
def test_unknown_reduction_is_rejected(cls):
    with pytest.raises(ValueError, match="reduction must be 'mean', 'sum' or 'none', got 'avg'"):
        cls(reduction="avg")


# ----- loss layers --------------------------------------------------------------------------------

@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_loss_classes_call_their_functions(reduction):
    x = leaf(RNG.standard_normal((4, 3)), requires_grad=False)
    p = leaf(RNG.uniform(0.1, 0.9, (4, 3)), requires_grad=False)
    y = RNG.uniform(0, 1, (4, 3))
    pairs = [
        (MSELoss, functional.mse_loss, x, y),
        (CrossEntropyLoss, functional.cross_entropy, x, [0, 2, 1, 2]),
        (BinaryCrossEntropyLoss, functional.binary_cross_entropy, p, y),
        (BCEWithLogitsLoss, functional.binary_cross_entropy_with_logits, x, y),
    ]
    for cls, fn, pred, target in pairs:
        layer = cls(reduction=reduction)
        np.testing.assert_array_equal(layer(pred, target).data, fn(pred, target, reduction).data)
        np.testing.assert_array_equal(layer.forward(pred, target).data,
                                      fn(pred, target, reduction).data)
        assert layer.parameters() == []
    assert BCELoss is BinaryCrossEntropyLoss


def test_loss_repr_shows_a_non_default_reduction():
    assert repr(MSELoss()) == "MSELoss()"
    assert repr(CrossEntropyLoss(reduction="sum")) == "CrossEntropyLoss(reduction='sum')"


# ----- the TinyTorch node classes, used standalone as in the autograd module ----------------------

def test_spec_mse_node():
    pred, target = Tensor([1.0, 2.0, 4.0], requires_grad=True), Tensor([0.0, 2.0, 1.0])
    (g,) = MSEBackward(pred, target).apply(np.array(1.0))
    np.testing.assert_allclose(g, 2 * (pred.data - target.data) / 3)


def test_spec_bce_node():
    pred, target = Tensor([0.2, 0.7, 0.9], requires_grad=True), Tensor([0.0, 1.0, 1.0])
    (g,) = BCEBackward(pred, target).apply(np.array(1.0))
    p, y = pred.data, target.data
    np.testing.assert_allclose(g, (p - y) / (p * (1 - p) * 3), rtol=1e-6)


def test_spec_cross_entropy_node():
    logits = Tensor([[2.0, 1.0, 0.1], [0.5, 2.5, 0.3]], requires_grad=True)
    target = Tensor([0, 1])
    (g,) = CrossEntropyBackward(logits, target).apply(np.array(1.0))
    e = np.exp(logits.data - logits.data.max(axis=1, keepdims=True))
    softmax = e / e.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(g, (softmax - np.eye(3)[[0, 1]]) / 2, rtol=1e-6)


def test_nodes_recorded_by_the_functions():
    x = tt.Tensor([[0.3, 0.6]], requires_grad=True)
    assert isinstance(functional.cross_entropy(x, [1]).grad_fn, CrossEntropyBackward)
    assert isinstance(functional.mse_loss(x, [[0.0, 1.0]]).grad_fn, MSEBackward)
    assert isinstance(functional.binary_cross_entropy(x, [[0.0, 1.0]]).grad_fn, BCEBackward)
