"""Schedules and clipping against torch; the Trainer's loop, evaluation and checkpoints."""

import io
import math

import numpy as np
import pytest

import tinytorch as tt
from tinytorch.core.activations import ReLU
from tinytorch.core.dataloader import DataLoader, TensorDataset
from tinytorch.core.layers import Dropout, Linear, Sequential
from tinytorch.core.losses import CrossEntropyLoss, MSELoss
from tinytorch.core.optimizers import SGD, Adam
from tinytorch.core.training import (
    CosineSchedule, StepSchedule, Trainer, clip_grad_norm, read_checkpoint,
)
from tinytorch.datasets import make_moons

torch = pytest.importorskip("torch")


# ----- schedules -----------------------------------------------------------------------------

def test_cosine_schedule_matches_torch_cosine_annealing():
    schedule = CosineSchedule(max_lr=0.1, min_lr=0.01, total_epochs=20)
    p = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.SGD([p], lr=0.1)
    reference = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=20, eta_min=0.01)
    for epoch in range(21):
        assert schedule.get_lr(epoch) == pytest.approx(optimizer.param_groups[0]["lr"],
                                                       rel=1e-9), f"epoch {epoch}"
        optimizer.step()
        reference.step()


def test_cosine_schedule_starts_at_max_and_stays_at_min_after_the_end():
    schedule = CosineSchedule(max_lr=0.1, min_lr=0.01, total_epochs=100)
    assert schedule.get_lr(0) == pytest.approx(0.1)
    assert schedule.get_lr(50) == pytest.approx(0.055)
    assert schedule.get_lr(100) == pytest.approx(0.01)
    assert schedule.get_lr(150) == pytest.approx(0.01)
    lrs = [schedule.get_lr(e) for e in range(101)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:])), "the schedule should never increase"


def test_step_schedule_matches_torch_step_lr():
    schedule = StepSchedule(initial_lr=0.2, step_size=3, gamma=0.5)
    p = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.SGD([p], lr=0.2)
    reference = torch.optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.5)
    for epoch in range(12):
        assert schedule.get_lr(epoch) == pytest.approx(optimizer.param_groups[0]["lr"],
                                                       rel=1e-12), f"epoch {epoch}"
        optimizer.step()
        reference.step()


# ----- gradient clipping ----------------------------------------------------------------------

def _grads(seed, scale):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape) * scale for shape in [(3, 4), (4,), (2, 2, 2)]]


@pytest.mark.parametrize("scale, max_norm", [(5.0, 1.0), (0.01, 1.0), (1.0, 0.5)])
def test_clip_grad_norm_matches_torch(scale, max_norm):
    grads = _grads(0, scale)
    ours = [tt.zeros(g.shape, dtype=np.float64, requires_grad=True) for g in grads]
    theirs = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in grads]
    for o, t, g in zip(ours, theirs, grads):
        o.grad = tt.Tensor(g, dtype=np.float64)
        t.grad = torch.tensor(g)
    norm = clip_grad_norm(ours, max_norm=max_norm)
    expected = torch.nn.utils.clip_grad_norm_(theirs, max_norm=max_norm)
    assert norm == pytest.approx(expected.item(), rel=1e-12)
    for o, t in zip(ours, theirs):
        np.testing.assert_allclose(o.grad.data, t.grad.numpy(), rtol=1e-12)


def test_clip_grad_norm_returns_the_norm_before_clipping():
    a = tt.zeros(2, requires_grad=True)
    b = tt.zeros(1, requires_grad=True)
    a.grad, b.grad = tt.Tensor([3.0, 4.0]), tt.Tensor([12.0])
    assert clip_grad_norm([a, b], max_norm=1.0) == pytest.approx(13.0)
    clipped = math.sqrt(float((a.grad.data ** 2).sum() + (b.grad.data ** 2).sum()))
    assert clipped == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(a.grad.data / b.grad.data[0], [3 / 12, 4 / 12], rtol=1e-6)


