"""The contracts every op class keeps (stated once, at the top of ``tinytorch/core/ops.py``).

The tests inspect the graphs of every op table the gradient tests use (``op_helpers``), and the
graphs that their backward passes record with ``create_graph=True``:

- every op class of tinytorch appears in those tables (so each is gradient-tested);
- an op whose output shares memory with an input says so (``returns_view``), or in-place
  edits of one would go unnoticed by the other's gradient;
- a rule that says it does not need an input's values (``reads_inputs``, ``value_needed``)
  gives the same gradients when those values are garbage;
- a rule's gradients are new arrays, the incoming gradient or views of it, never an array the
  node keeps (a leaf adopts them as its ``.grad`` and adds into them later).
"""

import importlib
import pkgutil

import numpy as np
import pytest

import tinytorch
from op_helpers import leaf, table_cases
from tinytorch.core.autograd import Function, grad

CASES = {name: (fn, arrays) for name, fn, arrays in table_cases()}


def _op_classes():
    """Every Function subclass defined in tinytorch (all its modules imported first)."""
    for module in pkgutil.walk_packages(tinytorch.__path__, "tinytorch."):
        if not module.name.startswith(("tinytorch.cli", "tinytorch.__main__")):
            importlib.import_module(module.name)
    found, stack = set(), [Function]
    while stack:
        for sub in stack.pop().__subclasses__():
            stack.append(sub)
            if sub.__module__.startswith("tinytorch."):
                found.add(sub)
    return found


def _graph(out):
    """[(node, output array)] of the graph behind ``out``, each node once."""
    seen, result, stack = set(), [], [out]
    while stack:
        t = stack.pop()
        node = getattr(t, "grad_fn", None)
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        result.append((node, t.data))
        stack.extend(s for s in node.saved_tensors or () if isinstance(s, tinytorch.Tensor))
    return result


def _nodes_of_case(name):
    """The forward graph of a table case, and the graphs its create_graph backward records."""
    fn, arrays = CASES[name]
    inputs = [leaf(a) for a in arrays]
    out = fn(*inputs)
    forward = _graph(out)
    upstream = tinytorch.Tensor(np.random.default_rng(0).standard_normal(out.shape),
                                dtype=out.dtype)
    grads = grad(out, inputs, grad_outputs=upstream, create_graph=True, allow_unused=True)
    backward = [pair for g in grads if g is not None for pair in _graph(g)]
    return forward, backward


def test_every_op_class_appears_in_the_gradient_test_tables():
    seen = set()
    for name in CASES:
        forward, backward = _nodes_of_case(name)
        seen.update(type(node) for node, _ in forward + backward)
    missing = sorted(cls.__qualname__ for cls in _op_classes() - seen)
    assert not missing, (f"op classes no gradient-test table reaches: {missing}; add a case to "
                         f"a table in tests/op_helpers.py (NN_OPS for neural-network ops)")


def _arrays(value):
    """The arrays a value holds (a Tensor's, an array itself, or those in a tuple/list)."""
    if isinstance(value, tinytorch.Tensor):
        return [value.data]
    if isinstance(value, np.ndarray):
        return [value]
    if isinstance(value, (tuple, list)):
        return [a for v in value for a in _arrays(v)]
    return []


def _kept_arrays(node):
    """Every array a node keeps: saved inputs, the output, and its own attributes."""
    kept = [a for t in node.saved_tensors for a in _arrays(t)]
    if node.output_data is not None:
        kept.append(node.output_data)
    for cls in type(node).__mro__:
        for slot in getattr(cls, "__slots__", ()):
            kept.extend(_arrays(getattr(node, slot, None)))
    return kept


def _upstream(output):
    return np.random.default_rng(1).standard_normal(np.shape(output)).astype(output.dtype)


@pytest.mark.parametrize("name", CASES)
def test_ops_sharing_memory_with_an_input_say_they_return_a_view(name):
    forward, _ = _nodes_of_case(name)
    for node, output in forward:
        for i, t in enumerate(node.saved_tensors):
            if isinstance(t, tinytorch.Tensor) and np.may_share_memory(output, t.data):
                assert node.returns_view, (f"{type(node).__name__}'s output shares memory with "
                                           f"input {i} but returns_view is False")


@pytest.mark.parametrize("name", CASES)
def test_rules_that_do_not_read_an_input_give_the_same_gradient_without_it(name):
    forward, _ = _nodes_of_case(name)
    for node, output in forward:
        upstream = _upstream(output)
        for i, t in enumerate(node.saved_tensors):
            if not isinstance(t, tinytorch.Tensor) or node.value_needed(i):
                continue
            expected = node.apply(upstream.copy())
            real = t.data
            t.data = np.full_like(real, np.nan)       # garbage where the rule should not look
            try:
                actual = node.apply(upstream.copy())
            finally:
                t.data = real
            for j, (a, e) in enumerate(zip(actual, expected)):
                if e is not None:
                    np.testing.assert_array_equal(
                        a, e, err_msg=f"{type(node).__name__} reads input {i} for gradient {j}, "
                                      f"but value_needed({i}) is False")


@pytest.mark.parametrize("name", CASES)
def test_rules_return_fresh_arrays_never_one_the_node_keeps(name):
    forward, _ = _nodes_of_case(name)
    for node, output in forward:
        if not node.fresh_gradients:
            continue
        upstream = _upstream(output)
        kept = _kept_arrays(node)
        for j, g in enumerate(node.apply(upstream)):
            if g is None or np.may_share_memory(g, upstream):
                continue
            for array in kept:
                assert not np.may_share_memory(g, array), (
                    f"{type(node).__name__}'s gradient {j} shares memory with an array the "
                    f"node keeps: a leaf adopting it as .grad would write into it")
