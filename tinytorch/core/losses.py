"""Loss functions as layers: ``MSELoss()(pred, target)`` and friends.

Each loss calls a fused op of ``functional.py`` and takes ``reduction='mean'`` (the default),
``'sum'`` or ``'none'`` (one loss per element, or per sample for cross-entropy).

>>> import tinytorch as tt
>>> logits = tt.Tensor([[2.0, 0.5], [0.1, 3.0]], requires_grad=True)
>>> loss = CrossEntropyLoss()(logits, tt.Tensor([0, 1]))
>>> loss.backward()          # logits.grad = (softmax(logits) - one_hot) / 2
"""

from tinytorch.core.functional import (
    binary_cross_entropy, binary_cross_entropy_with_logits, cross_entropy, log_softmax, mse_loss,
)
from tinytorch.core.functional import _check_reduction
from tinytorch.core.layers import Module

__all__ = [
    "MSELoss", "CrossEntropyLoss", "BinaryCrossEntropyLoss", "BCELoss", "BCEWithLogitsLoss",
    "log_softmax",
]


class _Loss(Module):
    """A loss layer: ``forward(prediction, target)`` reduced by ``reduction``."""

    function = None

    def __init__(self, reduction="mean"):
        super().__init__()
        self.reduction = _check_reduction(reduction, type(self).__name__)

    def forward(self, predictions, targets):
        return self.function(predictions, targets, reduction=self.reduction)

    def extra_repr(self):
        return "" if self.reduction == "mean" else f"reduction={self.reduction!r}"


class MSELoss(_Loss):
    """Mean squared error: reduce((prediction - target)^2); shapes must match.

    >>> MSELoss()(Tensor([1.0, 3.0]), Tensor([1.0, 1.0]))   # Tensor(2.)
    """
    function = staticmethod(mse_loss)


class CrossEntropyLoss(_Loss):
    """Softmax cross-entropy from logits (N, C) and class indices (N,) (ints, or floats holding
    ints): L_n = logsumexp(x_n) - x_n[t_n], computed through a fused log-softmax.

    >>> CrossEntropyLoss()(Tensor([[0.0, 0.0]]), Tensor([1]))   # log 2
    """
    function = staticmethod(cross_entropy)


class BinaryCrossEntropyLoss(_Loss):
    """Binary cross-entropy of probabilities p in [0, 1]: -[t log p + (1 - t) log(1 - p)],
    each log clamped at -100 as in PyTorch.

    >>> BinaryCrossEntropyLoss()(Tensor([0.5]), Tensor([1.0]))   # log 2
    """
    function = staticmethod(binary_cross_entropy)


BCELoss = BinaryCrossEntropyLoss


class BCEWithLogitsLoss(_Loss):
    """Binary cross-entropy of sigmoid(x) from logits x, stable for any x:
    max(x, 0) - x t + log(1 + e^-|x|).

    >>> BCEWithLogitsLoss()(Tensor([0.0]), Tensor([1.0]))   # log 2
    """
    function = staticmethod(binary_cross_entropy_with_logits)
