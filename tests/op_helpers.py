"""Shared pieces of the op-level tests: float64 inputs, hypothesis strategies and op tables.

The tables list each differentiable op of ``shared/spec/API.md`` once, as a tinytorch expression
plus the input domain on which it is smooth (so finite differences are meaningful). The
gradcheck tests run them against central differences; the PyTorch tests run the same tables
against torch (which spells a few ops differently, see ``TORCH_SPELLING`` there).

This module must not import torch: the gradcheck tests run without it.
"""

import numpy as np
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tinytorch as tt

# Small shapes and few examples keep the whole op suite fast; no example database on disk.
OP_SETTINGS = settings(max_examples=20, deadline=None, database=None)

MAX_DIMS = 4
MAX_SIDE = 4


# ----- inputs ---------------------------------------------------------------------------------

def random_array(shape, seed=0, domain="any"):
    """A float64 array of ``shape`` drawn from ``domain``, away from every op's kinks and poles.

    Domains: ``any`` (-2..2), ``positive`` (0.2..2, for log, sqrt, pow bases), ``nonzero``
    (0.2 <= |x| <= 2, for divisors and for abs/relu, whose kink is at 0) and ``probability``
    (0.1..0.9, for binary cross-entropy).
    """
    rng = np.random.default_rng(seed)
    if domain == "any":
        values = rng.uniform(-2.0, 2.0, shape)
    elif domain == "positive":
        values = rng.uniform(0.2, 2.0, shape)
    elif domain == "nonzero":
        values = rng.uniform(0.2, 2.0, shape) * rng.choice([-1.0, 1.0], shape)
    elif domain == "probability":
        values = rng.uniform(0.1, 0.9, shape)
    else:
        raise ValueError(f"unknown domain {domain!r}")
    return np.array(values, dtype=np.float64)


def leaf(array, dtype=np.float64, requires_grad=True):
    """A leaf Tensor (requiring grad by default) holding a copy of ``array`` in ``dtype``."""
    return tt.Tensor(np.array(array, dtype=dtype), dtype=dtype, requires_grad=requires_grad)


def leaves(*arrays):
    return [leaf(a) for a in arrays]


# ----- hypothesis strategies -------------------------------------------------------------------

seeds = st.integers(min_value=0, max_value=2**32 - 1)

shapes = hnp.array_shapes(min_dims=0, max_dims=MAX_DIMS, min_side=1, max_side=MAX_SIDE)

# Two shapes that broadcast together, 0-d scalars and size-1 axes included.
broadcastable_pairs = hnp.mutually_broadcastable_shapes(
    num_shapes=2, min_dims=0, max_dims=MAX_DIMS, min_side=1, max_side=MAX_SIDE)

# Operand shapes for matmul with NumPy's rules: 1-D operands and broadcast batch dimensions.
matmul_shapes = hnp.mutually_broadcastable_shapes(
    signature="(m?,n),(n,p?)->(m?,p?)", max_dims=2, min_side=1, max_side=MAX_SIDE)


@st.composite
def reduction_args(draw):
    """``(shape, axis, keepdims)``: axis is None, an int or a tuple of ints, negative allowed."""
    shape = draw(shapes)
    ndim = len(shape)
    choices = [st.none()]
    if ndim:
        one_axis = st.integers(min_value=-ndim, max_value=ndim - 1)
        choices.append(one_axis)
        choices.append(st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True)
                       .flatmap(lambda axes: st.tuples(*[st.sampled_from([a, a - ndim])
                                                         for a in axes])))
    axis = draw(st.one_of(*choices))
    return shape, axis, draw(st.booleans())


def reduced_count(shape, axis):
    """How many elements each output element of a reduction over ``axis`` summarises."""
    if axis is None:
        return int(np.prod(shape))
    axes = axis if isinstance(axis, tuple) else (axis,)
    return int(np.prod([shape[a] for a in axes]))


# ----- op tables ---------------------------------------------------------------------------------
# name -> (tinytorch expression, input domain)

