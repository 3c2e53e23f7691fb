"""Convolution, pooling and batch normalisation (tinytorch.core.spatial and the functional forms):
values and gradients against PyTorch in float64 over a grid of settings, finite differences,
higher-order gradients, PyTorch's conventions (ties, padding, running statistics, initial
values) and the errors for bad shapes."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinytorch as tt
from tinytorch.core.autograd import grad, gradcheck, gradgradcheck
from tinytorch.core.functional import avg_pool2d, batch_norm, conv2d, max_pool2d
from tinytorch.core.spatial import AvgPool2d, BatchNorm1d, BatchNorm2d, Conv2d, MaxPool2d
from tinytorch.core.tensor import Tensor

RNG = np.random.default_rng(13)


def f64(array, requires_grad=True):
    return Tensor(np.array(array, dtype=np.float64), dtype=np.float64, requires_grad=requires_grad)


def check_against_torch(torch, ours_fn, torch_fn, arrays, upstream_seed=0):
    """Run both on the same float64 arrays; compare outputs and every input's gradient."""
    ours = [f64(a) for a in arrays]
    theirs = [torch.tensor(a, requires_grad=True) for a in arrays]
    out = ours_fn(*ours)
    expected = torch_fn(*theirs)
    assert out.shape == tuple(expected.shape)
    np.testing.assert_allclose(out.data, expected.detach().numpy(), rtol=1e-10, atol=1e-12)
    upstream = np.random.default_rng(upstream_seed).standard_normal(out.shape)
    out.backward(upstream)
    expected.backward(torch.tensor(upstream))
    for i, (mine, reference) in enumerate(zip(ours, theirs)):
        assert mine.grad is not None, f"input {i} got no gradient"
        np.testing.assert_allclose(mine.grad.data, reference.grad.numpy(), rtol=1e-10, atol=1e-12,
                                   err_msg=f"gradient of input {i}")


# ----- conv2d ---------------------------------------------------------------------------------------

# (N, C, H, W), (O, kH, kW), stride, padding, dilation, groups
CONV_GRID = [
    ((2, 3, 7, 9), (4, 3, 3), 1, 0, 1, 1),                  # odd image sizes
    ((2, 3, 8, 8), (5, 1, 1), 1, 0, 1, 1),                  # 1x1 kernel
    ((2, 2, 9, 7), (3, 2, 3), (2, 1), (1, 2), (1, 2), 1),   # non-square everything
    ((1, 4, 6, 6), (6, 3, 3), 2, 1, 1, 2),                  # batch 1, groups
    ((2, 4, 7, 7), (4, 3, 3), 1, 1, 1, 4),                  # depthwise
    ((2, 4, 7, 7), (8, 3, 3), 1, 1, 2, 4),                  # depthwise, 2 filters per channel
    ((2, 3, 5, 5), (2, 5, 5), 1, 0, 1, 1),                  # kernel as large as the image
    ((2, 2, 11, 10), (3, 2, 2), 3, 0, 1, 1),                # stride larger than the kernel
    ((2, 2, 6, 7), (3, 4, 3), 1, "same", 1, 1),             # 'same' with an even kernel
    ((2, 2, 6, 7), (3, 3, 3), 1, "same", (2, 1), 1),
    ((2, 2, 6, 7), (3, 3, 3), 2, "valid", 1, 1),
    ((2, 1, 10, 10), (2, 3, 3), 2, 3, 2, 1),                # padding larger than the kernel
]


@pytest.mark.parametrize("x_shape, kernel, stride, padding, dilation, groups", CONV_GRID)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
def test_conv2d_matches_torch(torch, x_shape, kernel, stride, padding, dilation, groups, bias):
    out_channels, kh, kw = kernel
    weight_shape = (out_channels, x_shape[1] // groups, kh, kw)
    arrays = [RNG.standard_normal(x_shape), RNG.standard_normal(weight_shape)]
    if bias:
        arrays.append(RNG.standard_normal(out_channels))
    settings = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    check_against_torch(torch, lambda *t: conv2d(*t, **settings),
                        lambda *t: torch.nn.functional.conv2d(*t, **settings), arrays)


@st.composite
def conv_settings(draw):
    """A random but valid conv2d configuration (small sizes)."""
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    channels, out_channels = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2))
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    span = [d * (k - 1) + 1 for k, d in zip(kernel, dilation)]
    size = [draw(st.integers(max(1, s - 2 * p), s + 4)) for s, p in zip(span, padding)]
    x_shape = (draw(st.integers(1, 3)), channels, *size)
    return x_shape, (out_channels, channels // groups, *kernel), dict(
        stride=stride, padding=padding, dilation=dilation, groups=groups)


