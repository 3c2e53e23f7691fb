"""Optimizers: turn each parameter's ``.grad`` into an update of its values.

>>> import tinytorch as tt
>>> from tinytorch.core.optimizers import SGD
>>> w = tt.Tensor([1.0, -2.0], requires_grad=True)
>>> optimizer = SGD([w], lr=0.1)
>>> (w * w).sum().backward()        # grad = 2w
>>> optimizer.step()                # w <- w - 0.1 * 2w
>>> w
Tensor([ 0.8, -1.6], dtype=float32, requires_grad=True)
>>> optimizer.zero_grad()           # w.grad is None again

Each optimizer follows PyTorch's update rule exactly (same trajectory as ``torch.optim`` for
the same gradients). Hyper-parameters live in ``param_groups``, a list of dicts, one per group
of parameters, so that groups can have their own learning rate; per-parameter buffers
(momentum, moment estimates) live in ``state``. Updates write into ``param.data`` in place and
record no graph.
"""

import math
import numbers

import numpy as np

from tinytorch.core.inplace import note_inplace
from tinytorch.core.tracing import replayed_as_a_call
from tinytorch.core.tensor import Tensor


class Optimizer:
    """Base class: holds the parameter groups and the per-parameter state.

    ``params`` is an iterable of Tensors (e.g. ``model.parameters()``) or of dicts, each with a
    ``"params"`` entry and any hyper-parameters that differ from the defaults:

    >>> SGD([{"params": model[0].parameters(), "lr": 0.1},
    ...      {"params": model[2].parameters()}], lr=0.01, momentum=0.9)

    Subclasses implement :meth:`update` (their rule for one parameter); :meth:`step` loops over
    the parameters and does the bookkeeping. ``defaults`` holds their hyper-parameters.
    """

    def __init__(self, params, defaults=None):
        self.defaults = dict(defaults or {})
        self.state = {}
        self.param_groups = []
        self.step_count = 0
        if isinstance(params, Tensor):
            raise TypeError("params must be an iterable of Tensors (e.g. model.parameters() "
                            "or [w, b]), not a single Tensor")
        groups = list(params)
        if not groups:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, group):
        """Add a group of parameters (a dict with ``"params"``) with its own hyper-parameters."""
        if not isinstance(group, dict) or "params" not in group:
            raise TypeError("a parameter group must be a dict with a 'params' entry")
        params = group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        for i, p in enumerate(params):
            if not isinstance(p, Tensor):
                raise TypeError(f"parameter {i} is a {type(p).__name__}, not a Tensor")
            if not p.requires_grad:
                raise ValueError(f"parameter {i} (shape {p.shape}) does not require gradients; "
                                 f"create it with requires_grad=True")
        known = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in known for p in params) or len({id(p) for p in params}) != len(params):
            raise ValueError("some parameters appear more than once in the optimizer (remove the "
                             "duplicates)")
        unknown = set(group) - set(self.defaults) - {"params"}
        if unknown:
            raise TypeError(f"unknown hyper-parameter(s) {sorted(unknown)} for "
                            f"{type(self).__name__}; it takes {sorted(self.defaults)}")
        self.param_groups.append({**self.defaults, **group, "params": params})

    @property
    def params(self):
        """All parameters, group after group (the TinyTorch curriculum's flat list)."""
        return [p for group in self.param_groups for p in group["params"]]

    @property
    def lr(self):
        """The learning rate of the first group; assigning sets it for every group."""
        return self.param_groups[0]["lr"]

    @lr.setter
    def lr(self, value):
        _check_hyper(lr=value)
        for group in self.param_groups:
            group["lr"] = value

    def __getattr__(self, name):
        """Read other hyper-parameters (``momentum``, ``eps``...) from the first group."""
        defaults = self.__dict__.get("defaults", {})
        if name in defaults:
            return self.param_groups[0][name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @replayed_as_a_call
    def zero_grad(self):
        """Forget every parameter's gradient (``grad`` becomes None)."""
        for p in self.params:
            p.grad = None

    @replayed_as_a_call
    def step(self):
        """Update every parameter that has a gradient, with the optimizer's rule (:meth:`update`).

        The loop and its bookkeeping belong here, so no optimizer can forget them: each update
        is recorded as an in-place edit of the parameter (backward then refuses a graph that
        saved the old values), and ``step_count`` counts the steps.
        """
        name = f"{type(self).__name__}.step()"
        update, state = self.update, self.state
        for group in self.param_groups:
            for p in group["params"]:
                grad = p._grad
                if grad is None:
                    continue
                update(p, grad._data if grad.__class__ is Tensor else _grad(p), group,
                       state.setdefault(p, {}))
                note_inplace(p, name)
        self.step_count += 1

    def update(self, param, grad, group, state):
        """The update rule: change ``param.data`` in place, given its gradient ``grad`` (an
        array), its ``group``'s hyper-parameters and its ``state`` (a dict kept between steps,
        empty at first). Each optimizer implements it."""
        raise NotImplementedError(f"{type(self).__name__} does not implement update()")

    # ----- saving and restoring ------------------------------------------------------------
    def state_dict(self):
        """The optimizer's hyper-parameters and buffers, with parameters named by position.

        ``{"state": {index: {name: array or number}}, "param_groups": [{..., "params":
        [indices]}]}``, as in PyTorch. The arrays are copies.
        """
        index = {id(p): i for i, p in enumerate(self.params)}
        groups = [{**{k: v for k, v in g.items() if k != "params"},
                   "params": [index[id(p)] for p in g["params"]]} for g in self.param_groups]
        state = {index[id(p)]: {k: (v.copy() if isinstance(v, np.ndarray) else v)
                                for k, v in s.items()}
                 for p, s in self.state.items()}
        return {"optimizer": type(self).__name__, "state": state, "param_groups": groups,
                "step_count": self.step_count}

    def load_state_dict(self, state_dict):
        """Restore what :meth:`state_dict` returned (for the same parameters, in the same order).

        Raises ValueError when the groups, the number of parameters or a buffer's shape differ.
        """
        try:
            groups, state = state_dict["param_groups"], state_dict["state"]
        except (KeyError, TypeError):
            raise ValueError("optimizer state_dict must have 'state' and 'param_groups' entries")
        saved_kind = state_dict.get("optimizer", type(self).__name__)
        if saved_kind != type(self).__name__:
            raise ValueError(f"optimizer state_dict is from {saved_kind}, but this optimizer is "
                             f"{type(self).__name__}")
        if len(groups) != len(self.param_groups):
            raise ValueError(f"optimizer state_dict has {len(groups)} parameter groups, "
                             f"this optimizer has {len(self.param_groups)}")
        for i, (saved, group) in enumerate(zip(groups, self.param_groups)):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(f"parameter group {i}: state_dict has {len(saved['params'])} "
                                 f"parameters, this optimizer has {len(group['params'])}")
        params = {}
        for saved, group in zip(groups, self.param_groups):
            params.update(zip(saved["params"], group["params"]))
        new_state = {}
        for key, buffers in state.items():
            if int(key) not in params:
                raise ValueError(f"optimizer state_dict has state for parameter {key}, "
                                 f"which is in no parameter group")
            p = params[int(key)]
            new_state[p] = {}
            for name, value in buffers.items():
                if isinstance(value, (np.ndarray, Tensor)):
                    value = np.array(value.data if isinstance(value, Tensor) else value,
                                     dtype=p.dtype)
                    if value.shape != p.shape:
                        raise ValueError(f"optimizer state '{name}' of parameter {key} has "
                                         f"shape {value.shape}, but the parameter has shape "
                                         f"{p.shape}")
                new_state[p][name] = value
        self.state = new_state
        for saved, group in zip(groups, self.param_groups):
            group.update({k: v for k, v in saved.items() if k != "params"})
        self.step_count = int(state_dict.get("step_count", 0))

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            settings = ", ".join(f"{k}={v}" for k, v in group.items() if k != "params")
            lines.append(f"  group {i}: {len(group['params'])} parameters, {settings}")
        return "\n".join(lines + [")"])


def _grad(p):
    """The parameter's gradient as an array (``.grad`` may be a Tensor or a NumPy array)."""
    return p.grad.data if isinstance(p.grad, Tensor) else np.asarray(p.grad)


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum, Nesterov momentum and weight decay.

    For each parameter p with gradient g (PyTorch's rule)::

        g <- g + weight_decay * p
        b <- g                                      on the first step
        b <- momentum * b + (1 - dampening) * g     afterwards        (when momentum > 0)
        g <- g + momentum * b   if nesterov,  else  g <- b
        p <- p - lr * g

    >>> optimizer = SGD(model.parameters(), lr=0.1, momentum=0.9)
    """

    def __init__(self, params, lr=0.01, momentum=0.0, dampening=0.0, weight_decay=0.0,
                 nesterov=False):
        _check_hyper(lr=lr, momentum=momentum, weight_decay=weight_decay)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("nesterov=True needs momentum > 0 and dampening = 0")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov))

    def update(self, param, grad, group, state):
        g = grad
        if group["weight_decay"] != 0:
            g = g + group["weight_decay"] * param.data
        momentum = group["momentum"]
        if momentum != 0:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = np.array(g, dtype=param.dtype)
            else:
                buf *= momentum
                buf += (1 - group["dampening"]) * g
            g = g + momentum * buf if group["nesterov"] else buf
        values = param._data                 # (in place: what ``param.data -= ...`` does)
        values -= group["lr"] * g


class Adam(Optimizer):
    """Adam: steps scaled per element by running estimates of the gradient's moments.

    For each parameter p with gradient g, at step t = 1, 2, ... (PyTorch's rule)::

        g <- g + weight_decay * p                    (L2 penalty folded into the gradient)
        m <- beta1 * m + (1 - beta1) * g             (first moment: mean of g)
        v <- beta2 * v + (1 - beta2) * g^2           (second moment: mean of g^2)
        p <- p - lr / (1 - beta1^t) * m / (sqrt(v / (1 - beta2^t)) + eps)

    >>> optimizer = Adam(model.parameters(), lr=1e-3)
    """

    decoupled_weight_decay = False

    def __init__(self, params, lr=0.001, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        _check_hyper(lr=lr, eps=eps, weight_decay=weight_decay)
        if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {betas}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps,
                                      weight_decay=weight_decay))

    def update(self, param, grad, group, state):
        lr, eps, weight_decay = group["lr"], group["eps"], group["weight_decay"]
        beta1, beta2 = group["betas"]
        g, values = grad, param._data
        if weight_decay != 0:
            if self.decoupled_weight_decay:
                values *= 1 - lr * weight_decay
            else:
                g = g + weight_decay * values
        if not state:
            state.update(step=0, exp_avg=np.zeros_like(values), exp_avg_sq=np.zeros_like(values))
        state["step"] += 1
        m, v, t = state["exp_avg"], state["exp_avg_sq"], state["step"]
        m *= beta1
        m += (1 - beta1) * g
        v *= beta2
        v += (1 - beta2) * (g * g)
        step_size = lr / (1 - beta1 ** t)
        denom = np.sqrt(v) / math.sqrt(1 - beta2 ** t) + eps
        values -= step_size * (m / denom)


class AdamW(Adam):
    """Adam with decoupled weight decay: the decay shrinks p directly, not through g.

    For each parameter p with gradient g, at step t (PyTorch's rule)::

        p <- p * (1 - lr * weight_decay)
        m, v and the update of p as in Adam, computed from g alone

    >>> optimizer = AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    """

    decoupled_weight_decay = True

    def __init__(self, params, lr=0.001, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


def _check_hyper(**values):
    """Reject hyper-parameters that are not finite numbers >= 0, naming the argument."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"{name} must be a number, got {value!r}")
        if not 0 <= value < math.inf:
            raise ValueError(f"{name} must be a finite number >= 0, got {value}")


__all__ = ["Optimizer", "SGD", "Adam", "AdamW"]
