"""Gradient hooks: functions backward calls with a tensor's gradient, which may replace it.

``t.register_hook(fn)`` calls ``fn(grad)`` each time backward computes ``t``'s gradient: for a
leaf once, with the sum over all its uses; for a non-leaf when its node runs, before the node's
rule. A hook that returns a Tensor (or array) of the same shape replaces the gradient.
``t.retain_grad()`` is such a hook on a non-leaf: it stores the gradient on ``t.grad``.

>>> handle = x.register_hook(lambda g: g * 2)    # doubles the gradient reaching x
>>> handle.remove()
"""

import weakref

import numpy as np

from tinytorch.core import tensor as _tensor

leaf_hooks = {}        # id(leaf Tensor) -> its hooks in registration order, until it is freed


class RemovableHandle:
    """What ``register_hook`` returns: ``handle.remove()`` unregisters the hook."""

    __slots__ = ("hooks", "hook")

    def __init__(self, hooks, hook):
        self.hooks, self.hook = hooks, hook

    def remove(self):
        if self.hook in self.hooks:
            self.hooks.remove(self.hook)


def register_hook(tensor, hook):
    """Call ``hook(grad)`` whenever the gradient of ``tensor`` is computed (see Tensor.register_hook)."""
    if not tensor.requires_grad:
        raise RuntimeError("cannot register a hook on a tensor that does not require grad")
    if tensor.grad_fn is None:
        if id(tensor) not in leaf_hooks:
            leaf_hooks[id(tensor)] = []
            weakref.finalize(tensor, leaf_hooks.pop, id(tensor), None)
        hooks = leaf_hooks[id(tensor)]
    else:
        if tensor.grad_fn.hooks is None:
            tensor.grad_fn.hooks = []
        hooks = tensor.grad_fn.hooks
    hooks.append(hook)
    return RemovableHandle(hooks, hook)


def retain_grad(tensor):
    """Keep ``.grad`` on the non-leaf ``tensor`` after backward (see Tensor.retain_grad)."""
    node = tensor.grad_fn
    if node is None:
        return
    if not tensor.requires_grad:
        raise RuntimeError("retain_grad() on a tensor that does not require grad")
    if node.hooks is None:
        node.hooks = []
    if not any(isinstance(h, _RetainGrad) for h in node.hooks):
        node.hooks.append(_RetainGrad(tensor))


class _RetainGrad:
    """Node hook that stores the incoming gradient on the (non-leaf) tensor that asked."""

    __slots__ = ("tensor_ref",)
    runs_last = True                 # after the user's hooks, which may replace the gradient

    def __init__(self, tensor):
        self.tensor_ref = weakref.ref(tensor)

    def __call__(self, grad):
        tensor = self.tensor_ref()
        if tensor is not None:
            grad = grad._data if isinstance(grad, _tensor.Tensor) else grad
            if tensor.grad is None:
                tensor.grad = _tensor.Tensor._make(np.array(grad, dtype=tensor.dtype))
            else:
                tensor.grad._data = tensor.grad._data + grad


def run_node_hooks(node, grad):
    """Run the hooks of the tensor that ``node`` produced; ``retain_grad`` ones run last."""
    for hook in node.hooks:
        if not getattr(hook, "runs_last", False):
            grad = call_hook(hook, grad)
    for hook in node.hooks:
        if getattr(hook, "runs_last", False):
            hook(grad)
    return grad


def run_leaf_hooks(leaf, grad):
    """Run the hooks of ``leaf`` on its total gradient; returns the (possibly replaced) total."""
    for hook in leaf_hooks.get(id(leaf), ()):
        grad = call_hook(hook, grad)
    return grad


def call_hook(hook, grad):
    """Call a user hook with the gradient as a Tensor; a returned value replaces the gradient."""
    Tensor = _tensor.Tensor
    result = hook(grad if isinstance(grad, Tensor) else Tensor._make(grad))
    if result is None:
        return grad
    if isinstance(grad, Tensor):
        replacement = result if isinstance(result, Tensor) else Tensor._make(np.asarray(result))
    else:
        replacement = np.asarray(result._data if isinstance(result, Tensor) else result)
    if replacement.shape != grad.shape:
        raise RuntimeError(f"hook {hook!r} returned a gradient of shape {replacement.shape}, "
                           f"expected {grad.shape}")
    return replacement


__all__ = ["RemovableHandle", "register_hook"]
