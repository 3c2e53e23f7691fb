"""Tests of tinytorch.viz: the DOT text is parsed back and checked against the real graph."""

import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

import tinytorch as tt
from tinytorch.core.activations import ReLU
from tinytorch.core.layers import Linear, Sequential
from tinytorch.core.losses import MSELoss
from tinytorch.viz import draw_graph, to_dot

HAVE_DOT = shutil.which("dot") is not None

# --------------------------------------------------------------------------------------------
# A tiny parser for the subset of DOT that to_dot writes: every line must be one of these.
# --------------------------------------------------------------------------------------------

_STRING = r'"((?:[^"\\]|\\.)*)"'
_NODE = re.compile(r'^\s*(n\d+) \[label=' + _STRING + r'((?:, [a-z]+=[A-Za-z0-9_.]+)*)\];$')
_EDGE = re.compile(r'^\s*(n\d+) -> (n\d+)((?: \[[^\]]*\])?);$')
_OTHER = re.compile(r'^(digraph tinytorch \{|\}|\s*(node|edge) \[.*\];)$')


def _unescape(label):
    return re.sub(r'\\(.)', lambda m: "\n" if m.group(1) == "n" else m.group(1), label)


def parse(text):
    """Return ({id: {'label': str, attr: value}}, [(src, dst, is_dashed)]); fail on odd lines."""
    nodes, edges = {}, []
    for line in text.splitlines():
        if m := _NODE.match(line):
            node_id, label, attrs = m.groups()
            assert node_id not in nodes, f"node {node_id} declared twice"
            info = {"label": _unescape(label)}
            for pair in filter(None, attrs.split(", ")):
                key, value = pair.split("=")
                info[key] = value
            nodes[node_id] = info
        elif m := _EDGE.match(line):
            edges.append((m.group(1), m.group(2), "dashed" in m.group(3)))
        else:
            assert _OTHER.match(line), f"unexpected DOT line: {line!r}"
    return nodes, edges


def kinds(nodes, shape):
    return {i: n for i, n in nodes.items() if n.get("shape") == shape}


def ops_of(nodes):
    return {i: n for i, n in nodes.items() if n.get("shape") == "ellipse"}


def leaves_of(nodes):
    return {i: n for i, n in nodes.items() if n.get("shape") == "box"}


def reachable(tensor):
    """Count the graph nodes and the leaves requiring grad behind ``tensor`` independently."""
    nodes, leaves = set(), set()
    stack = [tensor.grad_fn] if tensor.grad_fn is not None else []
    while stack:
        node = stack.pop()
        if id(node) in nodes:
            continue
        nodes.add(id(node))
        for t in node.saved_tensors or ():
            if isinstance(t, tt.Tensor):
                if t.grad_fn is not None:
                    stack.append(t.grad_fn)
                elif t.requires_grad:
                    leaves.add(id(t))
    return len(nodes), len(leaves)


def check_edges(nodes, edges):
    for src, dst, _ in edges:
        assert src in nodes and dst in nodes, f"edge {src} -> {dst} to an undeclared node"


def mlp_loss():
    tt.manual_seed(0)
    model = Sequential(Linear(4, 8), ReLU(), Linear(8, 3))
    x = tt.Tensor(np.random.default_rng(0).standard_normal((5, 4)))
    target = tt.Tensor(np.zeros((5, 3)))
    return model, MSELoss()(model(x), target)


# --------------------------------------------------------------------------------------------
# to_dot
# --------------------------------------------------------------------------------------------

def test_mlp_graph_matches_the_real_graph():
    model, loss = mlp_loss()
    nodes, edges = parse(to_dot(loss, params=model))
    check_edges(nodes, edges)
    n_ops, n_leaves = reachable(loss)
    assert len(ops_of(nodes)) == n_ops == 4          # Linear, ReLU, Linear, MSE
    assert len(leaves_of(nodes)) == n_leaves == 4
    assert {n["label"].split("\n")[0] for n in leaves_of(nodes).values()} == {
        "0.weight", "0.bias", "2.weight", "2.bias"}
    assert all(n["fillcolor"] == "lightblue" for n in leaves_of(nodes).values())
    op_names = sorted(n["label"].split("\n")[0] for n in ops_of(nodes).values())
    assert op_names == ["Linear", "Linear", "MSE", "ReLU"]   # Linear: x @ W + b, one fused op
    # the weight's label carries its shape and dtype
    weight = next(n for n in nodes.values() if n["label"].startswith("0.weight"))
    assert "(4, 8)" in weight["label"] and "float32" in weight["label"]
    # the input x and the target are constants (dashed edges), not leaves
    consts = kinds(nodes, "plaintext")
    assert len(consts) == 2
    assert all(dashed for src, _, dashed in edges if src in consts)
    assert not any(dashed for src, _, dashed in edges if src not in consts)
    # exactly one output node, fed by the loss op, and nothing leaves it
    (out_id,) = kinds(nodes, "doubleoctagon")
    assert [src for src, dst, _ in edges if dst == out_id] == [
        i for i, n in ops_of(nodes).items() if n["label"].startswith("MSE")]
    assert not [e for e in edges if e[0] == out_id]
    # data-flow direction: every leaf only has outgoing edges
    for leaf in leaves_of(nodes):
        assert not [e for e in edges if e[1] == leaf]


