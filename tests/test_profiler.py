"""The profiler (``tinytorch.profiler``): what it counts is what the engine ran and kept.

Counts are checked against the graph itself, byte counts against an MLP counted by hand, the
trace against the Chrome trace event format, the table's layout column by column; then the
profiler inside and outside ``no_grad``, with ``create_graph``, nested and overlapping blocks,
exceptions, threads, and the cost when no block is open.
"""

import collections
import gc
import json
import re
import threading

import numpy as np
import pytest

import tinytorch as tt
from tinytorch.core import profiler as recorder
from tinytorch.profiler import format_bytes, format_time, profile

from op_helpers import Cube

F32 = 4          # bytes per float32
I64 = 8


def _mlp():
    """Linear(4, 5) -> ReLU -> Linear(5, 3), float32, and a batch of 6 with class targets."""
    tt.manual_seed(0)
    model = tt.Sequential(tt.Linear(4, 5), tt.ReLU(), tt.Linear(5, 3))
    x = tt.Tensor(np.linspace(-1, 1, 24, dtype=np.float32).reshape(6, 4))
    y = tt.Tensor(np.array([0, 1, 2, 0, 1, 2]))
    return model, x, y


def _graph_nodes(tensor):
    """Every node of the graph behind ``tensor`` (found by following next_functions)."""
    seen, stack = {}, [tensor.grad_fn]
    while stack:
        node = stack.pop()
        if node is not None and id(node) not in seen:
            seen[id(node)] = node
            stack.extend(node.next_functions)
    return list(seen.values())


def _by_name(events, phase):
    return collections.Counter(e.name for e in events if e.phase == phase)


# ----- counts -----------------------------------------------------------------------------------

def test_forward_counts_equal_the_nodes_of_the_graph_and_backward_runs_each_once():
    rng = np.random.default_rng(0)
    w = tt.Tensor(rng.standard_normal((3, 3)), requires_grad=True)
    b = tt.Tensor(rng.standard_normal(3), requires_grad=True)
    x = tt.Tensor(rng.standard_normal((5, 3)))
    with profile() as prof:
        h = x
        for _ in range(4):
            h = (h @ w + b).tanh() * 0.5
        loss = h.sum()
        nodes = collections.Counter(type(n).__name__ for n in _graph_nodes(loss))
        loss.backward()
    assert nodes == {"MatmulBackward": 4, "AddBackward": 4, "TanhBackward": 4,
                     "MulBackward": 4, "SumBackward": 1}
    assert _by_name(prof.events, "forward") == nodes
    assert _by_name(prof.events, "backward") == nodes + collections.Counter(AccumulateGrad=1)
    rows = {r.name: r for r in prof.key_averages()}
    assert {name: rows[name].calls for name in nodes} == dict(nodes)
    assert {name: rows[name].nodes for name in nodes} == dict(nodes)
    summary = prof.summary()
    assert (summary.ops, summary.nodes, summary.backward_passes) == (17, 17, 1)


def test_ops_without_a_node_are_counted_as_calls_not_recorded():
    x = tt.Tensor([1.0, 2.0])                         # requires no grad: no node
    with profile() as prof:
        (x * 2 + 1).exp()
    assert [(e.name, e.recorded, e.saved_bytes) for e in prof.events] == [
        ("MulBackward", False, 0), ("AddBackward", False, 0), ("ExpBackward", False, 0)]
    assert prof.summary().peak_saved_bytes == 0


def test_events_carry_the_output_shape_bytes_and_input_shapes():
    a = tt.Tensor(np.ones((2, 3), np.float32), requires_grad=True)
    b = tt.Tensor(np.ones((3, 4), np.float32))
    with profile() as prof:
        a @ b
    (event,) = prof.events
    assert event.shape == (2, 4) and event.input_shapes == ((2, 3), (3, 4))
    assert event.output_bytes == 2 * 4 * F32 and event.saved_bytes == 3 * 4 * F32
    assert event.duration > 0 and event.start >= 0