UNARY_OPS = {
    "neg": (lambda x: -x, "any"),
    "exp": (lambda x: x.exp(), "any"),
    "log": (lambda x: x.log(), "positive"),
    "sqrt": (lambda x: x.sqrt(), "positive"),
    "abs": (lambda x: x.abs(), "nonzero"),
    "tanh": (lambda x: x.tanh(), "any"),
    "sigmoid": (lambda x: x.sigmoid(), "any"),
    "relu": (lambda x: x.relu(), "nonzero"),
    "sin": (lambda x: x.sin(), "any"),
    "cos": (lambda x: x.cos(), "any"),
    "clip": (lambda x: x.clip(-0.5, 0.7), "any"),
    "clip_min_only": (lambda x: x.clip(min=-0.5), "any"),
    "clip_max_only": (lambda x: x.clip(max=0.7), "any"),
    "pow_int_exponent": (lambda x: x ** 3, "any"),
    "pow_float_exponent": (lambda x: x ** 2.5, "positive"),
    "pow_negative_exponent": (lambda x: x ** -1.5, "positive"),
    "pow_method": (lambda x: x.pow(2), "any"),
    "scalar_base_pow": (lambda x: 2 ** x, "any"),
    "fractional_scalar_base_pow": (lambda x: 0.5 ** x, "any"),
    "maximum_with_number": (lambda x: x.maximum(0.3), "any"),
    "minimum_with_number": (lambda x: x.minimum(0.3), "any"),
    "clone": (lambda x: x.clone(), "any"),
    "copy": (lambda x: x.copy(), "any"),
}

# name -> (tinytorch expression of (a, b), domain of a, domain of b); shapes broadcast.
BINARY_OPS = {
    "add": (lambda a, b: a + b, "any", "any"),
    "sub": (lambda a, b: a - b, "any", "any"),
    "mul": (lambda a, b: a * b, "any", "any"),
    "div": (lambda a, b: a / b, "any", "nonzero"),
    "pow": (lambda a, b: a ** b, "positive", "any"),
    "pow_method": (lambda a, b: a.pow(b), "positive", "any"),
    "maximum": (lambda a, b: a.maximum(b), "any", "any"),
    "minimum": (lambda a, b: a.minimum(b), "any", "any"),
}

# The operators, which must work with a Tensor, a Python number or a NumPy array on either side.
OPERATORS = ("add", "sub", "mul", "div", "pow")

# Binary ops written as methods take the other operand on the right only.
METHODS = ("maximum", "minimum", "pow_method")

# (shape of the Tensor, shape of the NumPy array operand): broadcasting either way
OPERAND_SHAPES = [((3, 4), (4,)), ((4,), (3, 4)), ((3, 1), (1, 4)), ((), (2, 3))]


def operand_forms():
    """(op name, form) for a Tensor with a number or a NumPy array, on each side the op allows."""
    forms = [(name, form) for name in OPERATORS
             for form in ("tensor_op_int", "tensor_op_float", "int_op_tensor", "float_op_tensor",
                          "tensor_op_array", "array_op_tensor")]
    return forms + [(name, form) for name in METHODS
                    for form in ("tensor_op_float", "tensor_op_array")]


def operand_case(name, form, tensor_shape, array_shape, seed=0):
    """``(x, constant, tensor_first)`` for the op ``name`` written as ``form``.

    ``x`` is the array for the Tensor operand, ``constant`` the int 2, the float 1.5 or a NumPy
    array; each lies in the domain of its side (a positive base, a nonzero divisor).
    """
    _, domain_a, domain_b = BINARY_OPS[name]
    first, _, second = form.partition("_op_")
    tensor_first = first == "tensor"
    constant_kind = second if tensor_first else first
    if constant_kind == "int":
        constant = 2
    elif constant_kind == "float":
        constant = 1.5
    else:
        constant = random_array(array_shape, seed + 1, domain_b if tensor_first else domain_a)
    x = random_array(tensor_shape, seed, domain_a if tensor_first else domain_b)
    return x, constant, tensor_first