@settings(max_examples=25, deadline=None, database=None)
@given(conv_settings(), st.integers(0, 2**31 - 1))
def test_conv2d_matches_torch_on_random_settings(config, seed):
    torch = pytest.importorskip("torch")
    x_shape, w_shape, kwargs = config
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal(x_shape), rng.standard_normal(w_shape),
              rng.standard_normal(w_shape[0])]
    check_against_torch(torch, lambda *t: conv2d(*t, **kwargs),
                        lambda *t: torch.nn.functional.conv2d(*t, **kwargs), arrays)


def test_conv2d_of_an_empty_batch_matches_torch(torch):
    x, w, b = np.zeros((0, 3, 6, 6)), RNG.standard_normal((4, 3, 3, 3)), RNG.standard_normal(4)
    check_against_torch(torch, lambda *t: conv2d(*t, padding=1),
                        lambda *t: torch.nn.functional.conv2d(*t, padding=1), [x, w, b])


def test_conv2d_gradients_match_finite_differences():
    x, w, b = f64(RNG.standard_normal((2, 4, 5, 4))), f64(RNG.standard_normal((4, 2, 3, 2))), \
        f64(RNG.standard_normal(4))
    assert gradcheck(lambda x, w, b: conv2d(x, w, b, stride=(2, 1), padding=1, dilation=(1, 2),
                                            groups=2), [x, w, b])


@pytest.mark.parametrize("settings", [dict(), dict(stride=2, padding=1),
                                      dict(padding=(1, 0), dilation=2, groups=2)])
def test_conv2d_second_derivatives(settings):
    x, w = f64(RNG.standard_normal((2, 2, 5, 5))), f64(RNG.standard_normal((2, 1 if settings.get("groups") else 2, 3, 2)))
    b = f64(RNG.standard_normal(2))
    # squared, so that the second derivatives with respect to each input are not zero
    assert gradgradcheck(lambda x, w, b: conv2d(x, w, b, **settings) ** 2, [x, w, b])


def test_conv2d_third_derivative_matches_torch(torch):
    x, w = RNG.standard_normal((1, 2, 4, 4)), RNG.standard_normal((3, 2, 2, 2))
    ours, theirs = [f64(x), f64(w)], [torch.tensor(a, requires_grad=True) for a in (x, w)]
    results = []
    for (a, b), conv, autograd in ((ours, conv2d, tt.autograd), (theirs, torch.nn.functional.conv2d, torch.autograd)):
        y = (conv(a, b, stride=2, padding=1) ** 2).sum()
        (ga,) = autograd.grad(y, [a], create_graph=True)
        (gb,) = autograd.grad((ga ** 2).sum(), [b], create_graph=True)
        (third,) = autograd.grad((gb * gb).sum(), [a])
        results.append(third.data if isinstance(third, Tensor) else third.numpy())
    np.testing.assert_allclose(results[0], results[1], rtol=1e-9)


def test_conv2d_gradient_ops_are_differentiable_too():
    # the input and weight gradients of conv2d are themselves ops with their own rules
    x, w = f64(RNG.standard_normal((2, 3, 5, 5))), f64(RNG.standard_normal((2, 3, 3, 3)))
    def producers(t):                 # the ops behind t, through the engine's clone of a result
        node = t.grad_fn
        return {type(node).__name__} | {type(n).__name__ for n in node.next_functions}

    (gx,) = grad(conv2d(x, w, padding=1).sum(), [x], create_graph=True)
    assert "ConvTranspose2dBackward" in producers(gx)
    (gw,) = grad(conv2d(x, w, padding=1).sum(), [w], create_graph=True)
    assert "Conv2dWeightGradBackward" in producers(gw)


