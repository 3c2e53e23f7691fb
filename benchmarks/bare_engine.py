"""A bare reverse-mode engine: about the least Python per op an eager NumPy autograd can run.

It records and walks the graph as tinytorch does (nodes numbered in creation order, the newest
waiting node first, each node's incoming gradients summed before it runs), with the rules as
closures and none of tinytorch's features: no grad mode, broadcasting or dtype rules, hooks,
in-place checks, higher-order gradients, views or error messages. It has just the ops that
W2, W3, W4 and W6 use.

``run.py`` times it next to tinytorch on those small-tensor workloads, where the time goes to
Python per op rather than to NumPy: its ratio to PyTorch is about the best an engine of this
design reaches in CPython, and the gap to tinytorch is what tinytorch's features cost. A
yardstick, not a library.

>>> w = BareTensor(np.array([2.0, 3.0]), requires_grad=True)
>>> (w * 3.0).tanh().sum().backward()
"""

import itertools
from heapq import heappop, heappush

import numpy as np

_sequence = itertools.count()


class BareTensor:
    """An array, and (for an op's result) its inputs and the rule that maps the output's
    gradient to theirs."""

    __slots__ = ("data", "grad", "requires_grad", "inputs", "rule", "seq")

    def __init__(self, data, requires_grad=False, inputs=(), rule=None):
        self.data = data
        self.grad = None
        self.requires_grad = requires_grad
        self.inputs = inputs
        self.rule = rule
        self.seq = next(_sequence)

    def __add__(self, other):
        if type(other) is not BareTensor:
            return BareTensor(self.data + other, True, (self,), _same)
        rule = _same_twice if other.data.shape == self.data.shape else _bias
        return BareTensor(self.data + other.data, True, (self, other), rule)

    def __sub__(self, number):
        return BareTensor(self.data - number, True, (self,), _same)

    def __mul__(self, number):
        return BareTensor(self.data * number, True, (self,), lambda g: (g * number,))

    def __matmul__(self, other):
        a, b, need_a = self.data, other.data, self.requires_grad
        return BareTensor(a @ b, True, (self, other),
                          lambda g: (g @ b.T if need_a else None, a.T @ g))

    def tanh(self):
        t = np.tanh(self.data)
        return BareTensor(t, True, (self,), lambda g: (g * (1 - t * t),))

    def sum(self):
        shape = self.data.shape
        return BareTensor(self.data.sum(), True, (self,), lambda g: (np.full(shape, g),))

    def mse(self, target):
        """mean((self - target)^2) for a constant target array."""
        diff = self.data - target
        return BareTensor((diff * diff).sum() / diff.size, True, (self,),
                          lambda g: (g * (2.0 / diff.size) * diff,))

    def backward(self):
        pending = {self: np.ones((), self.data.dtype)}
        waiting = [(-self.seq, self)]
        while waiting:
            node = heappop(waiting)[1]
            grad = pending.pop(node)
            if node.rule is None:                   # a leaf
                node.grad = grad if node.grad is None else node.grad + grad
                continue
            for x, g in zip(node.inputs, node.rule(grad)):
                if g is None or not x.requires_grad:
                    continue
                earlier = pending.get(x)
                if earlier is None:
                    pending[x] = g
                    heappush(waiting, (-x.seq, x))
                else:
                    pending[x] = earlier + g


def _same(g):
    return (g,)


def _same_twice(g):
    return (g, g)


def _bias(g):
    return (g, g.sum(axis=0))
