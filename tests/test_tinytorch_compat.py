"""TinyTorch's import paths and idioms (curriculum modules 01-08) work on ours.

Each test is an idiom from TinyTorch's own milestone scripts and tests, or a NumPy/PyTorch
habit they rely on: importing everything from the package root, NumPy functions on tensors and
gradients, assigning ``.grad`` and ``.data`` by hand, integer tensors mixed with float ones,
``@no_grad`` without parentheses.
"""

import importlib
import warnings

import numpy as np
import pytest

import tinytorch
from tinytorch import Tensor


# ----- import paths -----------------------------------------------------------------------------

ROOT_NAMES = [
    "Tensor", "Linear", "ReLU", "Sigmoid", "Tanh", "GELU", "Softmax", "Layer", "Module",
    "Dropout", "Sequential", "MSELoss", "CrossEntropyLoss", "BinaryCrossEntropyLoss", "SGD",
    "Adam", "AdamW", "Trainer", "CosineSchedule", "clip_grad_norm", "Dataset", "TensorDataset",
    "DataLoader", "Function", "no_grad", "enable_autograd",
]


@pytest.mark.parametrize("name", ROOT_NAMES)
def test_the_package_root_exports_the_curriculum_classes(name):
    assert hasattr(tinytorch, name), name
    assert name in tinytorch.__all__


@pytest.mark.parametrize("module", ["activations", "layers", "losses", "optimizers", "training",
                                    "dataloader"])
def test_the_root_reexports_every_public_class_of_each_core_module(module):
    core = importlib.import_module(f"tinytorch.core.{module}")
    for name in core.__all__:
        value = getattr(core, name)
        if isinstance(value, type) and not name.endswith("Backward") and name != "FunctionCtx":
            assert getattr(tinytorch, name, None) is value, f"tinytorch.{name}"


def test_root_names_are_the_core_objects():
    from tinytorch.core.dataloader import DataLoader
    from tinytorch.core.layers import Linear
    assert tinytorch.DataLoader is DataLoader and tinytorch.Linear is Linear


def test_data_loader_path():
    from tinytorch.core import dataloader
    from tinytorch.data.loader import DataLoader, Dataset, TensorDataset
    assert (DataLoader, Dataset, TensorDataset) == (
        dataloader.DataLoader, dataloader.Dataset, dataloader.TensorDataset)


def test_training_reexports_the_losses():
    from tinytorch.core import losses
    from tinytorch.core.training import CrossEntropyLoss, MSELoss
    assert (MSELoss, CrossEntropyLoss) == (losses.MSELoss, losses.CrossEntropyLoss)


