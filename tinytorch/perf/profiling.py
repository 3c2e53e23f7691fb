"""TinyTorch's profiler (module 14) under its own import path: ``tinytorch.perf.profiling``.

:class:`Profiler` keeps TinyTorch's methods and return types (``count_parameters``,
``count_flops``, ``measure_memory``, ``measure_latency``, ``profile_layer``,
``profile_forward_pass``, ``profile_backward_pass``), measured with tinytorch's engine-level
profiler (:func:`tinytorch.profiler.profile`) where TinyTorch estimates: the memory a forward
keeps for backward is the graph's actual saved bytes, and the backward pass is timed, not
assumed to cost twice the forward.

>>> from tinytorch.perf.profiling import Profiler
>>> profiler = Profiler()
>>> profiler.count_parameters(Linear(128, 64))          # 128*64 + 64
8256
>>> profiler.count_flops(Linear(128, 64), (1, 128))     # 128*64*2, per sample
16384
"""

import math
import statistics
import time
import tracemalloc

import numpy as np

from tinytorch.core.autograd import no_grad
from tinytorch.core.tensor import Tensor
from tinytorch.profiler import profile

MB_TO_BYTES = 1024 * 1024


class Profiler:
    """Parameters, FLOPs, memory and latency of a model (TinyTorch's module-14 class).

    FLOPs count multiply-adds of matrix products as 2 operations each and are per sample
    (TinyTorch's convention): a ``Linear(in, out)`` costs ``2 * in * out``, a ``Conv2d``
    ``2 * out_h * out_w * kernel_h * kernel_w * in_channels / groups * out_channels``, attention
    over T positions of width D ``4 * T^2 * D`` plus its four projections. Elementwise work (a
    few operations per element) is left out, as TinyTorch leaves it out of its transformer
    count. Memory in MB is MiB (2**20 bytes). ``with Profiler() as p:`` times the block in
    ``p.elapsed`` (milliseconds).
    """

    def __init__(self):
        self.measurements = {}
        self.elapsed = None

    def __enter__(self):
        self._context_start = time.perf_counter()
        return self

    def __exit__(self, *exc_info):
        self.elapsed = (time.perf_counter() - self._context_start) * 1000
        return False

    # ----- size and work ----------------------------------------------------------------------

    def count_parameters(self, model):
        """Number of learnable numbers: the elements of ``model.parameters()`` (or of a layer's
        ``weight`` and ``bias``); 0 for an object without parameters (e.g. a Tensor)."""
        if hasattr(model, "parameters") and callable(model.parameters):
            return int(sum(np.size(_array(p)) for p in model.parameters()))
        count = 0
        for name in ("weight", "bias"):
            if getattr(model, name, None) is not None:
                count += int(np.size(_array(getattr(model, name))))
        return count

    def count_flops(self, model, input_shape):
        """FLOPs of one forward pass, per sample, for an input of shape ``input_shape``.

        ``Linear``, ``Conv2d`` and ``MultiHeadAttention`` by formula (see the class); any other
        module (``Sequential``, a CNN, ``GPT``...) by running it once on a dummy batch of
        ``input_shape`` under ``no_grad`` and in eval mode, adding up the matrix products the
        profiler recorded (their shapes give the FLOPs), divided by the batch size
        ``input_shape[0]``. For a token model (one with ``vocab_size``), ``input_shape`` is
        ``(batch, seq_len)`` and the count is per sequence. Anything else counts one FLOP per
        input element (TinyTorch's fallback).
        """
        input_shape = _shape(input_shape)
        name = type(model).__name__
        if name == "Linear" and hasattr(model, "weight"):
            return 2 * input_shape[-1] * int(model.weight.shape[1])
        if name == "Conv2d":
            return _conv_flops(model, input_shape)
        if name == "MultiHeadAttention":
            seq_len, width = input_shape[-2], model.embed_dim
            return 4 * seq_len * 2 * width * width + 4 * seq_len * seq_len * width
        if callable(model) and hasattr(model, "parameters"):
            return self._measured_flops(model, input_shape)
        if hasattr(model, "layers"):             # a container TinyTorch-style: shapes by weights
            total, shape = 0, input_shape
            for layer in model.layers:
                total += self.count_flops(layer, shape)
                if hasattr(layer, "weight"):
                    shape = shape[:-1] + (int(layer.weight.shape[1]),)
            return total
        return int(math.prod(input_shape))

    def _measured_flops(self, model, input_shape):
        with _evaluating(model), no_grad(), profile() as prof:
            model(_dummy_input(model, input_shape))
        return sum(op_flops(e) for e in prof.events if e.phase == "forward") // max(
            input_shape[0] if input_shape else 1, 1)

    # ----- memory and time ---------------------------------------------------------------------

    def measure_memory(self, model, input_shape):
        """Memory of one forward pass with gradients recorded, in MB (MiB).

        Returns ``parameter_memory_mb`` (the parameters' bytes), ``activation_memory_mb`` (the
        bytes the forward's graph keeps alive for backward, as :func:`tinytorch.profiler.profile`
        counts them), ``peak_memory_mb`` (the parameters plus the most memory allocated at once
        during the forward, from ``tracemalloc``, which sees NumPy's arrays) and
        ``memory_efficiency`` ((parameters + activations) / peak, at most 1). The dummy input
        is made inside the measurement, so it counts in both the peak and the activations.
        """
        parameter_bytes = sum(_array(p).nbytes for p in _parameters(model))
        input_shape = _shape(input_shape)
        was_tracing = tracemalloc.is_tracing()
        if was_tracing:
            tracemalloc.reset_peak()
        else:
            tracemalloc.start()
        try:
            baseline = tracemalloc.get_traced_memory()[0]
            with profile() as prof:
                output = model(_dummy_input(model, input_shape))
            peak = tracemalloc.get_traced_memory()[1] - baseline
        finally:
            if not was_tracing:
                tracemalloc.stop()
        del output
        activation_bytes = prof.summary().peak_saved_bytes
        useful = parameter_bytes + activation_bytes
        peak_bytes = max(parameter_bytes + peak, useful)
        return {
            "parameter_memory_mb": parameter_bytes / MB_TO_BYTES,
            "activation_memory_mb": activation_bytes / MB_TO_BYTES,
            "peak_memory_mb": peak_bytes / MB_TO_BYTES,
            "memory_efficiency": useful / peak_bytes if peak_bytes else 1.0,
        }

    def measure_latency(self, model, input_tensor, warmup=10, iterations=100):
        """Median time of one inference forward pass (``model(input_tensor)`` under
        ``no_grad``), in milliseconds, over ``iterations`` runs after ``warmup`` untimed ones."""
        _check_count(warmup, "warmup", 0)
        _check_count(iterations, "iterations", 1)
        times = []
        with no_grad():
            for i in range(warmup + iterations):
                start = time.perf_counter()
                model(input_tensor)
                if i >= warmup:
                    times.append((time.perf_counter() - start) * 1000)
        return float(statistics.median(times))

    # ----- reports -----------------------------------------------------------------------------

    def profile_layer(self, layer, input_shape):
        """Parameters, FLOPs, latency (ms), GFLOP/s and the memory of :meth:`measure_memory`
        for one layer on a dummy input of ``input_shape``."""
        input_shape = _shape(input_shape)
        flops = self.count_flops(layer, input_shape)
        latency = self.measure_latency(layer, _dummy_input(layer, input_shape), warmup=3,
                                       iterations=10)
        batch = input_shape[0] if len(input_shape) > 1 else 1
        return {"layer_type": type(layer).__name__, "parameters": self.count_parameters(layer),
                "flops": flops, "latency_ms": latency,
                "gflops_per_second": flops * batch / 1e9 / max(latency / 1000, 1e-9),
                **self.measure_memory(layer, input_shape)}

    def profile_forward_pass(self, model, input_tensor):
        """Parameters, FLOPs (per sample, and ``batch_flops`` for the whole batch), latency (ms),
        the memory of :meth:`measure_memory` and the achieved GFLOP/s of one forward pass."""
        shape = _shape(input_tensor.shape)
        flops = self.count_flops(model, shape)
        batch_flops = flops * (shape[0] if len(shape) > 1 else 1)
        latency = self.measure_latency(model, input_tensor, warmup=5, iterations=20)
        result = {"parameters": self.count_parameters(model), "flops": flops,
                  "batch_flops": batch_flops, "latency_ms": latency,
                  **self.measure_memory(model, shape),
                  "gflops_per_second": batch_flops / 1e9 / max(latency / 1000, 1e-9)}
        self.measurements["forward"] = result
        return result

    def profile_backward_pass(self, model, input_tensor, iterations=10):
        """A training step's forward and backward, both timed (median over ``iterations``
        steps of ``model(input).sum().backward()``, after one warm-up) with the profiler.

        Returns TinyTorch's keys with measured values: ``forward_latency_ms``,
        ``backward_latency_ms`` (time inside the engine's ops and backward passes),
        ``forward_flops`` and ``backward_flops`` (2x: each matrix product's backward is two
        products of its size), ``gradient_memory_mb`` (the ``.grad`` arrays), the graph's
        ``activation_memory_mb``, totals and ``optimizer_memory_estimates`` (state kept between
        steps: SGD none, SGD with momentum 1x the gradients, Adam and AdamW 2x).
        """
        _check_count(iterations, "iterations", 1)
        forward, backward, summary = [], [], None
        saved = [p._grad for p in _parameters(model)]
        try:
            for i in range(iterations + 1):
                for p in _parameters(model):
                    p._grad = None
                with profile() as prof:
                    _as_loss(model(input_tensor)).backward()
                summary = prof.summary()
                if i:
                    forward.append(summary.forward_time * 1000)
                    backward.append(summary.backward_time * 1000)
        finally:
            for p, grad in zip(_parameters(model), saved):
                p._grad = grad
        shape = _shape(input_tensor.shape)
        flops = self.count_flops(model, shape)
        gradient_mb = summary.gradient_bytes / MB_TO_BYTES
        parameter_mb = summary.parameter_bytes / MB_TO_BYTES
        activation_mb = summary.peak_saved_bytes / MB_TO_BYTES
        forward_ms, backward_ms = statistics.median(forward), statistics.median(backward)
        result = {
            "forward_flops": flops, "forward_latency_ms": forward_ms,
            "backward_flops": 2 * flops, "backward_latency_ms": backward_ms,
            "parameter_memory_mb": parameter_mb, "activation_memory_mb": activation_mb,
            "gradient_memory_mb": gradient_mb,
            "total_flops": 3 * flops, "total_latency_ms": forward_ms + backward_ms,
            "total_memory_mb": parameter_mb + activation_mb + gradient_mb,
            "optimizer_memory_estimates": {"sgd": 0.0, "sgd_momentum": gradient_mb,
                                           "adam": 2 * gradient_mb, "adamw": 2 * gradient_mb},
        }
        self.measurements["backward"] = result
        return result


