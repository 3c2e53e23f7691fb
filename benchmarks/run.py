#!/usr/bin/env python
"""tinytorch benchmarks: tinytorch vs. a hand-written NumPy floor vs. PyTorch.

    python benchmarks/run.py                      # everything, 1 thread and default threads
    python benchmarks/run.py --quick              # fewer repeats (about 40 s)
    python benchmarks/run.py --only W1,W3 --threads 1 --repeats 5 --out results.md

Every workload is written three times, one function per library (four for W2-W4 and W6):

* ``tinytorch``: the public API only (``tt.Tensor``, operators, ``.backward()``, ``.grad``).
* ``compiled``: the same tinytorch step through ``tt.compile`` (issue 17): recorded by its
  first call (the recording time is reported), checked and timed on replays.
* ``floor``: plain NumPy arrays with a hand-derived backward pass (no autograd, no Tensor
  objects). It is the cost of the arithmetic itself, the least an autograd engine built on
  NumPy can cost.
* ``torch``: PyTorch (float32, CPU) as a user would write the same model, using its fused
  functional ops where they exist (``F.cross_entropy``, ``F.layer_norm``, ``F.gelu``...).
* ``bare`` (small-tensor workloads only): ``bare_engine.py``, tinytorch's graph walk with
  none of its features, about the least Python per op an eager engine can run: a yardstick
  for what this design can reach, where Python per op is the cost.

Before timing, each workload checks that tinytorch's gradients, eager and compiled, equal the
floor's and torch's; a workload whose gradients differ is aborted with a message, not timed.
Timing: warm-up calls, then blocks of samples, the libraries taking turns block by block (so a
burst of load from elsewhere hits them alike), with an idle pause before each block so that
the previous library's worker threads have stopped spinning; the median per call is reported.

BLAS reads its thread count when NumPy is imported, so ``--threads both`` (the default) runs the
default pass in this process, then the 1-thread pass in a child process started with
OMP/OPENBLAS/MKL_NUM_THREADS=1, and merges the two tables.
"""

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
import warnings

ONE_THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
WORKLOAD_NAMES = ("W1", "W2", "W3", "W4", "W5", "W6", "W8")
JSON_MARKER = "BENCH_JSON:"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Benchmark tinytorch against a NumPy floor and PyTorch.")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed samples per library and workload (default: 24, or 6 with --quick, "
                             "fewer when a workload's time budget runs out)")
    parser.add_argument("--quick", action="store_true", help="fewer samples and a smaller time budget")
    parser.add_argument("--threads", choices=("1", "default", "both"), default="both",
                        help="thread setting(s) to run (default: both)")
    parser.add_argument("--only", default=None,
                        help="comma-separated workloads to run, e.g. W1,W3 (MEM: the memory check)")
    parser.add_argument("--out", default=None, help="also write the report as markdown to this file")
    # Internal: how the parent runs its 1-thread child.
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--skip-memory", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# The 1-thread pass must limit BLAS threads before NumPy is imported.
if __name__ == "__main__" and parse_args().threads == "1":
    os.environ.update(ONE_THREAD_ENV)

import numpy as np  # noqa: E402

import tinytorch as tt  # noqa: E402

try:
    import torch
    import torch.nn.functional as F
except ImportError:                     # torch is optional: its column is left empty
    torch = F = None

from tinytorch.core import functional as ttF  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bare_engine import BareTensor  # noqa: E402
from tinytorch.core.losses import CrossEntropyLoss  # noqa: E402

DTYPE = np.float32
LR = 0.01
LN_EPS = 1e-5
GELU_C = math.sqrt(2.0 / math.pi)
LIBS = ("tinytorch", "compiled", "floor", "torch", "bare")   # "compiled": tinytorch, tt.compile
BLOCKS = 4            # blocks of samples per library and workload
SETTLE_S = 0.25        # idle seconds before each block (see measure)


# =============================================================================================
# Shared helpers for the tinytorch versions
# =============================================================================================

_CROSS_ENTROPY = CrossEntropyLoss()


def _cross_entropy(logits, targets):
    """Mean softmax cross-entropy of ``logits`` (N, C) against class indices ``targets``."""
    return _CROSS_ENTROPY(logits, targets)


def _tt_layer_norm(x, gain, bias):
    return ttF.layer_norm(x, x.shape[-1:], gain, bias, eps=LN_EPS)


def _tt_softmax(s):
    return ttF.softmax(s, dim=-1)


def _tt_gelu_tanh(u):
    return ttF.gelu(u, approximate="tanh")


def _tt_params(arrays):
    return {name: tt.Tensor(a, requires_grad=True) for name, a in arrays.items()}


def _tt_grads(params):
    return {name: p.grad.data for name, p in params.items()}


def _torch_params(arrays):
    return {name: torch.tensor(a, requires_grad=True) for name, a in arrays.items()}


def _torch_grads(params):
    return {name: p.grad.numpy() for name, p in params.items()}


def _bare_params(arrays):
    return {name: BareTensor(a, requires_grad=True) for name, a in arrays.items()}


def _bare_grads(params):
    return {name: p.grad for name, p in params.items()}


def _bare_constants(*numbers):
    """The numbers as 0-d float32 arrays: what tinytorch's number cache hands NumPy."""
    return [np.array(n, DTYPE) for n in numbers]


def _init(rng, fan_in, *shape, scale=1.0):
    return (rng.standard_normal(shape) * scale / math.sqrt(fan_in)).astype(DTYPE)


def tinytorch_step(make, data, compiled=False):
    """A workload's tinytorch step as the harness runs it, eager or compiled: ``(step, result)``.

    ``make(data)`` returns the workload's step function, which returns its loss, and the
    tensors whose gradients are checked, ``{name: Tensor}``. Compiled, the step goes through
    ``tt.compile`` and is called once here: that first call records (it runs eagerly), and its
    time is the compile time. The tensors are then put back to their starting values, so that
    the next call, the first replay, computes the same step as the other libraries' first:
    that call is the one the gradient check sees (``step.compiled.replays`` counts them). A
    recording that falls back to eager keeps the warning in ``step.fallback``.
    """
    step, params = make(data)
    fallback = None
    if compiled:
        starting_values = [p.data.copy() for p in params.values()]
        step = tt.compile(step)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            step()
        fallback = next((str(w.message) for w in caught if "tinytorch.compile" in str(w.message)),
                        None)
        for p, values in zip(params.values(), starting_values):
            np.copyto(p.data, values)
    last = {}

    def run():
        last["loss"] = step()

    run.compiled = step if compiled else None
    run.fallback = fallback
    return run, lambda: (last["loss"].item(), _tt_grads(params))


# Each workload below has ``wN_data(rng)`` making the shared NumPy inputs, and one function per
# library taking that data. The floor's, torch's and the bare engine's return ``(step,
# result)``: ``step()`` runs one forward and backward pass (plus the update, for W1 and W7);
# ``result()`` gives ``(loss, {name: grad array})`` for the last step. tinytorch's returns
# ``(step, {name: Tensor})`` with a ``step()`` that returns its loss, so that the same
# function runs eagerly and compiled (``tinytorch_step``).

# =============================================================================================
# W1: MLP training step, 784-512-256-10, ReLU, softmax cross-entropy, SGD
# =============================================================================================

W1_SIZES = (784, 512, 256, 10)
W1_BATCH = 128


def w1_data(rng):
    params = {}
    for i, (n_in, n_out) in enumerate(zip(W1_SIZES, W1_SIZES[1:]), start=1):
        params[f"W{i}"] = _init(rng, n_in, n_in, n_out, scale=math.sqrt(2.0))
        params[f"b{i}"] = (0.1 * rng.standard_normal(n_out)).astype(DTYPE)
    x = rng.standard_normal((W1_BATCH, W1_SIZES[0])).astype(DTYPE)
    targets = rng.integers(0, W1_SIZES[-1], W1_BATCH)
    return {"params": params, "x": x, "targets": targets}


def w1_tinytorch(d):
    params = _tt_params(d["params"])
    W1, b1, W2, b2, W3, b3 = params.values()
    x, targets = tt.Tensor(d["x"]), tt.Tensor(d["targets"], dtype=np.int64)
    optimizer = tt.SGD(list(params.values()), lr=LR)

    def step():
        optimizer.zero_grad()
        h = (x @ W1 + b1).relu()
        h = (h @ W2 + b2).relu()
        loss = _cross_entropy(h @ W3 + b3, targets)
        loss.backward()
        optimizer.step()
        return loss

    return step, params


