"""Training: learning-rate schedules, gradient clipping, and the Trainer that runs the loop.

>>> from tinytorch.core.training import Trainer, CosineSchedule
>>> trainer = Trainer(model, Adam(model.parameters(), lr=1e-3), CrossEntropyLoss(),
...                   scheduler=CosineSchedule(max_lr=1e-3, min_lr=1e-5, total_epochs=20))
>>> history = trainer.fit(train_loader, val_loader, epochs=20)
>>> history["val_accuracy"][-1]          # e.g. 0.97
>>> trainer.save_checkpoint("model.npz")
"""

import math
import sys
import time

import numpy as np

from tinytorch.core import serialization
from tinytorch.core.grad_mode import no_grad
from tinytorch.core.layers import set_training_mode
from tinytorch.core.losses import (  # noqa: F401  (MSELoss, CrossEntropyLoss: TinyTorch's path)
    BCEWithLogitsLoss, BinaryCrossEntropyLoss, CrossEntropyLoss, MSELoss,
)
from tinytorch.core.tensor import Tensor
from tinytorch.core.tracing import replayed_as_a_call


# ----- learning-rate schedules ---------------------------------------------------------------

class CosineSchedule:
    """Cosine annealing from ``max_lr`` at epoch 0 down to ``min_lr`` at ``total_epochs``.

    ``lr(epoch) = min_lr + (max_lr - min_lr) * (1 + cos(pi * epoch / total_epochs)) / 2``,
    and ``min_lr`` after ``total_epochs`` (as ``torch.optim.lr_scheduler.CosineAnnealingLR``
    with ``T_max=total_epochs``, ``eta_min=min_lr``, until it ends).

    >>> round(CosineSchedule(max_lr=0.1, min_lr=0.01, total_epochs=100).get_lr(50), 6)
    0.055
    """

    def __init__(self, max_lr=0.1, min_lr=0.01, total_epochs=100):
        if total_epochs < 1:
            raise ValueError(f"CosineSchedule: total_epochs must be >= 1, got {total_epochs}")
        self.max_lr = max_lr
        self.min_lr = min_lr
        self.total_epochs = total_epochs

    def get_lr(self, epoch):
        """The learning rate for ``epoch`` (counted from 0)."""
        if epoch >= self.total_epochs:
            return self.min_lr
        cosine = (1 + math.cos(math.pi * epoch / self.total_epochs)) / 2
        return self.min_lr + (self.max_lr - self.min_lr) * cosine

    def __repr__(self):
        return (f"CosineSchedule(max_lr={self.max_lr}, min_lr={self.min_lr}, "
                f"total_epochs={self.total_epochs})")