def test_conv2d_keeps_float32():
    x = Tensor(RNG.standard_normal((2, 3, 6, 6)), requires_grad=True)
    conv = Conv2d(3, 4, 3)
    y = conv(x)
    assert x.dtype == y.dtype == np.float32
    y.sum().backward()
    assert x.grad.dtype == conv.weight.grad.dtype == conv.bias.grad.dtype == np.float32


def test_conv2d_accepts_inputs_in_any_memory_layout(torch):
    base = RNG.standard_normal((6, 7, 3, 2))
    x = base.transpose(3, 2, 0, 1)                      # (2, 3, 6, 7), not contiguous
    w = RNG.standard_normal((4, 3, 3, 3))
    expected = torch.nn.functional.conv2d(torch.tensor(np.ascontiguousarray(x)), torch.tensor(w))
    out = conv2d(Tensor(x, dtype=np.float64), Tensor(w, dtype=np.float64))
    np.testing.assert_allclose(out.data, expected.numpy(), rtol=1e-12)


def test_conv2d_refuses_an_input_changed_in_place_before_backward():
    x, w = Tensor(np.ones((1, 1, 4, 4)), requires_grad=True), Tensor(np.ones((1, 1, 2, 2)), requires_grad=True)
    h = x * 1.0
    y = conv2d(h, w)
    h += 1.0
    with pytest.raises(RuntimeError, match="modified by an in-place operation"):
        y.sum().backward()


# ----- the Conv2d layer ------------------------------------------------------------------------------

def test_conv2d_layer_shapes_and_default_initialisation():
    tt.manual_seed(0)
    conv = Conv2d(4, 8, (3, 5), groups=2)
    assert conv.weight.shape == (8, 2, 3, 5) and conv.bias.shape == (8,)
    bound = 1 / math.sqrt(2 * 3 * 5)                    # fan_in = in_channels / groups * kH * kW
    for t in (conv.weight, conv.bias):
        assert np.abs(t.data).max() <= bound
        assert np.abs(t.data).max() > 0.9 * bound        # uniform over the whole range
    assert np.std(conv.weight.data) == pytest.approx(bound / math.sqrt(3), rel=0.15)
    assert [name for name, _ in conv.named_parameters()] == ["weight", "bias"]
    assert Conv2d(1, 2, 3, bias=False).bias is None


def test_conv2d_layer_follows_the_default_dtype():
    tt.set_default_dtype(np.float64)
    try:
        conv, bn = Conv2d(1, 2, 3), BatchNorm2d(2)
    finally:
        tt.set_default_dtype(np.float32)
    assert conv.weight.dtype == conv.bias.dtype == bn.weight.dtype == bn.running_var.dtype == np.float64
    assert Conv2d(1, 2, 3).weight.dtype == np.float32


