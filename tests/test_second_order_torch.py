"""Second derivatives of every differentiable op against PyTorch, in float64.

For each op f of the shared tables (``op_helpers.py``) with inputs x_i, a random upstream v and
random directions w_i, both libraries compute

    g = grad(sum(f(x) * v), x, create_graph=True)         (first derivatives)
    h = grad(sum_i sum(g_i * w_i), x, allow_unused=True)  (a Hessian-vector product)

and the two must agree (None counts as zeros). Ops that are piecewise linear (relu, abs, max,
clip, indexing, reshaping...) have a zero second derivative almost everywhere: their h must be
all zeros or None. The file ends with the Hessian-vector product of a small MLP's loss and a
gradient-penalty training step (loss + lambda ||d out / d x||^2), both against torch.

The torch spellings of the ops come from ``test_ops_torch.py`` (the first-order comparison).
"""

import numpy as np
import pytest
from hypothesis import assume, given, settings

torch = pytest.importorskip("torch")

import tinytorch as tt  # noqa: E402
from op_helpers import (  # noqa: E402
    BINARY_OPS, INDEX_KEYS, INDEXED_SHAPE, JOIN_OPS, MATMUL_SHAPES,
    NEGATIVE_STEP_EQUIVALENTS, OP_SETTINGS, OPERAND_SHAPES, REDUCTIONS, SHAPE_OPS,
    SHARED_SUBEXPRESSIONS, UNARY_OPS, WHERE_CASES, broadcastable_pairs, leaves, matmul_shapes,
    operand_case, operand_forms, random_array, reduced_count, reduction_args, seeds, shapes,
    torch_operand, with_constant,
)
from test_ops_torch import (  # noqa: E402
    EDGE_VALUES, TORCH_SPELLING, _tensor, torch_key, torch_reduction, torch_version,
)
from tinytorch.core import functional  # noqa: E402
from tinytorch.core.activations import Tanh  # noqa: E402
from tinytorch.core.autograd import backward, grad  # noqa: E402
from tinytorch.core.layers import Linear, Sequential  # noqa: E402
from tinytorch.core.losses import CrossEntropyLoss, MSELoss  # noqa: E402

RTOL, ATOL = 1e-9, 1e-12

# Fewer examples than the first-order suite: each one runs two backward passes in each library.
SECOND_ORDER_SETTINGS = settings(OP_SETTINGS, max_examples=10)

# NumPy warns about overflow, 0/0 or log(0): on these valid inputs any such warning is a bug.
pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")

# Piecewise-linear ops: their second derivative is zero wherever it exists (all of our inputs).
PIECEWISE_LINEAR_UNARY = {"neg", "abs", "relu", "clip", "clip_min_only", "clip_max_only",
                          "maximum_with_number", "minimum_with_number", "clone", "copy"}
PIECEWISE_LINEAR_BINARY = {"add", "sub", "maximum", "minimum"}
PIECEWISE_LINEAR_WHERE = set(WHERE_CASES)           # every branch is an input or a constant


# ----- the comparison -----------------------------------------------------------------------------

def _dense(gradient, shape):
    """A gradient as an array of ``shape``: None (an unused input) is zeros."""
    if gradient is None:
        return np.zeros(shape)
    if isinstance(gradient, tt.Tensor):
        data = gradient.data
    else:                            # force: torch may return a lazy ZeroTensor
        data = gradient.detach().numpy(force=True)
    assert data.shape == tuple(shape)
    assert data.dtype == np.float64
    return data


def _ours_hvp(out, inputs, upstream, directions):
    first = grad((out * tt.Tensor(upstream, dtype=np.float64)).sum(), inputs,
                 create_graph=True, allow_unused=True)
    terms = [(g * tt.Tensor(w, dtype=np.float64)).sum() for g, w in zip(first, directions)
             if g is not None and g.requires_grad]
    if not terms:                    # no first derivative depends on the inputs: h = 0
        return first, [None] * len(inputs)
    return first, grad(sum(terms[1:], terms[0]), inputs, allow_unused=True)


def _torch_hvp(out, inputs, upstream, directions):
    first = torch.autograd.grad((out * torch.from_numpy(upstream)).sum(), inputs,
                                create_graph=True, allow_unused=True)
    terms = [(g * torch.from_numpy(w)).sum() for g, w in zip(first, directions)
             if g is not None and g.requires_grad]
    if not terms:
        return first, [None] * len(inputs)
    return first, torch.autograd.grad(sum(terms[1:], terms[0]), inputs, allow_unused=True)