# ----- graph memory -----------------------------------------------------------------------------

def test_saved_bytes_equal_the_arrays_the_nodes_hold_in_a_hand_counted_mlp():
    """Linear(4, 5) -> ReLU -> Linear(5, 3) -> cross-entropy, batch 6, float32.

    By hand: Linear 1 keeps x (6x4) and its parameters (not graph memory): 96 B. ReLU keeps
    its input h (6x5) and its output r (6x5): 240 B. Linear 2 keeps r (already counted) and its
    parameters: 0 B. Cross-entropy keeps the logits (6x3), its softmax (6x3) and the class
    indices (6 int64): 72 + 72 + 48 = 192 B. Total and peak: 528 B. Parameters:
    (4*5 + 5 + 5*3 + 3) floats = 172 B.
    """
    model, x, y = _mlp()
    with profile() as prof:
        loss = tt.CrossEntropyLoss()(model(x), y)
        loss.backward()
    forward = [(e.name, e.saved_bytes) for e in prof.events if e.phase == "forward"]
    assert forward == [("LinearBackward", 6 * 4 * F32), ("ReLUBackward", 2 * 6 * 5 * F32),
                       ("LinearBackward", 0),
                       ("CrossEntropyBackward", 2 * 6 * 3 * F32 + 6 * I64)]
    summary = prof.summary()
    assert summary.saved_bytes == summary.peak_saved_bytes == 528
    assert summary.parameter_bytes == summary.gradient_bytes == 43 * F32
    assert summary.graph_parameter_ratio == pytest.approx(528 / 172)
    # each node frees what it kept as backward runs it; the class indices stay on the
    # cross-entropy node (its rule reads them), alive as long as the loss is
    freed = {e.name: e.freed_bytes for e in prof.events if e.phase == "backward"}
    assert freed["CrossEntropyBackward"] == 2 * 6 * 3 * F32
    assert freed["ReLUBackward"] == 2 * 6 * 5 * F32
    assert prof.events[-1].live_bytes == 6 * I64


def test_output_bytes_are_the_sizes_of_the_outputs():
    model, x, y = _mlp()
    with profile() as prof:
        tt.CrossEntropyLoss()(model(x), y)
    assert [e.output_bytes for e in prof.events] == [120, 120, 72, 4]
    rows = {r.name: r for r in prof.key_averages()}
    assert rows["LinearBackward"].output_bytes == 192 and rows["LinearBackward"].calls == 2


def test_an_array_kept_by_several_nodes_counts_once_and_views_count_as_their_base():
    w = tt.Tensor(np.ones((4, 4), np.float32), requires_grad=True)
    with profile() as prof:
        h = w * 3.0                                 # h: 64 B, kept by the three ops below
        a = h * h                                   # keeps h (first): 64 B
        b = h.reshape(16) * 2.0                     # the reshape keeps h; its view adds 0 B
        c = h.T * w                                 # h.T is a view of h; w is a parameter
        (a.sum() + b.sum() + c.sum()).backward()
    saved = {}
    for e in prof.events:
        if e.phase == "forward":
            saved.setdefault(e.name, []).append(e.saved_bytes)
    assert saved["MulBackward"] == [0, 64, 0, 0]    # w*3 keeps only the parameter w
    assert saved["ReshapeBackward"] == [0] and saved["PermuteBackward"] == [0]
    assert prof.summary().parameter_bytes == 64


def test_parameters_and_views_of_them_are_not_graph_memory():
    w = tt.Tensor(np.ones((8, 8), np.float32), requires_grad=True)
    with profile() as prof:
        y = w.T @ w                                 # w.T: a view of the parameter w
    assert [e.saved_bytes for e in prof.events] == [0, 0]
    assert prof.summary().parameter_bytes == 8 * 8 * F32
    del y