def test_params_as_dict_module_or_pairs_agree():
    model, loss = mlp_loss()
    by_module = to_dot(loss, params=model)
    assert to_dot(loss, params=dict(model.named_parameters())) == by_module
    assert to_dot(loss, params=model.named_parameters()) == by_module
    assert "0.weight" not in to_dot(loss)
    nodes, _ = parse(to_dot(loss))
    assert all(n["label"].startswith("leaf") for n in leaves_of(nodes).values())


def test_shared_subexpression_drawn_once():
    x = tt.Tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = x * x + x
    nodes, edges = parse(to_dot(y, params={"x": x}))
    check_edges(nodes, edges)
    assert len(ops_of(nodes)) == reachable(y)[0] == 2
    (x_id,) = leaves_of(nodes)
    assert nodes[x_id]["label"].startswith("x\n")
    mul = next(i for i, n in ops_of(nodes).items() if n["label"].startswith("Mul"))
    add = next(i for i, n in ops_of(nodes).items() if n["label"].startswith("Add"))
    assert sorted((s, d) for s, d, _ in edges) == sorted(
        [(x_id, mul), (x_id, mul), (x_id, add), (mul, add), (add, "n0")])

    # an op node used twice: z feeds both inputs of the Add, z's Mul appears once
    a = tt.Tensor([1.0], requires_grad=True)
    z = a * 3.0
    w = z + z
    nodes, edges = parse(to_dot(w))
    assert len(ops_of(nodes)) == 2
    mul = next(i for i, n in ops_of(nodes).items() if n["label"].startswith("Mul"))
    assert sum(1 for s, _, _ in edges if s == mul) == 2


def test_constants_numbers_and_named_intermediates():
    x = tt.Tensor(np.ones((2, 2)), requires_grad=True)
    h = x * 2.5
    y = (h + tt.Tensor([7.0])).sum()
    nodes, edges = parse(to_dot(y, params={"x": x, "hidden": h}))
    consts = kinds(nodes, "plaintext")
    labels = sorted(n["label"].split("\n")[0] for n in consts.values())
    assert labels == ["2.5", "7.0"]
    assert any(n["label"].startswith("Mul\nhidden") for n in ops_of(nodes).values())


def test_output_and_shapes_flags():
    x = tt.Tensor(np.ones((3, 2)), requires_grad=True)
    y = (x * x).sum(axis=1)
    text = to_dot(y)
    (out,) = kinds(parse(text)[0], "doubleoctagon").values()
    assert out["label"] == "output\n(3,) float32"
    bare = to_dot(y, show_shapes=False)
    assert "(3, 2)" not in bare and "float32" not in bare
    assert len(ops_of(parse(bare)[0])) == 2


def test_ids_are_stable_and_valid():
    _, loss = mlp_loss()
    text = to_dot(loss)
    assert text == to_dot(loss)
    nodes, _ = parse(text)
    assert sorted(nodes, key=lambda i: int(i[1:])) == [f"n{i}" for i in range(len(nodes))]
    assert re.match(r"^digraph tinytorch \{\n", text) and text.endswith("}\n")


def test_labels_are_escaped():
    x = tt.Tensor([1.0], requires_grad=True)
    name = 'we"ird\\name\nwith {braces} -> [and] ;'
    nodes, edges = parse(to_dot(x * 2, params={name: x}))
    (leaf,) = leaves_of(nodes).values()
    assert leaf["label"].startswith(name + "\n")


def test_leaf_and_constant_outputs():
    x = tt.Tensor([1.0, 2.0], requires_grad=True)
    nodes, edges = parse(to_dot(x, params={"x": x}))
    assert list(nodes) == ["n0"] and edges == []
    assert nodes["n0"]["label"].startswith("x\n")
    nodes, edges = parse(to_dot(tt.Tensor([1.0]) * 2))
    assert list(nodes) == ["n0"] and edges == []


def test_deep_chain_has_no_recursion():
    x = tt.Tensor([1.0], requires_grad=True)
    y = x
    depth = 20_000
    for _ in range(depth):
        y = y + 1.0
    limit = sys.getrecursionlimit()
    frame, here = sys._getframe(), 0
    while frame is not None:
        frame, here = frame.f_back, here + 1
    sys.setrecursionlimit(here + 100)           # far below the depth: recursion would fail
    try:
        text = to_dot(y)
    finally:
        sys.setrecursionlimit(limit)
    nodes, edges = parse(text)
    assert len(ops_of(nodes)) == depth
    assert len(leaves_of(nodes)) == 1
    assert len(edges) == 2 * depth + 1          # previous value and the 1.0 per op, + output


