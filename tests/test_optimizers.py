"""Optimizers follow torch.optim's update rules step for step, and save/restore their state."""

import numpy as np
import pytest

import tinytorch as tt
from tinytorch.core.optimizers import SGD, Adam, AdamW, Optimizer

torch = pytest.importorskip("torch")

STEPS = 100


def _problem(seed=0):
    """A small two-layer regression problem: initial weights and a fixed batch (float64)."""
    rng = np.random.default_rng(seed)
    return {
        "w1": rng.standard_normal((5, 8)) * 0.5, "b1": rng.standard_normal(8) * 0.1,
        "w2": rng.standard_normal((8, 3)) * 0.5,
        "x": rng.standard_normal((16, 5)), "y": rng.standard_normal((16, 3)),
    }


def _loss_tt(params, x, y):
    w1, b1, w2 = params
    return ((((x @ w1 + b1).tanh()) @ w2 - y) ** 2).mean()


def _loss_torch(params, x, y):
    w1, b1, w2 = params
    return (((torch.tanh(x @ w1 + b1)) @ w2 - y) ** 2).mean()


def _run_tt(make_optimizer, problem, steps=STEPS, freeze=()):
    params = [tt.Tensor(problem[k], dtype=np.float64, requires_grad=True)
              for k in ("w1", "b1", "w2")]
    x = tt.Tensor(problem["x"], dtype=np.float64)
    y = tt.Tensor(problem["y"], dtype=np.float64)
    optimizer = make_optimizer(params)
    for _ in range(steps):
        optimizer.zero_grad()
        _loss_tt(params, x, y).backward()
        for i in freeze:
            params[i].grad = None
        optimizer.step()
    return [p.data for p in params]


def _run_torch(make_optimizer, problem, steps=STEPS, freeze=()):
    params = [torch.tensor(problem[k], dtype=torch.float64, requires_grad=True)
              for k in ("w1", "b1", "w2")]
    x = torch.tensor(problem["x"], dtype=torch.float64)
    y = torch.tensor(problem["y"], dtype=torch.float64)
    optimizer = make_optimizer(params)
    for _ in range(steps):
        optimizer.zero_grad()
        _loss_torch(params, x, y).backward()
        for i in freeze:
            params[i].grad = None
        optimizer.step()
    return [p.detach().numpy() for p in params]


CASES = {
    "sgd": (lambda p: SGD(p, lr=0.1), lambda p: torch.optim.SGD(p, lr=0.1)),
    "sgd_momentum": (lambda p: SGD(p, lr=0.05, momentum=0.9),
                     lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9)),
    "sgd_dampening": (lambda p: SGD(p, lr=0.05, momentum=0.9, dampening=0.3),
                      lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, dampening=0.3)),
    "sgd_nesterov": (lambda p: SGD(p, lr=0.05, momentum=0.9, nesterov=True),
                     lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True)),
    "sgd_weight_decay": (lambda p: SGD(p, lr=0.05, momentum=0.5, weight_decay=0.1),
                         lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.5, weight_decay=0.1)),
    "adam": (lambda p: Adam(p, lr=0.01), lambda p: torch.optim.Adam(p, lr=0.01)),
    "adam_options": (lambda p: Adam(p, lr=0.02, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.05),
                     lambda p: torch.optim.Adam(p, lr=0.02, betas=(0.8, 0.99), eps=1e-6,
                                                weight_decay=0.05)),
    "adamw": (lambda p: AdamW(p, lr=0.01), lambda p: torch.optim.AdamW(p, lr=0.01)),
    "adamw_strong_decay": (lambda p: AdamW(p, lr=0.01, weight_decay=0.5),
                           lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.5)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_trajectory_matches_torch_over_100_steps(case):
    ours, theirs = CASES[case]
    problem = _problem()
    start = [problem[k].copy() for k in ("w1", "b1", "w2")]
    got = _run_tt(ours, problem)
    expected = _run_torch(theirs, problem)
    for g, e, s in zip(got, expected, start):
        assert not np.allclose(e, s), "the parameters should have moved"
        np.testing.assert_allclose(g, e, rtol=1e-6, atol=1e-12)