class StepSchedule:
    """Step decay: multiply the learning rate by ``gamma`` every ``step_size`` epochs.

    ``lr(epoch) = initial_lr * gamma ** (epoch // step_size)`` (as
    ``torch.optim.lr_scheduler.StepLR``).

    >>> StepSchedule(initial_lr=0.1, step_size=10, gamma=0.5).get_lr(25)
    0.025
    """

    def __init__(self, initial_lr=0.1, step_size=30, gamma=0.1):
        if step_size < 1:
            raise ValueError(f"StepSchedule: step_size must be >= 1, got {step_size}")
        self.initial_lr = initial_lr
        self.step_size = step_size
        self.gamma = gamma

    def get_lr(self, epoch):
        """The learning rate for ``epoch`` (counted from 0)."""
        return self.initial_lr * self.gamma ** (epoch // self.step_size)

    def __repr__(self):
        return (f"StepSchedule(initial_lr={self.initial_lr}, step_size={self.step_size}, "
                f"gamma={self.gamma})")


# ----- gradient clipping ---------------------------------------------------------------------

@replayed_as_a_call
def clip_grad_norm(parameters, max_norm=1.0):
    """Scale all gradients together so that their joint L2 norm is at most ``max_norm``.

    ``total = sqrt(sum over parameters of sum(grad^2))``; when ``total > max_norm`` every
    gradient is multiplied by ``max_norm / (total + 1e-6)`` (as
    ``torch.nn.utils.clip_grad_norm_``). Returns ``total``, the norm before clipping.
    Gradients may be Tensors or NumPy arrays; parameters without one are skipped.

    >>> norm = clip_grad_norm(model.parameters(), max_norm=1.0)
    """
    if (isinstance(max_norm, bool) or not isinstance(max_norm, (int, float, np.number))
            or not 0 <= max_norm < math.inf):
        raise ValueError(f"clip_grad_norm: max_norm must be a finite and nonnegative number, "
                         f"got {max_norm!r}")
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    grads = [p.grad.data if isinstance(p.grad, Tensor) else p.grad
             for p in parameters if p.grad is not None]
    total = math.sqrt(sum(float(np.sum(np.square(g, dtype=np.float64))) for g in grads))
    scale = max_norm / (total + 1e-6)
    if scale < 1:
        for g in grads:
            g *= scale
    return total


clip_grad_norm_ = clip_grad_norm


# ----- the training loop ---------------------------------------------------------------------

class DivergenceError(FloatingPointError):
    """Training stopped: the loss, a gradient or the optimizer's state became NaN or infinite.

    ``epoch`` (counted from 1) and ``batch`` (the batch of that epoch, from 1; None for
    :meth:`Trainer.train_step`) locate the step, ``step`` counts optimizer steps over the whole
    training (from 1, the failing one included), ``what`` says which value, e.g. ``"the loss is
    nan"``. Raised by :class:`Trainer` before the failing step changes the model when the loss
    or a gradient is at fault; a non-finite optimizer state is seen after the step, so reload
    the last checkpoint to go on.
    """

    def __init__(self, epoch, step, batch, what):
        self.epoch, self.step, self.batch, self.what = epoch, step, batch, what
        where = (f"in epoch {epoch} at step {step} (batch {batch} of the epoch)"
                 if batch is not None else f"at step {step}")
        super().__init__(f"training diverged {where}: {what}")


class Trainer:
    """Runs training epochs, evaluation, learning-rate schedules and checkpoints for a model.

    ``Trainer(model, optimizer, loss_fn, scheduler=None, grad_clip_norm=None,
    check_finite=True, compile=False)``. ``model`` maps inputs to outputs (a Module, or any
    object with ``forward`` and ``parameters()``), ``loss_fn(outputs, targets)`` returns a
    one-element Tensor, and ``scheduler.get_lr(epoch)`` sets the learning rate at the start of
    each epoch.
    Data loaders yield ``(inputs, targets)``.

    With ``check_finite`` (the default), training stops with :class:`DivergenceError` at the
    first step whose loss, a gradient or the optimizer's state holds NaN or infinity: the loss
    is checked before ``backward``, the gradients before the optimizer step, its state after
    it. The cost is one NumPy reduction per gradient and state array per step.

    ``trainer.history`` records every call: ``train_loss``/``train_accuracy`` per
    :meth:`train_epoch`, ``eval_loss``/``eval_accuracy`` per :meth:`evaluate`, and
    ``learning_rates``. Accuracy is the fraction of correct predictions: arg-max classes for
    outputs with one score per class (N, C), thresholded elements for the binary
    cross-entropy losses, and NaN where nothing is predicted (e.g. regression).

    With ``compile=True`` each batch's forward, loss and backward run as one step of
    :func:`tinytorch.compile`: recorded on the first batch of each shape, replayed on the
    others, with the same numbers as eager execution, bit for bit (the checks and the optimizer
    step stay eager). The loss is then checked after backward rather than before; a non-finite
    one still stops training before the update.

    >>> trainer = Trainer(model, SGD(model.parameters(), lr=0.1), MSELoss())
    >>> loss = trainer.train_epoch(train_loader)
    >>> val_loss, val_accuracy = trainer.evaluate(val_loader)
    """

    def __init__(self, model, optimizer, loss_fn, scheduler=None, grad_clip_norm=None,
                 check_finite=True, compile=False):
        self.model = model
        self.optimizer = optimizer
        self.loss_fn = loss_fn
        self.scheduler = scheduler
        self.grad_clip_norm = grad_clip_norm
        self.check_finite = check_finite
        self.compile = compile
        self._compiled_step = None
        self.epoch = 0
        self.step = 0
        self.history = {"train_loss": [], "train_accuracy": [], "eval_loss": [],
                        "eval_accuracy": [], "learning_rates": []}

    def train_epoch(self, dataloader, accumulation_steps=1, on_batch=None):
        """One pass over ``dataloader``, updating the parameters; returns the mean loss per
        sample.

        With ``accumulation_steps=k`` the gradients of k batches are summed before one
        optimizer step, each batch weighted by its number of samples, exactly as one batch
        holding all their samples would give (also for a shorter last window and unequal
        batches; a loss with ``reduction='sum'`` is summed as it is). ``on_batch`` is an
        optional callable given the running mean loss after each batch.
        """
        if (isinstance(accumulation_steps, bool) or int(accumulation_steps) != accumulation_steps
                or accumulation_steps < 1):
            raise ValueError(f"accumulation_steps must be a positive integer, "
                             f"got {accumulation_steps!r}")
        summed = getattr(self.loss_fn, "reduction", "mean") == "sum"
        self._set_training(True)
        if self.scheduler is not None:
            self.optimizer.lr = self.scheduler.get_lr(self.epoch)
        self.optimizer.zero_grad()
        total_loss, samples, correct, counted, pending, window = 0.0, 0, 0, 0, 0, 0
        batches = 0
        for inputs, targets in dataloader:
            batches += 1
            # with accumulation, the window's summed loss (divided by its samples below)
            outputs, value = self._forward_backward(inputs, targets, batches,
                                                    weighted=accumulation_steps > 1 and not summed)
            n = _sample_count(outputs)
            weight = 1 if summed else n
            pending, window = pending + 1, window + n
            if pending == accumulation_steps:
                self._update(batches, 1 if accumulation_steps == 1 or summed else window)
                pending = window = 0
            total_loss += value * weight
            samples += n
            right, m = _count_correct(outputs, targets, self.loss_fn)
            correct, counted = correct + right, counted + m
            if on_batch is not None:
                on_batch(total_loss / samples)
        if pending:
            self._update(batches, 1 if summed else window)
        mean_loss = total_loss / samples if samples else math.nan
        self.history["train_loss"].append(mean_loss)
        self.history["train_accuracy"].append(correct / counted if counted else math.nan)
        self.history["learning_rates"].append(getattr(self.optimizer, "lr", None))
        self.epoch += 1
        return mean_loss

    def train_step(self, inputs, targets):
        """One optimizer step on one batch (forward, loss, backward, update), with the checks
        of ``check_finite``; returns the loss as a float.

        For loops that count steps rather than epochs (the learning rate is left to the
        caller); ``self.step`` counts the steps, ``self.epoch`` and the history are unchanged.
        """
        self._set_training(True)
        _, value = self._forward_backward(inputs, targets, batch=None)
        self._update(batch=None)
        return value

    def _forward_backward(self, inputs, targets, batch, weighted=False):
        """``(outputs, loss value)`` of one batch, its gradients added into ``.grad``
        (``weighted``: the loss times the batch's samples, for accumulation); DivergenceError
        for a non-finite loss, before backward when eager, after it when compiled."""
        if not self.compile:
            outputs, loss, value = self._forward_loss(inputs, targets, batch)
            _backward(loss, outputs, weighted)
            return outputs, value
        if self._compiled_step is None:
            from tinytorch.compiler import compile
            self._compiled_step = compile(self._step)
        # NumPy batches as Tensors, which every op takes as it takes the arrays: a recording is
        # keyed by a Tensor's shape but by an array's values. Integers (token ids, class
        # indices) keep their dtype; floats take the parameters' dtype, as an op on a parameter
        # converts an array operand to it
        inputs, targets = (self._batch_tensor(a) if isinstance(a, np.ndarray) else a
                           for a in (inputs, targets))
        outputs, loss = self._compiled_step(inputs, targets, weighted)
        value = loss.item()
        if self.check_finite and not math.isfinite(value):
            raise self._diverged(batch, f"the loss is {value}")
        return outputs, value

    def _batch_tensor(self, array):
        if array.dtype.kind in "iub":
            return Tensor(array, dtype=array.dtype)
        if array.dtype.kind != "f":
            return array
        parameters = getattr(self.model, "parameters", None)
        floats = [p for p in parameters() if p.dtype.kind == "f"] if callable(parameters) else []
        return Tensor(array, dtype=floats[0].dtype if floats else None)

    def _step(self, inputs, targets, weighted):
        """Forward, loss and backward of one batch: the step ``compile=True`` records."""
        outputs = self._forward(inputs)
        loss = self._loss(outputs, targets)
        _backward(loss, outputs, weighted)
        return outputs, loss

    def evaluate(self, dataloader):
        """Loss and accuracy over ``dataloader`` without changing the model: ``(loss, accuracy)``.

        Both are means over samples. Runs in eval mode (dropout off) and under ``no_grad``.
        """
        was_training = getattr(self.model, "training", True)
        self._set_training(False)
        total_loss, samples, correct, counted = 0.0, 0, 0, 0
        try:
            with no_grad():
                for inputs, targets in dataloader:
                    outputs = self._forward(inputs)
                    n = _sample_count(outputs)
                    total_loss += self._loss(outputs, targets).item() * n
                    samples += n
                    right, m = _count_correct(outputs, targets, self.loss_fn)
                    correct, counted = correct + right, counted + m
        finally:
            self._set_training(was_training)
        loss = total_loss / samples if samples else math.nan
        accuracy = correct / counted if counted else math.nan
        self.history["eval_loss"].append(loss)
        self.history["eval_accuracy"].append(accuracy)
        return loss, accuracy

    def fit(self, train_loader, val_loader=None, epochs=10, accumulation_steps=1,
            progress=False, file=None, on_epoch_end=None):
        """Train for ``epochs`` epochs, evaluating on ``val_loader`` after each one.

        Returns the per-epoch history: ``{"epoch", "train_loss", "train_accuracy", "val_loss",
        "val_accuracy", "lr", "seconds"}`` (lists, one entry per epoch; the val lists are empty
        without ``val_loader``). Silent unless ``progress=True``: then one line per epoch is
        written to ``file`` (default stdout), and, when tqdm is installed and ``file`` is a
        terminal, a bar follows the batches of each epoch. ``on_epoch_end(history)``, when given,
        is called after each epoch (before its line is written), e.g. to save a checkpoint.
        """
        if int(epochs) != epochs or epochs < 1:
            raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
        file = sys.stdout if file is None else file
        history = {key: [] for key in ("epoch", "train_loss", "train_accuracy", "val_loss",
                                       "val_accuracy", "lr", "seconds")}
        last_epoch = self.epoch + int(epochs)
        for _ in range(int(epochs)):
            start = time.perf_counter()
            bar = _batch_bar(self.epoch + 1, train_loader, file) if progress else None
            try:
                loss = self.train_epoch(train_loader, accumulation_steps,
                                        on_batch=_bar_callback(bar))
            finally:
                if bar is not None:
                    bar.close()
            history["epoch"].append(self.epoch)
            history["train_loss"].append(loss)
            history["train_accuracy"].append(self.history["train_accuracy"][-1])
            history["lr"].append(self.history["learning_rates"][-1])
            if val_loader is not None:
                val_loss, val_accuracy = self.evaluate(val_loader)
                history["val_loss"].append(val_loss)
                history["val_accuracy"].append(val_accuracy)
            history["seconds"].append(time.perf_counter() - start)
            if on_epoch_end is not None:
                on_epoch_end(history)
            if progress:
                print(_epoch_line(history, last_epoch), file=file, flush=True)
        return history

    # ----- checkpoints ------------------------------------------------------------------------
    def save_checkpoint(self, path, **metadata):
        """Write model parameters, optimizer state, epoch and history to ``path`` (.npz).

        Extra keyword arguments (numbers, strings, lists, dicts, arrays) are stored under
        ``"metadata"``, e.g. what is needed to rebuild the model. The file loads without
        running code (see :mod:`tinytorch.core.serialization`).
        """
        serialization.save({
            "kind": "checkpoint",
            "model": _model_state(self.model),
            "optimizer": self.optimizer.state_dict() if self.optimizer is not None else None,
            "epoch": self.epoch,
            "step": self.step,
            "history": self.history,
            "metadata": metadata,
        }, path)

    def load_checkpoint(self, path):
        """Restore what :meth:`save_checkpoint` wrote; returns the checkpoint's ``metadata``.

        Raises ValueError naming the file when it is not a checkpoint or does not match this
        model (parameter names or shapes) or optimizer.
        """
        checkpoint = read_checkpoint(path)
        model_before = {name: np.array(getattr(value, "data", value), copy=True)
                        for name, value in _model_state(self.model).items()}
        try:
            _load_model_state(self.model, checkpoint["model"])
        except (KeyError, ValueError, RuntimeError, TypeError) as error:
            raise ValueError(f"{path}: the checkpoint does not match the model: "
                             f"{_message(error)}") from None
        if self.optimizer is not None and checkpoint["optimizer"] is not None:
            try:
                self.optimizer.load_state_dict(checkpoint["optimizer"])
            except (KeyError, ValueError, TypeError) as error:
                _load_model_state(self.model, model_before)      # all or nothing
                raise ValueError(f"{path}: the checkpoint does not match the optimizer: "
                                 f"{_message(error)}") from None
        self.epoch = int(checkpoint["epoch"])
        self.step = int(checkpoint.get("step", 0))
        history = checkpoint.get("history")
        if isinstance(history, dict):
            self.history = {**self.history, **history}
        return checkpoint.get("metadata", {})

    # ----- helpers ---------------------------------------------------------------------------
    def _forward(self, inputs):
        return self.model(inputs) if callable(self.model) else self.model.forward(inputs)

    def _loss(self, outputs, targets):
        loss_fn = self.loss_fn
        return loss_fn(outputs, targets) if callable(loss_fn) else loss_fn.forward(outputs, targets)

    def _set_training(self, mode):
        if hasattr(self.model, "train") and callable(self.model.train):
            self.model.train(mode)
        else:                  # a hand-written model: reach the modules it holds
            self.model.training = mode
            set_training_mode(self.model, mode)

    def _forward_loss(self, inputs, targets, batch):
        """``(outputs, loss, loss value)`` of one batch; DivergenceError for a non-finite loss
        (``batch``: the batch's number in its epoch, for the message, or None)."""
        outputs = self._forward(inputs)
        loss = self._loss(outputs, targets)
        value = loss.item()
        if self.check_finite and not math.isfinite(value):
            raise self._diverged(batch, f"the loss is {value}")
        return outputs, loss, value

    def _update(self, batch, samples=1):
        """One optimizer step on the gradients summed over ``samples`` samples (their mean);
        ``batch``: the epoch's batches so far, or None, for messages."""
        if samples != 1:
            for p in self.model.parameters():
                if p.grad is not None:
                    p.grad.data *= 1.0 / samples
        if self.grad_clip_norm is not None:
            clip_grad_norm(self.model.parameters(), self.grad_clip_norm)
        if self.check_finite:
            params = _parameters(self.optimizer, self.model)
            grads = [_array(p.grad) for p in params if p.grad is not None]
            if not _all_finite(grads):
                raise self._diverged(batch, self._first_non_finite(params, "gradient"))
        self.optimizer.step()
        self.step += 1
        if self.check_finite and not _all_finite(_state_arrays(self.optimizer)):
            raise self._diverged(batch, self._first_non_finite(params, "state"), done=True)
        self.optimizer.zero_grad()

    def _diverged(self, batch, what, done=False):
        """The DivergenceError for a non-finite ``what`` at ``batch`` of the current epoch;
        ``done``: the optimizer step has been taken (counted in ``self.step``)."""
        return DivergenceError(epoch=self.epoch + 1, step=self.step + (not done), batch=batch,
                               what=what)

    def _first_non_finite(self, params, where):
        """Words naming the first gradient (``where="gradient"``) or optimizer state array
        (``"state"``) that holds NaN or infinity, e.g. "the gradient of 0.weight has nan"."""
        names = _parameter_names(self.model, params)
        state = getattr(self.optimizer, "state", {})
        for i, p in enumerate(params):
            name = names.get(id(p), f"parameter {i}")
            if where == "gradient":
                arrays = {"": p.grad} if p.grad is not None else {}
            else:
                arrays = state.get(p, {}) if isinstance(state, dict) else {}
            for key, value in arrays.items():
                value = _array(value)
                if isinstance(value, np.ndarray) and not _all_finite([value]):
                    bad = "nan" if np.isnan(value).any() else "inf"
                    if where == "gradient":
                        return f"the gradient of {name} has {bad}"
                    return f"the optimizer state '{key}' of {name} has {bad}"
        return f"a {where} array has nan or inf"


def read_checkpoint(path, max_bytes=None):
    """Load a checkpoint written by :meth:`Trainer.save_checkpoint` as a dict.

    The file is untrusted input (see :func:`tinytorch.load`); besides, its entries must have the
    types a checkpoint has. Raises ValueError naming the file if it is not a readable tinytorch
    checkpoint, or (before reading its arrays) when they declare more than ``max_bytes`` bytes.
    """
    checkpoint = serialization._load(path, "tinytorch checkpoint", max_bytes)
    required = ("model", "optimizer", "epoch")
    if not isinstance(checkpoint, dict) or checkpoint.get("kind") != "checkpoint":
        raise ValueError(f"{path}: not a training checkpoint (a tinytorch file, but without "
                         f"the checkpoint entries {', '.join(required)})")
    missing = [key for key in required if key not in checkpoint]
    if missing:
        raise ValueError(f"{path}: the checkpoint lacks the entries {', '.join(missing)}")
    for key in ("epoch", "step"):
        value = checkpoint.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{path}: the checkpoint's '{key}' must be an integer >= 0, "
                             f"got {serialization._short(value)}")
    model = checkpoint["model"]
    if not isinstance(model, dict) or not all(
            isinstance(k, str) and isinstance(v, (Tensor, np.ndarray)) for k, v in model.items()):
        raise ValueError(f"{path}: the checkpoint's 'model' must map parameter names to arrays")
    for key in ("optimizer", "history", "metadata"):
        if not isinstance(checkpoint.get(key), (dict, type(None))):
            raise ValueError(f"{path}: the checkpoint's '{key}' must be a dict, got "
                             f"{serialization._short(checkpoint[key])}")
    return checkpoint