def analyze_weight_distribution(model, percentiles=(10, 25, 50, 75, 90)):
    """Statistics of the absolute values of a model's weights (for pruning and quantization):
    count, mean, std, min, max, the given percentiles (``percentile_50``...) and the share in
    percent below 0.001, 0.01 and 0.1 (``below_threshold_001``...). ``{'error': ...}`` for a
    model without weights, as TinyTorch returns."""
    arrays = [_array(p).ravel() for p in _parameters(model)]
    if not arrays and getattr(model, "weight", None) is not None:
        arrays = [_array(model.weight).ravel()]
    if not arrays or not sum(a.size for a in arrays):
        return {"error": "No weights found"}
    weights = np.abs(np.concatenate(arrays).astype(np.float64))
    stats = {"total_weights": int(weights.size), "mean": float(weights.mean()),
             "std": float(weights.std()), "min": float(weights.min()),
             "max": float(weights.max())}
    for p in percentiles:
        stats[f"percentile_{p}"] = float(np.percentile(weights, p))
    for threshold in (0.001, 0.01, 0.1):
        stats[f"below_threshold_{str(threshold).replace('.', '')}"] = float(
            (weights < threshold).mean() * 100)
    return stats


# ----- FLOPs of recorded ops ----------------------------------------------------------------------