def test_default_hyper_parameters_match_torch():
    problem = _problem(1)
    got = _run_tt(lambda p: AdamW(p), problem, steps=20)
    expected = _run_torch(lambda p: torch.optim.AdamW(p), problem, steps=20)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("case", ["sgd_momentum", "adam"])
def test_parameters_without_gradient_are_skipped_like_torch(case):
    ours, theirs = CASES[case]
    problem = _problem(2)
    got = _run_tt(ours, problem, steps=10, freeze=(1,))
    expected = _run_torch(theirs, problem, steps=10, freeze=(1,))
    np.testing.assert_array_equal(got[1], problem["b1"])
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-6, atol=1e-12)


def test_param_groups_have_their_own_learning_rates_like_torch():
    problem = _problem(3)

    def ours(p):
        return Adam([{"params": [p[0], p[1]], "lr": 0.05}, {"params": [p[2]]}], lr=0.001)

    def theirs(p):
        return torch.optim.Adam([{"params": [p[0], p[1]], "lr": 0.05}, {"params": [p[2]]}],
                                lr=0.001)

    got = _run_tt(ours, problem, steps=30)
    expected = _run_torch(theirs, problem, steps=30)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-6, atol=1e-12)


def test_param_groups_keep_defaults_for_unset_hyper_parameters():
    a = tt.zeros(2, requires_grad=True)
    b = tt.zeros(2, requires_grad=True)
    optimizer = SGD([{"params": [a], "lr": 0.5}, {"params": [b]}], lr=0.1, momentum=0.9)
    assert [g["lr"] for g in optimizer.param_groups] == [0.5, 0.1]
    assert [g["momentum"] for g in optimizer.param_groups] == [0.9, 0.9]
    assert len(optimizer.params) == 2
    assert optimizer.params[0] is a and optimizer.params[1] is b


def test_lr_assignment_sets_every_group():
    a = tt.zeros(2, requires_grad=True)
    b = tt.zeros(2, requires_grad=True)
    optimizer = SGD([{"params": [a], "lr": 0.5}, {"params": [b]}], lr=0.1)
    optimizer.lr = 0.01
    assert [g["lr"] for g in optimizer.param_groups] == [0.01, 0.01]


def test_accepts_a_generator_of_parameters():
    params = [tt.zeros(3, requires_grad=True) for _ in range(2)]
    optimizer = SGD((p for p in params), lr=0.1)
    assert len(optimizer.params) == 2


def test_parameter_that_does_not_require_grad_is_rejected():
    with pytest.raises(ValueError, match="does not require grad"):
        Optimizer([tt.zeros(2, requires_grad=True), tt.zeros(2)])


def test_invalid_hyper_parameters_are_rejected():
    p = [tt.zeros(2, requires_grad=True)]
    with pytest.raises(ValueError, match="lr"):
        SGD(p, lr=-1.0)
    with pytest.raises(ValueError, match="nesterov"):
        SGD(p, lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="betas"):
        Adam(p, betas=(0.9, 1.5))
    with pytest.raises(ValueError, match="empty"):
        SGD([], lr=0.1)


def test_zero_grad_sets_gradients_to_none():
    w = tt.Tensor([1.0, 2.0], requires_grad=True)
    optimizer = SGD([w], lr=0.1)
    (w * w).sum().backward()
    assert w.grad is not None
    optimizer.zero_grad()
    assert w.grad is None


def test_step_updates_data_in_place_without_recording_a_graph():
    w = tt.Tensor([1.0, 2.0], requires_grad=True)
    storage = w.data
    (w * w).sum().backward()
    Adam([w], lr=0.1).step()
    assert w.data is storage, "the update should write into the existing array"
    assert w.is_leaf and w.requires_grad