def test_clip_grad_norm_skips_missing_gradients_and_accepts_numpy_gradients():
    a = tt.zeros(2, requires_grad=True)
    b = tt.zeros(2, requires_grad=True)
    a.grad = np.array([6.0, 8.0])
    assert clip_grad_norm([a, b], max_norm=5.0) == pytest.approx(10.0)
    np.testing.assert_allclose(a.grad, [3.0, 4.0], rtol=1e-6)
    assert b.grad is None


# ----- the Trainer -----------------------------------------------------------------------------

def _moons(n=200, seed=0):
    X, y = make_moons(n_samples=n, noise=0.1, seed=seed)
    return TensorDataset(X, y)


def _mlp(seed=0, hidden=16, dropout=0.0):
    tt.manual_seed(seed)
    layers = [Linear(2, hidden), ReLU()] + ([Dropout(dropout)] if dropout else [])
    return Sequential(*layers, Linear(hidden, 2))


def _accuracy(model, dataset):
    X, y = dataset.tensors
    model.eval()
    with tt.no_grad():
        predictions = model(X).data.argmax(axis=1)
    return float((predictions == y.data).mean())


def test_train_epoch_lowers_the_loss_and_counts_epochs():
    data = _moons()
    model = _mlp()
    trainer = Trainer(model, Adam(model.parameters(), lr=0.01), CrossEntropyLoss())
    loader = DataLoader(data, batch_size=32, shuffle=True, seed=0)
    losses = [trainer.train_epoch(loader) for _ in range(15)]
    assert isinstance(losses[0], float)
    assert losses[-1] < 0.5 * losses[0]
    assert trainer.epoch == 15
    assert trainer.step == 15 * len(loader)


def test_evaluate_reports_mean_loss_and_accuracy_without_changing_the_model():
    data = _moons(150)
    model = _mlp()
    trainer = Trainer(model, SGD(model.parameters(), lr=0.1), CrossEntropyLoss())
    before = [p.data.copy() for p in model.parameters()]
    loss, accuracy = trainer.evaluate(DataLoader(data, batch_size=64))
    for p, b in zip(model.parameters(), before):
        np.testing.assert_array_equal(p.data, b)
        assert p.grad is None
    X, y = data.tensors
    with tt.no_grad():
        full_loss = CrossEntropyLoss()(model(X), y).item()
    assert loss == pytest.approx(full_loss, rel=1e-5), "mean over samples, not over batches"
    assert accuracy == pytest.approx(_accuracy(model, data))


def test_evaluate_uses_eval_mode_and_restores_the_mode():
    data = _moons(100)
    model = _mlp(dropout=0.5)
    trainer = Trainer(model, SGD(model.parameters(), lr=0.1), CrossEntropyLoss())
    loader = DataLoader(data, batch_size=100)
    model.train()
    first, second = trainer.evaluate(loader), trainer.evaluate(loader)
    assert first == second, "dropout must be off while evaluating"
    assert model.training is True


def test_scheduler_sets_the_learning_rate_of_each_epoch():
    data = _moons(64)
    model = _mlp()
    optimizer = SGD(model.parameters(), lr=1.0)
    schedule = CosineSchedule(max_lr=0.1, min_lr=0.001, total_epochs=4)
    trainer = Trainer(model, optimizer, CrossEntropyLoss(), scheduler=schedule)
    history = trainer.fit(DataLoader(data, batch_size=16), epochs=4)
    assert history["lr"] == pytest.approx([schedule.get_lr(e) for e in range(4)])