def test_arrays_a_node_keeps_on_itself_count():
    x = tt.Tensor(np.ones((2, 3), np.float32), requires_grad=True)
    with profile() as prof:
        tt.functional.layer_norm(x * 1.0, (3,))     # keeps xhat (2x3) and inv_std (2x1)
    layer_norm = prof.events[-1]
    # x*1.0 (24 B, kept as the input) + xhat (24 B) + inv_std (8 B)
    assert layer_norm.name == "LayerNormBackward" and layer_norm.saved_bytes == 24 + 24 + 8


def test_a_graph_dropped_without_backward_stops_counting():
    model, x, y = _mlp()
    with profile() as prof:
        loss = tt.CrossEntropyLoss()(model(x), y)
        assert prof.events[-1].live_bytes == 528
        del loss
        gc.collect()
        (x * 1.0).sum()                              # the next events see what is live
    assert prof.events[-1].live_bytes == 0
    assert prof.summary().peak_saved_bytes == 528


def test_gradient_accumulation_keeps_a_quarter_of_the_graph_alive():
    tt.manual_seed(0)
    model = tt.Sequential(tt.Linear(16, 32), tt.ReLU(), tt.Linear(32, 4))
    x, y = tt.randn(64, 16), np.arange(64) % 4
    with profile() as whole:
        tt.CrossEntropyLoss()(model(x), tt.Tensor(y)).backward()
    big = whole.summary().peak_saved_bytes
    batches = [(tt.Tensor(x.data[i:i + 16].copy()), tt.Tensor(y[i:i + 16])) for i in (0, 16, 32, 48)]
    with profile() as pieces:                       # (slices of x would keep all of x alive)
        for inputs, targets in batches:
            (tt.CrossEntropyLoss()(model(inputs), targets) / 4).backward()
    small = pieces.summary().peak_saved_bytes
    assert small < big / 3, (small, big)


def test_retain_graph_keeps_the_graph_and_a_second_backward_is_recorded():
    w = tt.Tensor(np.ones(3, np.float32), requires_grad=True)
    with profile() as prof:
        loss = (w.exp() * w).sum()
        live = prof.events[-1].live_bytes
        loss.backward(retain_graph=True)
        loss.backward()
    backward = [e for e in prof.events if e.phase == "backward"]
    assert _by_name(backward, "backward") == {"SumBackward": 2, "MulBackward": 2,
                                               "ExpBackward": 2, "AccumulateGrad": 2}
    first = backward[:4]
    assert all(e.freed_bytes == 0 and e.live_bytes == live for e in first)
    assert sum(e.freed_bytes for e in backward[4:]) > 0
    assert prof.summary().backward_passes == 2


# ----- grad modes, higher order, custom functions ------------------------------------------------

def test_no_grad_inside_the_block_records_ops_without_nodes():
    w = tt.Tensor(np.ones(3, np.float32), requires_grad=True)
    with profile() as prof:
        with tt.no_grad():
            a = w * 2
        b = w * 2
    assert [(e.recorded, e.saved_bytes) for e in prof.events] == [(False, 0), (True, 0)]
    assert not a.requires_grad and b.requires_grad


def test_a_block_opened_under_no_grad_records_ops():
    w = tt.Tensor(np.ones(3, np.float32), requires_grad=True)
    with tt.no_grad():
        with profile() as prof:
            (w * 2).sum()
    assert _by_name(prof.events, "forward") == {"MulBackward": 1, "SumBackward": 1}
    assert prof.summary().peak_saved_bytes == 0


def test_create_graph_rules_are_recorded_as_ops_of_the_backward_pass():
    x = tt.Tensor(np.array([1.5, -0.5]), requires_grad=True)
    with profile() as prof:
        y = (x ** 3).sum()
        (g,) = tt.autograd.grad(y, x, create_graph=True)      # 3x^2, a graph itself
        (h,) = tt.autograd.grad(g.sum(), x)                    # 6x
    np.testing.assert_allclose(h.data, 6 * x.data)
    summary = prof.summary()
    forward = [e for e in prof.events if e.phase == "forward"]
    first_walk = min(e.start for e in prof.events if e.phase == "backward")
    inside = [e for e in forward if e.start > first_walk]
    assert len(inside) > 2                 # the rules' ops, and g.sum() between the passes
    before = sum(e.duration for e in forward if e.start < first_walk)
    assert summary.backward_passes == 2
    assert before <= summary.forward_time < sum(e.duration for e in forward)