def test_xor_milestone_idiom_trains_from_root_imports():
    """The shape of TinyTorch's XOR milestone: root imports, a hand loop, SGD."""
    from tinytorch import SGD, BinaryCrossEntropyLoss, Linear, ReLU, Sigmoid, Tensor
    tinytorch.manual_seed(0)
    X = Tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    y = Tensor([[0.0], [1.0], [1.0], [0.0]])
    hidden, out, relu, sigmoid = Linear(2, 8), Linear(8, 1), ReLU(), Sigmoid()
    params = hidden.parameters() + out.parameters()
    optimizer, loss_fn = SGD(params, lr=0.5), BinaryCrossEntropyLoss()
    for _ in range(500):
        loss = loss_fn(sigmoid(out(relu(hidden(X)))), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    predictions = sigmoid(out(relu(hidden(X)))).data > 0.5
    np.testing.assert_array_equal(predictions, y.data > 0.5)


# ----- NumPy interop ----------------------------------------------------------------------------

def _grad_of_gelu():
    x = Tensor([1.0, -2.0, 3.0], requires_grad=True)
    tinytorch.GELU()(x).sum().backward()
    return x


def test_numpy_ufuncs_on_a_gradient_give_numpy_results():
    x = _grad_of_gelu()
    magnitude = np.abs(x.grad)
    assert isinstance(magnitude, np.ndarray)
    np.testing.assert_array_equal(magnitude, np.abs(x.grad.data))
    assert np.isfinite(x.grad).all() and not np.isnan(x.grad).any()
    assert np.abs(x.grad).max() > 0


def test_np_any_and_all_on_comparisons():
    x = _grad_of_gelu()
    assert np.any(x.grad != 0)
    assert bool(np.all(x.grad == x.grad))
    assert not np.any(x.grad != x.grad)


def test_tensor_any_all_and_abs():
    t = Tensor([0.0, -2.0])
    assert t.any() and not t.all()
    assert t.any().dtype == np.bool_
    np.testing.assert_array_equal(t.any(axis=0).data, True)
    np.testing.assert_array_equal(abs(t).data, [0.0, 2.0])


def test_a_ufunc_on_a_tensor_that_requires_grad_raises_instead_of_dropping_the_gradient():
    w = Tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(TypeError, match="np.exp on a tensor that requires grad.*t.exp"):
        np.exp(w)
    np.testing.assert_allclose(np.exp(w.detach()), np.exp([1.0, 2.0]), rtol=1e-6)


def test_array_on_the_left_of_an_operator_still_gives_a_differentiable_tensor():
    w = Tensor([1.0, 2.0], requires_grad=True)
    for out in (np.array([3.0, 4.0]) * w, np.float32(2.0) + w, np.array([1.0, 1.0]) - w,
                np.array([2.0, 2.0]) / w, np.array([[1.0, 0.0]]) @ w):
        assert isinstance(out, Tensor) and out.requires_grad
    (np.array([3.0, 4.0]) * w).sum().backward()
    np.testing.assert_array_equal(w.grad.data, [3.0, 4.0])


def test_comparison_with_an_array_on_the_left_is_a_tensor():
    out = np.array([1.0, 5.0]) < Tensor([2.0, 2.0])
    assert isinstance(out, Tensor)
    np.testing.assert_array_equal(out.data, [True, False])


def test_manual_sgd_on_data_in_place():
    """The curriculum's update: p.data -= lr * p.grad (an ndarray updated by a Tensor)."""
    p = Tensor([1.0, 2.0], requires_grad=True)
    (p * p).sum().backward()
    data = p.data
    p.data -= 0.1 * p.grad
    assert p.data is data and p.dtype == np.float32
    np.testing.assert_allclose(p.data, [0.8, 1.6], rtol=1e-6)


def test_numpy_reductions_with_numpy_keywords():
    t = Tensor([1.0, 2.0, 3.0, 4.0])
    np.testing.assert_allclose(np.std(t).item(), np.std([1.0, 2.0, 3.0, 4.0]), rtol=1e-6)
    np.testing.assert_allclose(np.var(t, ddof=1).item(), np.var([1, 2, 3, 4], ddof=1), rtol=1e-6)


@pytest.mark.parametrize("method, dtype", [("float", np.float32), ("double", np.float64),
                                           ("half", np.float16), ("long", np.int64),
                                           ("int", np.int32), ("bool", np.bool_)])
def test_dtype_conversion_methods(method, dtype):
    t = Tensor([0.0, 1.5, 2.0], dtype=np.float64)
    assert getattr(t, method)().dtype == dtype


def test_to_dtype_is_differentiable_and_to_cpu_is_the_tensor():
    x = Tensor([1.0, 2.0], requires_grad=True)
    y = x.to(np.float64)
    assert y.dtype == np.float64 and x.to(np.float32) is x and x.to("cpu") is x
    (y * y).sum().backward()
    assert x.grad.dtype == np.float32
    np.testing.assert_array_equal(x.grad.data, [2.0, 4.0])
    with pytest.raises(ValueError, match="CPU only"):
        x.to("cuda")


def test_numel_dim_contiguous_and_format():
    t = Tensor(np.zeros((2, 3)))
    assert t.numel() == 6 and t.dim() == 2 and t.size == 6
    assert t.contiguous() is t
    transposed = t.T
    assert transposed.contiguous().data.flags.c_contiguous
    assert f"{Tensor(3.14159):.2f}" == "3.14"
    assert f"{Tensor([1.0, 2.0])}" == str(Tensor([1.0, 2.0]))


def test_masked_fill_follows_pytorch():
    x = Tensor([[1.0, 2.0, 3.0]], requires_grad=True)
    out = x.masked_fill(Tensor([[0.0, 1.0, 0.0]]), -1.0)
    np.testing.assert_array_equal(out.data, [[1.0, -1.0, 3.0]])
    out.sum().backward()
    np.testing.assert_array_equal(x.grad.data, [[1.0, 0.0, 1.0]])


# ----- assignment -------------------------------------------------------------------------------

def test_grad_assigned_as_an_array_becomes_a_tensor_and_accumulates():
    """The curriculum zeroes gradients with p.grad = np.zeros_like(p.grad)."""
    x = Tensor([1.0, 2.0], requires_grad=True)
    (x * x).sum().backward()
    x.grad = np.zeros_like(x.grad)
    assert isinstance(x.grad, Tensor) and x.grad.dtype == np.float32
    (x * x).sum().backward()
    np.testing.assert_array_equal(x.grad.data, [2.0, 4.0])
    x.grad = np.array([1.0, 1.0])                   # float64 array: stored as float32
    (x * x).sum().backward()
    assert x.grad.dtype == np.float32
    np.testing.assert_array_equal(x.grad.data, [3.0, 5.0])


def test_grad_assigned_an_array_is_copied():
    x = Tensor([1.0, 2.0], requires_grad=True)
    mine = np.ones(2, dtype=np.float32)
    x.grad = mine
    (x * 1.0).sum().backward()
    np.testing.assert_array_equal(mine, [1.0, 1.0])


def test_grad_assigned_a_tensor_is_kept_and_none_clears():
    x = Tensor([1.0, 2.0], requires_grad=True)
    g = Tensor([0.5, 0.5])
    x.grad = g
    assert x.grad is g
    x.grad = None
    assert x.grad is None


@pytest.mark.parametrize("value, error, message", [
    (np.ones(5), ValueError, r"shape \(5,\) to a tensor of shape \(2,\)"),
    (Tensor(np.ones((2, 1))), ValueError, r"shape \(2, 1\) to a tensor of shape \(2,\)"),
    ([1.0, 2.0], TypeError, "None, a Tensor or a NumPy array, got list"),
    ("abc", TypeError, "got str"),
    (3.0, TypeError, "got float"),
    (np.array(["a", "b"]), TypeError, "must hold numbers"),
])
def test_bad_grad_assignment_is_refused_naming_the_problem(value, error, message):
    x = Tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(error, match=message):
        x.grad = value
    assert x.grad is None


def test_data_assigned_a_tensor_stores_its_values():
    q = Tensor([1.0, 2.0], requires_grad=True)
    (q * q).sum().backward()
    q.data = q.data - 0.1 * q.grad                  # a Tensor on the right-hand side
    assert isinstance(q.data, np.ndarray)
    np.testing.assert_allclose(q.data, [0.8, 1.6], rtol=1e-6)


def test_data_assignment_keeps_a_float_tensors_dtype():
    """TinyTorch's rule (PyTorch would take the array's dtype): float32 weights stay float32."""
    w = tinytorch.Linear(2, 1).weight
    w.data = np.array([[0.5], [0.5]])
    assert w.dtype == np.float32 and w.data.dtype == np.float32


@pytest.mark.parametrize("value", [[5.0, 6.0], 3.0, "x", None])
def test_data_assignment_refuses_what_is_not_an_array(value):
    z = Tensor([1.0, 2.0])
    with pytest.raises(TypeError, match="NumPy array or a Tensor"):
        z.data = value
    np.testing.assert_array_equal(z.data, [1.0, 2.0])


def test_data_assignment_of_a_numpy_scalar_to_a_0d_tensor():
    z = Tensor(1.0)
    z.data = z.data * np.float32(2.0)              # NumPy gives a scalar, not a 0-d array
    assert z.item() == 2.0 and isinstance(z.data, np.ndarray)


# ----- dtypes -----------------------------------------------------------------------------------

@pytest.mark.parametrize("int_dtype", [np.int64, np.int32, np.int8, np.uint8, np.bool_])
@pytest.mark.parametrize("float_dtype", [np.float32, np.float64, np.float16])
def test_integer_tensor_with_float_tensor_takes_the_float_dtype(int_dtype, float_dtype, torch):
    a = Tensor([[0.5, 1.5]], dtype=float_dtype)
    i = Tensor([[1, 0]], dtype=int_dtype)
    to_torch = {np.float16: torch.float16, np.float32: torch.float32,
                np.float64: torch.float64}
    expected = (torch.tensor([[0.5, 1.5]], dtype=to_torch[float_dtype])
                + torch.tensor(np.array([[1, 0]], dtype=int_dtype)))
    with np.errstate(divide="ignore"):                  # a / 0 = inf is fine here
        quotient = a / i
    for out in (a - i, i - a, a * i, i * a, quotient, i + a, a.maximum(i), a ** i,
                i @ a.T, tinytorch.where(np.array([True, False]), a, i)):
        assert out.dtype == float_dtype, (out, float_dtype)
    assert str(expected.dtype) == f"torch.{np.dtype(float_dtype).name}"


def test_integer_tensor_in_an_mlp_loss_keeps_float32():
    pred = Tensor([[0.5], [0.25]], requires_grad=True)
    loss = tinytorch.MSELoss()(pred, Tensor([[1], [0]], dtype=np.int64))
    assert loss.dtype == np.float32
    loss.backward()
    assert pred.grad.dtype == np.float32


def test_gradient_through_an_integer_promotion_reaches_the_float_input():
    x = Tensor([1.0, 2.0], requires_grad=True)
    (x * Tensor([3, 4], dtype=np.int64)).sum().backward()
    np.testing.assert_array_equal(x.grad.data, [3.0, 4.0])
    assert x.grad.dtype == np.float32


def test_integer_division_gives_the_default_float_dtype():
    i = Tensor([1, 2], dtype=np.int64)
    assert (i / i).dtype == np.float32 and (1 / i).dtype == np.float32


# ----- grad-mode decorators and keyword names ---------------------------------------------------

def test_no_grad_works_as_a_decorator_without_parentheses():
    @tinytorch.no_grad
    def double(t):
        return t * 2

    x = Tensor([1.0], requires_grad=True)
    assert not double(x).requires_grad and double.__name__ == "double"
    assert (x * 2).requires_grad


def test_enable_grad_without_parentheses_inside_no_grad():
    @tinytorch.enable_grad
    def double(t):
        return t * 2

    x = Tensor([1.0], requires_grad=True)
    with tinytorch.no_grad():
        assert double(x).requires_grad


def test_pytorch_keyword_names():
    x = Tensor([1.0]).requires_grad_(requires_grad=True)
    assert x.requires_grad
    with tinytorch.set_grad_enabled(mode=False):
        assert not (x * 2).requires_grad
    model = tinytorch.Linear(2, 1)
    model.load_state_dict(state_dict=model.state_dict())
    optimizer = tinytorch.SGD(model.parameters(), lr=0.1, momentum=0.9)
    optimizer.load_state_dict(state_dict=optimizer.state_dict())


# ----- training-loop idioms ---------------------------------------------------------------------

def _sgd_trainer(loss=None):
    model = tinytorch.Linear(1, 1)
    model.weight.data[:] = 1.0
    model.bias.data[:] = 0.0
    return tinytorch.Trainer(model, tinytorch.SGD(model.parameters(), lr=0.1),
                             loss or tinytorch.MSELoss())


@pytest.mark.parametrize("sizes, window", [([2, 1], 2), ([3, 1, 2], 2), ([1, 2, 3, 4, 5], 4),
                                           ([4], 3), ([1, 1, 1, 1, 1], 2)])
def test_gradient_accumulation_equals_one_batch_of_the_windows_samples(sizes, window):
    xs = np.arange(1, sum(sizes) + 1, dtype=np.float32).reshape(-1, 1)
    cuts = np.cumsum([0] + sizes)
    batches = [(Tensor(xs[a:b]), Tensor(np.zeros((b - a, 1)))) for a, b in zip(cuts, cuts[1:])]
    accumulated, reference = _sgd_trainer(), _sgd_trainer()
    mean_loss = accumulated.train_epoch(batches, accumulation_steps=window)
    for start in range(0, len(sizes), window):
        a, b = cuts[start], cuts[min(start + window, len(sizes))]
        reference.train_epoch([(Tensor(xs[a:b]), Tensor(np.zeros((b - a, 1))))])
    for p, q in zip(accumulated.model.parameters(), reference.model.parameters()):
        np.testing.assert_allclose(p.data, q.data, rtol=1e-5)
    assert accumulated.step == -(-len(sizes) // window)
    # the epoch's loss is the mean over samples (here all computed before any update)
    first = _sgd_trainer()
    first.optimizer.lr = 0.0
    assert first.train_epoch(batches, accumulation_steps=window) == pytest.approx(
        float(np.mean(xs ** 2)), rel=1e-6)
    assert np.isfinite(mean_loss)


@pytest.mark.parametrize("window", [0, -1, 1.5, True])
def test_accumulation_steps_must_be_a_positive_integer(window):
    with pytest.raises(ValueError, match="positive integer"):
        _sgd_trainer().train_epoch([], accumulation_steps=window)


def test_a_loss_object_with_only_forward_is_accepted():
    class ConstantLoss:
        def forward(self, outputs, targets):
            return (outputs * 0).sum() + 1.0

    trainer = _sgd_trainer(ConstantLoss())
    loss, _ = trainer.evaluate([(Tensor([[1.0]]), Tensor([[0.0]]))])
    assert loss == pytest.approx(1.0)


@pytest.mark.parametrize("loss, outputs, targets, accuracy", [
    (tinytorch.BinaryCrossEntropyLoss(), [[0.9], [0.1]], [[1.0], [0.0]], 1.0),
    (tinytorch.BinaryCrossEntropyLoss(), [0.5, 0.1, 0.9], [1.0, 0.0, 0.0], 2 / 3),
    (tinytorch.BinaryCrossEntropyLoss(), [[0.9, 0.1], [0.9, 0.9]], [[1.0, 0.0], [0.0, 1.0]], 0.75),
    (tinytorch.BCEWithLogitsLoss(), [[2.0], [-1.0], [0.5]], [[1.0], [1.0], [0.0]], 1 / 3),
    (tinytorch.CrossEntropyLoss(), [[3.0, 1.0], [1.0, 3.0], [3.0, 1.0]], [0, 1, 1], 2 / 3),
])
def test_evaluate_accuracy_follows_the_loss(loss, outputs, targets, accuracy):
    class Identity:
        def parameters(self):
            return []

        def forward(self, x):
            return x

    trainer = tinytorch.Trainer(Identity(), None, loss)
    x, y = np.array(outputs), np.array(targets)
    whole = trainer.evaluate([(Tensor(x), Tensor(y))])
    split = trainer.evaluate([(Tensor(x[:1]), Tensor(y[:1])), (Tensor(x[1:]), Tensor(y[1:]))])
    assert whole[1] == pytest.approx(accuracy) and split[1] == pytest.approx(accuracy)
    assert split[0] == pytest.approx(whole[0])


def test_evaluate_switches_off_dropout_in_a_hand_written_model():
    class HandWritten:
        def __init__(self):
            self.fc = tinytorch.Linear(8, 1)
            self.drop = tinytorch.Dropout(0.5)

        def forward(self, x):
            return self.fc(self.drop(x))

        def parameters(self):
            return self.fc.parameters()

    trainer = tinytorch.Trainer(HandWritten(), None, tinytorch.MSELoss())
    data = [(Tensor(np.ones((16, 8))), Tensor(np.zeros((16, 1))))]
    assert len({trainer.evaluate(data)[0] for _ in range(5)}) == 1


def test_set_training_mode_reaches_modules_in_plain_objects_lists_and_dicts():
    class Block(tinytorch.Layer):
        def __init__(self):
            self.parts = [tinytorch.Linear(2, 2), tinytorch.Dropout(0.5)]
            self.named = {"drop": tinytorch.Dropout(0.5)}
            self.me = self

        def forward(self, x):
            return x

    block = Block()
    tinytorch.set_training_mode(tinytorch.Sequential(block), False)
    assert block.parts[1].training is False and block.named["drop"].training is False
    block.train()
    assert block.named["drop"].training is True


@pytest.mark.parametrize("max_norm", [-1.0, float("nan"), float("inf")])
def test_clip_grad_norm_refuses_a_bad_max_norm(max_norm):
    p = Tensor([1.0, 2.0], requires_grad=True)
    p.grad = Tensor([3.0, 4.0])
    with pytest.raises(ValueError, match="finite and nonnegative"):
        tinytorch.clip_grad_norm([p], max_norm=max_norm)
    np.testing.assert_array_equal(p.grad.data, [3.0, 4.0])


@pytest.mark.parametrize("optimizer, keyword", [
    (tinytorch.SGD, "lr"), (tinytorch.SGD, "momentum"), (tinytorch.SGD, "weight_decay"),
    (tinytorch.Adam, "lr"), (tinytorch.Adam, "eps"), (tinytorch.AdamW, "weight_decay"),
])
@pytest.mark.parametrize("value", [float("inf"), float("nan"), -1.0])
def test_optimizers_refuse_hyper_parameters_that_are_not_finite_and_nonnegative(
        optimizer, keyword, value):
    with pytest.raises(ValueError, match=f"{keyword} must be a finite number >= 0"):
        optimizer([Tensor([1.0], requires_grad=True)], **{keyword: value})


def test_setting_an_infinite_learning_rate_is_refused():
    optimizer = tinytorch.SGD([Tensor([1.0], requires_grad=True)], lr=0.1)
    with pytest.raises(ValueError, match="lr must be a finite number"):
        optimizer.lr = float("inf")


# ----- integer tensors as PyTorch types them ----------------------------------------------------

TORCH_DTYPES = {"int64": "torch.int64", "int32": "torch.int32", "float32": "torch.float32",
                "float64": "torch.float64"}


@pytest.mark.parametrize("expression", [
    lambda m, i, f: i + m.float32_scalar, lambda m, i, f: i + m.int64_scalar,
    lambda m, i, f: f.double() + m.float32_scalar, lambda m, i, f: f + m.float64_scalar,
    lambda m, i, f: i + m.int32(i), lambda m, i, f: i.clip(0.5, 1.5), lambda m, i, f: i.clip(0, 1),
    lambda m, i, f: m.cat([i, f]), lambda m, i, f: m.cat([m.int32(i), i]),
    lambda m, i, f: i.abs(), lambda m, i, f: i.relu(),
] + [lambda m, i, f, name=name: getattr(i, name)()
     for name in ("exp", "log", "sqrt", "tanh", "sigmoid", "sin", "cos")])
def test_result_dtypes_of_integer_tensors_match_pytorch(expression, torch):
    class Ours:
        float32_scalar, int64_scalar, float64_scalar = np.float32(2), np.int64(2), np.float64(2)
        int32 = staticmethod(lambda t: t.astype(np.int32))
        cat = staticmethod(tinytorch.concatenate)

    class Theirs(Ours):
        int32 = staticmethod(lambda t: t.int())
        cat = staticmethod(torch.cat)

    ours = expression(Ours, Tensor([1, 2], dtype=np.int64), Tensor([1.0, 2.0]))
    theirs = expression(Theirs, torch.tensor([1, 2]), torch.tensor([1.0, 2.0]))
    assert TORCH_DTYPES[ours.dtype.name] == str(theirs.dtype)
    np.testing.assert_allclose(ours.data, theirs.numpy(), rtol=1e-6)


@pytest.mark.parametrize("name", ["mean", "var", "std"])
def test_integer_statistics_are_in_the_default_float_dtype(name):
    # PyTorch refuses these on integers; NumPy gives float64. We compute them as exp and sqrt
    # of integers are computed in both libraries: in the default float dtype.
    values = np.array([1, 2, 4], dtype=np.int64)
    result = getattr(Tensor(values, dtype=np.int64), name)()
    assert result.dtype == np.float32
    np.testing.assert_allclose(result.item(), getattr(values.astype(np.float64), name)(),
                               rtol=1e-6)


# ----- NumPy functions on tensors ---------------------------------------------------------------

def _x():
    return Tensor(np.array([[1.0, -2.0, 3.0], [0.5, 4.0, -1.0]]), requires_grad=True)


NUMPY_FUNCTIONS = [
    ("sum", lambda x: np.sum(x, 0), lambda x: x.sum(0)),
    ("sum-keywords", lambda x: np.sum(x, axis=1, keepdims=True), lambda x: x.sum(1, keepdim=True)),
    ("mean", lambda x: np.mean(x), lambda x: x.mean()),
    ("max", lambda x: np.max(x, 1), lambda x: x.amax(1)),
    ("amin", lambda x: np.amin(x), lambda x: x.amin()),
    ("var-positional-ddof", lambda x: np.var(x, 0, None, None, 1), lambda x: x.var(0)),
    ("std", lambda x: np.std(x, axis=1), lambda x: x.std(1, unbiased=False)),
    ("reshape", lambda x: np.reshape(x, (3, 2)) * np.arange(6.0).reshape(3, 2),
     lambda x: x.reshape(3, 2) * torch_arange(6).reshape(3, 2)),
    ("transpose", lambda x: np.transpose(x) @ np.ones((2, 1)), lambda x: x.T @ torch_ones(2, 1)),
    ("clip", lambda x: np.clip(x, -1.5, 2.0), lambda x: x.clamp(-1.5, 2.0)),
    ("concatenate", lambda x: np.concatenate([x, 2 * x], axis=1),
     lambda x: torch_module().cat([x, 2 * x], 1)),
    ("concatenate-axis-none", lambda x: np.concatenate([x, x], axis=None),
     lambda x: torch_module().cat([x.reshape(-1), x.reshape(-1)])),
    ("stack", lambda x: np.stack([x, x * x], 2), lambda x: torch_module().stack([x, x * x], 2)),
    ("where", lambda x: np.where(x.detach() > 0, x, 0.0),
     lambda x: torch_module().where(x > 0, x, 0.0)),
    ("dot", lambda x: np.dot(x, np.arange(3.0)), lambda x: x @ torch_arange(3)),
    ("squeeze", lambda x: np.squeeze(x[None]), lambda x: x[None].squeeze()),
]


def torch_module():
    import torch
    return torch


def torch_arange(n):
    return torch_module().arange(float(n), dtype=torch_module().float64)


def torch_ones(*shape):
    return torch_module().ones(*shape, dtype=torch_module().float64)


@pytest.mark.parametrize("name, ours, theirs", NUMPY_FUNCTIONS, ids=[f[0] for f in NUMPY_FUNCTIONS])
def test_numpy_functions_with_a_tinytorch_op_are_differentiable(name, ours, theirs, torch):
    x = _x()
    out = ours(x)
    assert isinstance(out, Tensor) and out.requires_grad
    (out * out).sum().backward()
    xt = torch.tensor(x.data.astype(np.float64), requires_grad=True)
    ref = theirs(xt)
    (ref * ref).sum().backward()
    np.testing.assert_allclose(out.data, ref.detach().numpy(), rtol=1e-6)
    np.testing.assert_allclose(x.grad.data, xt.grad.numpy(), rtol=1e-5, atol=1e-6)


def test_numpy_function_without_a_tinytorch_op_refuses_a_tensor_that_requires_grad():
    x = _x()
    for call in (lambda: np.sort(x), lambda: np.allclose(x, 1.0), lambda: np.asarray(x),
                 lambda: np.sum([x, x]), lambda: np.cumsum(x)):
        with pytest.raises(TypeError, match="requires grad"):
            call()


def test_numpy_functions_compute_on_the_values_of_other_tensors():
    x = _x().detach()
    np.testing.assert_array_equal(np.sort(x), np.sort(x.data))
    assert np.allclose(x, x.data) and np.sum([x, x]) == 2 * x.data.sum()
    assert np.ndim(_x()) == 2 and np.shape(_x()) == (2, 3) and np.size(_x()) == 6
    assert np.size(_x(), 1) == 3
    rows, cols = np.where(x > 2)                     # indices, as NumPy gives them
    assert rows.tolist() == [0, 1] and cols.tolist() == [2, 1]


def test_numpy_reductions_refuse_out_and_unknown_keywords():
    x = _x()
    with pytest.raises(TypeError, match="out="):
        np.sum(x, out=np.zeros(()))
    with pytest.raises(TypeError, match="out="):
        np.argmax(x, out=np.zeros((), dtype=np.int64))
    with pytest.raises(TypeError, match="initial"):
        np.max(x, initial=0.0)
    with pytest.raises(ValueError, match="order"):
        np.reshape(x, (3, 2), order="F")


# ----- empty batches as PyTorch handles them ----------------------------------------------------

@pytest.mark.parametrize("shape", [(0, 0), (0, 3)])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_of_an_empty_batch_matches_pytorch(shape, reduction, torch):
    logits = Tensor(np.zeros(shape), requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")               # and says nothing
        loss = tinytorch.CrossEntropyLoss(reduction=reduction)(
            logits, Tensor(np.zeros(0, dtype=np.int64), dtype=np.int64))
        loss.sum().backward()
    ref = torch.nn.functional.cross_entropy(torch.zeros(shape, requires_grad=True),
                                            torch.zeros(0, dtype=torch.long), reduction=reduction)
    np.testing.assert_array_equal(loss.data, ref.detach().numpy())
    assert logits.grad.shape == shape


@pytest.mark.parametrize("module, shape", [("BatchNorm1d", (0, 3)), ("BatchNorm2d", (0, 3, 4, 4))])
def test_batch_norm_on_an_empty_batch_matches_pytorch(module, shape, torch):
    ours, theirs = getattr(tinytorch, module)(3), getattr(torch.nn, module)(3)
    x = Tensor(np.zeros(shape), requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = ours(x)
        out.sum().backward()
    ref = theirs(torch.zeros(shape))
    assert out.shape == tuple(ref.shape) and x.grad.shape == shape
    np.testing.assert_array_equal(ours.running_mean.data, theirs.running_mean.numpy())
    np.testing.assert_array_equal(ours.running_var.data, theirs.running_var.numpy())
    assert ours.num_batches_tracked.item() == theirs.num_batches_tracked.item() == 1
    np.testing.assert_array_equal(ours.weight.grad.data, np.zeros(3))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        ours(Tensor(np.zeros((1, 3) + (1,) * (len(shape) - 2))))      # one value per channel


def test_a_custom_function_returning_a_gradient_for_a_number_is_refused():
    class Scale(tinytorch.Function):
        @staticmethod
        def forward(ctx, x, k):
            ctx.k = k
            return x * k

        @staticmethod
        def backward(ctx, grad):
            return grad * ctx.k, grad.sum()

    x = Tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(TypeError, match="input 1, which is not a Tensor"):
        Scale.apply(x, 3.0).sum().backward()