def test_conv2d_layer_output_size_formula():
    x = tt.randn(2, 3, 17, 12)
    conv = Conv2d(3, 5, kernel_size=(3, 4), stride=(2, 3), padding=(1, 2), dilation=(2, 1))
    expected = ((17 + 2 - 2 * 2 - 1) // 2 + 1, (12 + 4 - 3 - 1) // 3 + 1)
    assert conv(x).shape == (2, 5) + expected
    assert Conv2d(3, 5, 4, padding="same")(x).shape == (2, 5, 17, 12)


def test_conv2d_layer_matches_torch_module_with_the_same_weights(torch):
    conv = Conv2d(2, 3, 3, stride=2, padding=1, dtype=np.float64)
    reference = torch.nn.Conv2d(2, 3, 3, stride=2, padding=1).double()
    with torch.no_grad():
        reference.weight.copy_(torch.tensor(conv.weight.data))
        reference.bias.copy_(torch.tensor(conv.bias.data))
    x = RNG.standard_normal((2, 2, 7, 6))
    np.testing.assert_allclose(conv(Tensor(x, dtype=np.float64)).data,
                               reference(torch.tensor(x)).detach().numpy(), rtol=1e-12)
    assert repr(conv) == "Conv2d(2, 3, kernel_size=(3, 3), stride=(2, 2), padding=(1, 1))"


@pytest.mark.parametrize("shape, pattern", [
    ((2, 3, 8), r"Conv2d\(3, 4, .*expected input of shape \(N, 3, H, W\), got shape \(2, 3, 8\)"),
    ((2, 2, 8, 8), r"Conv2d\(3, 4, .*expected input of shape \(N, 3, H, W\), got shape \(2, 2, 8, 8\)"),
    ((2, 3, 2, 8), r"Conv2d\(3, 4, .*dilated span \(3, 3\).*larger than the padded input \(2, 8\)"),
])
def test_conv2d_layer_bad_shapes_name_the_layer_and_shapes(shape, pattern):
    with pytest.raises(ValueError, match=pattern):
        Conv2d(3, 4, 3)(tt.zeros(*shape))


def test_conv2d_functional_errors():
    x = tt.zeros(1, 4, 5, 5)
    with pytest.raises(ValueError, match=r"conv2d: weight must have shape"):
        conv2d(x, tt.zeros(2, 4, 3))
    with pytest.raises(ValueError, match=r"conv2d: bias must have shape \(2,\), got shape \(3,\)"):
        conv2d(x, tt.zeros(2, 4, 3, 3), tt.zeros(3))
    with pytest.raises(ValueError, match=r"divisible by groups"):
        conv2d(x, tt.zeros(3, 2, 3, 3), groups=2)
    with pytest.raises(ValueError, match=r"stride must be >= 1"):
        conv2d(x, tt.zeros(2, 4, 3, 3), stride=0)
    with pytest.raises(ValueError, match=r"padding='same' needs stride 1"):
        conv2d(x, tt.zeros(2, 4, 3, 3), stride=2, padding="same")
    with pytest.raises(ValueError, match=r"divisible by groups"):
        Conv2d(4, 6, 3, groups=4)


# ----- pooling ---------------------------------------------------------------------------------------

POOL_GRID = [
    dict(kernel_size=2),
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=(2, 3), stride=1),                     # overlapping windows
    dict(kernel_size=(3, 2), stride=(1, 2), padding=(1, 1)),
    dict(kernel_size=2, stride=3),                          # gaps between windows
    dict(kernel_size=(4, 3)),                               # window as tall as the image
]


@pytest.mark.parametrize("settings", POOL_GRID)
@pytest.mark.parametrize("shape", [(2, 3, 7, 9), (1, 1, 4, 5)])
@pytest.mark.parametrize("name", ["max_pool2d", "avg_pool2d"])
def test_pooling_matches_torch(torch, name, settings, shape):
    ours = {"max_pool2d": max_pool2d, "avg_pool2d": avg_pool2d}[name]
    theirs = getattr(torch.nn.functional, name)
    check_against_torch(torch, lambda x: ours(x, **settings), lambda x: theirs(x, **settings),
                        [RNG.standard_normal(shape)])


def test_max_pool2d_with_dilation_matches_torch(torch):
    settings = dict(kernel_size=(2, 3), stride=1, padding=1, dilation=(2, 1))
    check_against_torch(torch, lambda x: max_pool2d(x, **settings),
                        lambda x: torch.nn.functional.max_pool2d(x, **settings),
                        [RNG.standard_normal((2, 2, 7, 6))])


@pytest.mark.parametrize("settings", [dict(kernel_size=2), dict(kernel_size=3, stride=1, padding=1),
                                      dict(kernel_size=2, stride=1)])
def test_max_pool2d_ties_send_the_gradient_to_the_first_maximum(torch, settings):
    # after a ReLU many windows hold only zeros: PyTorch gives the gradient to the first one
    x = np.maximum(RNG.standard_normal((2, 3, 6, 6)), 0)
    x[0, 0] = 1.0                                        # a whole constant channel
    x[1, 2, :2, :2] = 0.5
    check_against_torch(torch, lambda t: max_pool2d(t, **settings),
                        lambda t: torch.nn.functional.max_pool2d(t, **settings), [x])


def test_max_pool2d_tie_rule_by_hand():
    x = f64([[[[3.0, 3.0, 1.0, 3.0]]]])
    max_pool2d(x, (1, 2), stride=1).sum().backward()
    assert x.grad.data.tolist() == [[[[1.0, 1.0, 0.0, 1.0]]]]