def test_a_custom_function_is_one_op_and_its_inner_ops_are_part_of_it():
    x = tt.Tensor(np.array([2.0], np.float32), requires_grad=True)
    with profile() as prof:
        y = Cube.apply(x * 1.0)
        y.backward()
    assert x.grad.item() == 12.0
    # x*x*x in Cube.forward is part of the op; the three products of Cube.backward are ops
    # run by the backward pass (rules on Tensors are recorded, their time is backward time)
    assert _by_name(prof.events, "forward") == {"MulBackward": 4, "CubeBackward": 1}
    walk = next(e for e in prof.events if e.phase == "backward")
    assert sum(e.phase == "forward" and e.start > walk.start for e in prof.events) == 3
    assert _by_name(prof.events, "backward")["CubeBackward"] == 1
    cube = next(e for e in prof.events if e.name == "CubeBackward")
    assert cube.saved_bytes == 4                    # x*1.0, saved on ctx (and as the input)
    summary = prof.summary()
    assert summary.forward_time < sum(e.duration for e in prof.events if e.phase == "forward")


def test_profiling_changes_no_result():
    model, x, y = _mlp()
    loss = tt.CrossEntropyLoss()(model(x), y)
    loss.backward()
    expected = [p.grad.data.copy() for p in model.parameters()]
    model.zero_grad()
    with profile():
        loss2 = tt.CrossEntropyLoss()(model(x), y)
        loss2.backward()
    assert loss2.item() == loss.item()
    for p, g in zip(model.parameters(), expected):
        np.testing.assert_array_equal(p.grad.data, g)


# ----- blocks: nesting, overlap, exceptions, threads ----------------------------------------------

def test_nested_blocks_each_record_what_runs_while_they_are_open():
    w = tt.Tensor(np.ones(4, np.float32), requires_grad=True)
    with profile() as outer:
        a = w * 2.0
        with profile() as inner:
            b = a.exp()
            b.sum().backward()
        a.sum()
    assert _by_name(outer.events, "forward") == {"MulBackward": 1, "ExpBackward": 1,
                                                  "SumBackward": 2}
    assert _by_name(inner.events, "forward") == {"ExpBackward": 1, "SumBackward": 1}
    assert _by_name(inner.events, "backward") == _by_name(outer.events, "backward")
    # each counts the graph of its own nodes: exp keeps a and its output (32 B); for outer,
    # a.sum() after backward (which freed them) keeps a again
    assert inner.summary().saved_bytes == 32 and outer.summary().saved_bytes == 48
    assert not recorder.state.active and recorder.state.recordings == []


def test_overlapping_blocks_close_in_any_order():
    x = tt.Tensor(np.ones(2, np.float32), requires_grad=True)
    first, second = profile(), profile()
    first.__enter__()
    x * 1.0
    second.__enter__()
    x * 2.0
    first.__exit__(None, None, None)
    assert recorder.state.active and second.recording and not first.recording
    x * 3.0
    second.__exit__(None, None, None)
    assert not recorder.state.active
    assert len(first.events) == 2 and len(second.events) == 2


def test_a_profile_records_one_block():
    prof = profile()
    with pytest.raises(RuntimeError, match="recorded nothing"):
        prof.summary()
    with prof:
        pass
    with pytest.raises(RuntimeError, match="already recorded a block"):
        with prof:
            pass
    assert not recorder.state.active


def test_an_exception_in_the_block_closes_it_and_keeps_what_ran():
    x = tt.Tensor(np.ones(3, np.float32), requires_grad=True)
    with pytest.raises(KeyError):
        with profile() as prof:
            x * 2.0
            raise KeyError("boom")
    assert not recorder.state.active and not prof.recording
    assert [e.name for e in prof.events] == ["MulBackward"]
    x * 2.0
    assert len(prof.events) == 1