def torch_operand(name, constant, as_torch_tensor):
    """``constant`` as PyTorch takes it: its maximum/minimum need a tensor operand, and arrays
    become tensors; its arithmetic takes numbers as they are."""
    if isinstance(constant, np.ndarray) or name in METHODS:
        return as_torch_tensor(constant)
    return constant


def with_constant(fn, constant, tensor_first):
    """``t -> fn(t, constant)`` or ``t -> fn(constant, t)``."""
    if tensor_first:
        return lambda t: fn(t, constant)
    return lambda t: fn(constant, t)


# name -> (shape of a, shape of b) for a @ b, in each of NumPy's matmul cases
MATMUL_SHAPES = {
    "2d_2d": ((2, 3), (3, 4)),
    "batched_with_broadcast_batch_dims": ((2, 1, 3, 4), (5, 4, 2)),
    "batched_2d_right": ((2, 3, 4), (4, 5)),
    "1d_1d": ((3,), (3,)),
    "1d_2d": ((3,), (3, 4)),
    "2d_1d": ((2, 3), (3,)),
    "batched_1d": ((2, 3, 4), (4,)),
    "1d_batched": ((4,), (2, 4, 3)),
}

REDUCTIONS = ("sum", "mean", "max", "min", "var", "std")

# name -> (input shape, tinytorch expression)
SHAPE_OPS = {
    "reshape_ints": ((3, 4), lambda x: x.reshape(2, 6)),
    "reshape_tuple": ((3, 4), lambda x: x.reshape((4, 3))),
    "reshape_minus_one": ((3, 4), lambda x: x.reshape(-1, 2)),
    "reshape_flat_minus_one": ((2, 3, 2), lambda x: x.reshape(-1)),
    "reshape_0d_to_1d": ((), lambda x: x.reshape(1)),
    "view": ((3, 4), lambda x: x.view(6, 2)),
    "transpose_default_last_two": ((2, 3, 4), lambda x: x.transpose()),
    "transpose_explicit_dims": ((2, 3, 4), lambda x: x.transpose(0, 2)),
    "transpose_negative_dims": ((2, 3, 4), lambda x: x.transpose(-3, -2)),
    "permute_ints": ((2, 3, 4), lambda x: x.permute(2, 0, 1)),
    "permute_tuple": ((2, 3, 4), lambda x: x.permute((1, 2, 0))),
    "squeeze_all": ((1, 3, 1, 4), lambda x: x.squeeze()),
    "squeeze_axis": ((1, 3, 1, 4), lambda x: x.squeeze(2)),
    "squeeze_dim_keyword": ((1, 3, 1, 4), lambda x: x.squeeze(dim=0)),
    "unsqueeze_front": ((3, 4), lambda x: x.unsqueeze(0)),
    "unsqueeze_negative": ((3, 4), lambda x: x.unsqueeze(-1)),
    "unsqueeze_dim_keyword": ((3, 4), lambda x: x.unsqueeze(dim=1)),
    "expand_new_axes": ((3, 1), lambda x: x.expand(2, 3, 4)),
    "expand_minus_one": ((3, 1), lambda x: x.expand(2, -1, 4)),
    "expand_tuple": ((1, 4), lambda x: x.expand((3, 4))),
    "broadcast_to": ((4,), lambda x: x.broadcast_to((2, 3, 4))),
    "flatten": ((2, 3, 4), lambda x: x.flatten()),
    "flatten_start_dim": ((2, 3, 4), lambda x: x.flatten(1)),
    "T_2d": ((3, 4), lambda x: x.T),
    "T_3d": ((2, 3, 4), lambda x: x.T),
}

MASK = np.array([[True, False, True], [False, False, True], [True, True, True],
                 [False, True, False], [True, False, False]])

