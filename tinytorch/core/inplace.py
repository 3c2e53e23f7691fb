"""The in-place version log: which values in-place operations changed, and when.

Every graph node and every in-place edit gets a number from one counter
(``sequence``), so an edit numbered after a node was created changed values the node
may have saved. :func:`note_inplace` records an edit; before backward runs a node created
before the latest edit, :func:`check_unmodified` refuses values it needs that were changed
since. An in-place op that is itself recorded makes the tensor the output of a new node, while
ops recorded earlier keep sending gradients to its old history (:func:`history_seen_by`).
"""

import itertools
import weakref

import numpy as np



class _Log:
    """What in-place operations did, by id(tensor), until the tensor is freed.

    ``edits``, by id of the array that owns the memory (shared by views and detached
    tensors): (sequence number, description) of the last in-place edit of that memory.
    ``rebases``, by id(tensor): (sequence number, grad_fn, requires_grad) the tensor had before
    each recorded in-place op made it the output of a new node; ops created earlier still see
    that history.
    """

    def __init__(self):
        self.edits = {}
        self.rebases = {}
        self.last_edit = 0     # sequence number of the latest edit: older nodes need no check


log = _Log()

# Numbers graph nodes (``node.seq``, see autograd.run_op) and in-place edits in the order they
# happen. Backward runs nodes in decreasing ``seq``; an edit numbered after a node was created
# changed values that node may have saved.
sequence = itertools.count(1)


def _storage(array):
    """The array owning the memory that ``array`` views (views and detached tensors share it)."""
    while isinstance(array.base, np.ndarray):
        array = array.base
    return array


def _edit_of(value):
    """(number, description) of the last edit of a saved tensor's memory, or None (also for
    constants: this module knows tensors only by their ``_data`` array)."""
    data = getattr(value, "_data", None)
    return None if data is None else log.edits.get(id(_storage(data)))


def note_inplace(tensor, operation, new_grad_fn=None):
    """Record that ``operation`` (e.g. ``'+='``) changed ``tensor``'s values in place.

    With ``new_grad_fn`` (a recorded in-place op), ``tensor`` becomes that node's output, while
    the nodes that used it before keep sending their gradient to its previous history.
    """
    number = log.last_edit = next(sequence)
    storage = _storage(tensor._data)
    if id(storage) not in log.edits:
        weakref.finalize(storage, log.edits.pop, id(storage), None)
    log.edits[id(storage)] = (number, operation)
    if new_grad_fn is not None:
        if id(tensor) not in log.rebases:
            weakref.finalize(tensor, log.rebases.pop, id(tensor), None)
            log.rebases[id(tensor)] = []
        log.rebases[id(tensor)].append(
            (number, tensor.grad_fn, tensor.requires_grad))
        old_node = tensor.grad_fn
        if old_node is not None and old_node.hooks:          # retain_grad() follows the tensor
            retained = [h for h in old_node.hooks if getattr(h, "tensor_ref", None)
                        and h.tensor_ref() is tensor]
            for hook in retained:
                old_node.hooks.remove(hook)
            if retained:
                new_grad_fn.hooks = (new_grad_fn.hooks or []) + retained
        tensor.grad_fn, tensor.requires_grad = new_grad_fn, True


def history_seen_by(node, tensor):
    """(grad_fn, requires_grad) of ``tensor`` when ``node`` used it (see in-place rebases)."""
    for seq, grad_fn, requires_grad in log.rebases.get(id(tensor), ()):
        if seq > node.seq:
            return grad_fn, requires_grad
    return tensor.grad_fn, tensor.requires_grad


def check_unmodified(node):
    """Raise if values ``node`` relies on were changed in place after it was created.

    Checked: the inputs whose values the rule reads, the memory a view op's output shares
    with its input, and the saved output of ops that use it.
    """
    name = repr(node)[1:-1]                  # e.g. MulBackward, or CubeBackward for custom ops
    if node.reads_inputs or node.returns_view:
        for i, t in enumerate(node.saved_tensors):
            if not (node.returns_view or node.value_needed(i)):
                continue
            edit = _edit_of(t)
            if edit is not None and edit[0] > node.seq:
                what = ("its output is a view of its input " if node.returns_view
                        else "it needs the values of its input ")
                raise RuntimeError(
                    f"{name}: {what}{i} (a tensor of shape {t.shape} and dtype {t.dtype}), but "
                    f"they were modified by an in-place operation ({edit[1]}) after {name} was "
                    f"recorded. Use an out-of-place operation (e.g. x = x + y instead of "
                    f"x += y), clone() the tensor first, or make the change after backward().")
    for t in getattr(getattr(node, "ctx", None), "saved_tensors", ()):   # custom Functions
        edit = _edit_of(t)
        if edit is not None and edit[0] > node.seq:
            raise RuntimeError(
                f"{name}: a tensor it saved with ctx.save_for_backward (shape {t.shape}) was "
                f"modified by an in-place operation ({edit[1]}) after it was saved")
    if node.output_data is not None:
        edit = log.edits.get(id(_storage(node.output_data)))
        if edit is not None and edit[0] > node.seq:
            raise RuntimeError(
                f"{name}: it needs the values of its output (shape {node.output_data.shape}) to "
                f"compute its gradient, but they were modified by an in-place operation "
                f"({edit[1]}) after {name} was recorded. Use an out-of-place operation, or "
                f"clone() the output before changing it.")


__all__ = ["note_inplace"]