def _parameters(optimizer, model):
    """The parameters the optimizer updates (the model's when it does not list them)."""
    params = getattr(optimizer, "params", None)
    return list(params) if params is not None else list(model.parameters())


def _array(value):
    """A Tensor's array, or ``value`` itself."""
    return value.data if isinstance(value, Tensor) else value


def _state_arrays(optimizer):
    """The float arrays of the optimizer's per-parameter state (moments, momentum buffers)."""
    state = getattr(optimizer, "state", None)
    if not isinstance(state, dict):
        return []
    arrays = []
    for buffers in state.values():
        for value in buffers.values() if isinstance(buffers, dict) else ():
            value = _array(value)
            if isinstance(value, np.ndarray) and value.dtype.kind == "f":
                arrays.append(value)
    return arrays


def _all_finite(arrays):
    """True when no array holds NaN or infinity (one ``np.isfinite`` reduction per array)."""
    return all(np.isfinite(a).all() for a in arrays)


def _parameter_names(model, params):
    """{id(parameter): name} from ``model.named_parameters()`` where the model has it."""
    named = getattr(model, "named_parameters", None)
    if callable(named):
        return {id(p): name for name, p in named()}
    return {id(p): f"parameter {i}" for i, p in enumerate(params)}


def _model_state(model):
    """``model.state_dict()``, or parameters by position for objects without one."""
    if hasattr(model, "state_dict"):
        return model.state_dict()
    return {str(i): p for i, p in enumerate(model.parameters())}