def _hvps(ours_fn, torch_fn, arrays, seed):
    """Values, first derivatives and Hessian-vector products of both libraries (the same v, w)."""
    rng = np.random.default_rng([seed, 2])
    ours_inputs = leaves(*arrays)
    torch_inputs = [torch.tensor(np.asarray(a, dtype=np.float64), requires_grad=True)
                    for a in arrays]
    out = ours_fn(*ours_inputs)
    expected = torch_fn(*torch_inputs)
    assert out.shape == tuple(expected.shape)
    np.testing.assert_allclose(out.data, expected.detach().numpy(), rtol=RTOL, atol=ATOL,
                               err_msg="values")
    upstream = np.asarray(rng.standard_normal(out.shape))
    directions = [np.asarray(rng.standard_normal(np.shape(a))) for a in arrays]
    ours = _ours_hvp(out, ours_inputs, upstream, directions)
    theirs = _torch_hvp(expected, torch_inputs, upstream, directions)
    return ours, theirs, upstream, directions


def assert_second_order_matches_torch(ours_fn, torch_fn, *arrays, seed=0, zero_hessian=False):
    """Same first derivatives and same Hessian-vector product as torch, for every input.

    With ``zero_hessian`` the op is piecewise linear: the product must be zero (or None).
    """
    (ours_first, ours_second), (theirs_first, theirs_second), _, _ = _hvps(
        ours_fn, torch_fn, arrays, seed)
    for i, a in enumerate(arrays):
        shape = np.shape(a)
        assert ours_first[i] is not None, f"input {i} got no first derivative"
        np.testing.assert_allclose(_dense(ours_first[i], shape), _dense(theirs_first[i], shape),
                                   rtol=RTOL, atol=ATOL, err_msg=f"first derivative of input {i}")
        ours_h = _dense(ours_second[i], shape)
        np.testing.assert_allclose(ours_h, _dense(theirs_second[i], shape), rtol=RTOL,
                                   atol=ATOL, err_msg=f"Hessian-vector product for input {i}")
        if zero_hessian:
            assert not ours_h.any(), f"piecewise-linear op has a nonzero second derivative ({i})"


# ----- elementwise ops ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", UNARY_OPS)
@SECOND_ORDER_SETTINGS
@given(shape=shapes, seed=seeds)
def test_unary_op_second_derivative_matches_torch(name, shape, seed):
    fn, domain = UNARY_OPS[name]
    assert_second_order_matches_torch(fn, torch_version(name, fn),
                                      random_array(shape, seed, domain), seed=seed,
                                      zero_hessian=name in PIECEWISE_LINEAR_UNARY)


@pytest.mark.parametrize("name", BINARY_OPS)
@SECOND_ORDER_SETTINGS
@given(pair=broadcastable_pairs, seed=seeds)
def test_binary_op_second_derivative_matches_torch_with_broadcasting(name, pair, seed):
    fn, domain_a, domain_b = BINARY_OPS[name]
    shape_a, shape_b = pair.input_shapes
    assert_second_order_matches_torch(fn, fn, random_array(shape_a, seed, domain_a),
                                      random_array(shape_b, seed + 1, domain_b), seed=seed,
                                      zero_hessian=name in PIECEWISE_LINEAR_BINARY)


@pytest.mark.parametrize("tensor_shape, array_shape", OPERAND_SHAPES)
@pytest.mark.parametrize("name, form", operand_forms())
def test_operator_with_number_or_array_operand_second_derivative_matches_torch(
        name, form, tensor_shape, array_shape):
    x, constant, tensor_first = operand_case(name, form, tensor_shape, array_shape)
    fn = BINARY_OPS[name][0]
    torch_constant = torch_operand(name, constant, _tensor)
    assert_second_order_matches_torch(with_constant(fn, constant, tensor_first),
                                      with_constant(fn, torch_constant, tensor_first), x,
                                      zero_hessian=name in PIECEWISE_LINEAR_BINARY)


