"""Layers: the Module protocol (registration, traversal, state dicts, modes, repr), Linear,
Dropout and Sequential."""

import math

import numpy as np
import pytest

import tinytorch as tt
from tinytorch.core.activations import ReLU, Tanh
from tinytorch.core.autograd import gradcheck
from tinytorch.core.layers import Dropout, Layer, Linear, Module, Parameter, Sequential
from tinytorch.core.tensor import Tensor


class Block(Module):
    """A module holding sub-modules and parameters in every supported way."""

    def __init__(self):
        super().__init__()
        self.scale = Tensor(np.ones(3), requires_grad=True)
        self.first = Linear(3, 4)
        self.stages = [Linear(4, 4), [Linear(4, 4), Tanh()]]
        self.heads = {"left": Linear(4, 2), "right": Linear(4, 2)}
        self.pair = (Tensor(np.zeros(2), requires_grad=True), Linear(2, 1))
        self.constant = Tensor(np.arange(3.0))             # no grad: not a parameter
        self.note = "text"

    def forward(self, x):
        h = self.first(x * self.scale)
        h = self.stages[1][1](self.stages[1][0](self.stages[0](h)))
        out = self.heads["left"](h) + self.heads["right"](h) + self.pair[0]
        return self.pair[1](out)


def fresh_mlp(seed):
    tt.manual_seed(seed)
    return Sequential(Linear(3, 5), ReLU(), Linear(5, 2))


# ----- registration and traversal -----------------------------------------------------------------

def test_parameters_are_found_in_attributes_lists_tuples_and_dicts():
    block = Block()
    names = [name for name, _ in block.named_parameters()]
    assert names == [
        "scale", "pair.0",
        "first.weight", "first.bias",
        "stages.0.weight", "stages.0.bias", "stages.1.0.weight", "stages.1.0.bias",
        "heads.left.weight", "heads.left.bias", "heads.right.weight", "heads.right.bias",
        "pair.1.weight", "pair.1.bias",
    ]
    assert [p for _, p in block.named_parameters()] == block.parameters()
    assert all(p.requires_grad and p.is_leaf for p in block.parameters())


def test_every_parameter_receives_a_gradient():
    block = Block()
    block(Tensor(np.ones((2, 3)))).sum().backward()
    assert all(p.grad is not None and p.grad.shape == p.shape for p in block.parameters())


def test_children_and_modules():
    block = Block()
    children = block.named_children()
    assert [name for name, _ in children] == [
        "first", "stages.0", "stages.1.0", "stages.1.1", "heads.left", "heads.right", "pair.1"]
    assert block.children() == [module for _, module in children]
    modules = block.modules()
    assert modules[0] is block and len(modules) == 1 + len(children)
    nested = Sequential(block, Linear(1, 1))
    assert [name for name, _ in nested.named_modules()][:3] == ["", "0", "0.first"]


def test_non_leaf_tensors_and_constants_are_not_parameters():
    layer = Linear(2, 2)
    layer.cached_output = layer(Tensor(np.ones((1, 2))))    # requires grad, but has a grad_fn
    layer.constant = Tensor(np.ones(2))
    assert [name for name, _ in layer.named_parameters()] == ["weight", "bias"]
    assert sorted(layer.state_dict()) == ["bias", "weight"]


def test_shared_parameters_and_modules_are_listed_once():
    shared = Linear(2, 2)
    model = Sequential(shared, ReLU(), shared)
    assert len(model.parameters()) == 2
    assert len(model.children()) == 2
    model.extra = shared.weight
    assert len(model.parameters()) == 2


def test_modules_that_skip_super_init_still_register():
    class Bare(Module):
        def __init__(self):
            self.inner = Linear(2, 3)
            self.w = Tensor(np.ones(3), requires_grad=True)

    bare = Bare()
    assert [name for name, _ in bare.named_parameters()] == ["w", "inner.weight", "inner.bias"]
    assert bare.training is True
    bare.eval()
    assert bare.training is False and bare.inner.training is False


def test_requires_grad_set_after_assignment_still_counts():
    m = Module()
    m.w = Tensor(np.ones(2))
    m.w.requires_grad_(True)
    assert m.parameters() == [m.w]