def test_numpy_array_gradients_are_accepted():
    w = tt.Tensor([1.0, 2.0], requires_grad=True)
    w.grad = np.array([0.5, -0.5], dtype=np.float32)
    SGD([w], lr=0.1).step()
    np.testing.assert_allclose(w.data, [0.95, 2.05], rtol=1e-6)


@pytest.mark.parametrize("case", ["sgd_momentum", "adam", "adamw"])
def test_state_dict_round_trip_resumes_with_the_same_next_step(case):
    ours, _ = CASES[case]
    problem = _problem(4)
    x = tt.Tensor(problem["x"], dtype=np.float64)
    y = tt.Tensor(problem["y"], dtype=np.float64)

    def make_params():
        return [tt.Tensor(problem[k], dtype=np.float64, requires_grad=True)
                for k in ("w1", "b1", "w2")]

    def train(params, optimizer, steps):
        for _ in range(steps):
            optimizer.zero_grad()
            _loss_tt(params, x, y).backward()
            optimizer.step()

    params = make_params()
    optimizer = ours(params)
    train(params, optimizer, 5)
    saved_params = [p.data.copy() for p in params]
    saved_state = optimizer.state_dict()
    train(params, optimizer, 1)
    expected = [p.data.copy() for p in params]

    resumed = make_params()
    for p, s in zip(resumed, saved_params):
        p.data[...] = s
    fresh = ours(resumed)
    fresh.load_state_dict(saved_state)
    train(resumed, fresh, 1)
    for g, e in zip(resumed, expected):
        np.testing.assert_array_equal(g.data, e)


def test_state_dict_is_a_copy():
    w = tt.Tensor([1.0, 2.0], requires_grad=True)
    optimizer = SGD([w], lr=0.1, momentum=0.9)
    (w * w).sum().backward()
    optimizer.step()
    state = optimizer.state_dict()
    buffer = state["state"][0]["momentum_buffer"].copy()
    optimizer.step()
    np.testing.assert_array_equal(state["state"][0]["momentum_buffer"], buffer)


def test_load_state_dict_rejects_mismatched_shapes_and_counts():
    w = tt.zeros(3, requires_grad=True)
    optimizer = SGD([w], lr=0.1, momentum=0.9)
    w.grad = tt.ones(3)
    optimizer.step()
    state = optimizer.state_dict()

    other = SGD([tt.zeros(4, requires_grad=True)], lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="shape"):
        other.load_state_dict(state)
    two = SGD([tt.zeros(3, requires_grad=True), tt.zeros(3, requires_grad=True)], lr=0.1)
    with pytest.raises(ValueError, match="parameters"):
        two.load_state_dict(state)


def test_loading_another_optimizers_state_is_refused():
    w = tt.Tensor(np.ones(3), requires_grad=True)
    adam_state = Adam([w]).state_dict()
    with pytest.raises(ValueError, match="from Adam, but this optimizer is SGD"):
        SGD([w], lr=0.1).load_state_dict(adam_state)


def test_a_new_optimizer_writes_only_its_rule_and_step_does_the_bookkeeping():
    """Optimizer.step owns the loop and records each update as an in-place edit, so an
    optimizer that defines only update() cannot forget it: backward through a graph that saved
    the old values is refused."""
    class Halve(Optimizer):
        def __init__(self, params):
            super().__init__(params, {})

        def update(self, param, grad, group, state):
            param.data *= 0.5

    w = tt.Tensor([2.0, 4.0], requires_grad=True)
    (w * w).sum().backward()
    loss = (w * w).sum()                          # saves w's current values
    optimizer = Halve([w])
    optimizer.step()
    np.testing.assert_array_equal(w.data, [1.0, 2.0])
    assert optimizer.step_count == 1
    with pytest.raises(RuntimeError, match=r"Halve.step\(\)"):
        loss.backward()
