"""Gradient checking: backward's gradients against central finite differences in float64.

>>> x = Tensor(np.random.randn(3, 4), dtype=np.float64, requires_grad=True)
>>> gradcheck(lambda t: (t * t).sum(axis=1), [x])
True
"""

import numpy as np

from tinytorch.core.autograd import grad
from tinytorch.core.grad_mode import enable_grad, no_grad
from tinytorch.core.tensor import Tensor, concatenate


class GradcheckError(AssertionError):
    """Raised by :func:`gradcheck` when analytic and numerical gradients disagree."""


def _as_tuple(inputs):
    return tuple(inputs) if isinstance(inputs, (list, tuple)) else (inputs,)


def numerical_gradients(fn, inputs, eps=1e-6):
    """Central differences ``(f(x + eps) - f(x - eps)) / 2eps`` of sum(fn(*inputs)*w) per input.

    Returns, for each input, d/d(input) of ``sum(fn(*inputs) * weights)`` where ``weights`` is a
    fixed random tensor (so a non-scalar output is checked in every direction at once), together
    with those weights.
    """
    inputs = _as_tuple(inputs)
    with no_grad():
        out = fn(*inputs)
    weights = np.random.default_rng(0).standard_normal(np.shape(out._data))
    grads = []
    for x in inputs:
        if not isinstance(x, Tensor):
            grads.append(None)
            continue
        grad = np.zeros(x._data.shape, dtype=np.float64)
        flat, gflat = x._data.flat, grad.reshape(-1)        # .flat writes through any layout
        for i in range(x._data.size):
            original = flat[i]
            with no_grad():
                flat[i] = original + eps
                plus = float(np.sum(fn(*inputs)._data * weights))
                flat[i] = original - eps
                minus = float(np.sum(fn(*inputs)._data * weights))
            flat[i] = original
            gflat[i] = (plus - minus) / (2 * eps)
        grads.append(grad)
    return grads, weights


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3):
    """Check ``fn``'s backward against central finite differences in float64.

    ``inputs`` is a Tensor or a sequence of float64 Tensors; those with ``requires_grad`` are
    checked. Returns True, or raises :class:`GradcheckError` naming the input and the worst
    element.

    >>> x = Tensor(np.random.randn(3, 4), dtype=np.float64, requires_grad=True)
    >>> gradcheck(lambda t: (t * t).sum(axis=1), [x])
    True
    """
    inputs = _as_tuple(inputs)
    checked = [x for x in inputs if isinstance(x, Tensor) and x.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input Tensor has requires_grad=True")
    for i, x in enumerate(checked):
        if x.dtype != np.float64:
            raise ValueError(f"gradcheck: input {i} is {x.dtype}; finite differences need "
                             f"float64 inputs (Tensor(..., dtype=np.float64))")
    numeric, weights = numerical_gradients(fn, inputs, eps)
    numeric = [g for x, g in zip(inputs, numeric) if isinstance(x, Tensor) and x.requires_grad]
    saved = [x.grad for x in checked]
    for x in checked:
        x.grad = None
    try:
        out = fn(*inputs)
        if out.requires_grad:                # else fn ignores its inputs: its gradient is zero
            out.backward(weights.astype(out.dtype))
        analytic = [np.zeros(x.shape) if x.grad is None else x.grad._data for x in checked]
    finally:
        for x, g in zip(checked, saved):
            x.grad = g
    for i, (a, n) in enumerate(zip(analytic, numeric)):
        if a.shape != n.shape:
            raise GradcheckError(f"gradcheck: input {i}: gradient shape {a.shape} != {n.shape}")
        if not np.allclose(a, n, atol=atol, rtol=rtol):
            worst = np.unravel_index(np.argmax(np.abs(a - n)), a.shape) if a.ndim else ()
            raise GradcheckError(
                f"gradcheck: input {i}: analytic and numerical gradients differ; worst at "
                f"index {worst}: analytic {a[worst]!r} vs numerical {n[worst]!r}\n"
                f"analytic:\n{a}\nnumerical:\n{n}")
    return True


def gradgradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3):
    """Check second derivatives: :func:`gradcheck` of the first derivatives of ``fn``.

    The first derivatives (for fixed random output weights) are computed with
    ``create_graph=True``, so their own gradient comes from the rules running on Tensors.

    >>> gradgradcheck(lambda t: (t ** 3).sum(), [Tensor([0.5, 2.0], dtype=np.float64, requires_grad=True)])
    True
    """
    inputs = _as_tuple(inputs)
    with no_grad():
        out = fn(*inputs)
    weights = Tensor._make(np.random.default_rng(1).standard_normal(np.shape(out._data)))

    def first_derivatives(*xs):
        with enable_grad():
            wrt = [x for x in xs if isinstance(x, Tensor) and x.requires_grad]
            grads = grad(fn(*xs), wrt, grad_outputs=weights.astype(out.dtype),
                         create_graph=True, allow_unused=True)
            flat = [(g if g is not None else Tensor._make(np.zeros(x.shape, x.dtype))).reshape(-1)
                    for g, x in zip(grads, wrt)]
            return concatenate(flat)

    return gradcheck(first_derivatives, inputs, eps, atol, rtol)


__all__ = ["gradcheck", "gradgradcheck", "numerical_gradients", "GradcheckError"]