def test_frozen_parameters_leave_parameters_but_stay_in_state_dict():
    layer = Linear(3, 2)
    layer.weight.requires_grad_(False)
    assert layer.parameters() == [layer.bias]
    assert sorted(layer.state_dict()) == ["bias", "weight"]


def test_buffers_are_saved_but_not_trained():
    layer = Linear(2, 2)
    layer.register_buffer("running_mean", Tensor(np.zeros(2)))
    assert "running_mean" not in dict(layer.named_parameters())
    assert [name for name, _ in layer.named_buffers()] == ["running_mean"]
    assert "running_mean" in layer.state_dict()
    with pytest.raises(TypeError, match="'running_mean' must be a Tensor"):
        layer.register_buffer("running_mean", np.zeros(2))


def test_deleting_an_attribute_unregisters_it():
    layer = Linear(2, 2)
    del layer.bias
    assert sorted(layer.state_dict()) == ["weight"]


def test_layer_is_an_alias_of_module_and_parameter_makes_a_trainable_leaf():
    assert Layer is Module
    p = Parameter(np.zeros((2, 3)))
    assert isinstance(p, Tensor) and p.requires_grad and p.is_leaf and p.shape == (2, 3)


def test_forward_must_be_defined():
    with pytest.raises(NotImplementedError, match="Module does not define forward"):
        Module()(Tensor([1.0]))


# ----- state dicts --------------------------------------------------------------------------------

def test_state_dict_round_trip_gives_identical_outputs():
    source, target = fresh_mlp(1), fresh_mlp(2)
    x = Tensor(np.random.default_rng(0).standard_normal((4, 3)))
    assert not np.array_equal(source(x).data, target(x).data)
    result = target.load_state_dict(source.state_dict())
    assert result.missing_keys == [] and result.unexpected_keys == []
    np.testing.assert_array_equal(source(x).data, target(x).data)


def test_state_dict_of_a_nested_model_round_trips():
    tt.manual_seed(3)
    source = Block()
    tt.manual_seed(4)
    target = Block()
    target.load_state_dict(source.state_dict())
    x = Tensor(np.ones((2, 3)))
    np.testing.assert_array_equal(source(x).data, target(x).data)


def test_state_dict_is_a_snapshot_of_arrays():
    model = fresh_mlp(0)
    state = model.state_dict()
    assert list(state) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert all(isinstance(v, np.ndarray) for v in state.values())
    before = state["0.weight"].copy()
    model[0].weight.data += 1.0
    np.testing.assert_array_equal(state["0.weight"], before)


def test_load_state_dict_copies_in_place_and_accepts_tensors():
    model = fresh_mlp(0)
    weight = model[0].weight
    state = {k: Tensor(v + 1.0) for k, v in model.state_dict().items()}
    model.load_state_dict(state)
    assert model[0].weight is weight                      # optimizers keep their references
    np.testing.assert_array_equal(weight.data, state["0.weight"].data)


def test_strict_loading_reports_missing_and_unexpected_keys_by_name():
    model = fresh_mlp(0)
    state = model.state_dict()
    del state["2.bias"]
    state["3.weight"] = np.zeros((5, 2))
    with pytest.raises(RuntimeError) as error:
        model.load_state_dict(state)
    message = str(error.value)
    assert "loading state_dict for Sequential" in message
    assert "Missing key(s) in state_dict: '2.bias'." in message
    assert "Unexpected key(s) in state_dict: '3.weight'." in message


def test_shape_mismatch_is_reported_by_name_and_nothing_is_copied():
    model = fresh_mlp(0)
    before = model.state_dict()
    state = {k: v + 1.0 for k, v in before.items()}
    state["0.weight"] = np.zeros((5, 3))
    with pytest.raises(RuntimeError, match=r"size mismatch for 0.weight: .*shape \(5, 3\).*"
                                           r"current model is \(3, 5\)"):
        model.load_state_dict(state, strict=False)
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[key])