def test_freed_graph_does_not_crash():
    x = tt.Tensor([1.0, 2.0], requires_grad=True)
    loss = (x * x).sum()
    loss.backward()                              # frees the saved tensors
    nodes, edges = parse(to_dot(loss))
    check_edges(nodes, edges)
    (op,) = ops_of(nodes).values()
    assert "freed" in op["label"] and op["style"] == "dashed"

    # partly freed: a new op on top of a freed graph is drawn whole, the freed part noted
    y = x * 3.0
    y.backward(np.ones(2), retain_graph=False)
    z = y * 2.0
    nodes, edges = parse(to_dot(z))
    check_edges(nodes, edges)
    labels = sorted(n["label"] for n in ops_of(nodes).values())
    assert len(labels) == 2
    assert "freed" in labels[1] and "freed" not in labels[0]


def test_bad_arguments():
    with pytest.raises(TypeError):
        to_dot(np.ones(3))
    x = tt.Tensor([1.0], requires_grad=True)
    with pytest.raises(TypeError):
        to_dot(x * 2, params={"x": np.ones(1)})
    with pytest.raises(TypeError):
        to_dot(x * 2, params=[x])


# --------------------------------------------------------------------------------------------
# draw_graph
# --------------------------------------------------------------------------------------------

def test_missing_dot_binary_explains(monkeypatch, tmp_path):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    _, loss = mlp_loss()
    with pytest.raises(RuntimeError) as info:
        draw_graph(loss, tmp_path / "g.svg")
    message = str(info.value)
    assert "graphviz" in message.lower() and "dot" in message
    assert "apt-get install graphviz" in message and "brew install graphviz" in message
    assert "to_dot" in message
    assert not list(tmp_path.iterdir())          # nothing half-written


def test_dot_suffix_needs_no_graphviz(monkeypatch, tmp_path):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    model, loss = mlp_loss()
    path = draw_graph(loss, tmp_path / "g.dot", params=model)
    assert open(path, encoding="utf-8").read() == to_dot(loss, params=model)


def test_unknown_format_is_refused(tmp_path):
    _, loss = mlp_loss()
    with pytest.raises(ValueError, match="suffix"):
        draw_graph(loss, tmp_path / "graph")
    with pytest.raises(ValueError):
        draw_graph(loss, tmp_path / "graph", format="svg; rm")


def test_dot_failure_is_reported(monkeypatch, tmp_path):
    monkeypatch.setattr(shutil, "which", lambda name: "/bin/false")
    _, loss = mlp_loss()
    with pytest.raises(RuntimeError, match="failed"):
        draw_graph(loss, tmp_path / "g.svg")


def test_dot_failure_names_the_error_lines_not_thousands_of_warnings(monkeypatch, tmp_path):
    fake = tmp_path / "dot"
    fake.write_text('#!/bin/sh\nyes "Warning: node x has no label" | head -n 5000 >&2\n'
                    'echo "Error: <stdin>: syntax error in line 1 near \'{\'" >&2\nexit 1\n')
    fake.chmod(0o755)
    monkeypatch.setattr(shutil, "which", lambda name: str(fake))
    _, loss = mlp_loss()
    with pytest.raises(RuntimeError) as info:
        draw_graph(loss, tmp_path / "g.svg")
    assert str(info.value) == ("draw_graph: Graphviz 'dot -Tsvg' failed (exit code 1): "
                               "Error: <stdin>: syntax error in line 1 near '{'")


@pytest.mark.skipif(not HAVE_DOT, reason="Graphviz 'dot' is not installed")
def test_renders_svg_and_png(tmp_path):
    model, loss = mlp_loss()
    svg = draw_graph(loss, tmp_path / "mlp.svg", params=model, save_dot=True)
    text = open(svg, encoding="utf-8").read()
    assert text.startswith("<?xml") or "<svg" in text
    assert "0.weight" in text
    assert (tmp_path / "mlp.dot").read_text(encoding="utf-8") == to_dot(loss, params=model)
    png = draw_graph(loss, str(tmp_path / "mlp.png"))
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.skipif(not HAVE_DOT, reason="Graphviz 'dot' is not installed")
def test_graphviz_accepts_escaped_and_freed_graphs():
    x = tt.Tensor([1.0], requires_grad=True)
    name = 'we"ird\\name\nwith {braces} -> [and] ; ü'
    freed = (x * 2).sum()
    freed.backward()
    for text in (to_dot((x * x + x).sum(), params={name: x}), to_dot(freed, show_shapes=False)):
        result = subprocess.run(["dot", "-Tsvg"], input=text.encode("utf-8"),
                                capture_output=True, check=False)
        assert result.returncode == 0, result.stderr.decode()
        assert b"<svg" in result.stdout


def test_ops_recorded_before_an_inplace_op_are_drawn_with_the_old_history():
    weight = tt.Tensor([1.0, 2.0], requires_grad=True)
    constant = tt.zeros(2)
    early = constant + weight                 # constant is a constant for this op
    constant += weight * 2                    # ... and joins the graph only afterwards
    dot = to_dot(early.sum())
    assert "Mul" not in dot, "the later in-place multiplication is not part of early's graph"
    assert "const" in dot