def test_max_pool2d_propagates_nan_and_sends_its_gradient_to_the_last_nan(torch):
    x = np.array([[[[np.nan, 1.0, np.nan, 2.0], [0.0, 5.0, 1.0, 2.0]]]])
    ours = f64(x)
    out = max_pool2d(ours, (1, 4))
    assert np.isnan(out.data[0, 0, 0, 0]) and out.data[0, 0, 1, 0] == 5.0
    out.sum().backward()
    theirs = torch.tensor(x, requires_grad=True)
    torch.nn.functional.max_pool2d(theirs, (1, 4)).sum().backward()
    np.testing.assert_array_equal(ours.grad.data, theirs.grad.numpy())


def test_max_pool2d_padding_never_wins_even_against_minus_infinity(torch):
    x = np.full((1, 1, 2, 2), -np.inf)
    ours = f64(x)
    max_pool2d(ours, 2, stride=1, padding=1).sum().backward()
    theirs = torch.tensor(x, requires_grad=True)
    torch.nn.functional.max_pool2d(theirs, 2, stride=1, padding=1).sum().backward()
    np.testing.assert_array_equal(ours.grad.data, theirs.grad.numpy())    # [[4, 2], [2, 1]]


def test_pooling_gradients_match_finite_differences():
    x = f64(RNG.standard_normal((2, 2, 5, 6)))          # no ties: max is smooth here
    assert gradcheck(lambda t: max_pool2d(t, 3, stride=2, padding=1), [x])
    assert gradcheck(lambda t: avg_pool2d(t, (2, 3), stride=1, padding=1), [x])


def test_pooling_second_derivatives():
    x = f64(RNG.standard_normal((1, 2, 4, 5)))
    assert gradgradcheck(lambda t: max_pool2d(t, 2, stride=1, padding=1) ** 2, [x])
    assert gradgradcheck(lambda t: avg_pool2d(t, 3, stride=2, padding=1) ** 2, [x])


def test_pooling_of_an_empty_batch_and_of_float32():
    assert max_pool2d(tt.zeros(0, 3, 4, 4), 2).shape == (0, 3, 2, 2)
    x = Tensor(RNG.standard_normal((2, 3, 6, 6)), requires_grad=True)
    for layer in (MaxPool2d(2), AvgPool2d(3, stride=1, padding=1)):
        y = layer(x)
        assert y.dtype == np.float32
        y.sum().backward()
        assert x.grad.dtype == np.float32


def test_pooling_layers_default_stride_and_repr():
    pool = MaxPool2d(3)
    assert pool.stride == (3, 3)
    assert pool(tt.zeros(1, 1, 9, 10)).shape == (1, 1, 3, 3)
    assert repr(AvgPool2d(2, stride=1)) == "AvgPool2d(kernel_size=(2, 2), stride=(1, 1), padding=(0, 0))"


@pytest.mark.parametrize("layer, shape, pattern", [
    (MaxPool2d(2), (2, 3, 8), r"MaxPool2d\(kernel_size=\(2, 2\).*expected input of shape \(N, C, H, W\), got shape \(2, 3, 8\)"),
    (AvgPool2d(5), (1, 1, 4, 8), r"AvgPool2d\(kernel_size=\(5, 5\).*dilated span \(5, 5\).*larger than the padded input \(4, 8\)"),
    (MaxPool2d(2, padding=2), (1, 1, 8, 8), r"MaxPool2d.*padding \(2, 2\) must be at most half"),
    (AvgPool2d(3, padding=2), (1, 1, 8, 8), r"AvgPool2d.*padding \(2, 2\) must be at most half"),
])
def test_pooling_bad_shapes_name_the_layer_and_shapes(layer, shape, pattern):
    with pytest.raises(ValueError, match=pattern):
        layer(tt.zeros(*shape))


# ----- batch normalisation ------------------------------------------------------------------------------

@pytest.mark.parametrize("ours_cls, shape", [(BatchNorm2d, (4, 3, 5, 2)), (BatchNorm1d, (6, 3)),
                                             (BatchNorm1d, (4, 3, 5))])