def test_non_strict_loading_skips_and_reports_keys():
    model = fresh_mlp(0)
    state = {"0.weight": np.full((3, 5), 2.0), "extra": np.ones(1)}
    result = model.load_state_dict(state, strict=False)
    assert result.missing_keys == ["0.bias", "2.weight", "2.bias"]
    assert result.unexpected_keys == ["extra"]
    np.testing.assert_array_equal(model[0].weight.data, np.full((3, 5), 2.0))


# ----- modes, gradients, repr ---------------------------------------------------------------------

def test_train_and_eval_switch_every_module():
    model = Sequential(Linear(2, 2), Sequential(Dropout(0.5), ReLU()))
    assert model.eval() is model
    assert all(m.training is False for m in model.modules())
    model.train()
    assert all(m.training is True for m in model.modules())
    with pytest.raises(TypeError, match="mode must be True or False"):
        model.train("no")


def test_zero_grad_clears_every_parameter_gradient():
    model = fresh_mlp(0)
    model(Tensor(np.ones((2, 3)))).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_repr_shows_the_tree():
    model = Sequential(Linear(2, 3), ReLU(), Sequential(Dropout(0.25), Linear(3, 1, bias=False)))
    assert repr(model) == (
        "Sequential(\n"
        "  (0): Linear(in_features=2, out_features=3, bias=True)\n"
        "  (1): ReLU()\n"
        "  (2): Sequential(\n"
        "    (0): Dropout(p=0.25)\n"
        "    (1): Linear(in_features=3, out_features=1, bias=False)\n"
        "  )\n"
        ")")


# ----- Linear -------------------------------------------------------------------------------------

def test_linear_computes_x_at_weight_plus_bias():
    layer = Linear(3, 2)
    assert layer.weight.shape == (3, 2) and layer.bias.shape == (2,)
    x = np.random.default_rng(1).standard_normal((5, 3)).astype(np.float32)
    np.testing.assert_allclose(layer(Tensor(x)).data, x @ layer.weight.data + layer.bias.data,
                               rtol=1e-6)
    batched = np.ones((2, 4, 3), dtype=np.float32)
    assert layer(batched).shape == (2, 4, 2)


def test_linear_without_bias():
    layer = Linear(3, 2, bias=False)
    assert layer.bias is None and layer.parameters() == [layer.weight]
    x = np.ones((1, 3), dtype=np.float32)
    np.testing.assert_allclose(layer(x).data, x @ layer.weight.data, rtol=1e-6)


def test_linear_initialisation_is_uniform_within_one_over_sqrt_fan_in():
    tt.manual_seed(0)
    layer = Linear(400, 300)
    bound = 1 / math.sqrt(400)
    for values in (layer.weight.data, layer.bias.data):
        assert np.abs(values).max() <= bound
    w = layer.weight.data
    assert abs(w.mean()) < 0.01 * bound
    assert w.var() == pytest.approx(bound ** 2 / 3, rel=0.02)      # variance of U(-b, b)
    assert layer.weight.dtype == tt.get_default_dtype()


def test_manual_seed_makes_initialisation_reproducible():
    a, b, c = fresh_mlp(7), fresh_mlp(7), fresh_mlp(8)
    for key, value in a.state_dict().items():
        np.testing.assert_array_equal(value, b.state_dict()[key])
    assert not np.array_equal(a.state_dict()["0.weight"], c.state_dict()["0.weight"])


def test_linear_gradients_pass_gradcheck():
    layer = Linear(3, 2, dtype=np.float64)
    x = Tensor(np.random.default_rng(2).standard_normal((4, 3)), requires_grad=True,
               dtype=np.float64)
    assert gradcheck(lambda x, w, b: x @ w + b, [x, layer.weight, layer.bias])
    assert gradcheck(lambda x: layer(x), [x])


def test_linear_errors_name_the_shapes():
    layer = Linear(3, 2)
    with pytest.raises(ValueError, match=r"last dimension must be 3, got input of shape \(4, 5\)"):
        layer(Tensor(np.ones((4, 5))))
    with pytest.raises(ValueError, match="in_features must be a non-negative int, got -1"):
        Linear(-1, 2)
    with pytest.raises(ValueError, match="out_features must be a non-negative int, got 2.5"):
        Linear(2, 2.5)


