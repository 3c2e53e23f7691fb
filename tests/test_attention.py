"""Attention (module 12): the fused scaled dot-product op and multi-head attention, against
PyTorch in float64 and against finite differences."""

import numpy as np
import pytest

import tinytorch as tt
from tinytorch.core.attention import MultiHeadAttention, scaled_dot_product_attention
from tinytorch.core.autograd import gradcheck, gradgradcheck
from tinytorch.core.transformer import create_causal_mask

RNG = np.random.default_rng(12)


def f64(array, requires_grad=True):
    return tt.Tensor(np.array(array, dtype=np.float64), dtype=np.float64, requires_grad=requires_grad)


def torch_attention(torch, q, k, v, allowed):
    """The oracle: softmax of the scores with blocked keys at -inf, times V (rows with no
    allowed key are zero, as ours are specified to be)."""
    scores = q @ k.transpose(-2, -1) / np.sqrt(q.shape[-1])
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    weights = torch.nan_to_num(weights, nan=0.0)
    return weights @ v, weights


def causal(tq, tk):
    return np.tril(np.ones((tq, tk), dtype=bool))


MASK_CASES = {
    # name: (Q shape, K shape, V shape, mask or None, is_causal)
    "plain": ((2, 5, 4), (2, 5, 4), (2, 5, 3), None, False),
    "causal": ((2, 3, 5, 4), (2, 3, 5, 4), (2, 3, 5, 4), None, True),
    "causal_more_keys": ((1, 3, 4), (1, 6, 4), (1, 6, 2), None, True),
    "bool_mask": ((2, 4, 3), (2, 6, 3), (2, 6, 3), RNG.random((2, 4, 6)) > 0.3, False),
    "int_mask_broadcast": ((2, 2, 4, 3), (2, 2, 4, 3), (2, 2, 4, 3),
                           (RNG.random((4, 4)) > 0.4).astype(np.int64), False),
    "float_mask_per_batch": ((3, 4, 3), (3, 4, 3), (3, 4, 3),
                             (RNG.random((3, 1, 4)) > 0.3).astype(np.float32), False),
    "mask_and_causal": ((2, 5, 3), (2, 5, 3), (2, 5, 3), RNG.random((5, 5)) > 0.3, True),
    "broadcast_batch": ((2, 1, 4, 3), (1, 3, 4, 3), (2, 3, 4, 3), None, False),
}