# name -> index key for a tensor of shape INDEXED_SHAPE
INDEXED_SHAPE = (4, 5, 3)
INDEX_KEYS = {
    "int": 1,
    "negative_int": -1,
    "two_ints": (1, 2),
    "one_element": (3, 4, 2),
    "slice": slice(1, 3),
    "slices_with_steps": (slice(None, None, 2), slice(1, 4, 2)),
    "negative_step": slice(None, None, -1),
    "negative_steps_on_two_axes": (slice(3, 0, -2), slice(None), slice(None, None, -1)),
    "none_in_front": (None, 1),
    "none_in_middle": (slice(None), None, 2),
    "ellipsis": (Ellipsis, 1),
    "int_ellipsis_none": (1, Ellipsis, None),
    "bool_mask_first_axis": np.array([True, False, True, True]),
    "bool_mask_after_slice": (slice(None), MASK),
    "bool_mask_tensor": tt.Tensor(np.array([False, True, True, False])),
    "bool_list_mask": [True, False, True, True],
    "int_array_repeated": np.array([0, 2, 0, 0]),
    "int_list_repeated": [3, 3, 1],
    "int_array_2d_repeated": np.array([[0, 1], [1, 1]]),
    "int_arrays_paired_repeated": (np.array([0, 0, 3]), np.array([1, 1, 4])),
    "slice_then_int_array": (slice(1, 3), np.array([0, 0, 2])),
    "int_array_between_slice_and_int": (slice(None), [4, 4], 1),
    "float_tensor_of_indices": tt.Tensor([0.0, 0.0, 2.0]),
    "int64_tensor_of_indices": tt.Tensor([3, 3], dtype=np.int64),
    "0d_int_tensor": tt.Tensor(2, dtype=np.int64),
}

# Negative steps have no PyTorch spelling: the same selection as an explicit index array.
NEGATIVE_STEP_EQUIVALENTS = {
    "negative_step": (np.arange(4)[::-1],),
    "negative_steps_on_two_axes": (np.arange(4)[3:0:-2, None, None], np.arange(5)[None, :, None],
                                   np.arange(3)[::-1]),
}

# Constants (not representable in float32) joined with tensors: they must keep full precision.
CONSTANT_ROW = np.array([[0.1, 0.2, 0.3]])

# name -> (input shapes, tinytorch expression of the inputs)
JOIN_OPS = {
    "concatenate_axis0": ([(2, 3), (1, 3), (3, 3)], lambda *ts: tt.concatenate(ts, axis=0)),
    "concatenate_axis1": ([(2, 3), (2, 1)], lambda *ts: tt.concatenate(list(ts), axis=1)),
    "cat_negative_axis": ([(2, 1, 2), (2, 1, 3)], lambda *ts: tt.cat(ts, axis=-1)),
    "cat_dim_keyword": ([(2, 3), (2, 2)], lambda *ts: tt.cat(ts, dim=1)),
    "stack_axis0": ([(2, 3), (2, 3), (2, 3)], lambda *ts: tt.stack(ts)),
    "stack_last_axis": ([(2, 3), (2, 3)], lambda *ts: tt.stack(ts, axis=-1)),
    "stack_dim_keyword": ([(2, 3), (2, 3)], lambda *ts: tt.stack(ts, dim=1)),
    "concatenate_with_numpy_array": ([(2, 3)], lambda t: tt.concatenate([CONSTANT_ROW, t])),
    "stack_with_numpy_array": ([(1, 3)], lambda t: tt.stack([t, CONSTANT_ROW], axis=1)),
}

WHERE_CONDITION = np.array([[True, False, True, False], [False, False, True, True],
                            [True, True, False, False]])

# name -> (shapes of the differentiable inputs, tinytorch expression)
WHERE_CASES = {
    "same_shapes": ([(3, 4), (3, 4)], lambda a, b: tt.where(WHERE_CONDITION, a, b)),
    "broadcast_branches": ([(3, 1), (4,)], lambda a, b: tt.where(WHERE_CONDITION, a, b)),
    "tensor_condition": ([(3, 4), (3, 4)],
                         lambda a, b: tt.where(tt.Tensor(WHERE_CONDITION), a, b)),
    "condition_from_comparison": ([(3, 4), (3, 4)], lambda a, b: tt.where(a > b, a, b * 2)),
    "number_branch": ([(3, 4)], lambda a: tt.where(WHERE_CONDITION, a, 0.5)),
    "number_first_branch": ([(3, 4)], lambda a: tt.where(WHERE_CONDITION, -1.0, a)),
}