# ----- Dropout ------------------------------------------------------------------------------------

def test_dropout_is_the_identity_in_eval_mode_and_with_p_zero():
    x = Tensor(np.arange(6.0))
    np.testing.assert_array_equal(Dropout(0.5).eval()(x).data, x.data)
    np.testing.assert_array_equal(Dropout(0.0)(x).data, x.data)
    np.testing.assert_array_equal(Dropout(0.5)(x, training=False).data, x.data)


def test_dropout_zeroes_with_probability_p_and_scales_the_rest():
    tt.manual_seed(0)
    p, n = 0.3, 200_000
    y = Dropout(p)(Tensor(np.full(n, 2.0))).data
    kept = y != 0
    np.testing.assert_allclose(y[kept], 2.0 / (1 - p), rtol=1e-6)
    assert abs(kept.mean() - (1 - p)) < 5 * math.sqrt(p * (1 - p) / n)
    assert y.mean() == pytest.approx(2.0, rel=0.01)             # expectation unchanged


def test_dropout_gradient_is_the_scaled_mask():
    x = Tensor(np.ones(1000), requires_grad=True)
    y = Dropout(0.5)(x)
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.data, (y.data != 0) * 2.0)


def test_dropout_with_p_one_drops_everything():
    x = Tensor(np.ones(5), requires_grad=True)
    y = Dropout(1.0)(x)
    y.sum().backward()
    np.testing.assert_array_equal(y.data, np.zeros(5))
    np.testing.assert_array_equal(x.grad.data, np.zeros(5))


def test_dropout_training_argument_overrides_the_mode():
    tt.manual_seed(1)
    layer = Dropout(0.5).eval()
    assert (layer(Tensor(np.ones(1000)), training=True).data == 0).any()


def test_dropout_is_reproducible_with_manual_seed():
    x = Tensor(np.ones(50))
    tt.manual_seed(5)
    a = Dropout(0.5)(x).data
    tt.manual_seed(5)
    np.testing.assert_array_equal(Dropout(0.5)(x).data, a)


@pytest.mark.parametrize("p", [-0.1, 1.5, float("nan"), "0.5", True])
def test_dropout_rejects_p_outside_zero_one(p):
    with pytest.raises(ValueError, match="p must be a probability between 0 and 1"):
        Dropout(p)


# ----- Sequential ---------------------------------------------------------------------------------

def test_sequential_applies_layers_in_order():
    model = fresh_mlp(0)
    x = Tensor(np.random.default_rng(3).standard_normal((2, 3)))
    expected = model[2](model[1](model[0](x)))
    np.testing.assert_array_equal(model(x).data, expected.data)


def test_sequential_indexing_iteration_and_length():
    layers = [Linear(2, 3), ReLU(), Linear(3, 1)]
    model = Sequential(*layers)
    assert len(model) == 3 and list(model) == layers
    assert model[0] is layers[0] and model[-1] is layers[2]
    head = model[:2]
    assert isinstance(head, Sequential) and list(head) == layers[:2]
    assert Sequential(layers)[1] is layers[1]


def test_sequential_append_registers_the_new_layer():
    model = Sequential(Linear(2, 3))
    model.append(ReLU()).append(Linear(3, 4))
    assert len(model) == 3
    assert [name for name, _ in model.named_parameters()] == [
        "0.weight", "0.bias", "2.weight", "2.bias"]


def test_sequential_rejects_layers_that_cannot_be_called():
    with pytest.raises(TypeError, match="layer 1 is a int"):
        Sequential(Linear(2, 2), 3)


def test_frozen_parameter_inside_a_list_stays_in_the_state_dict():
    class Holder(Module):
        def __init__(self):
            super().__init__()
            self.weights = [Tensor(np.ones(2), requires_grad=True), Tensor(np.zeros(3), requires_grad=True)]

    holder = Holder()
    holder.weights[0].requires_grad_(False)
    assert sorted(holder.state_dict()) == ["weights.0", "weights.1"]
    assert [name for name, _ in holder.named_parameters()] == ["weights.1"]