def _load_model_state(model, state):
    if hasattr(model, "load_state_dict"):
        model.load_state_dict(state)
        return
    params = list(model.parameters())
    if len(state) != len(params):
        raise ValueError(f"{len(state)} saved parameters, the model has {len(params)}")
    for i, p in enumerate(params):
        saved = np.asarray(state[str(i)].data if isinstance(state[str(i)], Tensor)
                           else state[str(i)])
        if saved.shape != p.shape:
            raise ValueError(f"parameter {i}: saved shape {saved.shape}, model {p.shape}")
        p.data[...] = saved


def _message(error):
    """The error's text on one line (a KeyError's without the quotes repr adds)."""
    text = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
    return " ".join(text.split())


def _backward(loss, outputs, weighted):
    if weighted:
        loss.backward(np.asarray(_sample_count(outputs), dtype=loss.dtype))
    else:
        loss.backward()


def _sample_count(outputs):
    """Samples in a batch: the length of the outputs' first axis (1 for a 0-d output)."""
    return len(outputs) if getattr(outputs, "ndim", 0) else 1


def _count_correct(outputs, targets, loss_fn=None):
    """(correct predictions, predictions made) for a batch; (0, 0) when nothing is predicted.

    Binary cross-entropy losses predict each element: 1 where the probability is >= 0.5
    (``BinaryCrossEntropyLoss``) or the logit >= 0 (``BCEWithLogitsLoss``), against targets
    rounded at 0.5. Otherwise class scores (N, C) predict their arg-max class, against class
    indices (N,) or one-hot rows (N, C).
    """
    scores = outputs.data if isinstance(outputs, Tensor) else np.asarray(outputs)
    labels = targets.data if isinstance(targets, Tensor) else np.asarray(targets)
    threshold = (0.5 if isinstance(loss_fn, BinaryCrossEntropyLoss)
                 else 0.0 if isinstance(loss_fn, BCEWithLogitsLoss) else None)
    if threshold is not None:
        if labels.size != scores.size:
            return 0, 0
        predicted = scores.reshape(-1) >= threshold
        return int(np.sum(predicted == (labels.reshape(-1) >= 0.5))), scores.size
    if scores.ndim != 2 or scores.shape[1] < 2:
        return 0, 0
    if labels.ndim == 2 and labels.shape == scores.shape:
        labels = labels.argmax(axis=1)
    if labels.shape != (scores.shape[0],):
        return 0, 0
    return int(np.sum(scores.argmax(axis=1) == labels)), len(labels)