@pytest.mark.parametrize("momentum", [0.1, 0.5, None])
def test_batch_norm_training_steps_and_eval_match_torch(torch, ours_cls, shape, momentum):
    ours = ours_cls(3, momentum=momentum, dtype=np.float64)
    theirs = getattr(torch.nn, ours_cls.__name__)(3, momentum=momentum).double()
    with torch.no_grad():
        theirs.weight.copy_(torch.tensor(RNG.standard_normal(3)))
        theirs.bias.copy_(torch.tensor(RNG.standard_normal(3)))
    ours.weight.data[...] = theirs.weight.detach().numpy()
    ours.bias.data[...] = theirs.bias.detach().numpy()
    for step in range(4):                                    # running statistics over several steps
        x = RNG.standard_normal(shape) * (step + 1) + step
        mine, reference = f64(x), torch.tensor(x, requires_grad=True)
        out, expected = ours(mine), theirs(reference)
        np.testing.assert_allclose(out.data, expected.detach().numpy(), rtol=1e-10, atol=1e-12)
        upstream = RNG.standard_normal(shape)
        out.backward(upstream)
        expected.backward(torch.tensor(upstream))
        np.testing.assert_allclose(mine.grad.data, reference.grad.numpy(), rtol=1e-9, atol=1e-12)
        for name in ("running_mean", "running_var"):
            np.testing.assert_allclose(getattr(ours, name).data, getattr(theirs, name).numpy(), rtol=1e-12)
    assert int(ours.num_batches_tracked.data) == int(theirs.num_batches_tracked) == 4
    np.testing.assert_allclose(ours.weight.grad.data, theirs.weight.grad.numpy(), rtol=1e-9)
    np.testing.assert_allclose(ours.bias.grad.data, theirs.bias.grad.numpy(), rtol=1e-9)
    ours.eval()
    theirs.eval()
    x = RNG.standard_normal(shape)
    mine, reference = f64(x), torch.tensor(x, requires_grad=True)
    out, expected = ours(mine), theirs(reference)
    np.testing.assert_allclose(out.data, expected.detach().numpy(), rtol=1e-10)
    out.backward(np.ones(shape))
    expected.backward(torch.ones(shape, dtype=torch.float64))
    np.testing.assert_allclose(mine.grad.data, reference.grad.numpy(), rtol=1e-10)
    np.testing.assert_allclose(ours.running_mean.data, theirs.running_mean.numpy(), rtol=1e-12)


def test_batch_norm_without_running_statistics_or_affine_matches_torch(torch):
    ours = BatchNorm2d(2, affine=False, track_running_stats=False, dtype=np.float64)
    theirs = torch.nn.BatchNorm2d(2, affine=False, track_running_stats=False).double()
    assert ours.weight is None and ours.running_mean is None and ours.parameters() == []
    x = RNG.standard_normal((3, 2, 2, 2))
    for module in (ours, theirs):
        module.eval()                                         # still batch statistics
    np.testing.assert_allclose(ours(f64(x)).data, theirs(torch.tensor(x)).numpy(), rtol=1e-10)
    assert ours.state_dict() == {}


def test_batch_norm_state_dict_holds_the_buffers_and_loads_them_back():
    bn = BatchNorm2d(3)
    bn(tt.randn(8, 3, 2, 2) * 3 + 1)
    state = bn.state_dict()
    assert sorted(state) == ["bias", "num_batches_tracked", "running_mean", "running_var", "weight"]
    assert state["num_batches_tracked"] == 1 and state["num_batches_tracked"].dtype == np.int64
    assert [name for name, _ in bn.named_parameters()] == ["weight", "bias"]
    fresh = BatchNorm2d(3)
    fresh.load_state_dict(state)
    np.testing.assert_array_equal(fresh.running_var.data, bn.running_var.data)
    x = tt.randn(4, 3, 2, 2)
    bn.eval()
    fresh.eval()
    np.testing.assert_array_equal(fresh(x).data, bn(x).data)


def test_batch_norm_layers_survive_a_checkpoint_round_trip(tmp_path):
    model = tt.layers.Sequential(Conv2d(1, 2, 3), BatchNorm2d(2))
    model(tt.randn(4, 1, 5, 5))
    tt.save(model.state_dict(), tmp_path / "bn.npz")
    restored = tt.layers.Sequential(Conv2d(1, 2, 3), BatchNorm2d(2))
    restored.load_state_dict(tt.load(tmp_path / "bn.npz"))
    for name, array in model.state_dict().items():
        np.testing.assert_array_equal(restored.state_dict()[name], array, err_msg=name)


