"""ModuleList, ModuleDict, Identity and Flatten: registration of what they hold, PyTorch's
names, list/dict behaviour, and Flatten's shapes and errors."""

import numpy as np
import pytest

import tinytorch as tt
from tinytorch.core.activations import ReLU
from tinytorch.core.layers import Flatten, Identity, Linear, Module, ModuleDict, ModuleList
from tinytorch.core.tensor import Tensor


class Tower(Module):
    def __init__(self):
        super().__init__()
        self.blocks = ModuleList([Linear(3, 3) for _ in range(2)])
        self.heads = ModuleDict({"a": Linear(3, 1), "b": Linear(3, 2)})

    def forward(self, x):
        for block in self.blocks:
            x = block(x).relu()
        return {name: head(x) for name, head in self.heads.items()}


def test_parameters_inside_containers_are_registered_with_pytorch_names():
    names = [name for name, _ in Tower().named_parameters()]
    assert names == ["blocks.0.weight", "blocks.0.bias", "blocks.1.weight", "blocks.1.bias",
                     "heads.a.weight", "heads.a.bias", "heads.b.weight", "heads.b.bias"]
    assert sorted(Tower().state_dict()) == sorted(names)


def test_containers_train_eval_and_state_dict_round_trip():
    tower = Tower()
    tower.eval()
    assert not tower.blocks[1].training and not tower.heads["b"].training
    other = Tower()
    other.load_state_dict(tower.state_dict())
    x = tt.randn(4, 3)
    np.testing.assert_array_equal(other(x)["b"].data, tower(x)["b"].data)


def test_gradients_reach_modules_held_in_containers():
    tower = Tower()
    out = tower(tt.randn(4, 3))
    (out["a"].sum() + out["b"].sum()).backward()
    assert all(p.grad is not None for p in tower.parameters())


def test_module_list_behaves_like_a_list():
    layers = ModuleList()
    layers.append(Linear(2, 2)).extend([ReLU(), Linear(2, 1)])
    layers.insert(0, Identity())
    assert len(layers) == 4 and isinstance(layers[0], Identity) and isinstance(layers[-1], Linear)
    assert isinstance(layers[1:3], ModuleList) and len(layers[1:3]) == 2
    layers[0] = Linear(2, 2)
    del layers[2]                                     # the ReLU
    assert [type(m).__name__ for m in layers] == ["Linear", "Linear", "Linear"]
    assert [name for name, _ in layers.named_parameters()][-2:] == ["2.weight", "2.bias"]
    layers += [ReLU()]
    assert len(layers) == 4
    with pytest.raises(TypeError, match="expected a Module, got int"):
        layers.append(3)


def test_module_dict_behaves_like_a_dict():
    heads = ModuleDict([("x", Linear(2, 1))])
    heads["y"] = Linear(2, 3)
    heads.update({"z": Identity()})
    assert list(heads) == list(heads.keys()) == ["x", "y", "z"] and "y" in heads and len(heads) == 3
    assert isinstance(heads.pop("z"), Identity) and "z" not in heads
    del heads["x"]
    assert [name for name, _ in heads.named_parameters()] == ["y.weight", "y.bias"]
    heads.clear()
    assert heads.parameters() == []
    with pytest.raises(TypeError, match="keys must be strings"):
        heads[1] = Linear(1, 1)
    with pytest.raises(KeyError, match="without '.'"):
        heads["a.b"] = Linear(1, 1)
    with pytest.raises(TypeError, match="expected a Module"):
        heads["w"] = "not a module"


def test_containers_repr_lists_their_modules():
    text = repr(ModuleList([Linear(2, 1)]))
    assert "(0): Linear(in_features=2, out_features=1, bias=True)" in text
    assert "(head): Identity()" in repr(ModuleDict({"head": Identity()}))


def test_identity_returns_its_input_and_ignores_arguments():
    x = tt.randn(2, 3)
    assert Identity(54, unused="argument")(x) is x


@pytest.mark.parametrize("start, end, shape", [(1, -1, (2, 60)), (0, -1, (120,)), (1, 2, (2, 12, 5)),
                                               (-2, -1, (2, 3, 20)), (2, 2, (2, 3, 4, 5))])
def test_flatten_merges_the_axes_from_start_to_end(start, end, shape):
    x = Tensor(np.arange(120.0).reshape(2, 3, 4, 5), requires_grad=True)
    y = Flatten(start, end)(x)
    assert y.shape == shape
    np.testing.assert_array_equal(y.data.reshape(-1), np.arange(120.0))
    y.sum().backward()
    assert x.grad.shape == (2, 3, 4, 5)


def test_flatten_default_keeps_the_batch_axis_and_has_a_repr():
    assert Flatten()(tt.zeros(7, 2, 3)).shape == (7, 6)
    assert repr(Flatten()) == "Flatten(start_dim=1, end_dim=-1)"


def test_flatten_errors_name_the_dims_and_the_shape():
    with pytest.raises(ValueError, match=r"dim 1 is out of range for input of shape \(4,\)"):
        Flatten()(tt.zeros(4))
    with pytest.raises(ValueError, match=r"start_dim comes after end_dim .* \(2, 3, 4\)"):
        Flatten(2, 1)(tt.zeros(2, 3, 4))


def test_package_root_exports_the_new_classes():
    for name in ("Conv2d", "MaxPool2d", "AvgPool2d", "BatchNorm2d", "BatchNorm1d", "ModuleList",
                 "ModuleDict", "Identity", "Flatten"):
        assert getattr(tt, name).__name__ == name
    from tinytorch.core import init, spatial                      # noqa: F401
    from tinytorch.core.functional import avg_pool2d, batch_norm, conv2d, max_pool2d   # noqa: F401