def w1_floor(d):
    params = {name: a.copy() for name, a in d["params"].items()}
    x, targets = d["x"], d["targets"]
    rows = np.arange(len(targets))
    last = {}

    def step():
        W1, b1, W2, b2, W3, b3 = params.values()
        h1 = x @ W1 + b1
        a1 = np.maximum(h1, 0)
        h2 = a1 @ W2 + b2
        a2 = np.maximum(h2, 0)
        logits = a2 @ W3 + b3
        shifted = logits - logits.max(axis=1, keepdims=True)
        e = np.exp(shifted)
        total = e.sum(axis=1, keepdims=True)
        loss = np.log(total).mean() - shifted[rows, targets].mean()
        # backward: d loss / d logits = (softmax - onehot) / N
        dlogits = e / total
        dlogits[rows, targets] -= 1
        dlogits /= len(targets)
        grads = {"W3": a2.T @ dlogits, "b3": dlogits.sum(axis=0)}
        dh2 = (dlogits @ W3.T) * (h2 > 0)
        grads["W2"], grads["b2"] = a1.T @ dh2, dh2.sum(axis=0)
        dh1 = (dh2 @ W2.T) * (h1 > 0)
        grads["W1"], grads["b1"] = x.T @ dh1, dh1.sum(axis=0)
        for name, p in params.items():
            p -= LR * grads[name]
        last["loss"], last["grads"] = loss, grads

    return step, lambda: (float(last["loss"]), last["grads"])


def w1_torch(d):
    params = _torch_params(d["params"])
    W1, b1, W2, b2, W3, b3 = params.values()
    x, targets = torch.tensor(d["x"]), torch.tensor(d["targets"])
    last = {}

    def step():
        for p in params.values():
            p.grad = None
        h = torch.relu(x @ W1 + b1)
        h = torch.relu(h @ W2 + b2)
        loss = F.cross_entropy(h @ W3 + b3, targets)
        loss.backward()
        with torch.no_grad():
            for p in params.values():
                p.add_(p.grad, alpha=-LR)
        last["loss"] = loss

    return step, lambda: (last["loss"].item(), _torch_grads(params))


# =============================================================================================
# W2: small-op overhead, 1000 elementwise ops on 16 elements
# =============================================================================================

W2_PATTERNS = 250                        # x (add, mul, sub, tanh) = 1000 ops


def w2_data(rng):
    return {"x": rng.standard_normal(16).astype(DTYPE)}


def w2_tinytorch(d):
    x = tt.Tensor(d["x"], requires_grad=True)

    def step():
        x.grad = None
        y = x
        for _ in range(W2_PATTERNS):
            y = y + 1.5
            y = y * 0.9
            y = y - 0.1
            y = y.tanh()
        loss = y.sum()
        loss.backward()
        return loss

    return step, {"x": x}


def w2_floor(d):
    x = d["x"]
    last = {}

    def step():
        y, tanhs = x, []
        for _ in range(W2_PATTERNS):
            y = y + 1.5
            y = y * 0.9
            y = y - 0.1
            y = np.tanh(y)
            tanhs.append(y)
        loss = y.sum()
        grad = np.ones_like(x)
        for t in reversed(tanhs):        # tanh' = 1 - tanh^2; the mul scales by 0.9
            grad = grad * (1 - t * t)
            grad = grad * 0.9
        last["loss"], last["grad"] = loss, grad

    return step, lambda: (float(last["loss"]), {"x": last["grad"]})


def w2_torch(d):
    x = torch.tensor(d["x"], requires_grad=True)
    last = {}

    def step():
        x.grad = None
        y = x
        for _ in range(W2_PATTERNS):
            y = y + 1.5
            y = y * 0.9
            y = y - 0.1
            y = y.tanh()
        loss = y.sum()
        loss.backward()
        last["loss"] = loss

    return step, lambda: (last["loss"].item(), {"x": x.grad.numpy()})


def w2_bare(d):
    x = BareTensor(d["x"], requires_grad=True)
    c15, c09, c01 = _bare_constants(1.5, 0.9, 0.1)
    last = {}

    def step():
        x.grad = None
        y = x
        for _ in range(W2_PATTERNS):
            y = y + c15
            y = y * c09
            y = y - c01
            y = y.tanh()
        loss = y.sum()
        loss.backward()
        last["loss"] = loss

    return step, lambda: (float(last["loss"].data), {"x": x.grad})


# =============================================================================================
# W3: deep chain, y = y * 1.0001 + 0.1 repeated 20,000 times on one element
# =============================================================================================

W3_STEPS = 20_000                        # 2 ops each


def w3_data(rng):
    return {"x": np.array([0.5], dtype=DTYPE)}


def w3_tinytorch(d):
    x = tt.Tensor(d["x"], requires_grad=True)

    def step():
        x.grad = None
        y = x
        for _ in range(W3_STEPS):
            y = y * 1.0001 + 0.1
        loss = y.sum()
        loss.backward()
        return loss

    return step, {"x": x}


def w3_floor(d):
    x = d["x"]
    last = {}

    def step():
        y = x
        for _ in range(W3_STEPS):
            y = y * 1.0001 + 0.1
        loss = y.sum()
        grad = np.ones_like(x)
        for _ in range(W3_STEPS):
            grad = grad * 1.0001
        last["loss"], last["grad"] = loss, grad

    return step, lambda: (float(last["loss"]), {"x": last["grad"]})


def w3_torch(d):
    x = torch.tensor(d["x"], requires_grad=True)
    last = {}

    def step():
        x.grad = None
        y = x
        for _ in range(W3_STEPS):
            y = y * 1.0001 + 0.1
        loss = y.sum()
        loss.backward()
        last["loss"] = loss

    return step, lambda: (last["loss"].item(), {"x": x.grad.numpy()})


def w3_bare(d):
    x = BareTensor(d["x"], requires_grad=True)
    c10001, c01 = _bare_constants(1.0001, 0.1)
    last = {}

    def step():
        x.grad = None
        y = x
        for _ in range(W3_STEPS):
            y = y * c10001 + c01
        loss = y.sum()
        loss.backward()
        last["loss"] = loss

    return step, lambda: (float(last["loss"].data), {"x": x.grad})


# =============================================================================================
# W4: diamond, y = y + y 30 times (every node is used twice); d y / d x = 2**30
# =============================================================================================

W4_DOUBLINGS = 30


def w4_data(rng):
    return {"x": np.array([1.0], dtype=DTYPE)}


def w4_tinytorch(d):
    x = tt.Tensor(d["x"], requires_grad=True)

    def step():
        x.grad = None
        y = x
        for _ in range(W4_DOUBLINGS):
            y = y + y
        loss = y.sum()
        loss.backward()
        return loss

    return step, {"x": x}


def w4_floor(d):
    x = d["x"]
    last = {}

    def step():
        y = x
        for _ in range(W4_DOUBLINGS):
            y = y + y
        loss = y.sum()
        grad = np.ones_like(x)
        for _ in range(W4_DOUBLINGS):    # both uses of y send their gradient back
            grad = grad + grad
        last["loss"], last["grad"] = loss, grad

    return step, lambda: (float(last["loss"]), {"x": last["grad"]})


def w4_torch(d):
    x = torch.tensor(d["x"], requires_grad=True)
    last = {}

    def step():
        x.grad = None
        y = x
        for _ in range(W4_DOUBLINGS):
            y = y + y
        loss = y.sum()
        loss.backward()
        last["loss"] = loss

    return step, lambda: (last["loss"].item(), {"x": x.grad.numpy()})


def w4_bare(d):
    x = BareTensor(d["x"], requires_grad=True)
    last = {}

    def step():
        x.grad = None
        y = x
        for _ in range(W4_DOUBLINGS):
            y = y + y
        loss = y.sum()
        loss.backward()
        last["loss"] = loss

    return step, lambda: (float(last["loss"].data), {"x": x.grad})


def w4_extra_check(loss, grads):
    grad = grads["x"]
    if not np.all(grad == 2.0 ** W4_DOUBLINGS):
        return f"tinytorch's gradient is {grad.tolist()}, expected 2**{W4_DOUBLINGS} = {2 ** W4_DOUBLINGS}"
    return None


# =============================================================================================
# W5: transformer-like block (pre-layer-norm), B=8, T=64, D=128, single head
#   h = LN1(x); attn = softmax(q k^T / sqrt(D)) v with q, k, v = h Wq, h Wk, h Wv
#   x1 = x + attn Wo;  x2 = x1 + gelu(LN2(x1) W1 + b1) W2 + b2;  loss = x2.sum()
# =============================================================================================

W5_B, W5_T, W5_D = 8, 64, 128