def test_an_op_that_raises_is_not_recorded_and_the_block_goes_on():
    a = tt.Tensor(np.ones((2, 3), np.float32), requires_grad=True)
    with profile() as prof:
        with pytest.raises(ValueError):
            a @ tt.Tensor(np.ones((2, 3), np.float32))
        a * 2.0
    assert [e.name for e in prof.events] == ["MulBackward"]
    assert recorder.records_op()                      # no op left marked as running


def test_an_exception_inside_backward_keeps_the_nodes_that_ran():
    x = tt.Tensor(np.ones(3, np.float32), requires_grad=True)

    def fail(grad):
        raise ArithmeticError("in a hook")

    with profile() as prof:
        h = x.exp()
        h.register_hook(fail)
        with pytest.raises(ArithmeticError):
            (h * 2.0).sum().backward()
        (x * 1.0).sum().backward()                    # the engine and the profiler go on
    names = [e.name for e in prof.events if e.phase == "backward"]
    assert names == ["SumBackward", "MulBackward",               # before the hook raised
                     "SumBackward", "MulBackward", "AccumulateGrad"]
    np.testing.assert_allclose(x.grad.data, np.ones(3))


def test_ops_of_other_threads_are_recorded_with_their_thread():
    x = tt.Tensor(np.ones(3, np.float32), requires_grad=True)
    with profile() as prof:
        worker = threading.Thread(target=lambda: (x * 2.0).sum().backward())
        worker.start()
        worker.join()
        x * 3.0
    threads = {e.thread for e in prof.events}
    assert threads == {worker.ident, threading.get_ident()}


# ----- table, summary, trace ----------------------------------------------------------------------

def _profiled_mlp():
    model, x, y = _mlp()
    with profile() as prof:
        tt.CrossEntropyLoss()(model(x), y).backward()
    return prof


def test_the_table_columns_line_up():
    text = _profiled_mlp().table()
    lines = text.splitlines()
    rule = lines[1]
    assert set(rule) == {"-", " "} and lines[-2] == rule
    columns = [(m.start(), m.end()) for m in re.finditer(r"-+", rule)]
    assert len(columns) == 9
    for line in lines:
        assert len(line) == len(rule), line
        for (start, end), (next_start, _) in zip(columns, columns[1:] + [(len(rule), 0)]):
            assert line[end:next_start].strip() == "", f"text between columns: {line!r}"
            cell = line[start:end]
            if start > 0:
                assert cell == cell.rjust(end - start) and cell[-1] != " ", line
            else:
                assert cell[0] != " ", line
    header = lines[0].split()
    assert header[:3] == ["Op", "Calls", "Forward"] and header[-2:] == ["Output", "Saved"]
    assert lines[-1].startswith("Total") and "528 B" in lines[-1]


def test_the_table_sorts_and_limits_rows():
    prof = _profiled_mlp()
    by_calls = prof.table(sort_by="calls", row_limit=1).splitlines()
    assert len(by_calls) == 5 and by_calls[2].startswith("LinearBackward")
    names = [line.split()[0] for line in prof.table(sort_by="name").splitlines()[2:-2]]
    assert names == sorted(names)
    saved = [r.saved_bytes for r in sorted(prof.key_averages(), key=lambda r: -r.saved_bytes)]
    rows = prof.table(sort_by="saved_bytes").splitlines()[2:-2]
    assert [line.split()[0] for line in rows][0] == "ReLUBackward" and saved[0] == 240
    with pytest.raises(ValueError, match="sort by one of"):
        prof.table(sort_by="cpu_time")
    for bad in (-1, True, 2.0):
        with pytest.raises(ValueError, match="row_limit"):
            prof.table(row_limit=bad)


