"""End to end: a small MLP (Linear -> ReLU -> Linear -> cross-entropy) learns toy problems with
hand-written SGD."""

import numpy as np

import tinytorch as tt
from tinytorch.core.activations import ReLU
from tinytorch.core.layers import Linear, Sequential
from tinytorch.core.losses import CrossEntropyLoss


def train(model, x, y, lr, steps):
    """Full-batch SGD: p <- p - lr * dL/dp. Returns the loss after every step."""
    loss_fn = CrossEntropyLoss()
    inputs, targets = tt.Tensor(x), tt.Tensor(y)
    history = []
    for _ in range(steps):
        model.zero_grad()
        loss = loss_fn(model(inputs), targets)
        loss.backward()
        for p in model.parameters():
            p.data -= lr * p.grad.data
        history.append(loss.item())
    return history


def accuracy(model, x, y):
    with tt.no_grad():
        predictions = model(tt.Tensor(x)).data.argmax(axis=1)
    return (predictions == y).mean()


def two_moons(n, noise, rng):
    """Two interleaving half circles, labels 0 and 1."""
    angle = rng.uniform(0, np.pi, n)
    upper = np.stack([np.cos(angle), np.sin(angle)], axis=1)
    lower = np.stack([1 - np.cos(angle), 0.5 - np.sin(angle)], axis=1)
    x = np.concatenate([upper, lower]) + rng.normal(0, noise, (2 * n, 2))
    y = np.concatenate([np.zeros(n, dtype=int), np.ones(n, dtype=int)])
    return x - x.mean(axis=0), y


def test_mlp_learns_xor():
    tt.manual_seed(0)
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32)
    y = np.array([0, 1, 1, 0])
    model = Sequential(Linear(2, 16), ReLU(), Linear(16, 2))
    history = train(model, x, y, lr=0.2, steps=400)
    assert history[-1] < 0.1 * history[0], f"loss went from {history[0]} to {history[-1]}"
    assert accuracy(model, x, y) == 1.0


def test_mlp_learns_two_moons():
    tt.manual_seed(1)
    x, y = two_moons(100, noise=0.05, rng=np.random.default_rng(1))
    model = Sequential(Linear(2, 32), ReLU(), Linear(32, 2))
    history = train(model, x, y, lr=0.5, steps=1500)
    assert history[-1] < 0.2 * history[0], f"loss went from {history[0]} to {history[-1]}"
    assert np.mean(np.diff(history) <= 1e-6) > 0.9, "full-batch SGD loss should mostly decrease"
    assert accuracy(model, x, y) == 1.0
