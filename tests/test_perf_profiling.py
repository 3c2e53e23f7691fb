"""TinyTorch's module-14 Profiler (``tinytorch.perf.profiling``): its methods, arguments and
return types, with the expectations of TinyTorch's own unit tests, and numbers checked against
formulas written here or against what the engine ran."""

import math

import numpy as np
import pytest

import tinytorch as tt
from tinytorch.perf.profiling import Profiler, analyze_weight_distribution, op_flops
from tinytorch.profiler import profile

MB = 1024 * 1024


def test_the_import_paths():
    import tinytorch.profiler
    from tinytorch.perf import profiling
    assert tinytorch.profiler.Profiler is profiling.Profiler is Profiler


# ----- count_parameters ---------------------------------------------------------------------------

def test_count_parameters():
    profiler = Profiler()
    assert profiler.count_parameters(tt.Linear(128, 64)) == 128 * 64 + 64
    model = tt.Sequential(tt.Linear(4, 8), tt.ReLU(), tt.Linear(8, 2, bias=False))
    assert profiler.count_parameters(model) == 4 * 8 + 8 + 8 * 2

    class SimpleModel:                      # TinyTorch's test: a parameters() method
        def __init__(self):
            self.weight, self.bias = tt.randn(10, 5), tt.randn(5)

        def parameters(self):
            return [self.weight, self.bias]

    class WeightOnly:
        def __init__(self):
            self.weight = tt.randn(3, 7)

    assert profiler.count_parameters(SimpleModel()) == 55
    assert profiler.count_parameters(WeightOnly()) == 21
    assert profiler.count_parameters(object()) == 0
    assert profiler.count_parameters(tt.randn(2, 3)) == 0


# ----- count_flops ---------------------------------------------------------------------------------

def _renamed(name, **attributes):
    """A stand-in layer whose class is called ``name`` (as TinyTorch's tests mock layers)."""
    return type(name, (), attributes)()


def test_linear_flops_are_per_sample_multiply_adds():
    profiler = Profiler()
    assert profiler.count_flops(tt.Linear(128, 64), (1, 128)) == 128 * 64 * 2
    assert profiler.count_flops(tt.Linear(128, 64), (32, 128)) == 128 * 64 * 2
    mock = _renamed("Linear", weight=tt.randn(256, 256))
    assert profiler.count_flops(mock, (1, 256)) == 256 * 256 * 2


@pytest.mark.parametrize("settings", [
    dict(in_channels=3, out_channels=16, kernel_size=3),
    dict(in_channels=3, out_channels=64, kernel_size=7, stride=2, padding=3),
    dict(in_channels=4, out_channels=6, kernel_size=(3, 5), stride=(2, 1), padding=(1, 2),
         dilation=(2, 1), groups=2),
    dict(in_channels=2, out_channels=4, kernel_size=3, padding="same"),
])
def test_conv2d_flops_match_the_multiply_adds_of_its_output(settings):
    conv = tt.Conv2d(**settings)
    shape = (2, settings["in_channels"], 17, 19)
    out = conv(tt.randn(*shape))
    kh, kw = conv.kernel_size
    per_output = kh * kw * settings["in_channels"] // settings.get("groups", 1)
    expected = 2 * math.prod(out.shape[1:]) * per_output           # per sample
    assert Profiler().count_flops(conv, shape) == expected


def test_conv2d_flops_of_tinytorch_style_layers():
    profiler = Profiler()
    mock = _renamed("Conv2d", in_channels=3, out_channels=16, kernel_size=3, stride=1)
    assert profiler.count_flops(mock, (1, 3, 32, 32)) == 30 * 30 * 3 * 3 * 3 * 16 * 2
    padded = _renamed("Conv2d", in_channels=3, out_channels=10, kernel_size=3, stride=1,
                      padding=3)
    assert profiler.count_flops(padded, (1, 3, 28, 28)) == 32 * 32 * 3 * 3 * 3 * 10 * 2
    assert profiler.count_flops(_renamed("Conv2d"), (1, 3, 8, 8)) == 0


def test_attention_flops_are_the_projections_and_the_two_products():
    T, D = 16, 32
    mha = tt.MultiHeadAttention(D, 4)
    expected = 4 * T * 2 * D * D + 4 * T * T * D
    profiler = Profiler()
    assert profiler.count_flops(mha, (3, T, D)) == expected
    # the same count from the ops the engine ran
    assert profiler.count_flops(tt.Sequential(mha), (3, T, D)) == expected


def test_a_containers_flops_are_its_layers_flops():
    profiler = Profiler()
    model = tt.Sequential(tt.Linear(128, 64), tt.ReLU(), tt.Dropout(0.5), tt.Linear(64, 10))
    assert profiler.count_flops(model, (8, 128)) == 128 * 64 * 2 + 64 * 10 * 2
    assert model.training                              # eval mode only while counting

    class MockSequential:                              # TinyTorch's test: a .layers list
        def __init__(self, *layers):
            self.layers = list(layers)

    mock = MockSequential(_renamed("Linear", weight=tt.randn(128, 64)),
                          _renamed("Linear", weight=tt.randn(64, 10)))
    assert profiler.count_flops(mock, (1, 128)) == 128 * 64 * 2 + 64 * 10 * 2