# Expressions that use an input (or an intermediate) several times: gradients must add up.
SHARED_SUBEXPRESSIONS = {
    "x_times_x_plus_x": ((3, 4), lambda x: x * x + x),
    "two_reductions_of_x": ((3, 4), lambda x: (x * x).sum() + x.exp().mean()),
    "intermediate_used_three_times": ((3, 4), lambda x: _reuse(x.sin())),
    "x_matmul_x": ((3, 3), lambda x: x @ x),
    "dot_with_itself": ((3,), lambda x: x @ x),
    "power_of_x_to_x": ((3, 4), lambda x: (x * x + 0.5) ** x),
    "rows_of_x_with_x": ((2, 3), lambda x: x[0] * x[1] + x),
    "normalise_by_own_sum": ((3, 4), lambda x: x / x.sum(axis=1, keepdims=True)),
    "standardise": ((3, 4), lambda x: (x - x.mean()) / x.std()),
}


def _reuse(y):
    return y * y + y


# The neural-network ops (functional.py, spatial_ops.py, attention.py, the embedding lookup) and
# the tensor ops no table above reaches: name -> (input shapes, input domains, expression).
CLASS_TARGETS = np.array([1, 0, 3, 1])
TOKEN_IDS = np.array([[0, 2, 2], [4, 0, 1]])
ATTENTION_MASK = np.array([[True, False, True, True, True], [True, True, False, False, True],
                           [False, False, False, False, True]])


