#!/usr/bin/env python
"""W7's LeNet-5 training step with convolution and pooling written as nested Python loops, the
way TinyTorch's module 09 writes them, for scale. Not part of ``run.py``: one call takes minutes.

    python benchmarks/tinytorch_loops.py              # one step, batch 64 (as W7)
    python benchmarks/tinytorch_loops.py --batch 8    # a smaller batch, for a quick look

TinyTorch's ``Conv2d.forward`` is seven nested loops (batch, output channel, output row,
output column, input channel, kernel row, kernel column) around one multiply-add of NumPy
scalars, and ``MaxPool2d.forward`` six. Its module-09 layers have no backward pass; here the
gradients are written in the same style (the same loops, the adjoint multiply-adds), so that a
whole training step can be timed. The linear layers and the loss are NumPy matrix code, as in
TinyTorch. The step's loss and gradients are compared with W7's NumPy floor afterwards.
"""

import argparse
import importlib.util
import os
import time

import numpy as np

_RUN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "run.py")


def conv2d_loops(x, weight, bias):
    """Valid cross-correlation, stride 1: seven nested loops (TinyTorch's Conv2d.forward)."""
    batch, in_channels, height, width = x.shape
    out_channels, _, k_h, k_w = weight.shape
    out_h, out_w = height - k_h + 1, width - k_w + 1
    out = np.zeros((batch, out_channels, out_h, out_w), dtype=x.dtype)
    for b in range(batch):
        for oc in range(out_channels):
            for i in range(out_h):
                for j in range(out_w):
                    total = 0.0
                    for ic in range(in_channels):
                        for ki in range(k_h):
                            for kj in range(k_w):
                                total += x[b, ic, i + ki, j + kj] * weight[oc, ic, ki, kj]
                    out[b, oc, i, j] = total + bias[oc]
    return out


def conv2d_loops_backward(x, weight, grad, need_x=True):
    """The same loops, sending each output gradient back to the input and weight entries."""
    batch, in_channels, _, _ = x.shape
    out_channels, _, k_h, k_w = weight.shape
    out_h, out_w = grad.shape[2:]
    grad_x = np.zeros_like(x)
    grad_w = np.zeros_like(weight)
    for b in range(batch):
        for oc in range(out_channels):
            for i in range(out_h):
                for j in range(out_w):
                    g = grad[b, oc, i, j]
                    for ic in range(in_channels):
                        for ki in range(k_h):
                            for kj in range(k_w):
                                grad_w[oc, ic, ki, kj] += g * x[b, ic, i + ki, j + kj]
                                if need_x:
                                    grad_x[b, ic, i + ki, j + kj] += g * weight[oc, ic, ki, kj]
    return grad_x, grad_w, grad.sum(axis=(0, 2, 3))


def max_pool2d_loops(x, k=2):
    """k x k max pooling, stride k: six nested loops (TinyTorch's MaxPool2d.forward), keeping
    where each maximum was (the first one) for the backward pass."""
    batch, channels, height, width = x.shape
    out = np.zeros((batch, channels, height // k, width // k), dtype=x.dtype)
    argmax = np.zeros(out.shape + (2,), dtype=np.int64)
    for b in range(batch):
        for c in range(channels):
            for i in range(height // k):
                for j in range(width // k):
                    best, where = -np.inf, (0, 0)
                    for ki in range(k):
                        for kj in range(k):
                            value = x[b, c, i * k + ki, j * k + kj]
                            if value > best:
                                best, where = value, (i * k + ki, j * k + kj)
                    out[b, c, i, j] = best
                    argmax[b, c, i, j] = where
    return out, argmax


def max_pool2d_loops_backward(grad, argmax, x_shape):
    grad_x = np.zeros(x_shape, dtype=grad.dtype)
    batch, channels, out_h, out_w = grad.shape
    for b in range(batch):
        for c in range(channels):
            for i in range(out_h):
                for j in range(out_w):
                    row, col = argmax[b, c, i, j]
                    grad_x[b, c, row, col] += grad[b, c, i, j]
    return grad_x


def lenet_step_loops(p, x, targets, lr, dense):
    """One W7 step: forward, backward and SGD update; returns the loss and the gradients.
    ``dense`` is the floor's dense part (NumPy matrices, as TinyTorch's Linear layers)."""
    n = len(targets)
    y1 = conv2d_loops(x, p["conv1_w"], p["conv1_b"])
    a1 = np.maximum(y1, 0)
    p1, arg1 = max_pool2d_loops(a1)
    y2 = conv2d_loops(p1, p["conv2_w"], p["conv2_b"])
    a2 = np.maximum(y2, 0)
    p2, arg2 = max_pool2d_loops(a2)
    loss, grads, dflat = dense(p2.reshape(n, -1), p, targets)
    dy2 = max_pool2d_loops_backward(dflat.reshape(p2.shape), arg2, a2.shape) * (y2 > 0)
    dp1, grads["conv2_w"], grads["conv2_b"] = conv2d_loops_backward(p1, p["conv2_w"], dy2)
    dy1 = max_pool2d_loops_backward(dp1, arg1, a1.shape) * (y1 > 0)
    _, grads["conv1_w"], grads["conv1_b"] = conv2d_loops_backward(x, p["conv1_w"], dy1, need_x=False)
    for name, array in p.items():
        array -= lr * grads[name]
    return float(loss), grads


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=64, help="images in the batch (W7: 64)")
    args = parser.parse_args()
    spec = importlib.util.spec_from_file_location("benchmarks_run", _RUN)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.W7_BATCH = args.batch
    data = bench.w7_data(np.random.default_rng(0))
    params = {name: a.copy() for name, a in data["params"].items()}
    start = time.perf_counter()
    loss, grads = lenet_step_loops(params, data["x"], data["targets"], bench.LR,
                                   bench.w7_floor_dense)
    seconds = time.perf_counter() - start
    floor_step, floor_result = bench.w7_floor(data)
    floor_step()
    floor_loss, floor_grads = floor_result()
    worst = max(float(np.max(np.abs(grads[k] - g)) / np.max(np.abs(g))) for k, g in floor_grads.items())
    start = time.perf_counter()
    floor_step()
    floor_seconds = time.perf_counter() - start
    print(f"LeNet-5 training step, batch {args.batch}, TinyTorch-style loops: {seconds:.1f} s "
          f"(the NumPy floor: {floor_seconds * 1e3:.1f} ms, {seconds / floor_seconds:,.0f}x); "
          f"loss {loss:.5f} vs floor {floor_loss:.5f}, gradients within {worst:.1e} of the floor's")


if __name__ == "__main__":
    main()