def test_a_gpts_flops_follow_tinytorchs_transformer_formula():
    gpt = tt.GPT(vocab_size=65, embed_dim=32, num_layers=2, num_heads=4, max_seq_len=16)
    T, D = 16, 32
    expected = 0
    for block in gpt.blocks:
        for layer in (block.attn.q_proj, block.attn.k_proj, block.attn.v_proj,
                      block.attn.out_proj, block.mlp.linear1, block.mlp.linear2):
            expected += T * 2 * layer.in_features * layer.out_features
        expected += 4 * T * T * D
    expected += T * 2 * D * 65
    assert Profiler().count_flops(gpt, (2, T)) == expected


def test_other_objects_count_one_flop_per_element():
    assert Profiler().count_flops(tt.randn(4, 8), (4, 8)) == 32
    with pytest.raises(TypeError, match="input_shape"):
        Profiler().count_flops(tt.Linear(2, 2), 5)


def test_op_flops_of_a_matrix_product():
    a, b = tt.randn(5, 7, requires_grad=True), tt.randn(7, 3)
    with profile() as prof:
        a @ b
        a.relu()
    assert [op_flops(e) for e in prof.events] == [2 * 5 * 3 * 7, 0]


# ----- memory and latency ---------------------------------------------------------------------

def test_measure_memory_counts_the_graph_the_forward_keeps():
    profiler = Profiler()
    memory = profiler.measure_memory(tt.Linear(20, 10), (10, 20))
    assert set(memory) == {"parameter_memory_mb", "activation_memory_mb", "peak_memory_mb",
                           "memory_efficiency"}
    assert memory["parameter_memory_mb"] == (20 * 10 + 10) * 4 / MB
    assert memory["activation_memory_mb"] == 10 * 20 * 4 / MB     # the input, kept for dW
    assert memory["peak_memory_mb"] >= memory["parameter_memory_mb"] + memory["activation_memory_mb"]
    assert 0 < memory["memory_efficiency"] <= 1
    small = profiler.measure_memory(tt.Linear(5, 5), (5, 5))
    large = profiler.measure_memory(tt.Linear(50, 50), (50, 50))
    assert large["activation_memory_mb"] > small["activation_memory_mb"]


def test_measure_latency_is_a_median_in_milliseconds():
    latency = Profiler().measure_latency(tt.Linear(16, 8), tt.randn(4, 16), warmup=1,
                                         iterations=5)
    assert isinstance(latency, float) and 0 < latency < 1000
    for bad in (dict(warmup=-1), dict(iterations=0), dict(iterations=2.5)):
        with pytest.raises(ValueError):
            Profiler().measure_latency(tt.Linear(2, 2), tt.randn(1, 2), **bad)


def test_profile_layer_and_forward_pass_report_tinytorchs_keys():
    profiler = Profiler()
    layer = profiler.profile_layer(tt.Linear(32, 16), (8, 32))
    assert layer["layer_type"] == "Linear" and layer["parameters"] == 32 * 16 + 16
    assert layer["flops"] == 32 * 16 * 2 and layer["latency_ms"] > 0
    forward = profiler.profile_forward_pass(tt.Linear(32, 16), tt.randn(8, 32))
    assert forward["batch_flops"] == 8 * forward["flops"]
    for key in ("parameters", "latency_ms", "gflops_per_second", "peak_memory_mb"):
        assert key in forward
    assert profiler.measurements["forward"] is forward


def test_profile_backward_pass_measures_both_passes_and_leaves_grads_alone():
    model = tt.Sequential(tt.Linear(16, 32), tt.ReLU(), tt.Linear(32, 4))
    model[0].weight.grad = tt.ones(16, 32)
    result = Profiler().profile_backward_pass(model, tt.randn(8, 16), iterations=2)
    assert result["forward_latency_ms"] > 0 and result["backward_latency_ms"] > 0
    assert result["backward_flops"] == 2 * result["forward_flops"]
    parameters = (16 * 32 + 32 + 32 * 4 + 4) * 4 / MB
    assert result["gradient_memory_mb"] == result["parameter_memory_mb"] == parameters
    assert result["optimizer_memory_estimates"]["adam"] == 2 * parameters
    np.testing.assert_array_equal(model[0].weight.grad.data, np.ones((16, 32)))
    assert model[2].weight.grad is None


def test_analyze_weight_distribution():
    class SimpleModel:
        def __init__(self):
            self.weight = tt.Tensor(np.linspace(-0.2, 0.2, 50).reshape(10, 5))

    stats = analyze_weight_distribution(SimpleModel())
    assert stats["total_weights"] == 50
    assert stats["max"] == pytest.approx(0.2) and stats["percentile_50"] == pytest.approx(0.1,
                                                                                       abs=0.01)
    assert stats["below_threshold_01"] == pytest.approx(100 * 24 / 50)
    assert "error" in analyze_weight_distribution(object())


def test_profiler_as_a_context_manager_times_the_block():
    with Profiler() as p:
        sum(range(1000))
    assert p.elapsed > 0