class Cube(tt.Function):
    """A user-defined op (PyTorch's ctx style): y = x^3."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x * x

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * 3 * x * x


def _seeded(fn, *args):
    """``fn(*args)`` with tinytorch's generator reseeded: the same random draws at every call
    (finite differences call the expression many times)."""
    tt.manual_seed(0)
    return fn(*args)


def _assigned(x, value):
    y = x * 1.0                        # a non-leaf, so the assignment is recorded
    y[1, 1:3] = value
    return y


def _nn():
    from tinytorch.core import functional as F
    from tinytorch.core.attention import scaled_dot_product_attention
    from tinytorch.core.autograd import run_op
    from tinytorch.core.ops import EmbeddingBackward
    return F, scaled_dot_product_attention, run_op, EmbeddingBackward


F, _sdpa, _run_op, _Embedding = _nn()

NN_OPS = {
    "softmax": ([(3, 4)], ["any"], lambda x: F.softmax(x, dim=1)),
    "log_softmax": ([(3, 4)], ["any"], lambda x: F.log_softmax(x, dim=0)),
    "gelu": ([(3, 4)], ["any"], lambda x: F.gelu(x)),
    "gelu_tanh": ([(3, 4)], ["any"], lambda x: F.gelu(x, approximate="tanh")),
    "erf": ([(3, 4)], ["any"], lambda x: F.erf(x)),
    "leaky_relu": ([(3, 4)], ["nonzero"], lambda x: F.leaky_relu(x, 0.1)),
    "silu": ([(3, 4)], ["any"], lambda x: F.silu(x)),
    "mse_loss": ([(3, 4), (3, 4)], ["any", "any"], lambda p, t: F.mse_loss(p, t)),
    "binary_cross_entropy": ([(3, 4), (3, 4)], ["probability", "probability"],
                             lambda p, t: F.binary_cross_entropy(p, t, reduction="sum")),
    "bce_with_logits": ([(3, 4), (3, 4)], ["any", "probability"],
                        lambda x, t: F.binary_cross_entropy_with_logits(x, t)),
    "cross_entropy": ([(4, 5)], ["any"], lambda x: F.cross_entropy(x, CLASS_TARGETS)),
    "layer_norm": ([(3, 4), (4,), (4,)], ["any"] * 3,
                   lambda x, w, b: F.layer_norm(x, (4,), w, b)),
    "linear": ([(2, 3, 4), (4, 5), (5,)], ["any"] * 3, lambda x, w, b: F.linear(x, w, b)),
    "conv2d": ([(2, 3, 5, 5), (4, 3, 3, 3), (4,)], ["any"] * 3,
               lambda x, w, b: F.conv2d(x, w, b, padding=1)),
    "conv2d_strided_grouped": ([(1, 4, 6, 5), (6, 2, 3, 2)], ["any"] * 2,
                               lambda x, w: F.conv2d(x, w, stride=2, dilation=(1, 2), groups=2)),
    "max_pool2d": ([(2, 2, 4, 5)], ["any"], lambda x: F.max_pool2d(x, 2, padding=1)),
    "avg_pool2d": ([(2, 2, 4, 5)], ["any"], lambda x: F.avg_pool2d(x, (2, 3), stride=1)),
    "batch_norm": ([(4, 3, 2, 2), (3,), (3,)], ["any"] * 3,
                   lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True)),
    "attention": ([(2, 3, 4), (2, 5, 4), (2, 5, 6)], ["any"] * 3,
                  lambda q, k, v: _sdpa(q, k, v, mask=ATTENTION_MASK)[0]),
    "attention_weights": ([(3, 4), (5, 4), (5, 2)], ["any"] * 3,
                          lambda q, k, v: _sdpa(q, k, v, is_causal=True)[1]),
    "embedding": ([(5, 3)], ["any"], lambda w: _run_op(_Embedding, w, indices=TOKEN_IDS)),
    "dropout": ([(3, 4)], ["any"], lambda x: _seeded(F.dropout, x, 0.5)),
    "astype": ([(3, 4)], ["any"], lambda x: x.astype(np.float64)),
    "setitem": ([(3, 4), (2,)], ["any", "any"], _assigned),
    "custom_function": ([(3, 4)], ["any"], lambda x: Cube.apply(x)),
}


def table_cases():
    """``(name, expression, arrays)`` for every entry of every op table above: the cases whose
    graphs the op-contract tests inspect."""
    cases = []
    for name, (fn, domain) in UNARY_OPS.items():
        cases.append((f"unary:{name}", fn, [random_array((3, 4), 0, domain)]))
    for name, (fn, domain_a, domain_b) in BINARY_OPS.items():
        cases.append((f"binary:{name}", fn, [random_array((3, 4), 0, domain_a),
                                             random_array((4,), 1, domain_b)]))
    for name, (shape_a, shape_b) in MATMUL_SHAPES.items():
        cases.append((f"matmul:{name}", lambda a, b: a @ b,
                      [random_array(shape_a, 0), random_array(shape_b, 1)]))
    for name in REDUCTIONS:
        cases.append((f"reduction:{name}", lambda x, name=name: getattr(x, name)(axis=1),
                      [random_array((3, 4), 0)]))
    for name, (shape, fn) in SHAPE_OPS.items():
        cases.append((f"shape:{name}", fn, [random_array(shape, 0)]))
    for name, key in INDEX_KEYS.items():
        cases.append((f"index:{name}", lambda x, key=key: x[key],
                      [random_array(INDEXED_SHAPE, 0)]))
    for table, prefix in ((JOIN_OPS, "join"), (WHERE_CASES, "where")):
        for name, (input_shapes, fn) in table.items():
            cases.append((f"{prefix}:{name}", fn,
                          [random_array(shape, i) for i, shape in enumerate(input_shapes)]))
    for name, (shape, fn) in SHARED_SUBEXPRESSIONS.items():
        cases.append((f"shared:{name}", fn, [random_array(shape, 0, "positive")]))
    for name, (input_shapes, domains, fn) in NN_OPS.items():
        cases.append((f"nn:{name}", fn, [random_array(shape, i, domain) for i, (shape, domain)
                                         in enumerate(zip(input_shapes, domains))]))
    return cases


# ----- checks shared by the tests ---------------------------------------------------------------

def backward_with(out, seed=1):
    """Run ``out.backward`` with a fixed random upstream gradient; return that gradient."""
    upstream = np.asarray(np.random.default_rng(seed).standard_normal(out.shape))
    out.backward(upstream.astype(out.dtype))
    return upstream