def test_gradient_accumulation_equals_one_larger_batch():
    X, y = make_moons(n_samples=32, noise=0.1, seed=1)
    data = TensorDataset(tt.Tensor(X, dtype=np.float64), y)

    def run(batch_size, accumulation_steps):
        tt.manual_seed(3)
        model = Sequential(Linear(2, 8, dtype=np.float64), ReLU(), Linear(8, 2, dtype=np.float64))
        trainer = Trainer(model, SGD(model.parameters(), lr=0.5), CrossEntropyLoss())
        trainer.train_epoch(DataLoader(data, batch_size=batch_size), accumulation_steps)
        return [p.data for p in model.parameters()], trainer.step

    accumulated, steps_a = run(4, accumulation_steps=2)
    large, steps_b = run(8, accumulation_steps=1)
    assert steps_a == steps_b == 4
    for a, b in zip(accumulated, large):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_grad_clip_norm_limits_each_update():
    data = _moons(64)
    model = _mlp()
    trainer = Trainer(model, SGD(model.parameters(), lr=1.0), CrossEntropyLoss(),
                      grad_clip_norm=1e-3)
    before = np.concatenate([p.data.ravel() for p in model.parameters()])
    trainer.train_epoch(DataLoader(data, batch_size=64))
    after = np.concatenate([p.data.ravel() for p in model.parameters()])
    assert 0 < np.linalg.norm(after - before) <= 1e-3 * (1 + 1e-4)


def test_fit_returns_per_epoch_history_and_is_silent_by_default(capsys):
    data = _moons()
    model = _mlp()
    trainer = Trainer(model, Adam(model.parameters(), lr=0.01), CrossEntropyLoss())
    history = trainer.fit(DataLoader(data, batch_size=32), DataLoader(data, batch_size=100),
                          epochs=3)
    assert capsys.readouterr().out == ""
    for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr"):
        assert len(history[key]) == 3, key
    assert history["epoch"] == [1, 2, 3]
    assert history["val_accuracy"][-1] == pytest.approx(_accuracy(model, data))


def test_fit_without_val_loader_has_empty_val_lists():
    model = _mlp()
    trainer = Trainer(model, Adam(model.parameters()), CrossEntropyLoss())
    history = trainer.fit(DataLoader(_moons(32), batch_size=32), epochs=2)
    assert history["val_loss"] == [] and history["val_accuracy"] == []


def test_fit_with_progress_prints_one_line_per_epoch(capsys):
    model = _mlp()
    trainer = Trainer(model, Adam(model.parameters()), CrossEntropyLoss())
    trainer.fit(DataLoader(_moons(32), batch_size=32), epochs=2, progress=True)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[1].startswith("epoch 2/2")


def test_fit_draws_a_tqdm_bar_only_on_a_terminal():
    pytest.importorskip("tqdm")

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    model = _mlp()
    trainer = Trainer(model, Adam(model.parameters()), CrossEntropyLoss())
    loader = DataLoader(_moons(64), batch_size=16)
    terminal, pipe = Terminal(), io.StringIO()
    trainer.fit(loader, epochs=1, progress=True, file=terminal)
    trainer.fit(loader, epochs=1, progress=True, file=pipe)
    assert "epoch 1:" in terminal.getvalue() and "/4 [" in terminal.getvalue()
    assert pipe.getvalue().startswith("epoch 2/2 | train loss")
    assert pipe.getvalue().count("\n") == 1 and "\r" not in pipe.getvalue()


def test_accuracy_is_nan_for_regression_outputs():
    X = np.random.default_rng(0).standard_normal((20, 3)).astype(np.float32)
    data = TensorDataset(X, X.sum(axis=1, keepdims=True))
    tt.manual_seed(0)
    model = Linear(3, 1)
    trainer = Trainer(model, SGD(model.parameters(), lr=0.1), MSELoss())
    loss, accuracy = trainer.evaluate(DataLoader(data, batch_size=5))
    assert loss > 0 and math.isnan(accuracy)