def op_flops(event):
    """FLOPs of a recorded forward op (:class:`~tinytorch.core.profiler.Event`) from its shapes:
    2 per multiply-add of its matrix products; 0 for the ops without one."""
    out = event.shape or ()
    shapes = event.input_shapes
    if event.name == "MatmulBackward":
        return 2 * math.prod(out) * (shapes[0][-1] if shapes[0] else 1)
    if event.name == "LinearBackward":                  # x (..., in) @ W (in, out)
        return 2 * math.prod(out) * shapes[1][0]
    if event.name == "Conv2dBackward":                  # W (out, in/groups, kh, kw)
        return 2 * math.prod(out) * math.prod(shapes[1][1:])
    if event.name == "ScaledDotProductAttentionBackward":   # Q K^T, then P V
        q, k = shapes[0], shapes[1]
        return 2 * math.prod(out[:-1]) * k[-2] * (q[-1] + out[-1])
    return 0


def _conv_flops(conv, input_shape):
    """Per-sample FLOPs of a Conv2d: the output size formula of PyTorch's Conv2d docs. Plain
    numbers are accepted for the sizes (TinyTorch's layers); 0 for an object that lacks
    ``kernel_size``, ``in_channels`` or ``out_channels``."""
    if not all(hasattr(conv, a) for a in ("kernel_size", "in_channels", "out_channels")):
        return 0
    (kh, kw), (sh, sw) = _pair(conv.kernel_size), _pair(getattr(conv, "stride", 1))
    dh, dw = _pair(getattr(conv, "dilation", 1))
    padding = getattr(conv, "padding", 0)
    height, width = input_shape[-2], input_shape[-1]
    if padding == "same":
        out_h, out_w = height, width
    else:
        ph, pw = (0, 0) if padding == "valid" else _pair(padding)
        out_h = (height + 2 * ph - dh * (kh - 1) - 1) // sh + 1
        out_w = (width + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    per_output = kh * kw * (conv.in_channels // getattr(conv, "groups", 1))
    return 2 * max(out_h, 0) * max(out_w, 0) * per_output * conv.out_channels


def _pair(value):
    return (value, value) if isinstance(value, int) else tuple(value)


# ----- helpers ------------------------------------------------------------------------------------

def _array(value):
    return value._data if isinstance(value, Tensor) else np.asarray(value)


def _parameters(model):
    return list(model.parameters()) if hasattr(model, "parameters") else []


def _shape(shape):
    try:
        shape = tuple(int(n) for n in shape)
    except (TypeError, ValueError):
        raise TypeError(f"input_shape must be a tuple of sizes, got {shape!r}") from None
    if any(n < 0 for n in shape):
        raise ValueError(f"input_shape must hold sizes >= 0, got {shape}")
    return shape


def _check_count(value, name, low):
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def _dummy_input(model, shape):
    """A batch the model can take: token ids for a model with a ``vocab_size``, else normal
    noise in the dtype of the model's parameters (seeded, so counts are repeatable)."""
    rng = np.random.default_rng(0)
    if hasattr(model, "vocab_size"):
        return Tensor(rng.integers(0, model.vocab_size, size=shape))
    parameters = _parameters(model)
    dtype = _array(parameters[0]).dtype if parameters else None
    return Tensor(rng.standard_normal(shape), dtype=dtype)


def _as_loss(output):
    """A scalar to call backward on: the output itself, or its sum."""
    output = output[0] if isinstance(output, tuple) else output
    return output if output.size == 1 else output.sum()


class _evaluating:
    """Context manager: every submodule in eval mode inside, its own mode restored after."""

    def __init__(self, model):
        self.modules = list(model.modules()) if hasattr(model, "modules") else []

    def __enter__(self):
        self.modes = [m.training for m in self.modules]
        for m in self.modules:
            m.training = False

    def __exit__(self, *exc_info):
        for m, mode in zip(self.modules, self.modes):
            m.training = mode
        return False


__all__ = ["Profiler", "analyze_weight_distribution", "op_flops"]