def w5_data(rng):
    D, H = W5_D, 4 * W5_D
    params = {name: _init(rng, D, D, D) for name in ("Wq", "Wk", "Wv", "Wo")}
    for i in (1, 2):
        params[f"ln{i}_gain"] = (1 + 0.1 * rng.standard_normal(D)).astype(DTYPE)
        params[f"ln{i}_bias"] = (0.1 * rng.standard_normal(D)).astype(DTYPE)
    params["W1"], params["b1"] = _init(rng, D, D, H), (0.1 * rng.standard_normal(H)).astype(DTYPE)
    params["W2"], params["b2"] = _init(rng, H, H, D), (0.1 * rng.standard_normal(D)).astype(DTYPE)
    params["x"] = rng.standard_normal((W5_B, W5_T, D)).astype(DTYPE)   # the input gets a grad too
    return {"params": params}


def w5_tinytorch(d):
    params = _tt_params(d["params"])
    p = params
    scale = 1.0 / math.sqrt(W5_D)

    def step():
        for t in params.values():
            t.grad = None
        x = p["x"]
        h = _tt_layer_norm(x, p["ln1_gain"], p["ln1_bias"])
        q, k, v = h @ p["Wq"], h @ p["Wk"], h @ p["Wv"]
        attn = _tt_softmax((q @ k.transpose(-2, -1)) * scale) @ v
        x1 = x + attn @ p["Wo"]
        h2 = _tt_layer_norm(x1, p["ln2_gain"], p["ln2_bias"])
        x2 = x1 + _tt_gelu_tanh(h2 @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"]
        loss = x2.sum()
        loss.backward()
        return loss

    return step, params


def _ln_forward(x, gain, bias):
    mean = x.mean(axis=-1, keepdims=True)
    centered = x - mean
    rstd = 1.0 / np.sqrt((centered * centered).mean(axis=-1, keepdims=True) + LN_EPS)
    xhat = centered * rstd
    return xhat * gain + bias, (xhat, rstd, gain)


def _ln_backward(dy, cache):
    xhat, rstd, gain = cache
    dxhat = dy * gain
    dx = rstd * (dxhat - dxhat.mean(axis=-1, keepdims=True)
                 - xhat * (dxhat * xhat).mean(axis=-1, keepdims=True))
    return dx, (dy * xhat).sum(axis=(0, 1)), dy.sum(axis=(0, 1))


def _gelu_forward(u):
    t = np.tanh(GELU_C * (u + 0.044715 * (u * u * u)))   # NumPy's u ** 3 is ~500x slower
    return 0.5 * u * (1 + t), (u, t)


def _gelu_backward(dy, cache):
    u, t = cache
    return dy * (0.5 * (1 + t) + 0.5 * u * (1 - t * t) * GELU_C * (1 + 3 * 0.044715 * u * u))


def _softmax_forward(s):
    e = np.exp(s - s.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _softmax_backward(dp, p):
    return p * (dp - (dp * p).sum(axis=-1, keepdims=True))


def w5_floor(d):
    p = {name: a.copy() for name, a in d["params"].items()}
    B, T, D = W5_B, W5_T, W5_D
    scale = 1.0 / math.sqrt(D)
    last = {}

    def step():
        x = p["x"]
        # forward; (B, T, D) activations are flattened to (B*T, D) for the weight matmuls
        h, ln1 = _ln_forward(x, p["ln1_gain"], p["ln1_bias"])
        hf = h.reshape(B * T, D)
        q, k, v = ((hf @ p[w]).reshape(B, T, D) for w in ("Wq", "Wk", "Wv"))
        probs = _softmax_forward((q @ k.transpose(0, 2, 1)) * scale)
        attn = (probs @ v).reshape(B * T, D)
        x1 = x + (attn @ p["Wo"]).reshape(B, T, D)
        h2, ln2 = _ln_forward(x1, p["ln2_gain"], p["ln2_bias"])
        h2f = h2.reshape(B * T, D)
        g, gelu = _gelu_forward(h2f @ p["W1"] + p["b1"])
        x2 = x1 + (g @ p["W2"] + p["b2"]).reshape(B, T, D)
        loss = x2.sum()
        # backward
        grads = {}
        dm = np.ones((B * T, D), dtype=DTYPE)               # d loss / d x2, flattened
        grads["W2"], grads["b2"] = g.T @ dm, dm.sum(axis=0)
        du = _gelu_backward(dm @ p["W2"].T, gelu)
        grads["W1"], grads["b1"] = h2f.T @ du, du.sum(axis=0)
        dx1, grads["ln2_gain"], grads["ln2_bias"] = _ln_backward((du @ p["W1"].T).reshape(B, T, D), ln2)
        dx1 += 1.0                                          # the residual x2 = x1 + ...
        do = dx1.reshape(B * T, D)
        grads["Wo"] = attn.T @ do
        dattn = (do @ p["Wo"].T).reshape(B, T, D)
        dv = probs.transpose(0, 2, 1) @ dattn
        ds = _softmax_backward(dattn @ v.transpose(0, 2, 1), probs) * scale
        dq, dk = ds @ k, ds.transpose(0, 2, 1) @ q
        dh = np.zeros((B * T, D), dtype=DTYPE)
        for name, dz in (("Wq", dq), ("Wk", dk), ("Wv", dv)):
            dz = dz.reshape(B * T, D)
            grads[name] = hf.T @ dz
            dh += dz @ p[name].T
        dx, grads["ln1_gain"], grads["ln1_bias"] = _ln_backward(dh.reshape(B, T, D), ln1)
        grads["x"] = dx + dx1                               # the residual x1 = x + ...
        last["loss"], last["grads"] = loss, grads

    return step, lambda: (float(last["loss"]), last["grads"])


def w5_torch(d):
    params = _torch_params(d["params"])
    p = params
    scale = 1.0 / math.sqrt(W5_D)
    last = {}

    def step():
        for t in params.values():
            t.grad = None
        x = p["x"]
        h = F.layer_norm(x, (W5_D,), p["ln1_gain"], p["ln1_bias"], LN_EPS)
        q, k, v = h @ p["Wq"], h @ p["Wk"], h @ p["Wv"]
        attn = torch.softmax((q @ k.transpose(-2, -1)) * scale, dim=-1) @ v
        x1 = x + attn @ p["Wo"]
        h2 = F.layer_norm(x1, (W5_D,), p["ln2_gain"], p["ln2_bias"], LN_EPS)
        x2 = x1 + F.gelu(h2 @ p["W1"] + p["b1"], approximate="tanh") @ p["W2"] + p["b2"]
        loss = x2.sum()
        loss.backward()
        last["loss"] = loss

    return step, lambda: (last["loss"].item(), _torch_grads(params))


# =============================================================================================
# W6: tiny MLP, 2-16-16-1, tanh, batch 32, MSE
# =============================================================================================

def w6_data(rng):
    params = {"W1": _init(rng, 2, 2, 16), "b1": (0.1 * rng.standard_normal(16)).astype(DTYPE),
              "W2": _init(rng, 16, 16, 16), "b2": (0.1 * rng.standard_normal(16)).astype(DTYPE),
              "W3": _init(rng, 16, 16, 1), "b3": (0.1 * rng.standard_normal(1)).astype(DTYPE)}
    x = rng.standard_normal((32, 2)).astype(DTYPE)
    y = rng.standard_normal((32, 1)).astype(DTYPE)
    return {"params": params, "x": x, "y": y}


def w6_tinytorch(d):
    params = _tt_params(d["params"])
    W1, b1, W2, b2, W3, b3 = params.values()
    x, y = tt.Tensor(d["x"]), tt.Tensor(d["y"])

    def step():
        for p in params.values():
            p.grad = None
        h = (x @ W1 + b1).tanh()
        h = (h @ W2 + b2).tanh()
        loss = ttF.mse_loss(h @ W3 + b3, y)
        loss.backward()
        return loss

    return step, params


def w6_floor(d):
    params = d["params"]
    x, y = d["x"], d["y"]
    last = {}

    def step():
        W1, b1, W2, b2, W3, b3 = params.values()
        a1 = np.tanh(x @ W1 + b1)
        a2 = np.tanh(a1 @ W2 + b2)
        diff = a2 @ W3 + b3 - y
        loss = (diff * diff).mean()
        dpred = diff * (2.0 / diff.size)
        grads = {"W3": a2.T @ dpred, "b3": dpred.sum(axis=0)}
        dh2 = (dpred @ W3.T) * (1 - a2 * a2)
        grads["W2"], grads["b2"] = a1.T @ dh2, dh2.sum(axis=0)
        dh1 = (dh2 @ W2.T) * (1 - a1 * a1)
        grads["W1"], grads["b1"] = x.T @ dh1, dh1.sum(axis=0)
        last["loss"], last["grads"] = loss, grads

    return step, lambda: (float(last["loss"]), last["grads"])


def w6_torch(d):
    params = _torch_params(d["params"])
    W1, b1, W2, b2, W3, b3 = params.values()
    x, y = torch.tensor(d["x"]), torch.tensor(d["y"])
    last = {}

    def step():
        for p in params.values():
            p.grad = None
        h = torch.tanh(x @ W1 + b1)
        h = torch.tanh(h @ W2 + b2)
        loss = F.mse_loss(h @ W3 + b3, y)
        loss.backward()
        last["loss"] = loss

    return step, lambda: (last["loss"].item(), _torch_grads(params))


def w6_bare(d):
    params = _bare_params(d["params"])
    W1, b1, W2, b2, W3, b3 = params.values()
    x, y = BareTensor(d["x"]), d["y"]
    last = {}

    def step():
        for p in params.values():
            p.grad = None
        h = (x @ W1 + b1).tanh()
        h = (h @ W2 + b2).tanh()
        loss = (h @ W3 + b3).mse(y)
        loss.backward()
        last["loss"] = loss

    return step, lambda: (float(last["loss"].data), _bare_grads(params))


# =============================================================================================
# W8: GPT training step (forward, cross-entropy, backward), B=16, T=64, D=128, 4 layers,
#   4 heads, vocabulary 65: token + learned position embeddings, pre-LN blocks (causal
#   multi-head attention, tanh-GELU MLP of width 4D), final layer norm, lm_head without bias
# =============================================================================================

W8_B, W8_T, W8_D, W8_LAYERS, W8_HEADS, W8_VOCAB = 16, 64, 128, 4, 4, 65


def _w8_linear_names():
    """The Linear layers' weight names (stored (in, out) as tinytorch's Linear keeps them)."""
    names = []
    for i in range(W8_LAYERS):
        names += [f"blocks.{i}.attn.{n}_proj.weight" for n in ("q", "k", "v", "out")]
        names += [f"blocks.{i}.mlp.linear1.weight", f"blocks.{i}.mlp.linear2.weight"]
    return names + ["lm_head.weight"]


def w8_data(rng):
    """GPT-2-like weights (N(0, 0.02)); layer-norm gains and biases away from 1 and 0, so that
    every gradient is checked in earnest. Names are those of tinytorch's ``GPT.state_dict()``."""
    D, V, T = W8_D, W8_VOCAB, W8_T
    params = {"token_embedding.weight": (0.02 * rng.standard_normal((V, D))).astype(DTYPE),
              "position_embedding.weight": (0.02 * rng.standard_normal((T, D))).astype(DTYPE)}

    def layer_norm(name):
        params[f"{name}.weight"] = (1 + 0.1 * rng.standard_normal(D)).astype(DTYPE)
        params[f"{name}.bias"] = (0.1 * rng.standard_normal(D)).astype(DTYPE)

    def linear(name, n_in, n_out, bias=True):
        params[f"{name}.weight"] = (0.02 * rng.standard_normal((n_in, n_out))).astype(DTYPE)
        if bias:
            params[f"{name}.bias"] = (0.02 * rng.standard_normal(n_out)).astype(DTYPE)

    for i in range(W8_LAYERS):
        block = f"blocks.{i}"
        layer_norm(f"{block}.ln1")
        for n in ("q", "k", "v", "out"):
            linear(f"{block}.attn.{n}_proj", D, D)
        layer_norm(f"{block}.ln2")
        linear(f"{block}.mlp.linear1", D, 4 * D)
        linear(f"{block}.mlp.linear2", 4 * D, D)
    layer_norm("ln_f")
    linear("lm_head", D, V, bias=False)
    tokens = rng.integers(0, V, (W8_B, T))
    targets = rng.integers(0, V, W8_B * T)
    return {"params": params, "tokens": tokens, "targets": targets}


def w8_tinytorch(d):
    from tinytorch.core.transformer import GPT

    model = GPT(W8_VOCAB, W8_D, W8_LAYERS, W8_HEADS, max_seq_len=W8_T, dropout_prob=0.0)
    model.load_state_dict(d["params"])
    params = dict(model.named_parameters())
    tokens = tt.Tensor(d["tokens"], dtype=np.int64)
    targets = tt.Tensor(d["targets"], dtype=np.int64)

    def step():
        for p in params.values():
            p.grad = None
        logits = model(tokens)                                            # (B, T, V)
        loss = _cross_entropy(logits.reshape(W8_B * W8_T, W8_VOCAB), targets)
        loss.backward()
        return loss

    return step, params


def w8_floor(d):
    p = {name: a.copy() for name, a in d["params"].items()}
    tokens, targets = d["tokens"], d["targets"]
    B, T, D, H, V = W8_B, W8_T, W8_D, W8_HEADS, W8_VOCAB
    N, hd = B * T, W8_D // W8_HEADS
    scale = 1.0 / math.sqrt(hd)
    causal = np.triu(np.full((T, T), -np.inf, dtype=DTYPE), k=1)      # additive mask
    rows = np.arange(N)
    last = {}

    def heads(z):                                                     # (N, D) -> (B, H, T, hd)
        return z.reshape(B, T, H, hd).transpose(0, 2, 1, 3)

    def step():
        # forward; activations (B, T, D) are flattened to (N, D) for the weight matmuls
        x = p["token_embedding.weight"][tokens] + p["position_embedding.weight"][:T]
        saved = []
        for i in range(W8_LAYERS):
            w = {name[len(f"blocks.{i}."):]: a for name, a in p.items()
                 if name.startswith(f"blocks.{i}.")}
            h, ln1 = _ln_forward(x, w["ln1.weight"], w["ln1.bias"])
            hf = h.reshape(N, D)
            q, k, v = (heads(hf @ w[f"attn.{n}_proj.weight"] + w[f"attn.{n}_proj.bias"])
                       for n in "qkv")
            probs = _softmax_forward((q @ k.transpose(0, 1, 3, 2)) * scale + causal)
            a = (probs @ v).transpose(0, 2, 1, 3).reshape(N, D)
            x1 = x + (a @ w["attn.out_proj.weight"] + w["attn.out_proj.bias"]).reshape(B, T, D)
            h2, ln2 = _ln_forward(x1, w["ln2.weight"], w["ln2.bias"])
            h2f = h2.reshape(N, D)
            g, gelu = _gelu_forward(h2f @ w["mlp.linear1.weight"] + w["mlp.linear1.bias"])
            x = x1 + (g @ w["mlp.linear2.weight"] + w["mlp.linear2.bias"]).reshape(B, T, D)
            saved.append((w, hf, q, k, v, probs, a, ln1, h2f, ln2, g, gelu))
        hn, lnf = _ln_forward(x, p["ln_f.weight"], p["ln_f.bias"])
        hnf = hn.reshape(N, D)
        logits = hnf @ p["lm_head.weight"]
        shifted = logits - logits.max(axis=1, keepdims=True)
        e = np.exp(shifted)
        total = e.sum(axis=1, keepdims=True)
        loss = np.log(total).mean() - shifted[rows, targets].mean()
        # backward
        grads = {}
        dlogits = e / total
        dlogits[rows, targets] -= 1
        dlogits /= N
        grads["lm_head.weight"] = hnf.T @ dlogits
        dx, grads["ln_f.weight"], grads["ln_f.bias"] = _ln_backward(
            (dlogits @ p["lm_head.weight"].T).reshape(B, T, D), lnf)
        for i in reversed(range(W8_LAYERS)):
            w, hf, q, k, v, probs, a, ln1, h2f, ln2, g, gelu = saved[i]
            pre = f"blocks.{i}."
            dm = dx.reshape(N, D)                       # the residual x = x1 + mlp(...)
            grads[pre + "mlp.linear2.weight"], grads[pre + "mlp.linear2.bias"] = g.T @ dm, dm.sum(axis=0)
            du = _gelu_backward(dm @ w["mlp.linear2.weight"].T, gelu)
            grads[pre + "mlp.linear1.weight"], grads[pre + "mlp.linear1.bias"] = h2f.T @ du, du.sum(axis=0)
            dx1, grads[pre + "ln2.weight"], grads[pre + "ln2.bias"] = _ln_backward(
                (du @ w["mlp.linear1.weight"].T).reshape(B, T, D), ln2)
            dx1 += dx
            do = dx1.reshape(N, D)
            grads[pre + "attn.out_proj.weight"], grads[pre + "attn.out_proj.bias"] = a.T @ do, do.sum(axis=0)
            da = heads(do @ w["attn.out_proj.weight"].T)
            dv = probs.transpose(0, 1, 3, 2) @ da
            ds = _softmax_backward(da @ v.transpose(0, 1, 3, 2), probs) * scale
            dh = np.zeros((N, D), dtype=DTYPE)
            for n, dz in (("q", ds @ k), ("k", ds.transpose(0, 1, 3, 2) @ q), ("v", dv)):
                dz = dz.transpose(0, 2, 1, 3).reshape(N, D)
                grads[pre + f"attn.{n}_proj.weight"] = hf.T @ dz
                grads[pre + f"attn.{n}_proj.bias"] = dz.sum(axis=0)
                dh += dz @ w[f"attn.{n}_proj.weight"].T
            dxa, grads[pre + "ln1.weight"], grads[pre + "ln1.bias"] = _ln_backward(dh.reshape(B, T, D), ln1)
            dx = dxa + dx1                              # the residual x1 = x + attn(...)
        grads["position_embedding.weight"] = dx.sum(axis=0)
        flat = (tokens.reshape(-1, 1) * D + np.arange(D)).reshape(-1)      # scatter-add rows
        embedding = np.zeros(V * D, dtype=DTYPE)
        np.add.at(embedding, flat, dx.reshape(-1))
        grads["token_embedding.weight"] = embedding.reshape(V, D)
        last["loss"], last["grads"] = loss, grads

    return step, lambda: (float(last["loss"]), last["grads"])


def w8_torch(d):
    # As a PyTorch user writes it: nn.Linear's layout (out, in) with F.linear, the fused
    # F.scaled_dot_product_attention, F.layer_norm, F.gelu, F.embedding, F.cross_entropy.
    linear_names = set(_w8_linear_names())
    params = {name: torch.tensor(a.T.copy() if name in linear_names else a, requires_grad=True)
              for name, a in d["params"].items()}
    p = params
    tokens, targets = torch.tensor(d["tokens"]), torch.tensor(d["targets"])
    B, T, D, H = W8_B, W8_T, W8_D, W8_HEADS
    last = {}

    def heads(z):
        return z.view(B, T, H, D // H).transpose(1, 2)

    def step():
        for t in params.values():
            t.grad = None
        x = F.embedding(tokens, p["token_embedding.weight"]) + p["position_embedding.weight"][:T]
        for i in range(W8_LAYERS):
            w = f"blocks.{i}."
            h = F.layer_norm(x, (D,), p[w + "ln1.weight"], p[w + "ln1.bias"], LN_EPS)
            q, k, v = (heads(F.linear(h, p[w + f"attn.{n}_proj.weight"], p[w + f"attn.{n}_proj.bias"]))
                       for n in "qkv")
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, D)
            x = x + F.linear(a, p[w + "attn.out_proj.weight"], p[w + "attn.out_proj.bias"])
            h = F.layer_norm(x, (D,), p[w + "ln2.weight"], p[w + "ln2.bias"], LN_EPS)
            h = F.gelu(F.linear(h, p[w + "mlp.linear1.weight"], p[w + "mlp.linear1.bias"]),
                       approximate="tanh")
            x = x + F.linear(h, p[w + "mlp.linear2.weight"], p[w + "mlp.linear2.bias"])
        h = F.layer_norm(x, (D,), p["ln_f.weight"], p["ln_f.bias"], LN_EPS)
        logits = F.linear(h, p["lm_head.weight"])
        loss = F.cross_entropy(logits.reshape(B * T, W8_VOCAB), targets)
        loss.backward()
        last["loss"] = loss

    def result():
        grads = _torch_grads(params)
        return last["loss"].item(), {name: (g.T.copy() if name in linear_names else g)
                                     for name, g in grads.items()}

    return step, result


# =============================================================================================
# The workload table: description, ops counted for "per op", targets (ours / torch, ours / floor;
# compiled / floor, or compiled / the lower of floor and eager: issue 17)
# =============================================================================================

WORKLOADS = {
    "W1": dict(title="MLP train step 784-512-256-10, batch 128", data=w1_data,
               fns=(w1_tinytorch, w1_floor, w1_torch, None), n_ops=None, target_torch=0.85, target_floor=1.10,
               target_compiled_best=1.05),
    "W2": dict(title="1000 small elementwise ops (16 elems)", data=w2_data,
               fns=(w2_tinytorch, w2_floor, w2_torch, w2_bare), n_ops=4 * W2_PATTERNS, target_torch=0.35,
               target_compiled_floor=1.3),
    "W3": dict(title="deep chain y*1.0001+0.1 x20000 (1 elem)", data=w3_data,
               fns=(w3_tinytorch, w3_floor, w3_torch, w3_bare), n_ops=2 * W3_STEPS, target_torch=0.7,
               target_compiled_floor=1.3),
    "W4": dict(title="diamond y=y+y x30", data=w4_data,
               fns=(w4_tinytorch, w4_floor, w4_torch, w4_bare), n_ops=W4_DOUBLINGS, target_torch=0.5,
               target_compiled_floor=1.3, extra_check=w4_extra_check),
    "W5": dict(title="transformer block B8 T64 D128", data=w5_data,
               fns=(w5_tinytorch, w5_floor, w5_torch, None), n_ops=None, target_torch=1.0,
               target_compiled_best=1.05),
    "W6": dict(title="tiny MLP 2-16-16-1, batch 32, MSE", data=w6_data,
               fns=(w6_tinytorch, w6_floor, w6_torch, w6_bare), n_ops=None, target_torch=0.35,
               target_compiled_floor=1.3),
    "W8": dict(title="GPT train step B16 T64 D128, 4 layers, 4 heads, vocab 65", data=w8_data,
               fns=(w8_tinytorch, w8_floor, w8_torch, None), n_ops=None, target_torch=1.2,
               target_compiled_best=1.05,
               exact_zero={f"blocks.{i}.attn.k_proj.bias" for i in range(W8_LAYERS)}),
}


# =============================================================================================
# W7: LeNet-5 training step, batch 64 of 1x28x28: conv 6@5x5 - ReLU - maxpool 2 - conv 16@5x5 -
#     ReLU - maxpool 2 - 256-120-84-10 (ReLU), softmax cross-entropy, SGD
# =============================================================================================

W7_BATCH = 64
W7_LAYERS = (("conv1", 1, 6), ("conv2", 6, 16))          # (name, in_channels, out_channels), 5x5
W7_SIZES = (16 * 4 * 4, 120, 84, 10)


def w7_data(rng):
    params = {}
    for name, c_in, c_out in W7_LAYERS:
        params[f"{name}_w"] = _init(rng, c_in * 25, c_out, c_in, 5, 5)
        params[f"{name}_b"] = (0.1 * rng.standard_normal(c_out)).astype(DTYPE)
    for i, (n_in, n_out) in enumerate(zip(W7_SIZES, W7_SIZES[1:]), start=1):
        params[f"fc{i}_w"] = _init(rng, n_in, n_in, n_out, scale=math.sqrt(2.0))
        params[f"fc{i}_b"] = (0.1 * rng.standard_normal(n_out)).astype(DTYPE)
    x = rng.standard_normal((W7_BATCH, 1, 28, 28)).astype(DTYPE)
    return {"params": params, "x": x, "targets": rng.integers(0, 10, W7_BATCH)}


def w7_tinytorch(d):
    params = _tt_params(d["params"])
    p = params
    x, targets = tt.Tensor(d["x"]), tt.Tensor(d["targets"], dtype=np.int64)
    optimizer = tt.SGD(list(params.values()), lr=LR)

    def step():
        optimizer.zero_grad()
        h = ttF.max_pool2d(ttF.conv2d(x, p["conv1_w"], p["conv1_b"]).relu(), 2)
        h = ttF.max_pool2d(ttF.conv2d(h, p["conv2_w"], p["conv2_b"]).relu(), 2)
        h = h.reshape(W7_BATCH, -1)
        h = (h @ p["fc1_w"] + p["fc1_b"]).relu()
        h = (h @ p["fc2_w"] + p["fc2_b"]).relu()
        loss = _cross_entropy(h @ p["fc3_w"] + p["fc3_b"], targets)
        loss.backward()
        optimizer.step()
        return loss

    return step, params


# The floor keeps images as (C, H, W, N) arrays, batch innermost, as tinytorch's spatial ops
# store them: then every window slice is a run of contiguous numbers (see spatial_ops.py).

def _floor_im2col(a, k):
    """(C, H, W, N) -> columns (C*k*k, OH*OW*N) of every k x k window (stride 1, no padding)."""
    c, h, w, n = a.shape
    s_c, s_h, s_w, s_n = a.strides
    fields = np.lib.stride_tricks.as_strided(
        a, (c, k, k, h - k + 1, w - k + 1, n), (s_c, s_h, s_w, s_h, s_w, s_n))
    return fields.reshape(c * k * k, -1)


def _floor_col2im(cols, shape, k):
    """Add the columns back onto the (C, H, W, N) pixels they were read from."""
    c, h, w, n = shape
    oh, ow = h - k + 1, w - k + 1
    fields = cols.reshape(c, k, k, oh, ow, n)
    dx = np.zeros(shape, cols.dtype)
    for i in range(k):
        for j in range(k):
            dx[:, i:i + oh, j:j + ow] += fields[:, i, j]
    return dx


_FLOOR_POOL_OFFSETS = ((0, 0), (0, 1), (1, 0), (1, 1))


def _floor_pool(a):
    """2x2 max pooling of (C, H, W, N): the output and the four strided views."""
    views = [a[:, i::2, j::2] for i, j in _FLOOR_POOL_OFFSETS]
    out = np.maximum(views[0], views[1])
    np.maximum(out, views[2], out=out)
    np.maximum(out, views[3], out=out)
    return out, views


def _floor_pool_backward(dout, out, views, shape):
    """The gradient goes to the first maximum of each window (ties too, as PyTorch)."""
    dx = np.empty(shape, dout.dtype)
    taken = None
    for (i, j), view in zip(_FLOOR_POOL_OFFSETS, views):
        hit = view == out
        if taken is None:
            taken = hit.copy()
        else:
            hit &= ~taken
            taken |= hit
        np.multiply(dout, hit, out=dx[:, i::2, j::2])
    return dx


def w7_floor_dense(flat, p, targets):
    """The dense part of the W7 floor, 256-120-84-10 with ReLU and mean cross-entropy, forward
    and backward: returns the loss, the layers' gradients and the gradient for ``flat``."""
    rows = np.arange(len(targets))
    h1 = flat @ p["fc1_w"] + p["fc1_b"]
    r1 = np.maximum(h1, 0)
    h2 = r1 @ p["fc2_w"] + p["fc2_b"]
    r2 = np.maximum(h2, 0)
    logits = r2 @ p["fc3_w"] + p["fc3_b"]
    shifted = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    total = e.sum(axis=1, keepdims=True)
    loss = np.log(total).mean() - shifted[rows, targets].mean()
    dlogits = e / total
    dlogits[rows, targets] -= 1
    dlogits /= len(targets)
    grads = {"fc3_w": r2.T @ dlogits, "fc3_b": dlogits.sum(axis=0)}
    dh2 = (dlogits @ p["fc3_w"].T) * (h2 > 0)
    grads["fc2_w"], grads["fc2_b"] = r1.T @ dh2, dh2.sum(axis=0)
    dh1 = (dh2 @ p["fc2_w"].T) * (h1 > 0)
    grads["fc1_w"], grads["fc1_b"] = flat.T @ dh1, dh1.sum(axis=0)
    return loss, grads, dh1 @ p["fc1_w"].T


def w7_floor(d):
    params = {name: a.copy() for name, a in d["params"].items()}
    x, targets = d["x"], d["targets"]
    n = W7_BATCH
    last = {}

    def step():
        p = params
        w1, w2 = p["conv1_w"].reshape(6, -1), p["conv2_w"].reshape(16, -1)
        # forward, images as (C, H, W, N)
        cols1 = _floor_im2col(np.ascontiguousarray(x.transpose(1, 2, 3, 0)), 5)   # (25, 24*24*N)
        y1 = w1 @ cols1 + p["conv1_b"][:, None]
        a1 = np.maximum(y1, 0).reshape(6, 24, 24, n)
        p1, views1 = _floor_pool(a1)                                               # (6, 12, 12, N)
        cols2 = _floor_im2col(p1, 5)                                               # (150, 8*8*N)
        y2 = w2 @ cols2 + p["conv2_b"][:, None]
        a2 = np.maximum(y2, 0).reshape(16, 8, 8, n)
        p2, views2 = _floor_pool(a2)                                               # (16, 4, 4, N)
        flat = p2.reshape(-1, n).T                                                 # (N, 256)
        loss, grads, dflat = w7_floor_dense(flat, p, targets)
        # backward through the convolutional part
        dp2 = dflat.T.reshape(16, 4, 4, n)
        da2 = _floor_pool_backward(dp2, p2, views2, a2.shape)
        g2 = da2.reshape(16, -1) * (y2 > 0)
        grads["conv2_w"], grads["conv2_b"] = (g2 @ cols2.T).reshape(16, 6, 5, 5), g2.sum(axis=1)
        dp1 = _floor_col2im(w2.T @ g2, p1.shape, 5)
        da1 = _floor_pool_backward(dp1, p1, views1, a1.shape)
        g1 = da1.reshape(6, -1) * (y1 > 0)
        grads["conv1_w"], grads["conv1_b"] = (g1 @ cols1.T).reshape(6, 1, 5, 5), g1.sum(axis=1)
        for name, a in p.items():
            a -= LR * grads[name]
        last["loss"], last["grads"] = loss, grads

    return step, lambda: (float(last["loss"]), last["grads"])


def w7_torch(d):
    params = _torch_params(d["params"])
    p = params
    x, targets = torch.tensor(d["x"]), torch.tensor(d["targets"])
    last = {}

    def step():
        for t in params.values():
            t.grad = None
        h = F.max_pool2d(torch.relu(F.conv2d(x, p["conv1_w"], p["conv1_b"])), 2)
        h = F.max_pool2d(torch.relu(F.conv2d(h, p["conv2_w"], p["conv2_b"])), 2)
        h = h.reshape(W7_BATCH, -1)
        h = torch.relu(h @ p["fc1_w"] + p["fc1_b"])
        h = torch.relu(h @ p["fc2_w"] + p["fc2_b"])
        loss = F.cross_entropy(h @ p["fc3_w"] + p["fc3_b"], targets)
        loss.backward()
        with torch.no_grad():
            for t in params.values():
                t.add_(t.grad, alpha=-LR)
        last["loss"] = loss

    return step, lambda: (last["loss"].item(), _torch_grads(params))


WORKLOADS["W7"] = dict(title="LeNet-5 train step, batch 64 of 1x28x28", data=w7_data,
                       fns=(w7_tinytorch, w7_floor, w7_torch, None), n_ops=None,
                       target_torch=1.5, target_floor=1.15, target_compiled_best=1.05)
WORKLOAD_NAMES += ("W7",)

# Gradients must agree to this: max |a - b| <= GRAD_RTOL * max |b| for every gradient array.
GRAD_RTOL = 1e-3


# =============================================================================================
# Gradient check, timing, memory
# =============================================================================================

class CheckFailed(Exception):
    pass


def _relative_error(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-30))


def check_gradients(name, results, extra_check=None, exact_zero=(), ours="tinytorch",
                    against=None):
    """Compare ``ours``'s loss and gradients with each library's in ``against`` (default: every
    other one in ``results``); return the worst error against each.

    The gradients named in ``exact_zero`` are zero in exact arithmetic (e.g. W8's key biases:
    softmax ignores a constant added to a whole row of scores), so every library returns
    rounding noise there; their difference is measured against the workload's largest gradient.
    """
    ours_loss, mine = results[ours]
    worst = {}
    for lib in (against if against is not None else [lib for lib in results if lib != ours]):
        if lib not in results:
            continue
        loss, grads = results[lib]
        if set(mine) != set(grads):
            raise CheckFailed(f"{ours} has gradients for {sorted(mine)}, {lib} for {sorted(grads)}")
        if abs(ours_loss - loss) > GRAD_RTOL * max(1.0, abs(loss)):
            raise CheckFailed(f"loss differs: {ours} {ours_loss!r}, {lib} {loss!r}")
        errors = {}
        largest = max(float(np.max(np.abs(g))) for g in grads.values())
        for key, ref in grads.items():
            got = mine[key]
            if got is None or np.shape(got) != np.shape(ref):
                raise CheckFailed(f"gradient of {key}: {ours} gives shape {np.shape(got)}, "
                                  f"{lib} {np.shape(ref)}")
            if np.asarray(got).dtype != np.asarray(ref).dtype:
                raise CheckFailed(f"gradient of {key}: {ours} dtype {np.asarray(got).dtype}, "
                                  f"{lib} {np.asarray(ref).dtype}")
            if not np.all(np.isfinite(got)):
                raise CheckFailed(f"gradient of {key}: {ours}'s has non-finite values")
            errors[key] = (_relative_error(got, ref) if key not in exact_zero else
                           float(np.max(np.abs(np.asarray(got, np.float64) - ref))) / largest)
        key = max(errors, key=errors.get)
        if errors[key] > GRAD_RTOL:
            raise CheckFailed(f"gradient of {key} differs from {lib}'s: max |diff| / max |{lib}| = "
                              f"{errors[key]:.2e} > {GRAD_RTOL:.0e}")
        worst[lib] = errors[key]
    if extra_check is not None:
        message = extra_check(ours_loss, mine)
        if message:
            raise CheckFailed(f"{ours}: {message}")
    return worst


def library_steps(spec):
    """``{library: build}`` for one workload, ``build(data)`` giving ``(step, result)``."""
    make, floor, torch_fn, bare = spec["fns"]
    builds = {"tinytorch": lambda data: tinytorch_step(make, data),
              "compiled": lambda data: tinytorch_step(make, data, compiled=True),
              "floor": floor, "torch": torch_fn if torch is not None else None, "bare": bare}
    return {lib: build for lib, build in builds.items() if build is not None}


def measure(steps, repeats, budget_s, warmup):
    """Median seconds per call of each step function, and the number of samples per library.

    Each is warmed up, then the calls per sample are chosen so a sample lasts at least ~2 ms.
    The samples are taken in ``BLOCKS`` blocks per library, the libraries taking turns in the
    order of :func:`_balanced_order` (so a burst of load from elsewhere hits all alike). Before
    each block the process sleeps ``SETTLE_S`` and makes one untimed call: the worker threads
    of the library timed before (PyTorch's OpenMP, NumPy's OpenBLAS) spin for a while after
    their last call, and with two libraries' pools spinning on two cores, whichever runs
    next is slowed, by up to 3x here. ``repeats`` samples, or fewer (at least 3) when
    ``budget_s`` is given and would be exceeded.
    """
    inner, estimate = {}, {}
    for lib, step in steps.items():
        time.sleep(SETTLE_S)
        for _ in range(max(warmup - 1, 0)):
            step()
        start = time.perf_counter()
        step()
        once = max(time.perf_counter() - start, 1e-7)
        inner[lib] = max(1, math.ceil(0.002 / once))
        estimate[lib] = once * inner[lib]
    n_samples = repeats
    if budget_s is not None:
        n_samples = max(3, min(repeats, int(budget_s / sum(estimate.values()))))
    blocks = min(BLOCKS, n_samples)
    per_block = math.ceil(n_samples / blocks)
    samples = {lib: [] for lib in steps}
    faults = dict.fromkeys(steps, 0)
    for lib in _balanced_order(list(steps), blocks):
        step, n = steps[lib], inner[lib]
        time.sleep(SETTLE_S)
        step()
        faults_before = _minor_page_faults()
        for _ in range(per_block):
            start = time.perf_counter()
            for _ in range(n):
                step()
            samples[lib].append((time.perf_counter() - start) / n)
        faults[lib] += _minor_page_faults() - faults_before
    medians = {lib: statistics.median(s) for lib, s in samples.items()}
    faults_per_call = {lib: faults[lib] / (blocks * per_block * inner[lib]) for lib in steps}
    return medians, blocks * per_block, faults_per_call


def _minor_page_faults():
    """Minor page faults of this process so far (0 where ``resource`` is missing: Windows).

    Each is a page of memory the C allocator took from the OS and touched for the first time;
    a step that keeps taking fresh pages pays ~1 µs a page.
    """
    try:
        import resource
    except ImportError:
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _balanced_order(libs, rounds):
    """``rounds`` turns of each library, in which each library follows each other one equally
    often (exactly so when ``rounds`` is a multiple of 2 * len(libs)).

    Whatever the previous library leaves behind (warm or evicted caches, threads that have not
    yet gone idle) then falls on each library alike. Rotating one order is not enough (its
    cycle a, b, c, a, b, c... makes ``a`` always follow ``c``); rotations of the reversed
    order make up for it.
    """
    order = []
    for r in range(rounds):
        base = libs if (r // len(libs)) % 2 == 0 else libs[::-1]
        k = r % len(libs)
        order += base[k:] + base[:k]
    return order


def run_workload(name, spec, args):
    """Check and time one workload; returns a result row (with ``error`` set if it was aborted)."""
    row = {"workload": name, "title": spec["title"], "n_ops": spec["n_ops"],
           "target_torch": spec["target_torch"], "target_floor": spec.get("target_floor"),
           "target_compiled_floor": spec.get("target_compiled_floor"),
           "target_compiled_best": spec.get("target_compiled_best"),
           "times": {}, "error": None, "max_grad_err": {}, "compiled_grad_err": {}, "compile": None}
    data = spec["data"](np.random.default_rng(0))
    steps, results = {}, {}
    for lib, build in library_steps(spec).items():
        try:
            step, result = build(data)
            step()
            results[lib] = result()
        except Exception as error:
            row["error"] = f"{lib} raised {type(error).__name__}: {error}"
            print(f"  {name}: ABORTED, {row['error']}\n" + traceback.format_exc(), file=sys.stderr)
            return row
        steps[lib] = step
        if lib == "compiled":
            row["compile"] = {"record_s": step.compiled.record_seconds[0],
                              "replayed": step.compiled.replays == 1, "fallback": step.fallback}
    try:
        row["max_grad_err"] = check_gradients(name, results, spec.get("extra_check"),
                                              spec.get("exact_zero", ()))
        row["compiled_grad_err"] = check_gradients(name, results, spec.get("extra_check"),
                                                   spec.get("exact_zero", ()), ours="compiled",
                                                   against=("floor", "torch"))
    except CheckFailed as error:
        row["error"] = f"gradient check failed: {error}"
        print(f"  {name}: ABORTED, {row['error']}", file=sys.stderr)
        return row
    repeats = args.repeats or (6 if args.quick else 24)
    budget = None if args.repeats else (1.0 if args.quick else 6.0)
    try:
        row["times"], row["samples"], row["page_faults"] = measure(steps, repeats, budget, warmup=1 if args.quick else 2)
    except Exception as error:
        row["error"] = f"timing raised {type(error).__name__}: {error}"
        print(f"  {name}: ABORTED, {row['error']}\n" + traceback.format_exc(), file=sys.stderr)
    return row


def _rss_bytes():
    """Current resident set size, and the peak (VmHWM), from /proc/self/status."""
    values = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    values[key] = int(rest.split()[0]) * 1024
    except OSError:
        import resource
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        values = {"VmRSS": peak, "VmHWM": peak}
    return values["VmRSS"], values["VmHWM"]


def memory_check(steps=200, compiled=False):
    """RSS during ``steps`` consecutive tinytorch W1 training steps (eager, or replays of the
    compiled step): it must stay flat."""
    step, _ = tinytorch_step(w1_tinytorch, w1_data(np.random.default_rng(0)), compiled)
    rss = {}
    try:
        for i in range(1, steps + 1):
            step()
            if i in (10, steps):
                rss[i] = _rss_bytes()
    except Exception as error:
        return {"error": f"tinytorch raised {type(error).__name__}: {error}"}
    (rss10, _), (rss_end, peak) = rss[10], rss[steps]
    return {"steps": steps, "rss_10": rss10, "rss_end": rss_end, "peak": peak,
            "growth": rss_end / rss10 - 1, "flag": rss_end > 1.10 * rss10}


# =============================================================================================
# One pass (one thread setting), and the two-pass driver
# =============================================================================================

def environment():
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        cpu = platform.processor() or cpu
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        blas = f"{blas.get('name')} {blas.get('version', '')}".strip()
    except Exception:
        blas = "unknown"
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": cpu, "cores": os.cpu_count(), "usable_cores": usable,
            "python": platform.python_version(), "numpy": np.__version__, "blas": blas,
            "torch": torch.__version__ if torch is not None else None, "tinytorch": tt.__version__}


def _selected(args):
    if not args.only:
        return [*WORKLOAD_NAMES, "MEM"]
    names = [w.strip().upper() for w in args.only.split(",") if w.strip()]
    unknown = [w for w in names if w not in (*WORKLOAD_NAMES, "MEM")]
    if unknown:
        sys.exit(f"--only: unknown workload(s) {', '.join(unknown)}; choose from "
                 f"{', '.join(WORKLOAD_NAMES)}, MEM")
    return names


def run_pass(args, threads):
    """Run the selected workloads under the current thread setting; return a JSON-able dict."""
    if threads == "1" and torch is not None:
        torch.set_num_threads(1)
    selected = _selected(args)
    settings = {var: os.environ.get(var, "unset") for var in ONE_THREAD_ENV}
    if torch is not None:
        settings["torch.get_num_threads()"] = torch.get_num_threads()
    result = {"threads": threads, "settings": settings, "rows": [], "memory": None}
    start = _cpu_snapshot()
    for name in WORKLOAD_NAMES:
        if name in selected:
            print(f"[threads={threads}] {name} ...", file=sys.stderr, flush=True)
            result["rows"].append(run_workload(name, WORKLOADS[name], args))
    if "MEM" in selected and not args.skip_memory:
        print(f"[threads={threads}] memory check (200 W1 steps) ...", file=sys.stderr, flush=True)
        result["memory"] = memory_check()
        result["memory_compiled"] = memory_check(compiled=True)
    result["other_load"] = _other_processes_load(start, _cpu_snapshot())
    return result


def _cpu_snapshot():
    """(wall seconds, CPU seconds the whole machine was busy, CPU seconds this process used)."""
    import resource
    usage = resource.getrusage(resource.RUSAGE_SELF)
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        busy = (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # minus idle, iowait
    except (OSError, ValueError):
        busy = None
    return time.perf_counter(), busy, usage.ru_utime + usage.ru_stime


def _other_processes_load(start, end):
    """Average number of cores other processes kept busy between two snapshots (None if unknown)."""
    if start[1] is None or end[1] is None or end[0] <= start[0]:
        return None
    others = (end[1] - start[1]) - (end[2] - start[2])
    return max(others, 0.0) / (end[0] - start[0])


def run_one_thread_child(args):
    """Re-run this script with BLAS and torch limited to one thread; return its pass result."""
    cmd = [sys.executable, os.path.abspath(__file__), "--threads", "1", "--json", "--skip-memory"]
    if args.repeats:
        cmd += ["--repeats", str(args.repeats)]
    if args.quick:
        cmd.append("--quick")
    if args.only:
        cmd += ["--only", args.only]
    proc = subprocess.run(cmd, env={**os.environ, **ONE_THREAD_ENV}, stdout=subprocess.PIPE, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith(JSON_MARKER):
            return json.loads(line[len(JSON_MARKER):])
    print(f"warning: the 1-thread pass (child process) exited with code {proc.returncode} "
          f"without a result; see its output above", file=sys.stderr)
    return {"threads": "1", "settings": {}, "rows": [], "memory": None,
            "failed": f"the 1-thread pass failed (child exit code {proc.returncode}); no 1-thread rows"}


# =============================================================================================
# Report
# =============================================================================================

def _fmt_time(seconds):
    if seconds is None:
        return "n/a"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def _fmt_ratio(ours, other, target):
    if ours is None or other is None:
        return "n/a"
    ratio = ours / other
    if target is None:
        return f"{ratio:.2f}x"
    return f"{ratio:.2f}x (≤{target:.2f} {'pass' if ratio <= target else 'MISS'})"


def _fmt_per_op(row):
    if not row["n_ops"] or not row["times"]:
        return ""
    return " / ".join(f"{row['times'][lib] / row['n_ops'] * 1e6:.2f}" if row["times"].get(lib) else "-"
                      for lib in LIBS)


def _fmt_faults(row):
    faults = row.get("page_faults") or {}
    return " / ".join(f"{faults[lib]:.0f}" if lib in faults else "-" for lib in LIBS)


def _fmt_compiled(seconds, compile_info):
    if compile_info is not None and not compile_info["replayed"]:
        return f"{_fmt_time(seconds)} (ran eagerly)"
    return _fmt_time(seconds)


def _fmt_record(row):
    """The recording call's time, and how many eager steps it is worth."""
    info = row.get("compile")
    if not info:
        return "-"
    text = _fmt_time(info["record_s"])
    if row["times"].get("tinytorch"):
        text += f" ({info['record_s'] / row['times']['tinytorch']:.1f} eager steps)"
    if info["fallback"]:
        text += " " + info["fallback"].replace("|", "\\|")
    return text


def _fmt_errors(row):
    errors = ", ".join(f"{lib} {e:.1e}" for lib, e in row["max_grad_err"].items())
    if row.get("compiled_grad_err"):
        errors += "; compiled vs " + ", ".join(f"{lib} {e:.1e}"
                                               for lib, e in row["compiled_grad_err"].items())
    return errors


def render_report(env, passes):
    lines = ["# tinytorch benchmarks", ""]
    lines.append(f"- Machine: {env['cpu']}, {env['cores']} cores ({env['usable_cores']} usable)")
    lines.append(f"- Python {env['python']}, NumPy {env['numpy']} (BLAS: {env['blas']}), "
                 f"PyTorch {env['torch'] or 'not installed'}, tinytorch {env['tinytorch']}")
    for p in passes:
        if p.get("failed"):
            continue
        lines.append(f"- threads={p['threads']}: " + ", ".join(f"{k}={v}" for k, v in p["settings"].items()))
        other = p.get("other_load")
        if other is not None:
            lines.append(f"  - other processes kept {other:.2f} of {env['cores']} cores busy during this pass"
                         + ("  (timings are noisy, multi-thread ones especially)" if other > 0.25 else ""))
    lines.append("- tinytorch and PyTorch both use their fused ops: cross-entropy, layer_norm, "
                 "softmax, gelu(approximate='tanh'), mse")
    lines.append("- Times are medians per call (forward + backward, + SGD update in W1 and W7); "
                 "compiled = the same tinytorch step through tt.compile, timed on replays, its "
                 "gradients checked on a replay; compile = its first call, which records; "
                 "floor = hand-written NumPy forward/backward; bare = bare_engine.py, tinytorch's "
                 "graph walk without its features (small-tensor workloads only)")
    lines.append("")
    header = ["Workload", "Threads", "tinytorch", "tinytorch compiled", "NumPy floor", "PyTorch",
              "bare engine", "ours / torch", "ours / floor", "compiled / floor",
              "compiled / min(floor, eager)", "compiled / torch", "bare / torch",
              "compile (recording)", "µs per op (tt / compiled / floor / torch / bare)",
              "page faults per call (tt / compiled / floor / torch / bare)", "samples",
              "max grad err"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join("---" for _ in header) + "|")
    rows = sorted(((row, p["threads"]) for p in passes for row in p["rows"]),
                  key=lambda r: (r[0]["workload"], r[1] != "1"))
    for row, threads in rows:
        label = f"{row['workload']} {row['title']}"
        if row["error"]:
            error = " ".join(row["error"].split()).replace("|", "\\|")
            lines.append(f"| {label} | {threads} | ABORTED: {error} |" + " |" * (len(header) - 3))
            continue
        t = row["times"]
        ours, compiled = t.get("tinytorch"), t.get("compiled")
        best = min(t["floor"], ours) if t.get("floor") and ours else None
        lines.append("| " + " | ".join([
            label, threads, _fmt_time(ours), _fmt_compiled(compiled, row.get("compile")),
            _fmt_time(t.get("floor")), _fmt_time(t.get("torch")),
            _fmt_time(t.get("bare")) if "bare" in t else "-",
            _fmt_ratio(ours, t.get("torch"), row["target_torch"]),
            _fmt_ratio(ours, t.get("floor"), row["target_floor"]),
            _fmt_ratio(compiled, t.get("floor"), row.get("target_compiled_floor")),
            _fmt_ratio(compiled, best, row.get("target_compiled_best"))
            if row.get("target_compiled_best") else "-",
            _fmt_ratio(compiled, t.get("torch"), None),
            _fmt_ratio(t.get("bare"), t.get("torch"), None) if "bare" in t else "-",
            _fmt_record(row), _fmt_per_op(row), _fmt_faults(row), str(row.get("samples", "")),
            _fmt_errors(row)]) + " |")
    lines.append("")
    lines += [p["failed"] for p in passes if p.get("failed")]
    if env["torch"] is None:
        lines.append("Note: PyTorch is not installed, so the torch column and ratios are n/a.")
    for p in passes:
        for key, what in (("memory", "tinytorch"), ("memory_compiled", "compiled tinytorch")):
            mem = p.get(key)
            if not mem:
                continue
            if "error" in mem:
                lines.append(f"Memory (threads={p['threads']}, {what}): ABORTED, {mem['error']}")
                continue
            mib = 1024 * 1024
            lines.append(f"Memory (threads={p['threads']}, {mem['steps']} {what} W1 steps): RSS after "
                         f"step 10 {mem['rss_10'] / mib:.1f} MiB, after step {mem['steps']} "
                         f"{mem['rss_end'] / mib:.1f} MiB ({mem['growth'] * 100:+.1f}%), process peak "
                         f"{mem['peak'] / mib:.1f} MiB: "
                         + ("GREW by more than 10% (graph not freed?)" if mem["flag"] else "flat (pass)"))
    return "\n".join(lines) + "\n"


def main():
    args = parse_args()
    if args.threads == "both":
        # The default pass first: timed after sitting idle through the child's minutes-long
        # 1-thread pass, this process ran its first workload (W1) 1.5x slower, all libraries.
        default_pass = run_pass(args, "default")
        passes = [run_one_thread_child(args), default_pass]
    else:
        passes = [run_pass(args, args.threads)]
    if args.json:
        print(JSON_MARKER + json.dumps(passes[0]), flush=True)
        return
    report = render_report(environment(), passes)
    print(report)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(report)


if __name__ == "__main__":
    main()