def test_trainer_accepts_curriculum_style_models_and_plain_batch_lists():
    class TinyModel:
        def __init__(self):
            self.layer = Linear(2, 1)
            self.training = True

        def forward(self, x):
            return self.layer.forward(x)

        def parameters(self):
            return self.layer.parameters()

    model = TinyModel()
    trainer = Trainer(model, SGD(model.parameters(), lr=0.01), MSELoss(),
                      CosineSchedule(max_lr=0.1, min_lr=0.01, total_epochs=10), grad_clip_norm=1.0)
    batches = [(tt.Tensor([[1.0, 0.5]]), tt.Tensor([[2.0]])),
               (tt.Tensor([[0.5, 1.0]]), tt.Tensor([[1.5]]))]
    assert isinstance(trainer.train_epoch(batches), float)
    assert trainer.epoch == 1
    loss, accuracy = trainer.evaluate(batches)
    assert isinstance(loss, float) and isinstance(accuracy, float)


# ----- checkpoints ------------------------------------------------------------------------------

def _trainer(seed):
    model = _mlp(seed)
    return Trainer(model, Adam(model.parameters(), lr=0.01), CrossEntropyLoss())


def test_checkpoint_resume_gives_the_same_next_epoch(tmp_path):
    loader = DataLoader(_moons(), batch_size=32)
    trainer = _trainer(0)
    for _ in range(2):
        trainer.train_epoch(loader)
    path = tmp_path / "ckpt.npz"
    trainer.save_checkpoint(path, note="hello")
    trainer.train_epoch(loader)
    expected = [p.data.copy() for p in trainer.model.parameters()]

    resumed = _trainer(1)
    metadata = resumed.load_checkpoint(path)
    assert metadata == {"note": "hello"}
    assert resumed.epoch == 2
    resumed.train_epoch(loader)
    for p, e in zip(resumed.model.parameters(), expected):
        np.testing.assert_array_equal(p.data, e)


def test_checkpoint_loads_without_pickle(tmp_path):
    trainer = _trainer(0)
    trainer.save_checkpoint(tmp_path / "c.npz")
    with np.load(tmp_path / "c.npz", allow_pickle=False) as archive:
        assert any(name.startswith("model/") for name in archive.files)
    assert read_checkpoint(tmp_path / "c.npz")["epoch"] == 0