def _batch_bar(epoch, loader, file):
    """A tqdm bar over one epoch's batches, or None without tqdm or a terminal."""
    if not (hasattr(file, "isatty") and file.isatty()):
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    total = len(loader) if hasattr(loader, "__len__") else None
    return tqdm(total=total, desc=f"epoch {epoch}", leave=False, file=file, unit="batch")


def _bar_callback(bar):
    if bar is None:
        return None

    def update(mean_loss):
        bar.set_postfix(loss=format_loss(mean_loss).strip(), refresh=False)
        bar.update(1)
    return update


def format_loss(value, width=8):
    """``value`` in ``width`` characters at any magnitude: 4 decimals when they fit, else
    scientific notation (``"  0.3182"``, ``"1.23e+34"``, ``"     nan"``)."""
    text = f"{value:.4f}"
    for digits in (2, 1, 0):
        if len(text) <= width:
            break
        text = f"{value:.{digits}e}"
    return text.rjust(width)


def _epoch_line(history, last_epoch):
    """One line summing up the last epoch of ``history``."""
    width = len(str(last_epoch))
    parts = [f"epoch {history['epoch'][-1]:{width}d}/{last_epoch}",
             f"train loss {format_loss(history['train_loss'][-1])}"]
    if not math.isnan(history["train_accuracy"][-1]):
        parts.append(f"acc {history['train_accuracy'][-1]:7.2%}")
    if history["val_loss"]:
        parts.append(f"val loss {format_loss(history['val_loss'][-1])}")
        if not math.isnan(history["val_accuracy"][-1]):
            parts.append(f"acc {history['val_accuracy'][-1]:7.2%}")
    if history["lr"][-1] is not None:
        parts.append(f"lr {history['lr'][-1]:.2e}")
    parts.append(f"{history['seconds'][-1]:.2f}s")
    return " | ".join(parts)


__all__ = ["CosineSchedule", "StepSchedule", "clip_grad_norm", "clip_grad_norm_", "Trainer",
           "DivergenceError", "read_checkpoint", "format_loss", "MSELoss", "CrossEntropyLoss"]