# sqrt and log near 0: the second derivative itself overflows there (-x^-1.5 / 4 at 1e-300).
# 0 ** t: torch's double backward gives NaN (it forms 0 * log 0); see the zero-base test below.
SECOND_ORDER_EDGE_VALUES = [name for name in EDGE_VALUES if name not in
                            ("sqrt_near_zero", "log_near_zero", "zero_base_to_tensor_power")]


@pytest.mark.parametrize("name", SECOND_ORDER_EDGE_VALUES)
def test_edge_values_second_derivative_matches_torch(name):
    fn, values = EDGE_VALUES[name]
    assert_second_order_matches_torch(fn, fn, np.array(values), zero_hessian=name in (
        "relu_at_zero", "abs_at_zero", "clip_at_the_boundaries"))


def test_pow_at_zero_base_second_derivative_is_finite_and_matches_torch_elsewhere():
    """At a == 0 torch's second derivative of a ** b is NaN (torch 2.x forms 0 * log 0); ours is
    the limit as a -> 0+, and equals torch's wherever a != 0.

    There (b > 0): d2/da2 a^b = b (b-1) a^(b-2) is 2 for b = 2 and 0 for b = 3; the terms with
    log a (d2/dadb, d2/db2) vanish. At b == 0 the first derivative for a is 0 (torch's rule),
    so its derivatives are 0 as well.
    """
    a = np.array([0.0, 0.0, 2.0, 0.0, 3.0])
    b = np.array([0.0, 2.0, 0.0, 3.0, 1.5])
    (_, ours), (_, theirs), v, (w_a, _) = _hvps(lambda x, y: x ** y, lambda x, y: x ** y,
                                                (a, b), seed=0)
    ours_a, ours_b = _dense(ours[0], a.shape), _dense(ours[1], b.shape)
    theirs_a, theirs_b = _dense(theirs[0], a.shape), _dense(theirs[1], b.shape)
    zero_base = a == 0
    assert np.isfinite(ours_a).all() and np.isfinite(ours_b).all()
    np.testing.assert_allclose(ours_a[~zero_base], theirs_a[~zero_base], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(ours_b[~zero_base], theirs_b[~zero_base], rtol=RTOL, atol=ATOL)
    limit_aa = np.where(b == 2, 2.0, 0.0)
    np.testing.assert_allclose(ours_a[zero_base], (v * limit_aa * w_a)[zero_base], rtol=RTOL,
                               atol=ATOL)
    np.testing.assert_array_equal(ours_b[zero_base], 0.0)

    # a scalar base of 0: 0 ** t is the constant 0 for t > 0, so every second derivative is 0
    (first, ours), _, _, _ = _hvps(lambda t: 0.0 ** t, lambda t: 0.0 ** t,
                                   (np.array([0.0, 1.0, 2.5]),), seed=1)
    assert not _dense(first[0], (3,)).any()
    assert not _dense(ours[0], (3,)).any()


# ----- matmul: bilinear, so its Hessian is all cross terms ----------------------------------------

def _matmul(a, b):
    return a @ b


@pytest.mark.parametrize("name", MATMUL_SHAPES)
def test_matmul_second_derivative_matches_torch(name):
    shape_a, shape_b = MATMUL_SHAPES[name]
    assert_second_order_matches_torch(_matmul, _matmul, random_array(shape_a, 0),
                                      random_array(shape_b, 1))


@SECOND_ORDER_SETTINGS
@given(pair=matmul_shapes, seed=seeds)
def test_matmul_second_derivative_matches_torch_for_any_numpy_shapes(pair, seed):
    shape_a, shape_b = pair.input_shapes
    assert_second_order_matches_torch(_matmul, _matmul, random_array(shape_a, seed),
                                      random_array(shape_b, seed + 1), seed=seed)


@pytest.mark.parametrize("name", ["1d_1d", "2d_2d", "batched_with_broadcast_batch_dims"])
def test_matmul_of_x_with_itself_second_derivative_matches_torch(name):
    shape_a, _ = MATMUL_SHAPES[name]
    square = shape_a[:-2] + (shape_a[-1], shape_a[-1]) if len(shape_a) > 1 else shape_a
    assert_second_order_matches_torch(lambda x: x @ x, lambda x: x @ x, random_array(square))


# ----- reductions ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", REDUCTIONS)
@SECOND_ORDER_SETTINGS
@given(args=reduction_args(), seed=seeds)
def test_reduction_second_derivative_matches_torch(name, args, seed):
    shape, axis, keepdims = args
    array = random_array(shape, seed)
    if name == "std":
        assume(reduced_count(shape, axis) >= 2)      # sqrt has no derivative at a zero variance
        # Near zero it is ill-conditioned: the Hessian's terms grow as 1/std and cancel, leaving
        # rounding errors of 1e-16/std (3e-12 for two values 3e-5 apart) in both engines.
        assume(np.std(array, axis=axis).min(initial=1.0) > 1e-2)
    assert_second_order_matches_torch(lambda t: getattr(t, name)(axis=axis, keepdims=keepdims),
                                      lambda t: torch_reduction(name, t, axis, keepdims),
                                      array, seed=seed,
                                      zero_hessian=name in ("sum", "mean", "max", "min"))


@pytest.mark.parametrize("shape, axis, keepdims", [((3, 4), 1, False), ((2, 3, 4), (0, 2), True),
                                                   ((3, 4), None, False), ((2, 3, 4), -1, True)])
@pytest.mark.parametrize("name", REDUCTIONS)
def test_reduction_inside_a_curved_expression_second_derivative_matches_torch(
        name, shape, axis, keepdims):
    """reduce(x)^3: the gradient of the gradient must be spread back by the reduction's rule."""
    assert_second_order_matches_torch(
        lambda t: getattr(t, name)(axis=axis, keepdims=keepdims) ** 3,
        lambda t: torch_reduction(name, t, axis, keepdims) ** 3, random_array(shape, 3))


@pytest.mark.parametrize("name", ["var", "std"])
def test_var_and_std_with_correction_one_second_derivative_matches_torch(name):
    assert_second_order_matches_torch(lambda t: getattr(t, name)(axis=1, correction=1),
                                      lambda t: getattr(torch, name)(t, dim=1, correction=1),
                                      random_array((3, 4)))


# ----- shape operations, indexing, joining, where: all linear ----------------------------------

@pytest.mark.parametrize("name", SHAPE_OPS)
def test_shape_op_second_derivative_is_zero_like_torch(name):
    shape, fn = SHAPE_OPS[name]
    assert_second_order_matches_torch(fn, torch_version(name, fn), random_array(shape),
                                      zero_hessian=True)


@pytest.mark.parametrize("name", SHAPE_OPS)
def test_shape_op_inside_a_curved_expression_second_derivative_matches_torch(name):
    """The reshaped gradient of the gradient must land back in place: f(x) = op(x)^3."""
    shape, fn = SHAPE_OPS[name]
    torch_fn = torch_version(name, fn)
    assert_second_order_matches_torch(lambda t: fn(t) ** 3, lambda t: torch_fn(t) ** 3,
                                      random_array(shape))


def _index_keys(name):
    key = INDEX_KEYS[name]
    torch_side = NEGATIVE_STEP_EQUIVALENTS.get(name, key)
    return key, torch_key(torch_side)


@pytest.mark.parametrize("name", INDEX_KEYS)
def test_indexing_second_derivative_is_zero_like_torch(name):
    key, expected_key = _index_keys(name)
    assert_second_order_matches_torch(lambda t: t[key], lambda t: t[expected_key],
                                      random_array(INDEXED_SHAPE), zero_hessian=True)


@pytest.mark.parametrize("name", INDEX_KEYS)
def test_indexing_inside_a_curved_expression_second_derivative_matches_torch(name):
    """x[key]^2 * x.sum(): with repeated indices the second derivatives must add up."""
    key, expected_key = _index_keys(name)
    assert_second_order_matches_torch(lambda t: t[key] * t[key] * t.sum(),
                                      lambda t: t[expected_key] * t[expected_key] * t.sum(),
                                      random_array(INDEXED_SHAPE))


@pytest.mark.parametrize("name", JOIN_OPS)
def test_join_op_second_derivative_is_zero_like_torch(name):
    in_shapes, fn = JOIN_OPS[name]
    assert_second_order_matches_torch(fn, TORCH_SPELLING[name],
                                      *[random_array(s, i) for i, s in enumerate(in_shapes)],
                                      zero_hessian=True)


@pytest.mark.parametrize("name", JOIN_OPS)
def test_join_op_inside_a_curved_expression_second_derivative_matches_torch(name):
    in_shapes, fn = JOIN_OPS[name]
    theirs = TORCH_SPELLING[name]
    assert_second_order_matches_torch(lambda *ts: fn(*ts).sin() * fn(*ts),
                                      lambda *ts: theirs(*ts).sin() * theirs(*ts),
                                      *[random_array(s, i) for i, s in enumerate(in_shapes)])


@pytest.mark.parametrize("name", WHERE_CASES)
def test_where_second_derivative_is_zero_like_torch(name):
    in_shapes, fn = WHERE_CASES[name]
    assert_second_order_matches_torch(fn, TORCH_SPELLING[name],
                                      *[random_array(s, i) for i, s in enumerate(in_shapes)],
                                      zero_hessian=name in PIECEWISE_LINEAR_WHERE)


@pytest.mark.parametrize("name", WHERE_CASES)
def test_where_inside_a_curved_expression_second_derivative_matches_torch(name):
    in_shapes, fn = WHERE_CASES[name]
    theirs = TORCH_SPELLING[name]
    assert_second_order_matches_torch(lambda *ts: fn(*[t.exp() for t in ts]) ** 2,
                                      lambda *ts: theirs(*[t.exp() for t in ts]) ** 2,
                                      *[random_array(s, i) for i, s in enumerate(in_shapes)])


@pytest.mark.parametrize("name", SHARED_SUBEXPRESSIONS)
def test_shared_subexpression_second_derivative_matches_torch(name):
    shape, fn = SHARED_SUBEXPRESSIONS[name]
    assert_second_order_matches_torch(fn, torch_version(name, fn), random_array(shape))


# ----- activations and losses not covered by test_activations.py / test_losses.py ---------------
# (those compare sigmoid, gelu, gelu tanh, silu, softmax(dim=0), log_softmax(dim=1), and the
# 'mean' cross-entropy, 'mean' BCE with logits, 'sum' BCE and 'mean' MSE with a constant target)

F = torch.nn.functional
PROBABILITIES = np.random.default_rng(5).uniform(0.05, 0.95, (3, 4))
SOFT_TARGETS = np.random.default_rng(6).uniform(0.0, 1.0, (3, 4))
CLASSES = np.array([2, 0, 3])

# name -> (input arrays, ours, torch's, zero second derivative)
FUNCTIONAL_CASES = {
    "leaky_relu": ([random_array((3, 4), 0, "nonzero")],
                   lambda x: functional.leaky_relu(x, 0.2), lambda x: F.leaky_relu(x, 0.2), True),
    "erf": ([random_array((3, 4))], functional.erf, torch.erf, False),
    "softmax_middle_dim": ([random_array((2, 3, 4))], lambda x: functional.softmax(x, dim=1),
                           lambda x: torch.softmax(x, dim=1), False),
    "log_softmax_first_dim": ([random_array((2, 3, 4))],
                              lambda x: functional.log_softmax(x, dim=0),
                              lambda x: torch.log_softmax(x, dim=0), False),
    "layer_norm_affine": ([random_array((2, 3, 4), 0), random_array((4,), 1),
                           random_array((4,), 2)],
                          lambda x, w, b: functional.layer_norm(x, (4,), w, b),
                          lambda x, w, b: F.layer_norm(x, (4,), w, b), False),
    "layer_norm_two_axes": ([random_array((2, 3, 4))],
                            lambda x: functional.layer_norm(x, (3, 4)),
                            lambda x: F.layer_norm(x, (3, 4)), False),
}
for _reduction in ("mean", "sum", "none"):
    FUNCTIONAL_CASES[f"mse_target_requires_grad_{_reduction}"] = (
        [random_array((3, 4), 0), random_array((3, 4), 1)],
        lambda p, t, r=_reduction: functional.mse_loss(p, t, reduction=r),
        lambda p, t, r=_reduction: F.mse_loss(p, t, reduction=r), False)
    FUNCTIONAL_CASES[f"bce_{_reduction}"] = (
        [PROBABILITIES],
        lambda p, r=_reduction: functional.binary_cross_entropy(p, SOFT_TARGETS, reduction=r),
        lambda p, r=_reduction: F.binary_cross_entropy(p, torch.from_numpy(SOFT_TARGETS),
                                                       reduction=r), False)
for _reduction in ("sum", "none"):             # 'mean' is in test_losses.py
    FUNCTIONAL_CASES[f"cross_entropy_{_reduction}"] = (
        [random_array((3, 5))],
        lambda x, r=_reduction: functional.cross_entropy(x, CLASSES, reduction=r),
        lambda x, r=_reduction: F.cross_entropy(x, torch.from_numpy(CLASSES), reduction=r),
        False)
    FUNCTIONAL_CASES[f"bce_with_logits_{_reduction}"] = (
        [random_array((3, 4))],
        lambda x, r=_reduction: functional.binary_cross_entropy_with_logits(
            x, SOFT_TARGETS, reduction=r),
        lambda x, r=_reduction: F.binary_cross_entropy_with_logits(
            x, torch.from_numpy(SOFT_TARGETS), reduction=r), False)


@pytest.mark.parametrize("name", FUNCTIONAL_CASES)
def test_activation_or_loss_second_derivative_matches_torch(name):
    arrays, ours, theirs, zero_hessian = FUNCTIONAL_CASES[name]
    assert_second_order_matches_torch(ours, theirs, *arrays, zero_hessian=zero_hessian)


# ----- a small MLP: Hessian-vector product of the loss w.r.t. all parameters -------------------

def _mlp(seed):
    tt.manual_seed(seed)
    return Sequential(Linear(3, 5, dtype=np.float64), Tanh(), Linear(5, 2, dtype=np.float64))


def _torch_mlp(params, x):
    w1, b1, w2, b2 = params
    return torch.tanh(x @ w1 + b1) @ w2 + b2


def _torch_copies(model):
    # tinytorch's Linear keeps weight as (in, out): y = x @ W + b, so torch uses the same arrays
    return [torch.tensor(p.data, requires_grad=True) for p in model.parameters()]


MLP_X = np.random.default_rng(11).standard_normal((6, 3))
MLP_TARGETS = np.array([0, 1, 1, 0, 1, 0])


@pytest.mark.parametrize("via", ["grad", "backward_create_graph"])
def test_mlp_loss_hessian_vector_product_matches_torch(via):
    model = _mlp(0)
    params = model.parameters()
    assert [p.shape for p in params] == [(3, 5), (5,), (5, 2), (2,)]
    assert all(p.dtype == np.float64 for p in params)
    rng = np.random.default_rng(12)
    direction = [rng.standard_normal(p.shape) for p in params]

    loss = CrossEntropyLoss()(model(tt.Tensor(MLP_X, dtype=np.float64)), MLP_TARGETS)
    if via == "grad":
        first = grad(loss, params, create_graph=True)
    else:
        for p in params:
            p.grad = None
        backward(loss, create_graph=True)
        first = [p.grad for p in params]
        assert all(g.requires_grad for g in first)
    directional = sum((g * tt.Tensor(d, dtype=np.float64)).sum() for g, d in zip(first, direction))
    hvp = grad(directional, params)

    theirs = _torch_copies(model)
    expected_loss = F.cross_entropy(_torch_mlp(theirs, torch.from_numpy(MLP_X)),
                                    torch.from_numpy(MLP_TARGETS))
    expected_first = torch.autograd.grad(expected_loss, theirs, create_graph=True)
    expected_hvp = torch.autograd.grad(
        sum((g * torch.from_numpy(d)).sum() for g, d in zip(expected_first, direction)), theirs)

    np.testing.assert_allclose(loss.item(), expected_loss.item(), rtol=RTOL)
    for name, ours_g, theirs_g, ours_h, theirs_h in zip(
            ["w1", "b1", "w2", "b2"], first, expected_first, hvp, expected_hvp):
        np.testing.assert_allclose(ours_g.data, theirs_g.detach().numpy(), rtol=RTOL, atol=ATOL,
                                   err_msg=f"gradient of {name}")
        np.testing.assert_allclose(ours_h.data, theirs_h.numpy(), rtol=RTOL, atol=ATOL,
                                   err_msg=f"Hessian-vector product for {name}")
        assert np.abs(theirs_h.numpy()).max() > 1e-6, "a degenerate direction would prove little"


def test_mlp_hessian_vector_product_is_symmetric():
    """u . (H w) == w . (H u): the Hessian of the loss is symmetric."""
    model = _mlp(1)
    params = model.parameters()
    rng = np.random.default_rng(13)
    u, w = ([rng.standard_normal(p.shape) for p in params] for _ in range(2))
    loss = CrossEntropyLoss()(model(tt.Tensor(MLP_X, dtype=np.float64)), MLP_TARGETS)
    first = grad(loss, params, create_graph=True)

    def hvp(direction):
        s = sum((g * tt.Tensor(d, dtype=np.float64)).sum() for g, d in zip(first, direction))
        return grad(s, params, retain_graph=True)

    u_hw = sum(float((h.data * a).sum()) for h, a in zip(hvp(w), u))
    w_hu = sum(float((h.data * a).sum()) for h, a in zip(hvp(u), w))
    np.testing.assert_allclose(u_hw, w_hu, rtol=1e-10)


# ----- gradient penalty (WGAN-GP-like): loss = mse + lambda * penalty(d out / d x) --------------

PENALTY_LAMBDA = 0.7
GP_X = np.random.default_rng(21).standard_normal((5, 3))
GP_Y = np.random.default_rng(22).standard_normal((5, 2))


def _penalty(gx, form):
    squared_norms = (gx * gx).sum(axis=1)
    if form == "squared_norm":
        return squared_norms.mean()
    return ((squared_norms.sqrt() - 1.0) ** 2).mean()      # WGAN-GP: (||grad|| - 1)^2


def _torch_penalty(gx, form):
    squared_norms = (gx * gx).sum(dim=1)
    if form == "squared_norm":
        return squared_norms.mean()
    return ((squared_norms.sqrt() - 1.0) ** 2).mean()


@pytest.mark.parametrize("form", ["squared_norm", "wgan_gp"])
def test_gradient_penalty_step_parameter_gradients_match_torch(form):
    model = _mlp(2)
    params = model.parameters()
    x = tt.Tensor(GP_X, dtype=np.float64, requires_grad=True)
    out = model(x)
    (gx,) = grad(out.sum(), x, create_graph=True)
    loss = MSELoss()(out, tt.Tensor(GP_Y, dtype=np.float64)) + PENALTY_LAMBDA * _penalty(gx, form)
    for p in params:
        p.grad = None
    loss.backward()

    theirs = _torch_copies(model)
    tx = torch.tensor(GP_X, requires_grad=True)
    expected_out = _torch_mlp(theirs, tx)
    (tgx,) = torch.autograd.grad(expected_out.sum(), tx, create_graph=True)
    expected_loss = (F.mse_loss(expected_out, torch.from_numpy(GP_Y))
                     + PENALTY_LAMBDA * _torch_penalty(tgx, form))
    expected_loss.backward()

    np.testing.assert_allclose(gx.data, tgx.detach().numpy(), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(loss.item(), expected_loss.item(), rtol=RTOL)
    for name, ours, reference in zip(["w1", "b1", "w2", "b2"], params, theirs):
        assert ours.grad is not None, f"{name} got no gradient"
        np.testing.assert_allclose(ours.grad.data, reference.grad.numpy(), rtol=RTOL, atol=ATOL,
                                   err_msg=f"gradient of {name}")
    np.testing.assert_allclose(x.grad.data, tx.grad.numpy(), rtol=RTOL, atol=ATOL,
                               err_msg="gradient of the input")


def test_gradient_penalty_alone_reaches_the_first_layer_only_through_second_derivatives():
    """penalty(d out/dx) depends on W1 through tanh'' and on b2 not at all (None in both)."""
    model = _mlp(3)
    params = model.parameters()
    x = tt.Tensor(GP_X, dtype=np.float64, requires_grad=True)
    (gx,) = grad(model(x).sum(), x, create_graph=True)
    ours = grad(_penalty(gx, "squared_norm"), params, allow_unused=True)

    theirs = _torch_copies(model)
    tx = torch.tensor(GP_X, requires_grad=True)
    (tgx,) = torch.autograd.grad(_torch_mlp(theirs, tx).sum(), tx, create_graph=True)
    expected = torch.autograd.grad(_torch_penalty(tgx, "squared_norm"), theirs,
                                   allow_unused=True)
    for name, p, g, e in zip(["w1", "b1", "w2", "b2"], params, ours, expected):
        np.testing.assert_allclose(_dense(g, p.shape), _dense(e, p.shape), rtol=RTOL, atol=ATOL,
                                   err_msg=f"penalty gradient of {name}")
    assert not _dense(ours[3], params[3].shape).any(), "the output bias cannot change d out/dx"
    assert np.abs(_dense(ours[0], params[0].shape)).max() > 1e-6