def test_truncated_checkpoint_gives_a_value_error_naming_the_file(tmp_path):
    path = tmp_path / "broken.npz"
    _trainer(0).save_checkpoint(path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(ValueError, match="broken.npz"):
        _trainer(0).load_checkpoint(path)


def test_checkpoint_with_wrong_shapes_is_rejected(tmp_path):
    path = tmp_path / "small.npz"
    _trainer(0).save_checkpoint(path)
    tt.manual_seed(0)
    wider = Sequential(Linear(2, 32), ReLU(), Linear(32, 2))
    trainer = Trainer(wider, Adam(wider.parameters()), CrossEntropyLoss())
    with pytest.raises(ValueError, match=r"small\.npz.*does not match the model.*shape"):
        trainer.load_checkpoint(path)


def test_checkpoint_with_wrong_keys_is_rejected(tmp_path):
    path = tmp_path / "c.npz"
    _trainer(0).save_checkpoint(path)
    deeper = Sequential(Linear(2, 16), ReLU(), Linear(16, 16), ReLU(), Linear(16, 2))
    trainer = Trainer(deeper, Adam(deeper.parameters()), CrossEntropyLoss())
    with pytest.raises(ValueError, match="does not match the model"):
        trainer.load_checkpoint(path)


def test_file_that_is_not_a_checkpoint_is_rejected(tmp_path):
    path = tmp_path / "weights.npz"
    tt.save(_mlp().state_dict(), path)
    with pytest.raises(ValueError, match="weights.npz: not a training checkpoint"):
        _trainer(0).load_checkpoint(path)


def test_failed_load_leaves_the_model_unchanged(tmp_path):
    path = tmp_path / "c.npz"
    _trainer(0).save_checkpoint(path)
    tt.manual_seed(5)
    model = Sequential(Linear(2, 16), ReLU(), Linear(16, 3))
    before = [p.data.copy() for p in model.parameters()]
    with pytest.raises(ValueError):
        Trainer(model, Adam(model.parameters()), CrossEntropyLoss()).load_checkpoint(path)
    for p, b in zip(model.parameters(), before):
        np.testing.assert_array_equal(p.data, b)


def test_checkpoint_that_fails_on_the_optimizer_leaves_the_model_unchanged(tmp_path):
    path = tmp_path / "adam.npz"
    trained = _trainer(0)
    trained.train_epoch(DataLoader(_moons(), batch_size=32))
    trained.save_checkpoint(path)
    tt.manual_seed(5)
    model = Sequential(Linear(2, 16), ReLU(), Linear(16, 2))
    other = Trainer(model, SGD(model.parameters(), lr=0.1, momentum=0.9), CrossEntropyLoss())
    before = [p.data.copy() for p in model.parameters()]
    with pytest.raises(ValueError, match="does not match the optimizer"):
        other.load_checkpoint(path)
    for p, b in zip(model.parameters(), before):
        np.testing.assert_array_equal(p.data, b)


# ----- divergence: the first non-finite loss, gradient or optimizer state stops training -------

def _diverging_trainer(optimizer="adam", **trainer_options):
    model = _mlp(0)
    make = {"adam": lambda p: Adam(p, lr=0.01), "sgd": lambda p: SGD(p, lr=0.1, momentum=0.9)}
    return Trainer(model, make[optimizer](model.parameters()), CrossEntropyLoss(),
                   **trainer_options)


def _loader(scale=1.0, bad_row=None, value=np.nan):
    X, y = make_moons(n_samples=128, noise=0.1, seed=0)
    X = X * np.float32(scale)
    if bad_row is not None:
        X[bad_row, 0] = value
    return DataLoader(TensorDataset(X, y), batch_size=32)


def _snapshot(trainer):
    return [p.data.copy() for p in trainer.model.parameters()]


def test_a_non_finite_loss_stops_before_backward_and_leaves_the_model_unchanged():
    from tinytorch.core.training import DivergenceError

    trainer = _diverging_trainer()
    trainer.train_epoch(_loader())
    before = _snapshot(trainer)
    with np.errstate(invalid="ignore"), pytest.raises(DivergenceError) as info:
        trainer.train_epoch(_loader(bad_row=0))           # in the first batch
    error = info.value
    assert (error.epoch, error.batch, error.step) == (2, 1, 4 + 1)
    assert error.what == "the loss is nan" and "epoch 2 at step 5 (batch 1" in str(error)
    for p, b in zip(trainer.model.parameters(), before):
        np.testing.assert_array_equal(p.data, b)
    with np.errstate(invalid="ignore"), pytest.raises(DivergenceError) as info:
        trainer.train_epoch(_loader(bad_row=70))          # in the third batch
    assert (info.value.epoch, info.value.batch, info.value.step) == (2, 3, 4 + 3)


def test_a_non_finite_gradient_stops_before_the_optimizer_step():
    from tinytorch.core.training import DivergenceError

    trainer = _diverging_trainer("sgd")
    before = _snapshot(trainer)
    weight = trainer.model[2].weight
    weight.register_hook(lambda g: g * np.float32(np.inf))
    with np.errstate(invalid="ignore"), pytest.raises(DivergenceError) as info:
        trainer.train_epoch(_loader())
    assert info.value.what in ("the gradient of 2.weight has inf",
                               "the gradient of 2.weight has nan")
    assert (info.value.batch, info.value.step) == (1, 1)
    assert trainer.optimizer.state == {}, "the step was not taken"
    for p, b in zip(trainer.model.parameters(), before):
        np.testing.assert_array_equal(p.data, b)


def test_an_overflowing_optimizer_state_stops_although_the_loss_is_finite():
    from tinytorch.core.training import DivergenceError

    trainer = _diverging_trainer()
    trainer.train_epoch(_loader())
    # gradients near 1e20 are finite in float32, their squares (Adam's second moment) are not
    with np.errstate(over="ignore"), pytest.raises(DivergenceError) as info:
        trainer.train_epoch(_loader(scale=1e21))
    assert "the optimizer state 'exp_avg_sq' of" in info.value.what
    assert info.value.what.endswith("has inf") and info.value.epoch == 2
    assert len(trainer.history["train_loss"]) == 1, "the failed epoch is not recorded"


def test_check_finite_false_trains_through_non_finite_values():
    trainer = _diverging_trainer(check_finite=False)
    with np.errstate(all="ignore"):
        loss = trainer.train_epoch(_loader(bad_row=70))
    assert math.isnan(loss)


def test_divergence_in_fit_keeps_what_on_epoch_end_saw(tmp_path):
    from tinytorch.core.training import DivergenceError

    trainer, seen = _diverging_trainer(), []
    loaders = iter([_loader(), _loader(), _loader(bad_row=0)])

    class Switching:                     # a clean loader for two epochs, then a NaN input
        def __iter__(self):
            return iter(next(loaders))
    with np.errstate(invalid="ignore"), pytest.raises(DivergenceError, match="epoch 3"):
        trainer.fit(Switching(), epochs=5, on_epoch_end=lambda h: seen.append(list(h["epoch"])))
    assert seen == [[1], [1, 2]]


def test_on_epoch_end_runs_before_the_progress_line():
    trainer, events = _diverging_trainer(), []

    class File(io.StringIO):
        def write(self, text):
            events.append("line")
            return super().write(text)
    trainer.fit(_loader(), epochs=2, progress=True, file=File(),
                on_epoch_end=lambda history: events.append("saved"))
    assert events[:2] == ["saved", "line"]


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("shape", [(), (0,), (7,), (64, 128), (300, 300)])
def test_all_finite_agrees_with_isfinite(dtype, shape):
    from tinytorch.core.training import _all_finite

    rng = np.random.default_rng(0)
    array = np.asarray(rng.standard_normal(shape) * 1e3, dtype=dtype)
    assert _all_finite([array]) and _all_finite([array.T])
    if array.size:
        for bad in (np.nan, np.inf, -np.inf):
            broken = array.copy()
            broken.flat[rng.integers(array.size)] = bad
            assert not _all_finite([array, broken]), (bad, shape)
            assert not _all_finite([broken.T])
        big = np.full(shape, np.finfo(dtype).max, dtype=dtype)
        assert _all_finite([big]), "large finite values are finite"


@pytest.mark.parametrize("value, text", [
    (0.31822, "  0.3182"), (12.5, " 12.5000"), (999.99994, "999.9999"), (1234.5, "1.23e+03"),
    (2.7e34, "2.70e+34"), (1e300, "1.0e+300"), (float("nan"), "     nan"),
    (float("inf"), "     inf"), (-3.25, " -3.2500"), (-2.5e12, "-2.5e+12"),
])
def test_losses_have_a_fixed_width_at_any_magnitude(value, text):
    from tinytorch.core.training import format_loss

    assert format_loss(value) == text


def test_train_step_counts_steps_and_checks_the_loss():
    from tinytorch.core.training import DivergenceError

    trainer = _diverging_trainer()
    inputs, targets = next(iter(_loader()))
    values = [trainer.train_step(inputs, targets) for _ in range(3)]
    assert trainer.step == 3 and trainer.epoch == 0 and values[2] < values[0]
    inputs.data[0, 0] = np.nan
    with np.errstate(invalid="ignore"), pytest.raises(DivergenceError) as info:
        trainer.train_step(inputs, targets)
    assert str(info.value) == "training diverged at step 4: the loss is nan"
