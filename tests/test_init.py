"""tinytorch.core.init: PyTorch's initialisers, in place, reproducible, with PyTorch's fans
(except 2-D weights, stored (in_features, out_features) by tinytorch's Linear)."""

import math

import numpy as np
import pytest

import tinytorch as tt
from tinytorch.core import init
from tinytorch.core.tensor import Tensor


def weight(*shape, dtype=None):
    return Tensor(np.zeros(shape), requires_grad=True, dtype=dtype)


def test_fans_follow_pytorch_with_linear_weights_stored_in_by_out():
    assert init._calculate_fan_in_and_fan_out(weight(784, 128)) == (784, 128)
    assert init._calculate_fan_in_and_fan_out(weight(16, 6, 5, 5)) == (150, 400)   # conv
    assert init._calculate_fan_in_and_fan_out(weight(8, 2, 3)) == (6, 24)          # conv1d
    with pytest.raises(ValueError, match="fewer than 2 dimensions"):
        init.xavier_uniform_(weight(5))


def test_conv_fans_match_torch(torch):
    t = torch.empty(16, 6, 5, 5)
    assert init._calculate_fan_in_and_fan_out(weight(16, 6, 5, 5)) == \
        torch.nn.init._calculate_fan_in_and_fan_out(t)


@pytest.mark.parametrize("name, param", [("linear", None), ("conv2d", None), ("sigmoid", None),
                                         ("tanh", None), ("relu", None), ("leaky_relu", None),
                                         ("leaky_relu", 0.2), ("selu", None)])
def test_calculate_gain_matches_torch(torch, name, param):
    assert init.calculate_gain(name, param) == pytest.approx(torch.nn.init.calculate_gain(name, param))


def test_calculate_gain_rejects_unknown_nonlinearities():
    with pytest.raises(ValueError, match="unsupported nonlinearity 'swish'"):
        init.calculate_gain("swish")


def _stats(fill, shape, seed=0, **kwargs):
    tt.manual_seed(seed)
    t = weight(*shape)
    assert fill(t, **kwargs) is t                     # in place, returns the tensor
    return t.data


@pytest.mark.parametrize("fill, kwargs, std", [
    (init.xavier_uniform_, {}, math.sqrt(2.0 / (300 + 200))),
    (init.xavier_normal_, {"gain": 2.0}, 2.0 * math.sqrt(2.0 / (300 + 200))),
    (init.kaiming_uniform_, {}, math.sqrt(2.0) / math.sqrt(300)),
    (init.kaiming_normal_, {"nonlinearity": "relu"}, math.sqrt(2.0) / math.sqrt(300)),
    (init.kaiming_normal_, {"mode": "fan_out", "nonlinearity": "tanh"}, (5 / 3) / math.sqrt(200)),
    (init.kaiming_uniform_, {"a": math.sqrt(5)}, 1 / math.sqrt(3 * 300)),
])
def test_variance_scaling_initialisers_have_the_documented_spread(fill, kwargs, std):
    data = _stats(fill, (300, 200), **kwargs)
    assert data.std() == pytest.approx(std, rel=0.03)
    assert abs(data.mean()) < 0.05 * std
    if "uniform" in fill.__name__:
        assert np.abs(data).max() <= math.sqrt(3) * std * (1 + 1e-6)


def test_kaiming_uniform_with_a_sqrt5_is_pytorchs_default_bound():
    data = _stats(init.kaiming_uniform_, (64, 32, 3, 3), a=math.sqrt(5))
    bound = 1 / math.sqrt(32 * 9)
    assert np.abs(data).max() <= bound and np.abs(data).max() > 0.99 * bound


def test_simple_fills():
    t = weight(3, 4)
    assert np.all(init.constant_(t, 0.25).data == 0.25)
    assert np.all(init.ones_(t).data == 1) and np.all(init.zeros_(t).data == 0)
    uniform = _stats(init.uniform_, (100, 100), a=-2.0, b=-1.0)
    assert uniform.min() >= -2.0 and uniform.max() < -1.0
    normal = _stats(init.normal_, (100, 100), mean=3.0, std=0.5)
    assert normal.mean() == pytest.approx(3.0, abs=0.02) and normal.std() == pytest.approx(0.5, rel=0.03)


def test_initialisers_are_reproducible_with_manual_seed_and_keep_the_dtype():
    a = _stats(init.kaiming_normal_, (5, 7), seed=3)
    b = _stats(init.kaiming_normal_, (5, 7), seed=3)
    np.testing.assert_array_equal(a, b)
    t = weight(4, 4, dtype=np.float64)
    init.xavier_uniform_(t)
    assert t.dtype == np.float64 and t.requires_grad and t.is_leaf


def test_initialising_a_tensor_a_graph_still_needs_is_caught():
    w = weight(2, 2)
    init.ones_(w)
    y = (w * w).sum()                                  # MulBackward saved w's values
    init.zeros_(w)
    with pytest.raises(RuntimeError, match=r"modified by an in-place operation \(init.zeros_\)"):
        y.backward()


def test_initialisers_refuse_non_tensors_and_bad_modes():
    with pytest.raises(TypeError, match="expected a Tensor"):
        init.zeros_(np.zeros(3))
    with pytest.raises(ValueError, match="mode must be 'fan_in' or 'fan_out'"):
        init.kaiming_normal_(weight(3, 3), mode="fan_avg")