def test_the_summary_totals_and_reads_as_a_sentence():
    prof = _profiled_mlp()
    summary = prof.summary()
    events = prof.events
    assert summary.forward_time == pytest.approx(
        sum(e.duration for e in events if e.phase == "forward"))
    assert summary.backward_time >= sum(e.duration for e in events if e.phase == "backward")
    assert summary.wall_time > summary.forward_time + summary.backward_time
    assert summary.backward_forward_ratio == pytest.approx(
        summary.backward_time / summary.forward_time)
    text = str(summary)
    assert text.startswith(f"graph memory = {528 / 172:.1f}x parameter memory; backward took ")
    assert "graph peak 528 B" in text and "parameters 172 B" in text


def test_the_chrome_trace_loads_and_follows_the_event_format(tmp_path):
    prof = _profiled_mlp()
    path = tmp_path / "trace.json"
    prof.export_chrome_trace(path)
    trace = json.loads(path.read_text())
    assert trace["displayTimeUnit"] == "ms"
    events = trace["traceEvents"]
    complete = [e for e in events if e["ph"] == "X"]
    counters = [e for e in events if e["ph"] == "C"]
    metadata = [e for e in events if e["ph"] == "M"]
    assert len(events) == len(complete) + len(counters) + len(metadata)
    assert len(complete) == len(prof.events) + 1             # and the backward pass's span
    for e in complete:
        assert isinstance(e["name"], str) and e["cat"] in ("forward", "backward")
        assert all(isinstance(e[k], (int, float)) for k in ("ts", "dur", "pid", "tid"))
        assert e["ts"] >= 0 and e["dur"] >= 0
    spans = [e for e in complete if e["name"] == "backward pass"]
    nodes = [e for e in complete if e["cat"] == "backward" and e["name"] != "backward pass"]
    assert len(spans) == 1 and all(
        spans[0]["ts"] <= n["ts"] and n["ts"] + n["dur"] <= spans[0]["ts"] + spans[0]["dur"] + 1e-3
        for n in nodes)
    assert max(c["args"]["live bytes"] for c in counters) == 528
    assert {m["name"] for m in metadata} == {"process_name", "thread_name"}
    linear = next(e for e in complete if e["name"] == "LinearBackward")
    assert linear["args"]["shape"] == [6, 5] and linear["args"]["input_shapes"][0] == [6, 4]


def test_formatting_helpers():
    assert [format_bytes(n) for n in (0, 1023, 2048, 3 * 2**20, 5 * 2**30)] == [
        "0 B", "1023 B", "2.0 KiB", "3.0 MiB", "5.0 GiB"]
    assert [format_time(t) for t in (0.0, 1.5e-4, 0.0123, 2.0)] == [
        "0.0 us", "150.0 us", "12.30 ms", "2.000 s"]


# ----- the engine, when no block is open -----------------------------------------------------------

def test_without_a_block_the_engine_never_calls_the_profiler(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the profiler ran without an open block")

    for name in ("records_op", "record_op", "walk_timeline"):
        monkeypatch.setattr(recorder, name, refuse)
    model, x, y = _mlp()
    tt.CrossEntropyLoss()(model(x), y).backward()
    tt.autograd.grad((x * 1.0).sum() + (model(x) ** 2).sum(), model[0].weight)
    assert not recorder.state.active


def test_backward_spans_merge_nested_passes_per_thread_and_locate_events():
    """summary() finds the backward pass around each forward event by binary search in merged
    spans (linear scans made it quadratic in the number of passes)."""
    from types import SimpleNamespace

    from tinytorch.profiler import _backward_spans, _inside, _union_length

    walks = [(20, 25, 1), (0, 10, 1), (2, 3, 1), (9, 12, 1), (5, 6, 2)]
    spans = _backward_spans(walks)
    assert spans == {1: ([0, 20], [12, 25]), 2: ([5], [6])}
    assert _union_length(spans) == 12 + 5 + 1
    at = [(11, 1, True), (12, 1, True), (15, 1, False), (-1, 1, False), (5.5, 2, True),
          (7, 2, False), (5.5, 3, False)]
    for start, thread, expected in at:
        event = SimpleNamespace(start=start, thread=thread)
        assert _inside(event, spans) is expected, (start, thread)