@pytest.mark.parametrize("name", MASK_CASES)
def test_attention_matches_torch_values_and_gradients(torch, name):
    q_shape, k_shape, v_shape, mask, is_causal = MASK_CASES[name]
    arrays = [RNG.standard_normal(s) for s in (q_shape, k_shape, v_shape)]
    ours = [f64(a) for a in arrays]
    out, weights = scaled_dot_product_attention(*ours, mask=mask, is_causal=is_causal)
    upstream = RNG.standard_normal(out.shape)
    weight_upstream = RNG.standard_normal(weights.shape)
    ((out * f64(upstream, False)).sum() + (weights * f64(weight_upstream, False)).sum()).backward()

    theirs = [torch.tensor(a, requires_grad=True) for a in arrays]
    allowed = None if mask is None else torch.tensor(np.asarray(mask) != 0)
    if is_causal:
        tri = torch.tensor(causal(q_shape[-2], k_shape[-2]))
        allowed = tri if allowed is None else allowed & tri
    expected, expected_weights = torch_attention(torch, *theirs, allowed)
    ((expected * torch.tensor(upstream)).sum()
     + (expected_weights * torch.tensor(weight_upstream)).sum()).backward()
    np.testing.assert_allclose(out.data, expected.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(weights.data, expected_weights.detach().numpy(), rtol=1e-10, atol=1e-12)
    for mine, reference in zip(ours, theirs):
        np.testing.assert_allclose(mine.grad.data, reference.grad.numpy(), rtol=1e-9, atol=1e-11)


def test_attention_agrees_with_torchs_fused_function(torch):
    q, k, v = (RNG.standard_normal((2, 2, 6, 4)) for _ in range(3))
    mask = RNG.random((6, 6)) > 0.2
    np.fill_diagonal(mask, True)
    for kwargs, torch_kwargs in (({"is_causal": True}, {"is_causal": True}),
                                 ({"mask": mask}, {"attn_mask": torch.tensor(mask)})):
        out, _ = scaled_dot_product_attention(f64(q), f64(k), f64(v), **kwargs)
        expected = torch.nn.functional.scaled_dot_product_attention(
            *(torch.tensor(a) for a in (q, k, v)), **torch_kwargs)
        np.testing.assert_allclose(out.data, expected.numpy(), rtol=1e-10, atol=1e-12)


def test_attention_gradients_pass_gradcheck_and_gradgradcheck():
    q, k, v = (f64(RNG.standard_normal((2, 3, 2))) for _ in range(3))
    mask = np.array([[1, 0, 1], [1, 1, 0], [0, 0, 0]], dtype=bool)     # last row fully blocked
    for kwargs in ({}, {"is_causal": True}, {"mask": mask}):
        def output(q, k, v):
            return scaled_dot_product_attention(q, k, v, **kwargs)[0]

        def weights(q, k, v):
            return scaled_dot_product_attention(q, k, v, **kwargs)[1]
        assert gradcheck(output, [q, k, v])
        assert gradcheck(weights, [q, k, v])
        assert gradgradcheck(output, [q, k, v])
        assert gradgradcheck(weights, [q, k, v])


def test_a_fully_blocked_row_gives_zeros_and_zero_gradients_never_nan():
    q, k, v = (f64(RNG.standard_normal((1, 3, 4))) for _ in range(3))
    mask = np.ones((3, 3), dtype=bool)
    mask[1] = False
    out, weights = scaled_dot_product_attention(q, k, v, mask=mask)
    assert np.all(np.isfinite(out.data)) and np.all(out.data[0, 1] == 0)
    assert np.all(weights.data[0, 1] == 0)
    np.testing.assert_allclose(weights.data[0, [0, 2]].sum(axis=-1), 1.0)
    (out.sum() + weights.sum()).backward()
    assert np.all(q.grad.data[0, 1] == 0)
    for t in (q, k, v):
        assert np.all(np.isfinite(t.grad.data))
    everything_blocked, _ = scaled_dot_product_attention(q, k, v, mask=np.zeros((3, 3)))
    assert np.all(everything_blocked.data == 0)


def test_large_scores_stay_finite_and_exact(torch):
    q, k, v = (RNG.standard_normal((2, 4, 3)) for _ in range(3))
    q, k = q * 300.0, k * 300.0                              # scores ~ 1e5
    ours = [f64(a) for a in (q, k, v)]
    out, weights = scaled_dot_product_attention(*ours, is_causal=True)
    out.sum().backward()
    theirs = [torch.tensor(a, requires_grad=True) for a in (q, k, v)]
    expected, _ = torch_attention(torch, *theirs, torch.tensor(causal(4, 4)))
    expected.sum().backward()
    np.testing.assert_allclose(out.data, expected.detach().numpy(), rtol=1e-10, atol=1e-12)
    for mine, reference in zip(ours, theirs):
        assert np.all(np.isfinite(mine.grad.data))
        np.testing.assert_allclose(mine.grad.data, reference.grad.numpy(), rtol=1e-8, atol=1e-10)
    x32 = tt.Tensor(np.array([[[1e4, 0.0], [0.0, 1e4]]]), requires_grad=True)
    out32, _ = scaled_dot_product_attention(x32, x32, x32)
    assert out32.dtype == np.float32 and np.all(np.isfinite(out32.data))


def test_masks_mean_allowed_or_blocked_and_are_never_added():
    q, k, v = (f64(RNG.standard_normal((1, 3, 2)), False) for _ in range(3))
    allowed = np.array([[1, 0, 1], [1, 1, 0], [0, 1, 1]])
    reference, _ = scaled_dot_product_attention(q, k, v, mask=allowed.astype(bool))
    for form in (allowed, allowed.astype(np.float32), tt.Tensor(allowed.astype(bool)),
                 tt.Tensor(allowed)):
        out, _ = scaled_dot_product_attention(q, k, v, mask=form)
        np.testing.assert_array_equal(out.data, reference.data)
    all_ones, _ = scaled_dot_product_attention(q, k, v, mask=np.ones((3, 3)))
    unmasked, _ = scaled_dot_product_attention(q, k, v)
    np.testing.assert_array_equal(all_ones.data, unmasked.data)
    causal_mask, _ = scaled_dot_product_attention(q, k, v, mask=create_causal_mask(3))
    causal_flag, _ = scaled_dot_product_attention(q, k, v, is_causal=True)
    np.testing.assert_array_equal(causal_mask.data, causal_flag.data)


def test_bad_masks_and_shapes_are_value_errors():
    q = tt.Tensor(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="0/1.*got 2.0"):
        scaled_dot_product_attention(q, q, q, mask=np.full((3, 3), 2.0))
    with pytest.raises(ValueError, match="0/1.*-inf"):
        scaled_dot_product_attention(q, q, q, mask=np.triu(np.full((3, 3), -np.inf), 1))
    with pytest.raises(ValueError, match=r"shape \(4, 4\).*\(2, 3, 3\)"):
        scaled_dot_product_attention(q, q, q, mask=np.ones((4, 4)))
    with pytest.raises(ValueError, match="same last dimension"):
        scaled_dot_product_attention(q, tt.Tensor(np.zeros((2, 3, 5))), q)
    with pytest.raises(ValueError, match="number of positions"):
        scaled_dot_product_attention(q, q, tt.Tensor(np.zeros((2, 4, 4))))


def test_dropout_acts_on_the_weights_only_while_recording(torch):
    q, k, v = (f64(RNG.standard_normal((2, 6, 4))) for _ in range(3))
    reference, reference_weights = scaled_dot_product_attention(q, k, v)
    with tt.no_grad():
        out, _ = scaled_dot_product_attention(q, k, v, dropout_p=0.5)
    np.testing.assert_array_equal(out.data, reference.data)            # nothing records: no dropout
    tt.manual_seed(3)
    out, weights = scaled_dot_product_attention(q, k, v, dropout_p=0.5)
    np.testing.assert_array_equal(weights.data, reference_weights.data)   # weights before dropout
    tt.manual_seed(3)
    keep = (tt.core.tensor.get_rng().random((2, 6, 6)) >= 0.5) * 2.0
    assert 0 < keep.mean() < 2
    np.testing.assert_allclose(out.data, (reference_weights.data * keep) @ v.data, rtol=1e-12)
    upstream = RNG.standard_normal(out.shape)
    out.backward(upstream)
    theirs = [torch.tensor(t.data, requires_grad=True) for t in (q, k, v)]
    _, their_weights = torch_attention(torch, *theirs, None)
    ((their_weights * torch.tensor(keep)) @ theirs[2] * torch.tensor(upstream)).sum().backward()
    for mine, reference in zip((q, k, v), theirs):
        np.testing.assert_allclose(mine.grad.data, reference.grad.numpy(), rtol=1e-9, atol=1e-11)
    dropped_all, _ = scaled_dot_product_attention(q, k, v, dropout_p=1.0)
    assert np.all(dropped_all.data == 0)


# ----- multi-head attention ------------------------------------------------------------------

def torch_mha(torch, mha):
    """torch.nn.MultiheadAttention with our weights (ours are stored (in, out): transpose)."""
    D = mha.embed_dim
    theirs = torch.nn.MultiheadAttention(D, mha.num_heads, batch_first=True, dtype=torch.float64)
    with torch.no_grad():
        theirs.in_proj_weight.copy_(torch.tensor(np.concatenate(
            [mha.q_proj.weight.data.T, mha.k_proj.weight.data.T, mha.v_proj.weight.data.T])))
        theirs.in_proj_bias.copy_(torch.tensor(np.concatenate(
            [mha.q_proj.bias.data, mha.k_proj.bias.data, mha.v_proj.bias.data])))
        theirs.out_proj.weight.copy_(torch.tensor(mha.out_proj.weight.data.T))
        theirs.out_proj.bias.copy_(torch.tensor(mha.out_proj.bias.data))
    return theirs


@pytest.fixture
def float64_default():
    tt.set_default_dtype(np.float64)
    yield
    tt.set_default_dtype(np.float32)


@pytest.mark.parametrize("mask_kind", ["none", "causal", "per_batch_mask"])
def test_multi_head_attention_matches_torch_with_copied_weights(torch, float64_default, mask_kind):
    B, T, D, H = 2, 5, 8, 2
    mha = MultiHeadAttention(D, H)
    theirs = torch_mha(torch, mha)
    x = RNG.standard_normal((B, T, D))
    ours_x, their_x = f64(x), torch.tensor(x, requires_grad=True)
    torch_mask, kwargs = None, {}
    if mask_kind == "causal":
        kwargs = {"is_causal": True}
        torch_mask = ~torch.tensor(causal(T, T))                    # torch: True = blocked
    elif mask_kind == "per_batch_mask":
        mask = RNG.random((B, T, T)) > 0.3
        mask[:, np.arange(T), np.arange(T)] = True
        kwargs = {"mask": mask}                                     # (B, T, T): every head
        torch_mask = ~torch.tensor(np.repeat(mask, H, axis=0))      # torch: (B * H, T, T)
    out = mha(ours_x, **kwargs)
    expected, _ = theirs(their_x, their_x, their_x, attn_mask=torch_mask, need_weights=False)
    upstream = RNG.standard_normal(out.shape)
    out.backward(upstream)
    expected.backward(torch.tensor(upstream))
    np.testing.assert_allclose(out.data, expected.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours_x.grad.data, their_x.grad.numpy(), rtol=1e-9, atol=1e-11)
    their_in = theirs.in_proj_weight.grad.numpy()
    for i, proj in enumerate((mha.q_proj, mha.k_proj, mha.v_proj)):
        np.testing.assert_allclose(proj.weight.grad.data, their_in[i * D:(i + 1) * D].T,
                                   rtol=1e-9, atol=1e-11)
        np.testing.assert_allclose(proj.bias.grad.data,
                                   theirs.in_proj_bias.grad.numpy()[i * D:(i + 1) * D],
                                   rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(mha.out_proj.weight.grad.data, theirs.out_proj.weight.grad.numpy().T,
                               rtol=1e-9, atol=1e-11)


def test_multi_head_attention_heads_are_contiguous_column_blocks(float64_default):
    B, T, D, H = 1, 4, 6, 3
    mha = MultiHeadAttention(D, H)
    x = f64(RNG.standard_normal((B, T, D)), False)
    q, k, v = (x.data @ p.weight.data + p.bias.data for p in (mha.q_proj, mha.k_proj, mha.v_proj))
    heads = []
    for h in range(H):
        cols = slice(2 * h, 2 * h + 2)
        out, _ = scaled_dot_product_attention(*(f64(a[..., cols], False) for a in (q, k, v)))
        heads.append(out.data)
    expected = np.concatenate(heads, axis=-1) @ mha.out_proj.weight.data + mha.out_proj.bias.data
    np.testing.assert_allclose(mha(x).data, expected, rtol=1e-12)


def test_multi_head_attention_settings_and_errors():
    with pytest.raises(ValueError, match="embed_dim=10 is not divisible by num_heads=3"):
        MultiHeadAttention(10, 3)
    mha = MultiHeadAttention(8, 2, bias=False)
    assert [name for name, _ in mha.named_parameters()] == [
        "q_proj.weight", "k_proj.weight", "v_proj.weight", "out_proj.weight"]
    assert mha.q_proj.weight.shape == (8, 8)
    with pytest.raises(ValueError, match=r"\(B, T, 8\)"):
        mha(tt.Tensor(np.zeros((2, 3, 7))))
    drop = MultiHeadAttention(8, 2, dropout=0.5)
    x = tt.Tensor(RNG.standard_normal((1, 4, 8)))
    drop.eval()
    np.testing.assert_array_equal(drop(x).data, drop(x).data)          # no dropout in eval mode