def test_batch_norm_gradients_match_finite_differences():
    x, w, b = f64(RNG.standard_normal((3, 2, 2, 3))), f64(RNG.standard_normal(2)), f64(RNG.standard_normal(2))
    assert gradcheck(lambda x, w, b: batch_norm(x, None, None, w, b, training=True), [x, w, b])
    mean, var = f64(RNG.standard_normal(2), False), f64(RNG.uniform(0.5, 2, 2), False)
    assert gradcheck(lambda x, w, b: batch_norm(x, mean, var, w, b, training=False), [x, w, b])


def test_batch_norm_second_derivatives():
    x, w, b = f64(RNG.standard_normal((3, 2, 2))), f64(RNG.standard_normal(2)), f64(RNG.standard_normal(2))
    assert gradgradcheck(lambda x, w, b: batch_norm(x, None, None, w, b, training=True) ** 2, [x, w, b])
    mean, var = f64(np.zeros(2), False), f64(np.ones(2), False)
    assert gradgradcheck(lambda x, w, b: batch_norm(x, mean, var, w, b) ** 2, [x, w, b])


def test_batch_norm_keeps_float32_and_updates_its_buffers_in_place():
    bn = BatchNorm2d(4)
    running_mean = bn.running_mean.data
    x = Tensor(RNG.standard_normal((5, 4, 3, 3)) + 2.0, requires_grad=True)
    y = bn(x)
    assert y.dtype == np.float32 and running_mean is bn.running_mean.data
    assert np.all(running_mean > 0.1)
    y.sum().backward()
    assert x.grad.dtype == bn.weight.grad.dtype == np.float32


@pytest.mark.parametrize("layer, shape, pattern", [
    (BatchNorm2d(3), (2, 4, 3, 3), r"BatchNorm2d\(3\): expected input of shape \(N, 3, H, W\), got shape \(2, 4, 3, 3\)"),
    (BatchNorm2d(3), (2, 3), r"BatchNorm2d\(3\): expected input of shape \(N, 3, H, W\), got shape \(2, 3\)"),
    (BatchNorm1d(3), (2, 3, 4, 4), r"BatchNorm1d\(3\): expected input of shape \(N, 3\) or \(N, 3, L\), got shape \(2, 3, 4, 4\)"),
    (BatchNorm1d(3), (1, 3), r"expected more than 1 value per channel when training"),
])
def test_batch_norm_bad_shapes_name_the_layer_and_shapes(layer, shape, pattern):
    with pytest.raises(ValueError, match=pattern):
        layer(tt.zeros(*shape))


def test_batch_norm_functional_errors():
    x = tt.zeros(4, 3)
    with pytest.raises(ValueError, match=r"running_mean must have shape \(3,\)"):
        batch_norm(x, tt.zeros(2), tt.ones(3), training=True)
    with pytest.raises(ValueError, match=r"evaluation mode .* needs running_mean"):
        batch_norm(x, None, None)


# ----- a small CNN end to end ---------------------------------------------------------------------------

def test_a_small_cnn_learns_and_switches_modes():
    tt.manual_seed(0)
    model = tt.layers.Sequential(Conv2d(1, 4, 3, padding=1), BatchNorm2d(4), tt.activations.ReLU(),
                                 MaxPool2d(2), tt.Flatten(), tt.layers.Linear(4 * 4 * 4, 2))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 1, 8, 8)).astype(np.float32)
    labels = (x[:, 0, :4].sum(axis=(1, 2)) > x[:, 0, 4:].sum(axis=(1, 2))).astype(np.int64)
    optimizer = tt.optimizers.Adam(model.parameters(), lr=0.02)
    loss_fn = tt.losses.CrossEntropyLoss()
    first = None
    for _ in range(30):
        loss = loss_fn(model(Tensor(x)), Tensor(labels, dtype=np.int64))
        first = loss.item() if first is None else first
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.3 * first
    model.eval()
    with tt.no_grad():
        a, b = model(Tensor(x[:4])), model(Tensor(x[:4]))
    np.testing.assert_array_equal(a.data, b.data)       # eval: running statistics, deterministic
